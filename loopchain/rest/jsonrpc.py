"""The JSON-RPC 2.0 endpoints of the REST proxy: ICON's v3 API (spec: icon-jsonrpc-v3.md).

`POST /api/v3`, `/api/v3/` and `/api/v3/<channel>` serve the icx_* methods; `/api/v3d[/<channel>]`
the debug_* namespace (no method yet). One request per body, no batches; no Content-Type needed;
the body is bounded by REST_MAX_BODY_BYTES. `params` may be absent; `id` is echoed as given (null
when the request is too broken to have one). A success is HTTP 200 with `result`; every error is
HTTP 400 (ICON's SDK breaks on any other status) with `error: {code, message[, data]}`:

  -32700 the body is not JSON (or not UTF-8, or empty, or beyond the JSON limits)
  -32600 not a request: not an object, jsonrpc not "2.0", no method name, a bad id, a body over
         the limit, an array (a batch)
  -32601 a method this namespace does not serve
  -32602 bad params, or a channel the peer does not serve
  -32603 the peer is down, too slow, or answered what the proxy cannot use; the proxy is busy
  -31001 the peer's pool is full
  -31002 / -31003 / -31004 pending, executing, not found (see loopchain/rest/icon_methods.py)
  -31006 a wait for a result ended first (data: the txHash); "Icon-Options: timeout=<ms>" sets it

Nothing raised inside escapes as a traceback to the client: a defect is logged and answered -32603.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from loopchain.configure import RefusalLog
from loopchain.http_site import BodyTimeout, ClientLeft, MalformedBody, client_left, read_within
from loopchain.rest.errors import RETRY_AFTER_SECONDS, RestError, json_response
from loopchain.rest.icon_methods import MAX_WAIT_MS, NOT_SERVED, Call, Method
from loopchain.rest.params import MAX_CHANNEL_CHARS, check_channel
from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.codes import ResponseCode
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)

POOL_OVERFLOW_RETRY_AFTER_S = 1
V3_PATHS = ("/api/v3", "/api/v3/", "/api/v3/{channel}")
DEBUG_PATHS = ("/api/v3d", "/api/v3d/", "/api/v3d/{channel}")
JSONRPC_PREFIXES = ("/api/v3/", "/api/v3d/")
_MILLISECONDS = re.compile(
    r"[0-9]{1,9}"
)  # ASCII digits only (str.isdigit takes "²" too)  # every path above, with a slash added
# Refusals of what a client sent are warned about (rate-limited); the rest is normal traffic.
_REFUSALS = {JsonRpcCode.PARSE_ERROR, JsonRpcCode.INVALID_REQUEST, JsonRpcCode.INVALID_PARAMS}


def is_jsonrpc_path(path: str) -> bool:
    """True for the paths of the JSON-RPC endpoints."""
    return (path + "/").startswith(JSONRPC_PREFIXES)


def success(request_id: Any, result: Any) -> web.Response:
    """HTTP 200 with the result."""
    return json_response({"jsonrpc": "2.0", "id": request_id, "result": result})


def failure(request_id: Any, error: JsonRpcError) -> web.Response:
    """HTTP 400 with the error (whatever the error: ICON's SDK reads errors only from a 400); a
    full pool (-31001) also says when to come back, as v1's 503 does (Retry-After)."""
    response = json_response({"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}, 400)
    if error.code == JsonRpcCode.POOL_OVERFLOW:
        response.headers["Retry-After"] = str(POOL_OVERFLOW_RETRY_AFTER_S)
    elif isinstance(error.data, dict) and isinstance(error.data.get("retryAfter"), int):
        response.headers["Retry-After"] = str(error.data["retryAfter"])  # an overload's
    return response


def outer_error(
    request: web.Request, status: int, message: str, code: ResponseCode = ResponseCode.FAIL
) -> web.Response:
    """An error answered before any API handler (routing, overload, a refused client
    certificate): on a JSON-RPC path as `failure` answers (ICON's SDK reads `error` from any
    answer that is not a success: the v1 body these had made it raise KeyError, review), else in
    v1's shape with `status`. An overload (503) says when to try again in either."""
    if not is_jsonrpc_path(request.path):
        return RestError(code, message, status).response()
    kinds = {503: JsonRpcCode.INTERNAL_ERROR, 404: JsonRpcCode.METHOD_NOT_FOUND}
    data = {"retryAfter": int(RETRY_AFTER_SECONDS)} if status == 503 else None
    return failure(
        None, JsonRpcError(kinds.get(status, JsonRpcCode.INVALID_REQUEST), message, data)
    )


class _BodyTimedOut(JsonRpcError):
    """The request's body did not arrive in full within the deadline."""


class JsonRpcEndpoint:
    """One JSON-RPC namespace (named by its path, for messages): its methods by name."""

    def __init__(
        self, name: str, methods: Mapping[str, Method], max_body: int, body_timeout: float
    ) -> None:
        self.name = name
        self._methods = dict(methods)
        self._max_body = max_body
        self._body_timeout = body_timeout  # REST_BODY_TIMEOUT

    def routes(self, paths: tuple[str, ...]) -> list[web.RouteDef]:
        """POST routes of this endpoint on `paths`."""
        return [web.post(path, self.handle) for path in paths]

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one JSON-RPC request."""
        request_id: Any = None
        try:
            body = await self._read(request)
            request_id = _request_id(body)
            method, params = _envelope(body)
            return success(request_id, await self._dispatch(request, method, params))
        except _BodyTimedOut as exc:
            self._log(request, exc)
            response = failure(request_id, exc)
            response.force_close()  # the rest of that body is not waited for
            return response
        except JsonRpcError as exc:
            self._log(request, exc)
            return failure(request_id, exc)
        except ClientLeft as exc:
            error = JsonRpcError(JsonRpcCode.INVALID_REQUEST, str(exc))
            return client_left(request, failure(request_id, error))
        except Exception:  # a defect of the proxy: logged, still answered in JSON-RPC's shape
            log.exception("unexpected error in JSON-RPC %s %s", request.method, request.path)
            error = JsonRpcError(JsonRpcCode.INTERNAL_ERROR, "internal error in the REST proxy")
            return failure(request_id, error)

    async def _read(self, request: web.Request) -> dict[str, Any]:
        """The request object of the body; -32700 / -32600 when it is none."""
        too_large = JsonRpcError(
            JsonRpcCode.INVALID_REQUEST,
            f"the request body is larger than the limit of {self._max_body} bytes",
        )
        length = request.content_length
        if length is not None and length > self._max_body:
            raise too_large
        try:
            raw = await read_within(request, self._body_timeout)
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except BodyTimeout as exc:
            raise _BodyTimedOut(JsonRpcCode.INVALID_REQUEST, str(exc)) from None
        except MalformedBody as exc:
            raise JsonRpcError(JsonRpcCode.PARSE_ERROR, str(exc)) from None
        if not raw.strip():
            raise JsonRpcError(JsonRpcCode.PARSE_ERROR, "the request body is empty")
        try:
            value = canonical.parse(raw, floats=True)
        except EncodingError as exc:
            raise JsonRpcError(JsonRpcCode.PARSE_ERROR, f"parse error: {exc}") from None
        if isinstance(value, list):
            raise JsonRpcError(
                JsonRpcCode.INVALID_REQUEST, "batches are not served: send one request per body"
            )
        if not isinstance(value, dict):
            raise JsonRpcError(JsonRpcCode.INVALID_REQUEST, "the request must be a JSON object")
        return value

    async def _dispatch(self, request: web.Request, method: str, params: dict[str, Any]) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            message = NOT_SERVED.get(method) or f"method {method[:100]!r} is not served"
            raise JsonRpcError(JsonRpcCode.METHOD_NOT_FOUND, f"{message} on {self.name}")
        return await handler(Call(path_channel(request), _wait_ms(request)), params)

    def _log(self, request: web.Request, error: JsonRpcError) -> None:
        if error.code in _REFUSALS:
            REFUSALS.refused(
                "refused JSON-RPC %s from %s: %d %s",
                request.path[:100],
                request.remote,
                error.code,
                error.message[:200],
            )
        else:
            log.debug("JSON-RPC %s → %d %s", request.path[:100], error.code, error.message)


def _request_id(body: dict[str, Any]) -> Any:
    """The request's id to echo (None when absent); -32600 when it is not an id."""
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
        raise JsonRpcError(JsonRpcCode.INVALID_REQUEST, "id must be a string, a number or null")
    return request_id


def _envelope(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method, params) of a request object; -32600 / -32602 naming what is wrong."""
    if body.get("jsonrpc") != "2.0":
        raise JsonRpcError(JsonRpcCode.INVALID_REQUEST, 'the request must say "jsonrpc": "2.0"')
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise JsonRpcError(JsonRpcCode.INVALID_REQUEST, "the request must name a method")
    params = body.get("params")
    if params is None:
        return method, {}
    if not isinstance(params, dict):
        raise JsonRpcError(JsonRpcCode.INVALID_PARAMS, "params must be a JSON object")
    return method, params


def path_channel(request: web.Request) -> str:
    """The channel the path names ("" for the peer's default); -32602 when it cannot be one."""
    name = request.match_info.get("channel", "")
    try:
        return check_channel(name)
    except RestError:
        raise JsonRpcError(
            JsonRpcCode.INVALID_PARAMS,
            f"channel {name[:40]!r} is not a channel name: at most {MAX_CHANNEL_CHARS} "
            "printable characters",
        ) from None


def _wait_ms(request: web.Request) -> int | None:
    """The wait an "Icon-Options: timeout=<ms>" header asks for (None without one); -32602 when
    the header is malformed. Options are "key=value" pairs separated by commas."""
    header = request.headers.get("Icon-Options")
    if header is None:
        return None
    for option in header.split(","):
        key, sep, value = option.strip().partition("=")
        if key.strip().lower() != "timeout":
            continue
        value = value.strip()
        if not sep or not _MILLISECONDS.fullmatch(value):
            raise JsonRpcError(
                JsonRpcCode.INVALID_PARAMS,
                f"Icon-Options timeout {value[:20]!r} must be milliseconds (digits)",
            )
        return min(int(value), MAX_WAIT_MS)
    return None
