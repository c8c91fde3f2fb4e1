"""A small blocking JSON client for the operator tools (demotool.py, gtool.py).

Every call has a deadline, reads at most MAX_REPLY_BYTES and turns every failure (a bad URL, no
answer, a reply that is not JSON, an error answered by the node) into one ToolError whose message is
one line a person can act on; the tools print it and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

MAX_REPLY_BYTES = 64 * 1024 * 1024  # a block of the largest size, with room to spare
DEFAULT_TIMEOUT = 10.0


class ToolError(Exception):
    """A failure to report on one line (exit status 1)."""


def base_url(text: str, default_scheme: str = "http") -> str:
    """`http(s)://host:port` (or `host:port`) checked and without a trailing slash; ValueError
    naming what is wrong otherwise."""
    text = text.strip()
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: the URL must start with http:// or https://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number in 1..65535") from None
    if not parts.hostname or port is None or port == 0:
        raise ValueError(f"{text!r}: expected http://host:port")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give only scheme, host and port (no path)")
    return f"{parts.scheme}://{parts.netloc}"


def _message(body: Any) -> str:
    if isinstance(body, dict):
        code, message = body.get("response_code"), body.get("message")
        if message is not None:
            return f"{message} (response_code {code})" if code is not None else str(message)
    return json.dumps(body)[:300] if not isinstance(body, str) else body[:300]


class RestClient:
    """JSON requests to one node's REST API (`base` is http(s)://host:port)."""

    def __init__(
        self, base: str, timeout: float = DEFAULT_TIMEOUT, headers: Mapping[str, str] | None = None
    ) -> None:
        self.base = base
        self.timeout = timeout
        self.headers = dict(headers or {})

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON) of one request; error statuses are returned, not raised.
        ToolError when there is no answer or the answer is not JSON."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        for name, value in {**self.headers, **(headers or {})}.items():
            request.add_header(name, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read(MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_REPLY_BYTES + 1)
        except TimeoutError:
            raise ToolError(f"{self.base} did not answer within {self.timeout:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolError(f"cannot reach {self.base}: {reason}") from None
        if len(raw) > MAX_REPLY_BYTES:
            raise ToolError(f"{method} {path}: the reply is larger than {MAX_REPLY_BYTES} bytes")
        try:
            return status, json.loads(raw or b"null")
        except (ValueError, RecursionError):
            raise ToolError(
                f"{method} {path} answered HTTP {status} with something that is not JSON"
            ) from None

    def ok(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON of a successful request (HTTP 200 and response_code 0 when there is
        one); ToolError with the node's message otherwise."""
        status, reply = self.call(method, path, params, body, headers)
        code = reply.get("response_code", 0) if isinstance(reply, dict) else 0
        if status != 200 or code not in (0, "0"):
            raise ToolError(f"{method} {path}: HTTP {status}: {_message(reply)}")
        return reply

    def get(self, path: str, **params: Any) -> Any:
        return self.ok("GET", path, params)


def url_arg(text: str) -> str:
    """argparse type: a REST base URL (base_url), refused with its reason."""
    try:
        return base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    """argparse type: a number of seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 3600] seconds")
    return value
