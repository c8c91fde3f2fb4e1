"""The certificate another peer's server presents, checked before this peer sends it anything.

gRPC checks a server's certificate against the CA and the peer id it is pinned to, never against
the revocation lists, and does not tell its client which certificate it was shown: a member whose
certificate was revoked was refused its own calls but kept receiving every proposal, certificate
and transaction its channel's peers pushed to it. A ServerCheck reads the certificate by a TLS
handshake of its own to the peer's target (the same client certificate and CA as the gRPC link's)
and checks it as CallerCheck checks callers' (certificates.checked_peer); again whenever the
revocation lists change or the certificate taken expires, and a refused one every
RECHECK_REFUSED_S (a peer given a new certificate is taken again). A server whose certificate
could not be read is sent nothing until it can be (tried again at most every RETRY_S): a revoked
peer that refuses the handshake gains nothing by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from loopchain.lazy import lazy_module
from loopchain.p2p.grpc_util import Tls

if TYPE_CHECKING:
    from loopchain.types import certificates
else:  # cryptography costs a process ~10 MB: a peer without TLS never loads it
    certificates = lazy_module("loopchain.types.certificates")

log = logging.getLogger(__name__)

RECHECK_REFUSED_S = 10.0  # a refused server certificate is read again this often
RETRY_S = 1.0  # a server whose certificate could not be read is tried again no sooner


class ServerRefused(Exception):
    """Why nothing is sent to a peer: its certificate is refused (`revoked` etc.), or could not
    be read (`unreachable`: no TLS connection could be had)."""

    def __init__(self, message: str, unreachable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class ServerCheck:
    """Whether the server of peer `peer_id` at `target` may be sent to (see the module)."""

    def __init__(
        self, tls: Tls, target: str, peer_id: str, timeout: float, *, named: bool = False
    ) -> None:
        self.tls = tls
        self.target = target
        self.peer_id = peer_id  # `named`: the DNS name its certificate states (a RadioStation's)
        self.timeout = timeout
        self.named = named
        self._ca = certificates.certificate_from_pem(tls.ca_pem)
        self._lock = asyncio.Lock()  # one handshake at a time (a link's lanes share the check)
        self._against: frozenset[int] | None = None  # the revocations the verdict was made with
        self._refusal: ServerRefused | None = None  # the verdict: None, the server is taken
        self._until = 0.0  # the verdict holds until then (loop time) while the lists are the same

    async def admit(self) -> None:
        """Return when the server may be sent to; ServerRefused when not."""
        async with self._lock:
            revoked = self.tls.revoked
            now = asyncio.get_running_loop().time()
            if revoked is not self._against or now >= self._until:
                self._refusal, valid_for = await self._verdict(revoked)
                self._against = revoked
                if self._refusal is not None:
                    valid_for = RETRY_S if self._refusal.unreachable else RECHECK_REFUSED_S
                self._until = asyncio.get_running_loop().time() + valid_for
            if self._refusal is not None:
                raise self._refusal

    async def _verdict(self, revoked: frozenset[int]) -> tuple[ServerRefused | None, float]:
        """Why the server is refused (None: it is not), and for how many seconds a certificate
        taken stays valid (read again when it expires)."""
        try:
            der = await self._server_certificate()
        except (OSError, TimeoutError, ValueError) as exc:
            return ServerRefused(f"its certificate could not be read: {exc}", True), 0.0
        now = datetime.now(UTC)
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        try:
            if self.named:
                bound, expires = certificates.checked_named(
                    pem, self._ca, now, revoked, self.peer_id
                )
            else:
                bound, expires = certificates.checked_peer(pem, self._ca, now, revoked)
            problem = None if bound == self.peer_id else f"it belongs to {bound}"
        except certificates.CertificateError as exc:
            problem = str(exc)
        if problem is None:
            return None, (expires - now).total_seconds()
        previous = self._refusal
        if previous is None or previous.unreachable:  # logged once a refusal
            log.warning(
                "sending nothing to %s %s at %s: its certificate is refused: %s",
                "RadioStation" if self.named else "peer",
                self.peer_id,
                self.target,
                problem,
            )
        return ServerRefused(f"its certificate is refused: {problem}", unreachable=False), 0.0

    async def _server_certificate(self) -> bytes:
        """The DER certificate the server at the target presents."""
        assert self.tls.handshake is not None
        host, port = _host_port(self.target)
        async with asyncio.timeout(self.timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=self.tls.handshake, server_hostname=self.peer_id
            )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await writer.wait_closed()
        if not der:
            raise ValueError("the server presented no certificate")
        return bytes(der)
