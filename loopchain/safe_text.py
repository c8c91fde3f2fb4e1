"""Text that may carry what an outsider sent (a channel name, a JSON key, a method), made safe to
show: on one line (a log line cannot be forged by a newline in a request), encodable as UTF-8 (a
lone surrogate does not break a log handler), and bounded (a 200 KB value is not echoed in full).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# Characters that end or rewrite a line on a terminal or in a log reader: C0 controls but tab,
# DEL, C1 controls (NEL among them), Unicode's line and paragraph separators, and its direction
# marks, embeddings, overrides and isolates, which show a line's text in another order than it
# is (a request naming "\u202etluafed" reads as "default"; log review).
_ESCAPES = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x09
}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r"})
_ESCAPES.update(
    {
        code: f"\\u{code:04x}"
        for code in (
            0x061C,
            0x200E,
            0x200F,
            0x2028,
            0x2029,
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
        )
    }
)

MAX_LOG_MESSAGE = 8_000  # characters of one log record's message
# A gRPC status message travels percent-encoded in a trailer (3 bytes for each byte of UTF-8
# outside printable ASCII); clients refuse trailers past 8 KiB (gRPC's soft limit: some calls)
# and 16 KiB (all), and the caller then sees "Stream removed", not the refusal.
MAX_DETAILS_BYTES = 4_096


def one_line(text: str) -> str:
    """`text` with its line-breaking and control characters written as escapes and any lone
    surrogate as a backslash escape."""
    if text.isprintable():
        return text
    text = text.translate(_ESCAPES)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _cut(text: str, keep: int) -> str:
    """`text` shown by its first two thirds and last third of `keep` characters, saying how long
    it was: a value quoted in a message is cut, the message's reason after it stays."""
    tail = keep // 3
    return f"{text[: keep - tail]} ...({len(text)} characters)... {text[len(text) - tail :]}"


def bounded(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters (see _cut) when longer."""
    return text if len(text) <= limit else _cut(text, limit)


def status_details(message: str, max_bytes: int = MAX_DETAILS_BYTES) -> str:
    """`message` as a gRPC status message: one line, at most `max_bytes` once encoded."""
    text = one_line(message)
    if text.isascii():
        if len(text) + 2 * text.count("%") <= max_bytes:
            return text
        return _cut(text, max_bytes // 3 - 60)  # '%' may take three bytes each
    if 3 * len(text.encode("utf-8")) <= max_bytes:
        return text
    return _cut(text, max_bytes // 12 - 60)  # up to 4 bytes of UTF-8, each sent as 3


# An absolute path in a message (a store's, a socket's as gRPC names it: "unix:/tmp/..." or
# "unix:///tmp/..."): one that starts the message or follows a space, a quote, a bracket, "=",
# ":" or ","
_PATH = re.compile(r"""(?:(?<=^)|(?<=[\s'"(\[=:,]))(?:///|/)[\w.~@+-][^\s'",;:)\]]*""")


def without_paths(text: str) -> str:
    """`text` with each absolute path written "<path>": words of this machine handed to a
    client (a SCORE's failure, which names its store or socket) do not tell its layout. Best
    effort: a path is taken to end at a space, so one with spaces in it shows its tail."""
    return _PATH.sub("<path>", text)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PLACE_KEY = 40  # characters of one key shown in a place (a longer one is cut)


def json_place(parts: Iterable[str | int]) -> str:
    """Where a value is in a JSON document, as `peers[3].weight` or `groups["g 1"].weight`: keys
    that are names after a dot, other keys quoted in brackets (on one line, cut to MAX_PLACE_KEY
    characters: keys may be what a caller sent), indexes in brackets."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif len(part) <= MAX_PLACE_KEY and _NAME.fullmatch(part):
            text += f".{part}" if text else part
        else:
            inner = one_line(json.dumps(part[:MAX_PLACE_KEY], ensure_ascii=False)[1:-1])
            if len(part) > MAX_PLACE_KEY or len(inner) > MAX_PLACE_KEY:
                inner = f"{inner[: MAX_PLACE_KEY - 3]}..."
            text += f'["{inner}"]'
    return text
