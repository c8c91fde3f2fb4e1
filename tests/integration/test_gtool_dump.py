"""gtool.py dump --out against a small HTTP server on 127.0.0.1 answering the channel data: the file
is written whole and durably (loopchain.durable.write_atomic), readable by all (0644, as
listed_channels.py writes it) whatever the umask, and a path that cannot be written is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.procs import ROOT

GTOOL = ROOT / "tools" / "gtool.py"
TOOL_DEADLINE = 60.0
CHANNELS = {"kofia_1": {"score_package": "loopchain/default", "peers": []}}


class _ChannelData(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"response_code": 0, "data": CHANNELS}).encode()
        self.send_response(200 if self.path == "/api/v1/channel/data" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def radiostation() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChannelData)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TOOL_DEADLINE)


def dump(url: str, out: Path, umask: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GTOOL), "-r", url, "dump", "--out", str(out)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_DEADLINE,
        check=False,
        umask=umask,
    )


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_dump_writes_a_file_readable_by_all_and_nothing_else(
    radiostation: str, tmp_path: Path, umask: int
) -> None:
    out = tmp_path / "channel_manage_data.json"
    done = dump(radiostation, out, umask)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == CHANNELS
    assert out.stat().st_mode & 0o777 == 0o644
    out.write_text("old")
    out.chmod(0o600)
    done = dump(radiostation, out, umask)  # replaces a file there, mode and all
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == CHANNELS
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


@pytest.mark.parametrize("where", ["folder", "file/c.json", "missing/c.json"])
def test_dump_to_a_path_that_cannot_be_a_file_is_one_line(
    radiostation: str, tmp_path: Path, where: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a file")
    done = dump(radiostation, tmp_path / where, 0o022)
    assert done.returncode == 1
    assert done.stderr.startswith(f"gtool: cannot write {tmp_path / where}: ")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


@pytest.mark.parametrize(
    "content", [b"\x00\xff\xfe binary", b"abc\ndef", b"token with spaces", b"caf\xc3\xa9"]
)
def test_a_token_file_that_holds_no_token_is_named_as_such(
    radiostation: str, tmp_path: Path, content: bytes
) -> None:
    """Not sent (it was, and its refusal blamed on the RadioStation: 'latin-1' codec can't
    encode characters, review)."""
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    args = ["-r", radiostation, "--token-file", str(token_file), "add-channel", "kofia_2"]
    done = subprocess.run(
        [sys.executable, str(GTOOL), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_DEADLINE,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == f"gtool: {token_file} does not hold an operator token\n"
