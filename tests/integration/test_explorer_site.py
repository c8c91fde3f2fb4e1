"""The block explorer's files as the REST proxy serves them (create_app on 127.0.0.1, a free port,
in this process; no call reaches a peer): content types, security headers, nothing but the listed
files (unknown names 404, `../` never reaches the disk), and a page that loads only its own assets
and puts chain data in as text only. The page itself runs in Chromium in tests/e2e/test_explorer.py
(slow suite)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from loopchain.configure import load_config
from loopchain.rest.app import create_app
from loopchain.rest.explorer_site import EXPLORER_DIR, FILES, SECURITY_HEADERS

DEADLINE_S = 10.0
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECRET_FILES = (  # what a path escaping the explorer's directory could reach
    Path(__file__).resolve().parents[2] / "pyproject.toml",
    EXPLORER_DIR.parent / "app.py",
)


@pytest_asyncio.fixture
async def base() -> AsyncIterator[tuple[str, int]]:
    app = create_app(load_config(environ={}), "127.0.0.1:1")
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


async def raw_get(
    where: tuple[str, int], target: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """`method target` sent byte for byte (no client normalises the path); status, headers, body."""
    async with asyncio.timeout(DEADLINE_S):
        reader, writer = await asyncio.open_connection(*where)
        try:
            writer.write(
                f"{method} {target} HTTP/1.1\r\nHost: {where[0]}:{where[1]}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize("path", sorted(FILES))
async def test_each_file_is_served_with_its_type_and_the_security_headers(
    base: tuple[str, int], path: str
) -> None:
    name = FILES[path][0]
    status, headers, body = await raw_get(base, path)
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPES[name]
    assert body == (EXPLORER_DIR / name).read_bytes()
    for header, value in SECURITY_HEADERS.items():
        assert headers[header.lower()] == value
    head_status, head_headers, head_body = await raw_get(base, path, "HEAD")
    assert (head_status, head_body) == (200, b"")
    assert head_headers["x-content-type-options"] == "nosniff"


def test_the_policy_allows_this_origin_only_and_no_inline_script() -> None:
    policy = dict(
        (part.split()[0], part.split()[1:])
        for part in SECURITY_HEADERS["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "img-src", "connect-src"):
        assert policy[directive] == ["'self'"], directive
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "target",
    [
        "/explorer/index.htm",
        "/explorer/explorer.js/",
        "/explorer/EXPLORER.JS",
        "/explorer/openapi.json",
        "/explorer/app.py",
        "/explorer/explorer",
        "/explorer/.",
        "/explorerx",
        "/explorer.js",
    ],
)
async def test_names_not_listed_are_404_with_the_json_error(
    base: tuple[str, int], target: str
) -> None:
    status, headers, body = await raw_get(base, target)
    assert status == 404, (target, body)
    assert headers["content-type"].startswith("application/json")
    assert b'"response_code": -999' in body or b'"response_code":-999' in body


@pytest.mark.parametrize(
    "target",
    [
        "/explorer/../app.py",
        "/explorer/../../../pyproject.toml",
        "/explorer/..%2fapp.py",
        "/explorer/%2e%2e/app.py",
        "/explorer/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/explorer/..%5capp.py",
        "/explorer/..\\app.py",
        "/explorer/./../../rest/app.py",
        "/explorer//../app.py",
    ],
)
async def test_a_path_out_of_the_explorer_is_refused(base: tuple[str, int], target: str) -> None:
    status, _, body = await raw_get(base, target)
    assert 400 <= status < 500, (target, status)
    for secret in SECRET_FILES:
        assert secret.read_bytes()[:200] not in body
    assert b"[build-system]" not in body and b"def create_app" not in body


class _Page(HTMLParser):
    """The references, scripts and inline code of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []  # inline handlers, style attributes and <style> elements
        self._in_script = False
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.references += [v for k, v in attrs if k in ("src", "href", "action") and v]
        self.inline += [k for k, _ in attrs if k.startswith("on") or k == "style"]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_page_loads_only_its_own_assets_and_no_inline_code() -> None:
    page = _Page()
    page.feed((EXPLORER_DIR / "index.html").read_text(encoding="utf-8"))
    assets = {path for path in FILES if path.count("/") == 2 and not path.endswith("/")}
    assert set(page.references) - {"#/"} == assets
    assert page.scripts == [{"src": "/explorer/explorer.js", "defer": None}]
    assert page.script_text.strip() == "" and page.inline == []


def test_the_script_puts_chain_data_in_as_text_and_fetches_nothing_from_elsewhere() -> None:
    script = (EXPLORER_DIR / "explorer.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        "createContextualFragment",
        "DOMParser",
        "srcdoc",
    ):
        assert sink not in script, sink
    assert re.findall(r"(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}", script) == []
    paths = set(re.findall(r'api\("(/[^"]*)"', script))
    assert paths == {
        "/api/v1/blocks",
        "/api/v1/status/peer",
        "/api/v1/transactions",
        "/api/v1/transactions/result",
    }
    style = (EXPLORER_DIR / "explorer.css").read_text(encoding="utf-8")
    assert "url(" not in style and "@import" not in style
