"""REST errors: one exception type, JSON responses, and the gRPC status → REST error mapping."""

from __future__ import annotations

import json
from typing import Any

import grpc
import orjson
from aiohttp import web

from loopchain.types.codes import HTTP_STATUS, ResponseCode, error_body

RETRY_AFTER_SECONDS = "1"  # what a 503 (overload, peer or SCORE unavailable) tells clients
_UNIMPLEMENTED_HINT = "it becomes available when the SCORE service lands"

# gRPC status → (response code, HTTP status, message template); {details} is the peer's text.
_RPC_ERRORS: dict[grpc.StatusCode, tuple[ResponseCode, int, str]] = {
    grpc.StatusCode.NOT_FOUND: (ResponseCode.NOT_FOUND, 404, "{details}"),
    grpc.StatusCode.INVALID_ARGUMENT: (ResponseCode.INVALID_PARAMS, 400, "{details}"),
    grpc.StatusCode.ALREADY_EXISTS: (ResponseCode.INVALID_PARAMS, 400, "{details}"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        ResponseCode.TIMEOUT,
        504,
        "the peer at {target} did not answer within {timeout:g} s ({details})",
    ),
    grpc.StatusCode.UNAVAILABLE: (
        ResponseCode.FAIL,
        503,
        "the peer at {target} is unreachable ({details})",
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        ResponseCode.FAIL,
        503,
        "the peer takes no more now, try again later ({details})",
    ),
    # the peer ended the call before answering it (gRPC does so to a few calls of a burst it
    # takes no more of, and to calls in flight while it stops): try again
    grpc.StatusCode.CANCELLED: (
        ResponseCode.FAIL,
        503,
        "the peer at {target} ended the call unanswered, try again later ({details})",
    ),
    grpc.StatusCode.FAILED_PRECONDITION: (ResponseCode.NO_LEADER, 503, "{details}"),
    grpc.StatusCode.ABORTED: (ResponseCode.FAIL, 503, "{details}"),
    grpc.StatusCode.PERMISSION_DENIED: (ResponseCode.FAIL, 403, "{details}"),
    # what was asked for is damaged in the peer's store (its operator must restore it): no retry
    grpc.StatusCode.DATA_LOSS: (
        ResponseCode.FAIL,
        500,
        "the peer at {target} cannot read it from its store ({details})",
    ),
    grpc.StatusCode.UNIMPLEMENTED: (
        ResponseCode.FAIL,
        501,
        "this call is not available from the peer yet; " + _UNIMPLEMENTED_HINT + " ({details})",
    ),
}


class RestError(Exception):
    """An error answered as `{"response_code": <negative>, "message": ...}` with an HTTP status."""

    def __init__(self, code: ResponseCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else HTTP_STATUS[code]

    def response(self) -> web.Response:
        """The JSON response for this error (a 503 says when to try again)."""
        response = json_response(error_body(self.code, self.message), self.status)
        if self.status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response


class ProxyBusy(RestError):
    """The proxy's own refusal of a call for want of room (REST_MAX_INFLIGHT calls in flight):
    503, and worth trying again shortly, where the peer's own failures are not."""

    def __init__(self, message: str) -> None:
        super().__init__(ResponseCode.FAIL, message, 503)


def invalid_params(message: str) -> RestError:
    """A 400 / -6 error saying what is wrong with the request."""
    return RestError(ResponseCode.INVALID_PARAMS, message)


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response (UTF-8, not ASCII-escaped)."""
    try:
        raw = orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate from the SCORE
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", errors="backslashreplace"
        )
    return web.Response(body=raw, status=status, content_type="application/json", charset="utf-8")


def rpc_error(exc: grpc.aio.AioRpcError, target: str, timeout: float) -> RestError:
    """Translate a failed gRPC call to the peer into a REST error with the peer's details."""
    return status_error(exc.code(), exc.details() or "", target, timeout)


def status_error(
    code: grpc.StatusCode, details: str, target: str, timeout: float, alone: bool = False
) -> RestError:
    """The REST error for a gRPC status the peer answered (for a call, or, `alone`, for one item
    of it: the peer's own words, even for UNAVAILABLE, which a call also ends with when the peer
    cannot be reached at all: a channel refusing transactions for its clock, or halted, was
    "the peer at X is unreachable (...)" although it had answered)."""
    details = details or code.name.lower()
    mapped = _RPC_ERRORS.get(code)
    if mapped is None:
        message = f"the peer at {target} failed: {code.name} ({details})"
        return RestError(ResponseCode.FAIL, message, 502)
    response_code, status, template = mapped
    if alone and code == grpc.StatusCode.UNAVAILABLE:
        template = "{details}"
    return RestError(
        response_code, template.format(details=details, target=target, timeout=timeout), status
    )
