"""Response codes of the REST APIs (compat spec) and the HTTP statuses that go with them."""

from __future__ import annotations

from enum import IntEnum


class ResponseCode(IntEnum):
    """`response_code` values users' scripts compare against."""

    SUCCESS = 0
    FAIL = -1
    NOT_FOUND = -4  # wrong block hash, unknown transaction, unknown channel
    NO_LEADER = -5
    INVALID_PARAMS = -6
    LEADER_CANNOT_MAKE_MORE_BLOCKS = -7
    PEER_UNKNOWN = -800
    TIMEOUT = -900
    UNKNOWN_MESSAGE = -999


HTTP_STATUS = {
    ResponseCode.SUCCESS: 200,
    ResponseCode.FAIL: 503,
    ResponseCode.NOT_FOUND: 404,
    ResponseCode.NO_LEADER: 503,
    ResponseCode.INVALID_PARAMS: 400,
    ResponseCode.LEADER_CANNOT_MAKE_MORE_BLOCKS: 503,
    ResponseCode.PEER_UNKNOWN: 404,
    ResponseCode.TIMEOUT: 504,
    ResponseCode.UNKNOWN_MESSAGE: 400,
}


def error_body(code: ResponseCode, message: str) -> dict[str, object]:
    """The JSON body of an error response."""
    return {"response_code": int(code), "message": message}
