"""Smoke runs of the benchmark tools: they run end to end and print sane figures as JSON.

The figures themselves are never asserted against a time budget; only their shape and sanity.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from loopchain.configure import load_config
from tools.procs import Proc, assert_clean_log

SYNC = "tools/bench_sync.py"
FAILOVER = "tools/bench_failover.py"
CLUSTER = "tools/bench_cluster.py"


def run_tool(
    *args: str, deadline: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a tool; on overrunning `deadline` it gets SIGTERM first
    (SIGKILL 60 s later), so it can stop the processes it started, and the test fails."""
    with tempfile.TemporaryDirectory(prefix="run_tool_") as log_dir:
        environ = {**os.environ, **env} if env else None
        proc = Proc(Path(args[0]).stem, list(args), Path(log_dir), env=environ, stderr_apart=True)
        code = proc.run(deadline, grace=60)
        return code, proc.log_text(), proc.err_text()


def last_json(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "the tool printed nothing"
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def check_sync_figures(figures: dict[str, Any], blocks: int, txs_per_block: int) -> None:
    assert figures["benchmark"] == "sync"
    assert figures["blocks"] == blocks
    assert figures["txs_per_block"] == txs_per_block
    assert figures["txs"] == (blocks - 1) * txs_per_block  # the genesis block holds none
    assert figures["batch_blocks"] == int(load_config().SYNC_BATCH_BLOCKS)
    assert figures["chain_bytes"] > blocks * 500  # a signed header and certificate at least
    assert figures["build_s"] > 0 and figures["sync_s"] > 0 and figures["server_open_s"] >= 0
    assert figures["sync_calls"] >= 1
    assert figures["blocks_per_s"] == pytest.approx(blocks / figures["sync_s"], rel=0.01)
    assert figures["tx_per_s"] == pytest.approx(
        figures["txs"] / figures["sync_s"], rel=0.01, abs=0.1
    )


def test_bench_sync_over_several_batches_prints_its_figures() -> None:
    # 250 blocks: two full batches of 100 and a last one that needs the tip's commit proof
    code, out, err = run_tool(
        SYNC, "--blocks", "250", "--txs-per-block", "2", "--json", deadline=120
    )
    assert code == 0, err
    assert_clean_log(err, SYNC)
    assert "blocks/s" in out and "built in" in out
    check_sync_figures(last_json(out), 250, 2)


def test_bench_sync_with_a_single_empty_block() -> None:
    code, out, err = run_tool(SYNC, "--blocks", "1", "--txs-per-block", "0", "--json", deadline=60)
    assert code == 0, err
    figures = last_json(out)
    assert figures["blocks"] == 1 and figures["txs"] == 0 and figures["tx_per_s"] == 0


def test_bench_sync_refuses_bad_arguments() -> None:
    code, _out, err = run_tool(SYNC, "--blocks", "0", deadline=30)
    assert code == 2 and "--blocks must be at least 1" in err
    code, _out, err = run_tool(SYNC, "--txs-per-block", "-1", deadline=30)
    assert code == 2 and "--txs-per-block must be 0..1000" in err


def test_bench_cluster_commits_every_transaction_on_four_peers_and_prints_its_figures() -> None:
    args = "--txs 300 --clients 4 --batch 8 --profile 5 --json".split()
    code, out, err = run_tool(CLUSTER, *args, deadline=180)
    assert code == 0, err
    assert_clean_log(err, CLUSTER)
    figures = last_json(out)
    assert figures["committed"] == 300  # every one final on all four peers
    assert 1 <= figures["blocks"] <= 300
    assert figures["cpu_s"] > 0 and figures["wall_s"] > 0
    assert figures["cpu_us_per_tx"] == pytest.approx(figures["cpu_s"] / 300 * 1e6, rel=0.01)
    assert figures["cpu_ms_per_block"] == pytest.approx(
        figures["cpu_s"] / figures["blocks"] * 1e3, rel=0.01
    )
    assert figures["messages_per_block"] > 0  # proposals and votes crossed the transport
    rows = figures["profile"]
    assert len(rows) == 5 and all(0 < row["own_share"] <= 1 and row["calls"] > 0 for row in rows)
    assert [row["own_share"] for row in rows] == sorted(
        (r["own_share"] for r in rows), reverse=True
    )


def test_bench_cluster_takes_its_configuration_from_the_environment() -> None:
    args = "--txs 100 --clients 2 --json".split()
    code, out, err = run_tool(CLUSTER, *args, env={"MAX_BLOCK_TX_NUM": "10"}, deadline=180)
    assert code == 0, err
    figures = last_json(out)
    assert figures["committed"] == 100 and figures["blocks"] >= 10  # ten at most in each


def test_bench_cluster_refuses_bad_arguments() -> None:
    code, _out, err = run_tool(CLUSTER, "--clients", "0", deadline=30)
    assert code == 2 and "--txs, --clients and --batch must be at least 1" in err


def test_bench_failover_refuses_a_network_without_a_surviving_quorum() -> None:
    code, out, err = run_tool(FAILOVER, "--peers", "3", deadline=30)
    assert code == 2 and "quorum" in err
    assert "starting" not in out  # refused before any process was started
    code, _out, err = run_tool(FAILOVER, "--trials", "0", deadline=30)
    assert code == 2 and "--trials must be at least 1" in err


def test_bench_failover_one_trial_prints_its_figures() -> None:
    code, out, err = run_tool(FAILOVER, "--trials", "1", "--json", deadline=300)
    assert code == 0, f"{out}\n{err}"
    assert "trial 1: killed leader" in out and "median" in out
    figures = last_json(out)
    assert figures["benchmark"] == "leader_failover"
    assert figures["peers"] == 4 and figures["trials"] == 1
    assert figures["settings"]["TIMEOUT_FOR_LEADER_COMPLAIN"] == 1.0  # default settings
    (failover,) = figures["failover_s"]
    assert 0 < failover < 120
    assert figures["median_s"] == figures["min_s"] == figures["max_s"] == pytest.approx(failover)
    (trial,) = figures["details"]
    assert trial["all_survivors_s"] >= trial["failover_s"]
    assert trial["new_leader"] and trial["new_leader"] != trial["killed_id"]
    assert trial["new_height"] > trial["kill_height"]
    assert trial["restart_s"] > 0 and trial["catchup_s"] >= 0
    assert figures["tx_sent"] > 0
    assert figures["tracebacks"] == []
    assert figures["workdir"] == ""  # not kept


@pytest.mark.slow
def test_bench_sync_default_chain_of_ten_thousand_blocks() -> None:
    code, out, err = run_tool(SYNC, "--json", deadline=1200)
    assert code == 0, err
    check_sync_figures(last_json(out), 10_000, 10)


@pytest.mark.slow
def test_bench_failover_default_five_trials() -> None:
    code, out, err = run_tool(FAILOVER, "--json", deadline=900)
    assert code == 0, f"{out}\n{err}"
    figures = last_json(out)
    assert figures["trials"] == 5 and len(figures["failover_s"]) == 5
    assert figures["min_s"] <= figures["median_s"] <= figures["max_s"]
    assert len({t["killed_id"] for t in figures["details"]}) >= 2  # the role moved around


def test_bench_v3_verify_prints_each_step() -> None:
    from tools import bench_v3_verify

    figures = bench_v3_verify.measure(20)
    assert set(figures) == {"parse_us", "recover_us", "admit_us", "decode_us", "sign_us"}
    assert all(value > 0 for value in figures.values()), figures


def test_bench_lookup_finds_every_drawn_transaction_both_ways() -> None:
    code, out, err = run_tool(
        "tools/bench_lookup.py",
        "--blocks",
        "4",
        "--txs-per-block",
        "20",
        "-n",
        "30",
        "--json",
        deadline=120,
    )
    assert code == 0, err
    figures = json.loads(out)
    assert (figures["blocks"], figures["txs_per_block"], figures["lookups"]) == (4, 20, 30)
    assert figures["placed_us"] > 0 and figures["parsed_whole_us"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["placed_us"] / figures["parsed_whole_us"], abs=0.01
    )


def test_bench_lookup_refuses_bad_arguments() -> None:
    code, _out, err = run_tool("tools/bench_lookup.py", "--blocks", "1", deadline=60)
    assert code == 2 and "--blocks must be >= 2" in err
