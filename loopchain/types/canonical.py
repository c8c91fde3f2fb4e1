"""Canonical JSON: the one deterministic encoding that is hashed, signed, stored and sent.

UTF-8, keys sorted, no insignificant whitespace, integers and strings only (no floats, so no
rounding ambiguity); bytes are written as lowercase hex by the types that hold them.

The bytes are made by orjson (sorted keys), whose output is byte-identical to the standard library's
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` for every value this module
accepts; values orjson does not take (integers beyond 64 bits, lone surrogates) go through `json`.
Parsing uses the standard library's C scanner, which refuses floats and huge numbers as it reads.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_MISSING = object()


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
    return encode_checked(value)


def encode_checked(value: Any) -> bytes:
    """Encode a value already known to hold no floats and only string keys (one parsed by
    `decode`, or built from such values): the same bytes as `encode`, without walking it first."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        pass  # an integer beyond 64 bits or a lone surrogate: the standard library decides
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"strings must be valid Unicode: {exc.reason}") from None
    except RecursionError:
        raise EncodingError("value is nested too deeply") from None


def _refuse_float(text: str) -> Any:
    raise EncodingError(f"floats are not allowed in canonical JSON (found {text[:20]})")


def decode(raw: bytes) -> Any:
    """Decode canonical JSON; reject anything that does not re-encode to the same bytes."""
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_float=_refuse_float, parse_constant=_refuse_float
        )
    except EncodingError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or a number too long
        raise EncodingError(f"not JSON: {exc}") from None
    except RecursionError:
        raise EncodingError("not JSON: nested too deeply") from None
    if encode_checked(value) != raw:
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
        item = value.get(name, _MISSING)
        if type(item) is kind:  # the common case, decided at once
            continue
        if item is _MISSING:
            raise EncodingError(f"missing field {name!r}")
        if isinstance(item, bool) and kind is int:
            raise EncodingError(f"field {name!r} must be int")
        if not isinstance(item, kind):
            raise EncodingError(f"field {name!r} has the wrong type")
    return value


def hex_to_bytes(text: str, field: str, length: int | None = None) -> bytes:
    """Parse lowercase hex, checking the length in bytes when given."""
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raw = None
    if raw is None or raw.hex() != text:  # spaces, upper case or an odd length
        raise EncodingError(f"field {field!r} is not lowercase hex")
    if length is not None and len(raw) != length:
        raise EncodingError(f"field {field!r} must be {length} bytes")
    return raw
