"""Reading and checking REST request input: JSON bodies, hashes, heights and channels."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from loopchain.rest.errors import invalid_params
from loopchain.types import canonical
from loopchain.types.canonical import EncodingError

_HASH = re.compile(r"[0-9a-fA-F]{64}")
_HEIGHT = re.compile(r"[0-9]{1,18}")
MAX_CHANNEL_CHARS = 128


async def read_body(request: web.Request, max_bytes: int) -> str:
    """The request body as UTF-8 text; 413 when over `max_bytes`, 400 when empty or not UTF-8."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)
    raw = await request.read()  # aiohttp raises 413 itself past client_max_size
    if not raw.strip():
        raise invalid_params("the request body is empty; send a JSON object")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_params(f"the request body is not UTF-8 text: {exc}") from None


def parse_json(text: str) -> Any:
    """Parse strict JSON within the limits (no NaN or Infinity, nesting, integer length, valid
    Unicode); 400 naming the error when malformed."""
    try:
        return canonical.parse(text, floats=True)  # floats are refused in transactions, later
    except EncodingError as exc:
        raise invalid_params(f"the request body is malformed JSON: {exc}") from None


def require_object(value: Any, what: str = "the request body") -> dict[str, Any]:
    """The value when it is a JSON object, else a 400 naming what it is."""
    if not isinstance(value, dict):
        raise invalid_params(f"{what} must be a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name
    return "a number"


def compact_json(value: Any) -> str:
    """Re-serialise a parsed JSON value without insignificant whitespace."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def body_channel(body: Any, request: web.Request) -> str:
    """The `channel` field of a JSON body (else the `channel` query argument, else "")."""
    channel = body.get("channel") if isinstance(body, dict) else None
    if channel is None:
        return query_channel(request)
    if not isinstance(channel, str):
        raise invalid_params(f"the channel field must be a string, got {_json_kind(channel)}")
    return check_channel(channel)


def query_channel(request: web.Request) -> str:
    """The `channel` query argument, or "" for the peer's default channel."""
    return check_channel(request.query.get("channel", ""))


def check_channel(name: str) -> str:
    """`name` when it can name a channel (printable, at most MAX_CHANNEL_CHARS), else a 400."""
    if len(name) > MAX_CHANNEL_CHARS or not name.isprintable() or not _encodable(name):
        raise invalid_params(
            f"channel {name[:40]!r} is not a channel name: at most {MAX_CHANNEL_CHARS} "
            "printable characters"
        )
    return name


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def hash_arg(request: web.Request, name: str = "hash") -> str:
    """A required 64-hex-digit hash query argument (an optional 0x prefix is dropped), lowercased."""
    value = request.query.get(name)
    if value is None or value == "":
        raise invalid_params(f"the query argument {name!r} is missing; give a 64-hex-digit hash")
    return check_hash(value, name)


def check_hash(value: str, name: str) -> str:
    """`value` as a lowercase 64-hex-digit hash, or a 400 saying why not."""
    text = value[2:] if value.lower().startswith("0x") else value
    if not _HASH.fullmatch(text):
        raise invalid_params(f"{name} {value!r} is not a hash: expected 64 hex digits")
    return text.lower()


def height_arg(request: web.Request) -> int | None:
    """The optional non-negative integer `height` query argument."""
    value = request.query.get("height")
    if value is None:
        return None
    if not _HEIGHT.fullmatch(value):
        raise invalid_params(f"height {value!r} is not a non-negative integer")
    return int(value)
