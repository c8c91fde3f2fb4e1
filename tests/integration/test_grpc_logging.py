"""What a process's output shows when its gRPC server meets calls cancelled before their handlers
ran: one INFO line each, naming the method, and no traceback (grpc.aio logs each as an unhandled
CancelledError and then prints its traceback to stderr itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._cancelled_rpcs import METHOD
from tools.procs import log_problems

ROOT = Path(__file__).resolve().parents[2]
CALLS = 20


@pytest.mark.parametrize("process", ["peer", "bench_sync"])
def test_calls_cancelled_before_their_handlers_ran_are_info_lines_without_tracebacks(
    process: str,
) -> None:
    # (tools/bench_sync.py serves a chain in-process: its fresh peer gives up ranges so)
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration._cancelled_rpcs", str(CALLS)]
        + ([process] if process == "bench_sync" else []),
        cwd=ROOT,
        env={**os.environ, "LOOPCHAIN_LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{CALLS} of {CALLS} calls refused" in done.stderr, done.stderr[-3000:]
    cancelled = [
        line for line in done.stderr.splitlines() if "cancelled before its handler" in line
    ]
    assert cancelled, done.stderr[-3000:]  # the case this test is about did happen
    assert all(" INFO " in line and f"RPC {METHOD} was" in line for line in cancelled), cancelled
    assert log_problems(done.stderr) == [], done.stderr[-3000:]
    assert "never awaited" not in done.stderr, done.stderr[-3000:]  # the unstarted handler
