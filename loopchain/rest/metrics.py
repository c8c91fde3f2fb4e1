"""GET /metrics on the REST proxy: its own figures (requests by route and status, refusals by
reason, failed calls to its peer by method and code, submission calls and what they carried)
followed by the peer's (consensus, pool, SCORE), which the peer serves through its GetMetrics
call; Prometheus text format, read-only.

The proxy's series are named loopchain_rest_*, the peer's loopchain_*, so the two never clash.
Label values come from fixed sets (route patterns, HTTP methods, status codes, gRPC method names
and status codes), never from what a client sent, so no request can grow the number of series.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
)
from prometheus_client.exposition import generate_latest

from loopchain.process_metrics import register_process_collectors
from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest.errors import RestError

log = logging.getLogger(__name__)
PeerMetricsCall = Callable[[], Awaitable[pb.MetricsReply]]

METRICS_PATH = "/metrics"
MAX_PEER_METRICS_BYTES = 1 << 20  # what the proxy passes on of its peer's exposition
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# the status a request whose client hung up before its answer is counted under (nginx's "client
# closed request"): its handler is cancelled, it is answered nothing
CLIENT_CLOSED = 499
# refusals by HTTP status (404 is a lookup of what is not there, not a refusal)
REFUSAL_REASONS: Mapping[int, str] = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    405: "method_not_allowed",
    413: "too_large",
    503: "unavailable",
}
PEER_METHODS = frozenset(m.name for m in pb.DESCRIPTOR.services_by_name["PeerService"].methods)


class RestMetrics:
    """The proxy's metrics, in a registry of their own."""

    def __init__(self, *, process: bool = False) -> None:
        self.registry = CollectorRegistry()
        # (route, method, status) -> its request counter and refusal counter (None: not a refusal)
        self._by_request: dict[tuple[str, str, int], tuple[Counter, Counter | None]] = {}
        registry = self.registry
        self.requests = Counter(
            "loopchain_rest_requests",
            "HTTP requests the REST proxy answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.refused = Counter(
            "loopchain_rest_refused",
            "Requests the REST proxy refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.peer_errors = Counter(
            "loopchain_rest_peer_rpc_errors",
            "Calls to the peer that failed, by gRPC method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.submission_calls = Counter(
            "loopchain_rest_submission_calls",
            "Calls to the peer carrying transaction submissions (v1 and v3, coalesced)",
            registry=registry,
        )
        self.submissions_sent = Counter(
            "loopchain_rest_submissions_sent",
            "Transaction submissions those calls carried (per call: the coalescing achieved)",
            registry=registry,
        )
        self.peer_up = Gauge(
            "loopchain_rest_peer_metrics_up",
            "1 when the peer answered its metrics at the last scrape, else 0",
            registry=registry,
        )
        if process:
            register_process_collectors(registry, "loopchain_rest")

    def rpc_error(self, method: str, code: str) -> None:
        """Count a failed call to the peer (unknown names are counted as "other")."""
        self.peer_errors.labels(method if method in PEER_METHODS else "other", code).inc()

    def submission_call(self, carried: int) -> None:
        """Count a call to the peer carrying `carried` submissions."""
        self.submission_calls.inc()
        self.submissions_sent.inc(carried)

    def middleware(self) -> Middleware:
        """Counts every answer by route pattern, method and status (the outermost middleware)."""

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = CLIENT_CLOSED
                raise
            finally:
                self._count(request, status)

        return count

    def _count(self, request: web.Request, status: int) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in HTTP_METHODS else "other"
        key = (route, method, status)
        counters = self._by_request.get(key)
        if counters is None:  # first time: bind the children once (keys come from fixed sets)
            refused = None
            if (
                400 <= status < 500 and status not in (404, CLIENT_CLOSED)
            ) or status == 503:  # an input refused
                refused = self.refused.labels(REFUSAL_REASONS.get(status, "other"))
            counters = self._by_request[key] = (
                self.requests.labels(route, method, str(status)),
                refused,
            )
        counters[0].inc()
        if counters[1] is not None:
            counters[1].inc()

    def route(self, peer_metrics: PeerMetricsCall) -> web.RouteDef:
        """GET /metrics: this proxy's exposition, then its peer's (`peer_metrics` returns the
        peer's text as bytes; when the peer cannot answer, loopchain_rest_peer_metrics_up is 0)."""

        async def metrics(request: web.Request) -> web.Response:
            peer_text = await _peer_text(peer_metrics)
            self.peer_up.set(1 if peer_text else 0)
            body = generate_latest(self.registry) + peer_text
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return web.get(METRICS_PATH, metrics)


async def _peer_text(peer_metrics: PeerMetricsCall) -> bytes:
    """The peer's exposition, or b"" when it cannot be had (logged at debug: a peer starting or
    stopping is normal, and its failed call is counted already)."""
    try:
        reply = await peer_metrics()
    except grpc.aio.AioRpcError as exc:
        log.debug("metrics of the peer unavailable: %s %s", exc.code().name, exc.details())
        return b""
    except RestError as exc:  # the proxy is busy or stopping
        log.debug("metrics of the peer not asked: %s", exc.message)
        return b""
    text = bytes(reply.text)
    if len(text) > MAX_PEER_METRICS_BYTES:
        log.warning(
            "the peer's metrics are %d bytes, over %d: left out", len(text), MAX_PEER_METRICS_BYTES
        )
        return b""
    return text
