"""Who calls a peer over mutual TLS: the peer id bound by the caller's certificate."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from loopchain.configure import RefusalLog
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.grpc_util import Tls, caller_certificate
from loopchain.types import certificates

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)  # callers whose certificates are refused: logged rate-limited


class CallerCheck:
    """Who calls over mutual TLS: the peer id its certificate binds, after checking the certificate
    against the CA, its validity window and the revocation list."""

    CACHE = 256

    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self.ca = certificates.certificate_from_pem(tls.ca_pem)
        self._known: dict[bytes, tuple[str, datetime]] = {}
        self._revoked = tls.revoked  # the serials the known certificates were checked against

    def generation(self) -> object:
        """The revoked serials: another set once the revocation lists changed."""
        return self.tls.revoked

    def peer_id(self, context: Any) -> str | None:
        """The caller's peer id; None on a plain local connection; RequestError when refused."""
        pem = caller_certificate(context)
        if pem is None:
            return None
        now = datetime.now(UTC)
        revoked = self.tls.revoked
        if revoked is not self._revoked:  # the lists changed: check every caller again
            self._known.clear()
            self._revoked = revoked
        known = self._known.get(pem)
        if known is not None and known[1] > now:
            return known[0]
        try:
            peer_id, expires = certificates.checked_peer(pem, self.ca, now, revoked)
        except certificates.CertificateError as exc:
            REFUSALS.refused("refused a caller's certificate: %s", exc)
            raise RequestError(ErrorKind.DENIED, f"certificate refused: {exc}") from None
        if len(self._known) >= self.CACHE:
            self._known.clear()
        self._known[pem] = (peer_id, expires)
        return peer_id
