"""What strangers can make a process log is bounded (log review): bytes sent to a port must not
turn into log lines at the rate they are sent, which fills the disk."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration._rs_helpers import ROOT, StartRS, call
from tests.integration._slow_clients import until_closed
from tools.procs import free_port_pair

DEADLINE = 20.0
CONNECTIONS = 60


async def _handshake_fails(port: int, tls: bool) -> None:
    """Connect to the gRPC port, send what no TLS server takes (junk, or a TLS hello without a
    client certificate), and read until the server closes the connection."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
    async with asyncio.timeout(DEADLINE):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        except (ssl.SSLError, ConnectionError):
            return  # refused within the handshake: the server closed it
        try:
            writer.write(b"GET / HTTP/1.1\r\n\r\n" if not tls else b"PRI * HTTP/2.0\r\n\r\n")
            await writer.drain()
            while await reader.read(4096):
                pass
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_failed_tls_handshakes_leave_no_line_each_on_stderr(
    start_rs: StartRS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC's core wrote a line to stderr for each failed TLS handshake (past Python's logging
    and its rate limits): anyone reaching a TLS port filled the disk at ~390 KB/s. Its own lines
    below ERROR are no longer written, whatever the environment the process was started in."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)  # the process sets its own
    port, storage = free_port_pair(), tmp_path / "storage"
    flags = ("--radiostation", str(port))
    made = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tls_network.py"), "--storage", str(storage), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    rs = await start_rs(config={"GRPC_SSL_TYPE": 2}, port=port)
    before = len(rs.current_log())
    for tls in (False, True):
        await asyncio.gather(*(_handshake_fails(rs.port, tls) for _ in range(CONNECTIONS // 2)))
    status, _, _ = await call("GET", f"{rs.rest}/api/v1/peer/list")  # it still serves
    assert status == 200
    grown = rs.current_log()[before:]
    assert "Handshake failed" not in grown, grown[:600]
    assert len(grown) < 20 * CONNECTIONS, grown[:600]  # not a line a connection


async def test_malformed_http_requests_are_logged_at_a_bounded_rate(start_rs: StartRS) -> None:
    """Each HTTP request the server could not parse logged a warning line, at any rate (a review
    measured ~175 KB/s of log from one client); they are logged as other refusals are, at most
    RefusalLog's 20 lines a second, the others counted."""
    rs = await start_rs()
    before = len(rs.current_log())
    bad = b"GET /api/v1/peer/list HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
    sent = 200
    started = time.monotonic()
    for _ in range(sent // 20):
        answers = await asyncio.gather(
            *(until_closed(rs.rest_port, bad, DEADLINE) for _ in range(20))
        )
        assert all(b" 400 Bad Request\r\n" in a[:30] for a in answers), answers[0][:200]
    elapsed = time.monotonic() - started
    status, _, _ = await call("GET", f"{rs.rest}/api/v1/peer/list")
    assert status == 200
    lines = rs.current_log()[before:].count("refused a malformed HTTP request")
    # a bucket of 20 lines, refilled at 20 a second: the bound grows with the time the requests
    # took (a slower machine logs more of them, never one each)
    assert 1 <= lines <= 20 + 20 * elapsed + 1, (lines, elapsed)
    if elapsed < (sent - 22) / 20:  # they came faster than logged: some were counted instead
        assert lines < sent


WRITER = """
import logging, sys
from loopchain.configure import load_config, setup_logging
overrides = {"LOG_FILE_PATH": sys.argv[1], "LOG_FILE_ROTATE_MAX_BYTES": 4000,
             "LOG_FILE_ROTATE_BACKUP_COUNT": 60, "LOOPCHAIN_LOG_LEVEL": "INFO"}
setup_logging(load_config(environ={}, overrides=overrides), debug=False, process=sys.argv[2])
log = logging.getLogger("loopchain.test")
for n in range(int(sys.argv[3])):
    log.info("record %s-%d %s", sys.argv[2], n, "x" * 20)
"""


def test_processes_writing_one_rotated_log_file_lose_no_record(tmp_path: Path) -> None:
    """The peer, its REST proxy and its channel workers all write LOG_FILE_PATH. Each rotated it
    by itself: records went to files already renamed over, and backups were shifted out early
    (log review). Rotated under a lock, every record of three processes is in exactly one file,
    and no file is far past the bound."""
    path, records = tmp_path / "peer.log", 400
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"p{k}", str(records)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k in range(3)
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    files = [p for p in tmp_path.iterdir() if p.name.startswith("peer.log")]
    assert len(files) > 10  # rotated many times, by all three
    lines = [line for p in files for line in p.read_text().splitlines()]
    said = [line.partition("record ")[2].partition(" ")[0] for line in lines]
    assert sorted(said) == sorted(f"p{k}-{n}" for k in range(3) for n in range(records))
    assert all(p.stat().st_size <= 4000 + 200 for p in files)


ROTATION_TROUBLE = """
import logging, os, sys
from loopchain.configure import load_config, log_file_handler
folder, case = sys.argv[1], sys.argv[2]
path = os.path.join(folder, "peer.log")
config = load_config(environ={}, overrides={"LOG_FILE_PATH": path, "LOG_FILE_ROTATE_MAX_BYTES": 10_000})
handler = log_file_handler(config)
handler.setFormatter(logging.Formatter("%(message)s"))
handler.emit(logging.makeLogRecord({"msg": "first"}))
if case == "later":
    os.chmod(folder, 0o555)  # as its owner: nothing in it can be renamed or made any more
for n in range(2_000):
    handler.emit(logging.makeLogRecord({"msg": f"record {n} " + "y" * 80}))
handler.close()
print(type(handler).__name__, handler.lost)
"""


@pytest.mark.parametrize("case", ["at-start", "later"])
def test_a_log_file_that_cannot_be_rotated_keeps_its_records_and_says_so(
    tmp_path: Path, case: str
) -> None:
    """The rotated file is written under a lock file beside it, by concurrent_log_handler, which
    says nothing of a rotation that fails (review): a folder where no lock file can be made had
    every record lost (by size) or the process not start (by time), and one made read-only later
    had the file grow past its bound silently. Now the file takes every record, unrotated, and
    stderr says why (once a minute). Run as an unprivileged user, for permissions to bind."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    # a folder the other user reaches (pytest's are its owner's alone)
    folder = Path(tempfile.mkdtemp(prefix="loopchain-logs-", dir="/tmp"))
    try:
        (folder / "peer.log").touch()
        for made in (folder, folder / "peer.log"):
            os.chown(made, 65534, 65534)
        folder.chmod(0o555 if case == "at-start" else 0o755)  # at start: no lock file beside
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(
            [*nobody, sys.executable, "-c", ROTATION_TROUBLE, str(folder), case],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        folder.chmod(0o755)
        text = (folder / "peer.log").read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "0", done.stdout  # no record lost
    assert "record 1999 " in text and text.count("record ") == 2_000
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if "peer.log" in line]
    assert len(said) == 1, done.stderr  # once, not a line a record
    if case == "at-start":
        assert "without rotation: its lock file" in said[0] and "Permission denied" in said[0]
    else:
        assert "cannot be rotated" in said[0] and "it grows past its bound" in said[0], said
