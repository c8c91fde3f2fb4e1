"""A key-value store SCORE: string keys and values set and deleted by transactions, each change
announced by an event log: ValueSet(str,str) (the key indexed, the value as data) and
ValueDeleted(str) (the key indexed). Since an event carries the value, a value is bounded by what
an event may hold (MAX_EVENT_CHARS with its signature and key), not by what the state may."""

from __future__ import annotations

import json
from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import (
    MAX_EVENT_CHARS,
    BlockView,
    ScoreError,
    TransactionView,
)

VALUE_SET = "ValueSet(str,str)"
MAX_KEY_BYTES = 256  # UTF-8 bytes (so at most 256 characters); the engine allows 1024 bytes
# characters: the ValueSet event of the longest key and the longest value fits (3,823)
MAX_VALUE_CHARS = MAX_EVENT_CHARS - len(VALUE_SET) - MAX_KEY_BYTES
PREFIX = "kv:"


def _call(data: Any) -> tuple[str, dict[str, Any]]:
    """Split {"method": str, "params": {...}} into its parts."""
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ScoreError('expected {"method": str, "params": {...}}')
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ScoreError('"params" must be a JSON object')
    return data["method"], params


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        raise ScoreError(f"params.{name} must be a string")
    return value


def _key(params: dict[str, Any]) -> str:
    key = _text(params, "key")
    if not key:
        raise ScoreError("params.key must not be empty")
    if len(key.encode("utf-8", errors="replace")) > MAX_KEY_BYTES:
        raise ScoreError(f"params.key is longer than {MAX_KEY_BYTES} bytes (UTF-8)")
    return key


def _value(params: dict[str, Any]) -> str:
    value = _text(params, "value")
    if len(value) > MAX_VALUE_CHARS:
        raise ScoreError(
            f"params.value is longer than {MAX_VALUE_CHARS} characters "
            f"(its {VALUE_SET} event carries it)"
        )
    return value


class UserScore(ScoreBase):
    """set/delete by transaction, get by query."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Apply "set" or "delete"."""
        method, params = _call(transaction.data)
        key = _key(params)
        if method == "set":
            value = _value(params)
            self.put_json(PREFIX + key, value)
            self.emit_event(VALUE_SET, [key], [value])
        elif method == "delete":
            self.db.delete((PREFIX + key).encode("utf-8"))
            self.emit_event("ValueDeleted(str)", [key])
        else:
            raise ScoreError(f"unknown method {method!r}; expected 'set' or 'delete'")
        return None

    def query(self, params: str) -> str:
        """Answer "get" with {"value": str | null}."""
        try:
            request = json.loads(params)
        except json.JSONDecodeError as exc:
            raise ScoreError(f"query params are not JSON: {exc}") from None
        method, arguments = _call(request)
        if method != "get":
            raise ScoreError(f"unknown query method {method!r}; expected 'get'")
        key = _key(arguments)
        return json.dumps({"value": self.get_json(PREFIX + key)})
