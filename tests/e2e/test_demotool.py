"""tools/demotool.py and the load tool's report, run as processes against a real network: every
subcommand, its --json form, the menu on a terminal, and the errors (one line, exit 1 or 2)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._tty import run_on_tty
from tools.loadtool import RestTransport
from tools.procs import ROOT, LocalNetwork, free_port_pair, get, run_tool, wait_until

DEMOTOOL = ROOT / "tools" / "demotool.py"
LOADTOOL = ROOT / "tools" / "loadtool.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("demotool"))
    try:
        network.start_with_peers(1)
        yield network
    finally:
        network.stop_and_check()


@pytest.fixture
def peer(net: LocalNetwork) -> str:
    return net.rest(next(iter(net.peers)))


def run(
    script: Path, *args: str, cwd: Path, deadline: float = 60
) -> subprocess.CompletedProcess[str]:
    """The tool as a process from `cwd` (not the repository), never a traceback."""
    done = run_tool(script, *args, cwd=cwd, deadline=deadline)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def demo(peer: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(DEMOTOOL, "-p", peer, *args, cwd=cwd)


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tx_find_and_wait(peer: str, tmp_path: Path) -> None:
    done = demo(peer, "tx", "-n", "3", "--data", '{"data": "demo"}', "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert len(rows) == 3 and all(len(h) == 64 and int(height) >= 0 for h, height in rows)
    tx_hash = rows[0][0]
    # --wait waits until the transactions are final; the peer executes them a moment later
    result_url = f"{peer}/api/v1/transactions/result?hash={tx_hash}"
    wait_until(lambda: get(result_url)["response"]["code"] != 2, 60, "the result of the first")

    found = ok_json(demo(peer, "--json", "find", tx_hash, cwd=tmp_path))
    assert found["tx_hash"] == tx_hash
    assert found["transaction"]["data"] == {"data": "demo"}
    assert found["transaction"]["block_height"] == int(rows[0][1])
    assert found["result"]["code"] == 0
    text = demo(peer, "find", "0x" + tx_hash, cwd=tmp_path)
    assert text.returncode == 0 and f"block        {rows[0][1]}" in text.stdout
    assert "result       0 (success)" in text.stdout and '{"data": "demo"}' in text.stdout

    listed = ok_json(demo(peer, "--json", "tx", "-n", "2", cwd=tmp_path))
    assert len({row["tx_hash"] for row in listed}) == 2


def test_status_blocks_monitor_and_query(net: LocalNetwork, peer: str, tmp_path: Path) -> None:
    port = next(iter(net.peers))
    for n in range(2):  # blocks of its own, whichever tests ran before it
        tx_hash = net.submit(port, {"data": f"status {n}"})
        wait_until(lambda h=tx_hash: net.final_on(port, h), 60, f"block {n + 1}")
    wait_until(lambda: net.height(port) >= 2, 60, "three blocks")
    status = ok_json(demo(peer, "--json", "status", cwd=tmp_path))
    assert status["peer"]["peer_id"] == net.status(port)["peer_id"]
    assert status["score"]["id"] == "loopchain/default"
    text = demo(peer, "status", cwd=tmp_path).stdout
    assert f"peer_id          {status['peer']['peer_id']}" in text
    pending = status["peer"]["pending_validator_count"]
    assert f"pending_validator_count {pending}\n" in text, text

    back = ok_json(demo(peer, "--json", "blocks", "--count", "3", cwd=tmp_path))
    assert len(back) == 3
    assert [b["height"] for b in back] == list(range(back[0]["height"], back[0]["height"] - 3, -1))
    assert back[0]["prev_hash"] == back[1]["hash"] and back[1]["prev_hash"] == back[2]["hash"]
    ranged = ok_json(demo(peer, "--json", "blocks", "--from", "0", "--to", "2", cwd=tmp_path))
    assert [b["height"] for b in ranged] == [0, 1, 2]
    assert ranged[2]["hash"] == net.block_hash_at(port, 2)
    assert ranged[0]["tx_count"] == 0  # the genesis block holds none
    table = demo(peer, "blocks", "--from", "1", "--to", "1", cwd=tmp_path).stdout
    assert ranged[1]["hash"] in table and f"{ranged[1]['tx_count']:>5} txs" in table

    done = demo(peer, "--json", "monitor", "--count", "2", "--interval", "0.1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    samples = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(samples) == 2 and all(s["block_height"] >= 2 for s in samples)
    assert samples[0]["leader_id"] == status["peer"]["peer_id"]  # the only validator leads
    text = demo(peer, "monitor", "--count", "1", cwd=tmp_path).stdout
    assert "height" in text and "leader" in text and "pool" in text

    answer = ok_json(demo(peer, "--json", "query", '{"ask": [1, 2]}', cwd=tmp_path))
    assert answer["response"] == {"ask": [1, 2]}  # loopchain/default echoes the query


def test_load_subcommand_runs_the_load_tool(peer: str, tmp_path: Path) -> None:
    done = demo(peer, "--json", "load", "-c", "2", "-m", "1s", "--drain", "20", cwd=tmp_path)
    summary = ok_json(done)
    assert summary["target"] == peer and summary["clients"] == 2
    assert summary["submitted"] > 0 and summary["committed"] == summary["submitted"]


def test_errors_are_one_line_and_a_non_zero_exit(peer: str, tmp_path: Path) -> None:
    cases = [
        ((peer, "find", "ab" * 32), 1, "not found"),
        ((peer, "find", "xyz"), 1, "not a hash"),
        ((peer, "blocks", "--from", "999990", "--to", "999999"), 1, "not found"),
        ((peer, "blocks", "--from", "5", "--to", "2"), 1, "in order"),
        ((peer, "tx", "--data", "[1]"), 2, "must be a JSON object"),
        ((peer, "tx", "-n", "0"), 2, "not in 1..10000"),
        ((peer, "query", "{"), 2, "not JSON"),
        (("ftp://h:1", "status"), 2, "http://"),
        (("http://127.0.0.1:notaport", "status"), 2, "port"),
        (("http://h:1/api", "status"), 2, "no path"),
        ((peer, "nosuch"), 2, "invalid choice"),
    ]
    down = f"http://127.0.0.1:{free_port_pair() + 1900}"
    cases += [((down, cmd), 1, "cannot reach") for cmd in ("status", "tx", "blocks")]
    cases += [((down, "monitor", "--count", "2", "--interval", "0.1"), 1, "cannot reach")]
    cases += [((down, "load", "-m", "1s"), 1, "cannot read the chain")]
    for (url, *args), code, words in cases:
        done = run(DEMOTOOL, "-p", url, *args, cwd=tmp_path)
        assert done.returncode == code and words in done.stderr, (args, done.stderr)
        if code == 1 and args[0] not in ("monitor", "load"):
            assert done.stderr.count("\n") == 1, done.stderr  # one line


def test_help_and_no_subcommand_without_a_terminal(tmp_path: Path) -> None:
    done = run(DEMOTOOL, "--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("tx", "find", "status", "blocks", "monitor", "query", "load"):
        assert command in done.stdout
    done = run(DEMOTOOL, cwd=tmp_path)
    assert done.returncode == 2 and "usage:" in done.stderr and done.stdout == ""


def test_menu_on_a_terminal(net: LocalNetwork, peer: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(DEMOTOOL), "-p", peer]
    answers = [
        ("select", "3"),  # peer status
        ("select", "1"),  # create transactions
        ("how many", "2"),
        ("data", ""),  # the default {"data": "hello"}
        ("select", "2"),  # find a transaction
        ("transaction hash", "cd" * 32),
        ("select", "9"),  # no such entry
        ("select", "0"),
    ]
    done = run_on_tty(argv, answers, env=env, cwd=str(tmp_path), deadline=60)
    assert done.exit_code == 0, done.output
    assert "1. create transactions" in done.output and "0. quit" in done.output
    assert f"peer_id          {net.status(next(iter(net.peers)))['peer_id']}" in done.output
    hashes = [w for w in done.output.split() if len(w) == 64 and w != "cd" * 32]
    assert len(hashes) >= 2  # the two new transactions
    assert "error: GET /api/v1/transactions: HTTP 404" in done.output  # and the menu goes on
    assert "no entry '9'" in done.output
    assert "Traceback" not in done.output


# ------------------------------------------------------------------ the load tool's report


def _block_fetches(peer: str) -> float:
    """GET /api/v1/blocks answered 200 by the peer's REST proxy so far (its metrics)."""
    with urllib.request.urlopen(f"{peer}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    route = 'route="/api/v1/blocks",status="200"'
    return sum(float(line.split()[-1]) for line in text.splitlines() if route in line)


def test_load_report_figures_add_up(peer: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = run(
        LOADTOOL,
        *("-p", peer, "-c", "3", "-m", "3s", "--drain", "30", "--progress", "--report", str(out)),
        cwd=tmp_path,
        deadline=120,
    )
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if "acknowledged" in line]
    assert len(progress) >= 2 and all("sent" in line and "errors" in line for line in progress)

    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert report["requests"] == sum(report["answers"].values()) > 0
    assert report["acknowledged"] == summary["submitted"] == report["answers"].get("http 200", 0)
    errors = sum(n for kind, n in summary["errors"].items() if not kind.startswith("chain poll"))
    assert report["requests"] == report["acknowledged"] + errors
    # the report rounds the rate to 4 places
    assert report["success_rate"] == pytest.approx(
        report["acknowledged"] / report["requests"], abs=5e-5
    )
    assert report["committed"] + summary["uncommitted"] == summary["submitted"]
    assert report["committed"] == summary["submitted"]  # the drain was long enough
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    reply = report["reply_latency_ms"]
    assert 0 < reply["p50"] <= reply["max"] <= lat["max"]  # acknowledged before committed
    assert report["throughput"]["acknowledged_per_s"] == pytest.approx(
        summary["submitted"] / summary["send_seconds"], rel=0.01
    )

    markdown = (out / "report.md").read_text()
    assert "| figure | value |" in markdown and "| status | count |" in markdown
    assert f"| acknowledged | {report['acknowledged']} |" in markdown
    assert f"| commit latency p99 (ms) | {lat['p99']} |" in markdown
    assert f"| http 200 | {report['answers']['http 200']} |" in markdown

    png = (out / "latency.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "latency.png").shape[:2]
    assert (width, height) == (900, 450)


def test_the_chain_watcher_fetches_the_last_block_only_when_the_status_names_a_new_one(
    peer: str,
) -> None:
    def idle() -> bool:  # what earlier tests sent is final: no block comes until this one sends
        return bool(get(f"{peer}/api/v1/status/peer")["tx_pool_size"] == 0)

    wait_until(idle, 120, "an empty pool")

    async def watch() -> None:
        transport = RestTransport(peer, "", 10.0, 2)
        try:
            first = await transport.last_block()
            fetched = _block_fetches(peer)
            for _ in range(5):  # an idle chain: the status names the same tip each time
                assert await transport.last_block() == first
            assert _block_fetches(peer) == fetched
            tx_hash = await transport.create_tx({"data": {"watcher": os.urandom(4).hex()}})
            height = first.height if first is not None else -1
            deadline = time.monotonic() + 60
            while (tip := await transport.last_block()) is None or tip.height <= height:
                assert time.monotonic() < deadline, "no new block within 60 s"
                await asyncio.sleep(0.1)
            fetched = _block_fetches(peer)
            new = await transport.new_blocks(tip, height)
            assert [block.height for block in new] == list(range(height + 1, tip.height + 1))
            assert any(tx_hash in (block.tx_hashes or ()) for block in new)
            assert _block_fetches(peer) - fetched == len(new) - 1  # the tip was fetched already
            assert await transport.new_blocks(tip, tip.height) == []
        finally:
            await transport.close()

    asyncio.run(watch())


def test_load_report_refuses_an_unwritable_directory(peer: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run(
        LOADTOOL,
        *("-p", peer, "-m", "0.5s", "--drain", "10", "--report", str(blocker / "sub")),
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "cannot write the report" in done.stderr


def test_tx_wait_says_which_transactions_the_score_failed_and_exits_1(tmp_path: Path) -> None:
    """`tx --wait` printed the hash and height of a transaction its SCORE failed, and exited 0
    (operator review): it waits for each result too, says each failure, and exits 1."""
    network = LocalNetwork(tmp_path)
    try:
        channels = {"loopchain_default": {"score_package": "test/raises"}}
        network.start_with_peers(1, channels=channels)
        peer = network.rest(next(iter(network.peers)))
        done = demo(
            peer, "--json", "tx", "-n", "2", "--data", '{"data": "x"}', "--wait", cwd=tmp_path
        )
        assert done.returncode == 1, done.stderr
        rows = json.loads(done.stdout)
        assert [row["result_code"] for row in rows] == [9000, 9000]
        failures = done.stderr.splitlines()
        assert len(failures) == 2 and all(
            f"failed: {row['tx_hash']} in block {row['block_height']}: result 9000 (SCORE raised)"
            in line
            for row, line in zip(rows, failures, strict=True)
        ), failures
        assert "test/raises always fails" in failures[0]
    finally:
        network.stop_and_check()
