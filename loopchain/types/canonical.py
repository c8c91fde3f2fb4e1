"""Canonical JSON: the one deterministic encoding that is hashed, signed, stored and sent.

UTF-8, keys sorted, no insignificant whitespace, integers and strings only (no floats, so no
rounding ambiguity); bytes are written as lowercase hex by the types that hold them.

The bytes are made by orjson (sorted keys), whose output is byte-identical to the standard library's
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` for every value this module
accepts; values orjson does not take (integers beyond 64 bits, lone surrogates) go through `json`.
Parsing uses the standard library's C scanner, which refuses floats and huge numbers as it reads.

Every value from outside the process is held to the same limits (`check_value`): nesting up to
MAX_DEPTH, integers up to MAX_INT_DIGITS digits, valid Unicode (no lone surrogates), string keys.
Every malformed input raises EncodingError, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

_MISSING = object()


class EncodingError(ValueError):
    """Bytes or values that are not canonical JSON of the expected shape."""


MAX_DEPTH = 64  # arrays and objects inside one another
MAX_INT_DIGITS = 80  # 2**256 has 78 digits
_INT_BOUND = 10**MAX_INT_DIGITS


class _Problem(Exception):
    """A value outside the limits; `path` is filled in on the way out of the walk."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []

    def error(self) -> EncodingError:
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path[::-1])
        where = where if len(where) <= 60 else where[:57] + "..."
        return EncodingError(f"{self.message} (at {where})")


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Problem("strings must be valid Unicode (found a lone surrogate)") from None


def _walk(value: Any, floats: bool, depth: int, max_depth: int = MAX_DEPTH) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, int):
        if not -_INT_BOUND < value < _INT_BOUND:
            raise _Problem(f"integers are limited to {MAX_INT_DIGITS} digits")
    elif isinstance(value, (dict, list)):
        if depth >= max_depth:
            raise _Problem(f"values are limited to {max_depth} levels of nesting")
        is_object = isinstance(value, dict)
        items: Iterable[tuple[Any, Any]] = (
            value.items() if isinstance(value, dict) else enumerate(value)
        )
        for key, item in items:
            if is_object:
                if not isinstance(key, str):
                    raise _Problem("object keys must be strings")
                _check_text(key)
            try:
                _walk(item, floats, depth + 1, max_depth)
            except _Problem as problem:
                problem.path.append(key)
                raise
    elif isinstance(value, float):
        if not floats:
            raise _Problem("floats are not allowed in canonical JSON")
        if value != value or value in (float("inf"), float("-inf")):
            raise _Problem("NaN and infinity are not JSON")
    else:
        raise _Problem(f"{type(value).__name__} is not a JSON value")


def check_value(value: Any, *, floats: bool = False, max_depth: int = MAX_DEPTH) -> None:
    """Raise EncodingError unless `value` is JSON within the limits: nesting up to `max_depth`
    (MAX_DEPTH, less for a value that goes inside another), integers up to MAX_INT_DIGITS digits,
    valid Unicode, string keys, floats only when allowed."""
    try:
        _walk(value, floats, 0, max_depth)
    except _Problem as problem:
        raise problem.error() from None


def encode(value: Any, *, max_depth: int = MAX_DEPTH) -> bytes:
    """Encode a JSON value canonically (EncodingError when it is outside the limits)."""
    check_value(value, max_depth=max_depth)
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


def _refuse_constant(text: str) -> Any:
    raise EncodingError(f"{text} is not JSON")


# made once: `json.loads` with hooks builds a new decoder for every call
_DECODERS = {
    False: json.JSONDecoder(parse_float=_refuse_float, parse_constant=_refuse_constant),
    True: json.JSONDecoder(parse_constant=_refuse_constant),
}


def _loads(text: str | bytes, floats: bool) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return _DECODERS[floats].decode(text)
    except EncodingError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or a number too long
        raise EncodingError(f"not JSON: {exc}") from None
    except RecursionError:
        raise EncodingError("not JSON: nested too deeply") from None


def parse(text: str | bytes, *, floats: bool = False) -> Any:
    """Parse JSON from outside the process (any spacing, any key order) within the limits of
    `check_value`; every malformed input raises EncodingError."""
    value = _loads(text, floats)
    check_value(value, floats=floats)
    return value


def _proves_limits(raw: bytes) -> bool:
    # Bytes orjson wrote hold only 64-bit integers and valid Unicode; this few brackets cannot
    # nest deeper than the limit.
    return raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH


def encode_within_limits(value: Any) -> bytes:
    """`encode_checked` of a value parsed from outside bytes (no floats, string keys), checking
    the other limits only when its bytes do not already prove them (a transaction in a block)."""
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        check_value(value)
        return encode_checked(value)
    if not _proves_limits(raw):
        check_value(value)
    return raw


def decode(raw: bytes, *, limits: bool = True) -> Any:
    """Decode canonical JSON; reject anything that does not re-encode to the same bytes, or
    (unless `limits` is off because the caller checks its parts) that is outside the limits."""
    value = _loads(raw, floats=False)
    again = encode_within_limits(value) if limits else encode_checked(value)
    if again != raw:
        raise EncodingError("JSON is not in canonical form")
    return value


def decode_trusted(raw: bytes) -> Any:
    """Parse bytes this process's own peer already decoded and checked as canonical (a block the
    peer hands its SCORE or its REST proxy), without the re-encoding check. (Not by orjson: it
    reads an integer beyond 64 bits as a float.) Malformed input still raises EncodingError."""
    return _loads(raw, floats=False)


def decode_object(raw: bytes, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Decode a canonical JSON object and check that each required field has its type."""
    value = decode(raw)
    return check_fields(value, required)


def check_fields(
    value: Any,
    required: dict[str, type | tuple[type, ...]],
    known: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Check that `value` is an object with the required fields of the given types (and, when
    `known` is given, no field outside it: bytes carried as received hold nothing unchecked)."""
    if not isinstance(value, dict):
        raise EncodingError("expected a JSON object")
    if known is not None and not known.issuperset(value):
        raise EncodingError(f"unknown fields {sorted(set(value) - known)[:5]}")
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
