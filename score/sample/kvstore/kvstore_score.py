"""A key-value store SCORE: string keys and values set and deleted by transactions, each change
announced by an event log: ValueSet(str,str) (the key indexed, the value as data) and
ValueDeleted(str) (the key indexed)."""

from __future__ import annotations

import json
from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, ScoreError, TransactionView

MAX_KEY_BYTES = 256  # UTF-8 bytes; the engine allows state keys up to 1024 bytes
MAX_VALUE_BYTES = 65_536
PREFIX = "kv:"


def _call(data: Any) -> tuple[str, dict[str, Any]]:
    """Split {"method": str, "params": {...}} into its parts."""
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ScoreError('expected {"method": str, "params": {...}}')
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ScoreError('"params" must be a JSON object')
    return data["method"], params


def _text(params: dict[str, Any], name: str, limit: int) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        raise ScoreError(f"params.{name} must be a string")
    if name == "key" and not value:
        raise ScoreError("params.key must not be empty")
    if len(value.encode("utf-8", errors="replace")) > limit:
        raise ScoreError(f"params.{name} is longer than {limit} bytes (UTF-8)")
    return value


class UserScore(ScoreBase):
    """set/delete by transaction, get by query."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Apply "set" or "delete"."""
        method, params = _call(transaction.data)
        key = _text(params, "key", MAX_KEY_BYTES)
        if method == "set":
            value = _text(params, "value", MAX_VALUE_BYTES)
            self.put_json(PREFIX + key, value)
            self.emit_event("ValueSet(str,str)", [key], [value])
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
        key = _text(arguments, "key", MAX_KEY_BYTES)
        return json.dumps({"value": self.get_json(PREFIX + key)})
