"""Restart far behind under load (slow): in `./localnet.sh --tls --channels alpha,beta`, with 64
clients (`tools/loadtool.py`, 8 a channel and REST port) submitting, once each channel holds
CHAIN_TXS transactions one peer is killed with kill -9, stays down until each channel is BEHIND
blocks past it, and is restarted in place with `./localnet.sh --restart`. While it catches up
(two channels' blocks and their signatures, and the loading of its transaction filters) its
REST proxy answers every call within its deadline: 503 with Retry-After when the peer is full,
never 504. Every transaction acknowledged, by it too, is final.

    .venv/bin/pytest -m slow -n0 -s tests/e2e/test_restart_far_behind.py

Before the signatures of synced ranges and the filter's loading were moved beside the event
loop, such restarts gave 1-16 answers 504 (the peer's loop ran ~30 iterations a second, and
gRPC's server takes in a new call every couple of them). Nothing waits for a fixed time: each
step waits on a condition, with deadlines far above its need.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tools.procs import ROOT, Proc, _bindable, get, wait_until

pytestmark = pytest.mark.slow

CHANNELS = ("alpha", "beta")
REST = (9000, 9100, 9200, 9300)
VICTIM = 7300  # its REST proxy is on 9200
CLIENTS = 8  # a channel and REST port: 64 in all
CHAIN_TXS = 100_000  # transactions each channel holds before the kill: a filter to load
BEHIND = 800  # blocks each channel makes while the victim is down
STEP_DEADLINE = 900.0
PORTS = (7100, 7200, 7300, 7400, 7102, 9000, 9100, 9200, 9300, 9002)


def _status(rest: int, channel: str) -> dict[str, int | str]:
    status: dict[str, int | str] = get(
        f"http://127.0.0.1:{rest}/api/v1/status/peer?channel={channel}"
    )
    return status


def _height(rest: int, channel: str) -> int:
    return int(_status(rest, channel)["block_height"])


def _heights(channel: str, ports: tuple[int, ...] = REST) -> list[int]:
    return [_height(rest, channel) for rest in ports]


@pytest.mark.timeout(3600)
def test_a_peer_restarted_far_behind_under_load_answers_no_504(tmp_path: Path) -> None:
    busy = [port for port in PORTS if not _bindable(port)]
    if busy:
        pytest.skip(f"the local network's ports {busy} are in use (a local network runs?)")
    data = tmp_path / "net"
    command = ["./localnet.sh", "--data", str(data), "--tls", "--channels", ",".join(CHANNELS)]
    net = Proc("localnet", command, tmp_path, python=None).start()
    loads: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        wait_until(lambda: "Press Ctrl-C" in net.log_path.read_text(), 120, "the network up")
        for channel in CHANNELS:
            for rest in REST:
                out = tmp_path / f"load_{channel}_{rest}.json"
                load = [
                    str(ROOT / ".venv/bin/python"), "tools/loadtool.py", "-c", str(CLIENTS),
                    "-p", f"http://127.0.0.1:{rest}", "--channel", channel, "-t", "0",
                    "-m", "3600", "--drain", "180", "--json",
                ]  # fmt: skip
                with open(out, "wb") as stdout:
                    proc = subprocess.Popen(
                        load, cwd=ROOT, stdout=stdout, stderr=subprocess.DEVNULL
                    )
                loads.append((f"{channel}@{rest}", proc, out))
        victim_rest = VICTIM + 1900
        wait_until(
            lambda: all(int(_status(victim_rest, c)["total_tx"]) >= CHAIN_TXS for c in CHANNELS),
            STEP_DEADLINE,
            f"{CHAIN_TXS} transactions in each channel",
        )
        left_at = {c: _height(victim_rest, c) for c in CHANNELS}
        os.kill(int((data / "pids" / f"peer_{VICTIM}.pid").read_text()), signal.SIGKILL)
        others = tuple(r for r in REST if r != victim_rest)
        wait_until(
            lambda: all(min(_heights(c, others)) >= left_at[c] + BEHIND for c in CHANNELS),
            STEP_DEADLINE,
            f"each channel {BEHIND} blocks past the victim",
        )
        restart = ["./localnet.sh", "--data", str(data), "--restart", str(VICTIM)]
        again = subprocess.run(restart, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again
        ahead = {c: max(_heights(c, others)) for c in CHANNELS}
        wait_until(
            lambda: all(_height(victim_rest, c) >= ahead[c] for c in CHANNELS),
            STEP_DEADLINE,
            "the victim caught up",
        )
        for _name, proc, _out in loads:
            proc.send_signal(signal.SIGINT)  # stop sending; wait for what was acknowledged
        for name, proc, _out in loads:
            assert proc.wait(300) == 0, f"loadtool {name} failed"
        reports = {name: json.loads(out.read_text()) for name, _proc, out in loads}
    finally:
        for _name, proc, _out in loads:
            if proc.poll() is None:
                proc.kill()
        net.stop(60)
    for name, report in reports.items():
        # the victim's proxy died with it: connection errors there; 503 anywhere when full
        unexpected = {k: n for k, n in report["errors"].items() if "503" not in k}
        if name.endswith(f"@{victim_rest}"):
            unexpected = {k: n for k, n in unexpected.items() if "connection" not in k}
        assert not unexpected, (name, report["errors"])
        assert report["committed"] > 0 and report["uncommitted"] == 0, (name, report)
