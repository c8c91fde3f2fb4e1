"""The test clients' polite POST: a 503 is asked again after a pause, anything else is the answer,
and a stop cuts the pause short."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools.procs import post_until_taken


class Server:
    """Answers POSTs with the statuses of `script` in turn (its last one from then on)."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.posts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                status = owner.script[min(owner.posts, len(owner.script) - 1)]
                owner.posts += 1
                body = json.dumps({"status": status}).encode()
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[list[int]], Server]]:
    started: list[Server] = []

    def start(script: list[int]) -> Server:
        started.append(Server(script))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_503s_are_asked_again_until_the_answer(serve: Callable[[list[int]], Server]) -> None:
    server = serve([503, 503, 200])
    assert post_until_taken(server.url, b"{}") == (200, {"status": 200}, 2)
    assert server.posts == 3


@pytest.mark.parametrize("status", [200, 400, 500])
def test_any_other_answer_is_returned_at_once(
    serve: Callable[[list[int]], Server], status: int
) -> None:
    server = serve([status])
    assert post_until_taken(server.url, b"{}") == (status, {"status": status}, 0)
    assert server.posts == 1


def test_a_stop_ends_the_asking_with_the_503(serve: Callable[[list[int]], Server]) -> None:
    server = serve([503])
    stop = threading.Event()
    stop.set()
    assert post_until_taken(server.url, b"{}", stop) == (503, {"status": 503}, 1)
    assert server.posts == 1


def test_past_the_deadline_the_503_is_the_answer(serve: Callable[[list[int]], Server]) -> None:
    server = serve([503])
    assert post_until_taken(server.url, b"{}", deadline=0.0) == (503, {"status": 503}, 0)
    assert server.posts == 1
