"""ENABLE_REST_SSL 2: a REST client's certificate checked against the node's revocation lists on
every request, as the peer's gRPC side checks its callers' (grpc_util.Revocations, read again
when a list changes): the TLS handshake checks only the CA, so a revoked holder kept full REST
access, submissions the peer signs included."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from cryptography import x509

from loopchain.configure import RefusalLog
from loopchain.p2p.grpc_util import Revocations
from loopchain.rest.errors import RestError
from loopchain.types import certificates
from loopchain.types.codes import ResponseCode

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)


class RevokedClients:
    """Refuses (403, connection closed) a request whose client certificate a revocation list
    names; a certificate's serial is read once (a bounded cache)."""

    CACHE = 256

    def __init__(self, revocations: Revocations) -> None:
        self._revocations = revocations
        self._serials: dict[bytes, int | None] = {}

    def problem(self, request: web.Request) -> str | None:
        """Why the request's client certificate is refused; None when it is not."""
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:  # the connection is gone (or is not TLS): nothing to serve
            return "the connection has no client certificate"
        der = ssl_object.getpeercert(binary_form=True)
        if not der:  # CERT_REQUIRED makes the handshake fail first
            return "the connection has no client certificate"
        serial = self._serial(der)
        if serial is None:
            return "the client certificate cannot be read"
        if serial in self._revocations.current():
            return f"revoked (serial {certificates.serial_hex(serial)})"
        return None

    def _serial(self, der: bytes) -> int | None:
        if der in self._serials:
            return self._serials[der]
        try:
            serial: int | None = x509.load_der_x509_certificate(der).serial_number
        except ValueError:
            serial = None
        if len(self._serials) >= self.CACHE:
            self._serials.clear()
        self._serials[der] = serial
        return serial

    def middleware(self) -> Middleware:
        """The middleware refusing requests of revoked clients before anything else runs."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            problem = self.problem(request)
            if problem is None:
                return await handler(request)
            REFUSALS.refused(
                "refused %s %s from %s: client certificate refused: %s",
                request.method,
                request.path[:100],
                request.remote,
                problem,
            )
            message = f"client certificate refused: {problem}"
            response = RestError(ResponseCode.FAIL, message, 403).response()
            response.force_close()  # the client's other requests on it go the same way
            return response

        return middleware
