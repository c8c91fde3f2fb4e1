"""The aiohttp application of the REST proxy: routes, JSON errors for every failure, gRPC lifecycle."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from loopchain.configure import Config, RefusalLog
from loopchain.http_site import (
    BodyTimeout,
    ClientLeft,
    MalformedBody,
    answer_sender,
    client_left,
    close_if_body_unread,
    read_within,
)
from loopchain.rest.errors import RestError, invalid_params, json_response
from loopchain.rest.explorer_site import explorer_routes
from loopchain.rest.handlers import PeerApi
from loopchain.rest.icon_methods import IconMethods
from loopchain.rest.icon_monitor import Monitors
from loopchain.rest.icon_peer import PeerReader
from loopchain.rest.jsonrpc import (
    DEBUG_PATHS,
    V3_PATHS,
    JsonRpcEndpoint,
    is_jsonrpc_path,
    outer_error,
)
from loopchain.rest.metrics import RestMetrics
from loopchain.types.codes import ResponseCode, error_body

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)

PEER_API = web.AppKey("peer_api", PeerApi)
OPENAPI_PATH = Path(__file__).with_name("openapi.json")  # the OpenAPI document of every route


def _http_error(exc: web.HTTPException, request: web.Request, max_body: int) -> web.Response:
    """aiohttp's own refusals (no route, another method, a body past the limit) in the APIs'
    shapes (see outer_error)."""
    if exc.status == 404:
        message = f"unknown route {request.method} {request.path}"
        return outer_error(request, 404, message, ResponseCode.UNKNOWN_MESSAGE)
    if exc.status == 405:
        message = f"method {request.method} is not allowed on {request.path}"
        return outer_error(request, 405, message, ResponseCode.UNKNOWN_MESSAGE)
    if exc.status == 413:
        message = f"the request body is larger than the limit of {max_body} bytes"
        return outer_error(request, 413, message, ResponseCode.INVALID_PARAMS)
    code = ResponseCode.INVALID_PARAMS if 400 <= exc.status < 500 else ResponseCode.FAIL
    return outer_error(request, exc.status, exc.reason, code)


def _cross_site(request: web.Request) -> str | None:
    """The foreign origin of a browser's cross-site write (a page elsewhere making a visitor's
    browser post transactions this peer would sign), or None. Tools such as curl send no Origin.
    A browser's own origin is taken by IP address or as localhost only: a page of a name its
    owner rebinds to this node's address (DNS rebinding) sends that name as Origin and Host
    alike, and had this peer sign what it posted (review)."""
    origin = request.headers.get("Origin")
    if request.method in ("GET", "HEAD", "OPTIONS") or origin is None:
        return None
    if is_jsonrpc_path(request.path):  # reads, and (later) transactions their clients signed:
        return None  # nothing a page elsewhere could make this peer sign
    try:
        url = URL(origin) if origin != "null" else None
        host = url.host_port_subcomponent if url is not None else None
    except ValueError:
        url, host = None, None
    if url is None or host is None or host != request.host or not _own_name(url.host or ""):
        return origin
    return None


def _own_name(host: str) -> bool:
    """An IP address, or localhost: names no one else can point at this node."""
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _read_body_within(request: web.Request, seconds: float, max_body: int) -> None:
    """Read the request's body (kept for the handler's own read) within `seconds` (408 after).
    A body announced over `max_body` is left to the handler, which refuses it unread."""
    length = request.content_length
    if not request.body_exists or (length is not None and length > max_body):
        return
    try:
        await read_within(request, seconds)
    except BodyTimeout as exc:
        raise RestError(ResponseCode.TIMEOUT, str(exc), 408) from None
    except MalformedBody as exc:
        raise invalid_params(str(exc)) from None


def _error_middleware(max_body: int, body_timeout: float) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _answer(request, handler, max_body, body_timeout)
        return close_if_body_unread(request, response)

    return middleware


async def _answer(
    request: web.Request, handler: Handler, max_body: int, body_timeout: float
) -> web.StreamResponse:
    """The handler's response, or the JSON error for whatever it raised."""
    try:
        origin = _cross_site(request)
        if origin is not None:
            raise RestError(
                ResponseCode.FAIL,
                f"cross-site request from {origin[:80]!r} refused: this API takes writes "
                "from its own origin (by IP address or localhost) and from non-browser clients "
                "only",
                403,
            )
        if not is_jsonrpc_path(request.path):  # JSON-RPC reads within it, its errors its own
            await _read_body_within(request, body_timeout, max_body)
        return await handler(request)
    except RestError as exc:
        _log_refusal(request, exc.status, exc.message)
        response = exc.response()
        if exc.status == 408:  # the rest of that body is not waited for
            response.force_close()
        return response
    except web.HTTPException as exc:
        response = _http_error(exc, request, max_body)
        _log_refusal(request, response.status, exc.reason)
        return response
    except UnicodeDecodeError as exc:
        error = invalid_params(f"the request is not valid UTF-8: {exc}")
        _log_refusal(request, error.status, error.message)
        return error.response()
    except ClientLeft as exc:
        return client_left(request, invalid_params(str(exc)).response())
    except Exception as exc:  # a defect of the proxy: log it, still answer JSON
        log.exception("unexpected error in %s %s", request.method, request.path)
        message = f"internal error in the REST proxy: {type(exc).__name__}"
        return json_response(error_body(ResponseCode.FAIL, message), 500)


def _log_refusal(request: web.Request, status: int, message: str) -> None:
    """Refused input leaves a warning (rate-limited); lookups of what is not there yet (404) and
    overload (503) are normal traffic, logged only at debug."""
    if status in (404, 503) or status < 400:
        log.debug("%s %s → %d %s", request.method, request.path, status, message)
        return
    REFUSALS.refused(
        "refused %s %s from %s: %d %s",
        request.method,
        request.path[:100],
        request.remote,
        status,
        message[:200],
    )


def create_app(
    config: Config,
    peer_target: str,
    dial: str | None = None,
    client_check: Middleware | None = None,
) -> web.Application:
    """The REST proxy application forwarding to the PeerService at `peer_target` (host:port),
    reached at `dial` when given (the peer's socket for its own proxy), every request first
    passed through `client_check` when given (ENABLE_REST_SSL 2: client_certs.RevokedClients)."""
    max_body = int(config.REST_MAX_BODY_BYTES)
    metrics = RestMetrics(process=True)
    sender = answer_sender(config, lambda request, message: outer_error(request, 503, message))
    middlewares = [
        sender.middleware(),
        metrics.middleware(),
        *([client_check] if client_check is not None else []),
        _error_middleware(max_body, float(config.REST_BODY_TIMEOUT)),
    ]
    app = web.Application(client_max_size=max_body, middlewares=middlewares)
    api = PeerApi(config, peer_target, dial)
    api.on_rpc_error = metrics.rpc_error
    api.on_submission_call = metrics.submission_call
    app[PEER_API] = api
    app.add_routes([metrics.route(api.peer_metrics)])  # GET /metrics: the proxy's, then the peer's
    app.add_routes([*api.routes(), _openapi_route(), *_jsonrpc_routes(config, api, max_body)])
    app.add_routes(explorer_routes())  # the block explorer's static page at /explorer
    app.cleanup_ctx.append(_peer_channel)
    app.on_shutdown.append(_stopping)
    return app


async def _stopping(app: web.Application) -> None:
    """The server stops (its sites closed, its handlers given their shutdown time next): waits
    for results and websocket monitors end now, answered, rather than hold the stop."""
    app[PEER_API].stopping.set()


def _jsonrpc_routes(config: Config, api: PeerApi, max_body: int) -> list[web.RouteDef]:
    """The ICON JSON-RPC v3 endpoints (/api/v3…), their debug namespace (/api/v3d…) and the
    websocket monitors (/api/v3/<channel>/block and /event)."""
    reader = PeerReader(api)
    methods = IconMethods(reader, str(config.ICON_NID))
    body_timeout = float(config.REST_BODY_TIMEOUT)
    v3 = JsonRpcEndpoint("/api/v3", methods.table(), max_body, body_timeout)
    debug = JsonRpcEndpoint("/api/v3d", methods.debug_table(), max_body, body_timeout)
    return [
        *v3.routes(V3_PATHS),
        *debug.routes(DEBUG_PATHS),
        *Monitors(reader, float(config.REST_SEND_TIMEOUT), int(config.REST_MAX_INFLIGHT)).routes(),
    ]


def _openapi_route() -> web.RouteDef:
    """GET /api/v1/openapi.json: the static OpenAPI document, read once."""
    document = OPENAPI_PATH.read_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json", charset="utf-8")

    return web.get("/api/v1/openapi.json", openapi)


async def _peer_channel(app: web.Application) -> AsyncIterator[None]:
    api = app[PEER_API]
    await api.start()
    yield
    await api.close()
