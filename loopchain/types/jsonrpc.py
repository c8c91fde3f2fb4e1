"""ICON JSON-RPC v3 error codes and the error that carries one (spec: icon-jsonrpc-v3.md).

An error answers HTTP 400 with `{"jsonrpc":"2.0","id":…,"error":{"code","message","data"?}}`;
this module holds only the values, the endpoint layer writes the response.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class JsonRpcCode(IntEnum):
    """The error codes of the spec."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602  # bad signature, wrong nid, malformed field, ...
    INTERNAL_ERROR = -32603
    POOL_OVERFLOW = -31001
    PENDING = -31002  # in the pool, not yet in a block
    EXECUTING = -31003  # in a block, result not final
    NOT_FOUND = -31004
    TIMEOUT = -31006  # `data` is the txHash
    SCORE_ERROR = -30000  # -30000 - N: SCORE failure N


def score_error_code(failure: int) -> int:
    """The JSON-RPC code of SCORE failure `failure` (e.g. 3, method not found: -30003)."""
    return int(JsonRpcCode.SCORE_ERROR) - failure


class JsonRpcError(Exception):
    """An error to answer with its JSON-RPC code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The `error` member of the response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
