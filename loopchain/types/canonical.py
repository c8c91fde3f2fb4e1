"""Canonical JSON: the one deterministic encoding that is hashed, signed, stored and sent.

UTF-8, keys sorted, no insignificant whitespace, integers and strings only (no floats, so no
rounding ambiguity); bytes are written as lowercase hex by the types that hold them.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")


class EncodingError(ValueError):
    """Bytes or values that are not canonical JSON of the expected shape."""


def _check(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise EncodingError(f"floats are not allowed in canonical JSON (at {path})")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"object keys must be strings (at {path})")
            _check(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")


def encode(value: Any) -> bytes:
    """Encode a JSON value canonically."""
    _check(value, "$")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"strings must be valid Unicode: {exc.reason}") from None


def decode(raw: bytes) -> Any:
    """Decode canonical JSON; reject anything that does not re-encode to the same bytes."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncodingError(f"not JSON: {exc}") from None
    if encode(value) != raw:
        raise EncodingError("JSON is not in canonical form")
    return value


def decode_object(raw: bytes, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Decode a canonical JSON object and check that each required field has its type."""
    value = decode(raw)
    return check_fields(value, required)


def check_fields(value: Any, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Check that `value` is an object with the required fields of the given types."""
    if not isinstance(value, dict):
        raise EncodingError("expected a JSON object")
    for name, kind in required.items():
        if name not in value:
            raise EncodingError(f"missing field {name!r}")
        item = value[name]
        if isinstance(item, bool) and kind is int:
            raise EncodingError(f"field {name!r} must be int")
        if not isinstance(item, kind):
            raise EncodingError(f"field {name!r} has the wrong type")
    return value


def hex_to_bytes(text: str, field: str, length: int | None = None) -> bytes:
    """Parse lowercase hex, checking the length in bytes when given."""
    if not _LOWER_HEX.fullmatch(text):
        raise EncodingError(f"field {field!r} is not lowercase hex")
    raw = bytes.fromhex(text)
    if length is not None and len(raw) != length:
        raise EncodingError(f"field {field!r} must be {length} bytes")
    return raw
