"""The block explorer: a fixed set of static files (a page, one script, one stylesheet) served at
/explorer by every REST proxy. The page reads the chain through the proxy's own REST API v1.

Only the files listed in FILES are served, each by its own route and read once at start, so no
request path ever reaches the file system. Every answer carries a strict Content-Security-Policy
(scripts, styles and requests from this origin only, no inline script, no framing) and
`X-Content-Type-Options: nosniff`: the page shows data from the chain, which is user input.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

EXPLORER_DIR = Path(__file__).with_name("explorer")
# URL path → (file in EXPLORER_DIR, content type); /explorer and /explorer/ are the page
FILES = {
    "/explorer": ("index.html", "text/html"),
    "/explorer/": ("index.html", "text/html"),
    "/explorer/explorer.js": ("explorer.js", "text/javascript"),
    "/explorer/explorer.css": ("explorer.css", "text/css"),
    "/explorer/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def explorer_routes() -> list[web.RouteDef]:
    """GET routes for the explorer's files (HEAD too), each answering its bytes read now."""
    return [_file_route(path, name, content_type) for path, (name, content_type) in FILES.items()]


def _file_route(path: str, name: str, content_type: str) -> web.RouteDef:
    body = (EXPLORER_DIR / name).read_bytes()
    charset = None if content_type.startswith("image/") else "utf-8"

    async def serve(request: web.Request) -> web.Response:
        response = web.Response(body=body, content_type=content_type, charset=charset)
        response.headers.update(SECURITY_HEADERS)
        return response

    return web.get(path, serve)
