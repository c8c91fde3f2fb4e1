"""Request bodies of the RadioStation's REST API, read strictly: one JSON object of valid Unicode
with finite numbers of bounded length. Whatever the parser would choke on (deep nesting, numbers
past the interpreter's digit limit, NaN and Infinity, lone surrogates, bytes that are not UTF-8) is
a BadBody naming the problem, never an exception of the parser."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_NUMBER_DIGITS = 1000  # longer numbers are refused as they are read


class BadBody(ValueError):
    """A request body that is not one acceptable JSON object; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has {digits} digits; at most {MAX_NUMBER_DIGITS} are accepted")
    return int(text)


def _not_json(reason: str) -> BadBody:
    return BadBody(f"request body is not valid JSON: {reason}")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; BadBody otherwise."""
    if not raw.strip():
        raise BadBody("request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        body = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates do not encode
    except UnicodeEncodeError:
        raise _not_json("a string holds a lone surrogate (\\ud800-\\udfff)") from None
    except ValueError as exc:  # JSONDecodeError, or a refused number
        raise _not_json(str(exc)) from None
    except RecursionError:
        raise _not_json("it is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadBody(f"request body must be a JSON object, not {type(body).__name__}")
    return body
