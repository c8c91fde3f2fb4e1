"""tools/bench.py: its pure helpers and /proc readers (by default), and end-to-end runs (slow).

The end-to-end runs check the shape and sanity of the figures, never a time budget.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loopchain.rest.formatting import EMPTY_CHAIN
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.crypto import Signer
from loopchain.types.icon_tx import verify_send_params
from tests.integration.test_bench_tools import last_json, run_tool
from tools import bench
from tools.procs import assert_clean_log, hold_port

BENCH = "tools/bench.py"


# ------------------------------------------------------------------ figures and table


def test_percentiles_are_nearest_rank_and_keep_infinity() -> None:
    values = [0.1 * n for n in range(1, 11)]
    found = bench.percentiles(values, (50, 90, 99))
    assert found == {"p50": pytest.approx(0.5), "p90": pytest.approx(0.9), "p99": 1.0}
    with_unfinal = [0.2, 0.1, math.inf, 0.3]
    assert bench.percentiles(with_unfinal, (50, 90)) == {"p50": 0.2, "p90": math.inf}
    assert bench.percentiles([], (50,)) == {"p50": None}


def test_bucket_percentiles_interpolate_within_a_bucket() -> None:
    inf = math.inf
    cumulative = {0.1: 0.0, 0.25: 10.0, 0.5: 90.0, 1.0: 100.0, inf: 100.0}
    found = bench.bucket_percentiles(cumulative, (10, 50, 99))
    assert found == {
        "p10": pytest.approx(0.25),  # the tenth of 100 is the last of the (0.1, 0.25] bucket
        "p50": pytest.approx(0.375),  # 40 of the 80 in (0.25, 0.5]
        "p99": pytest.approx(0.95),  # 9 of the 10 in (0.5, 1.0]
    }
    # beyond the last finite bound: that bound (all that a histogram can say)
    assert bench.bucket_percentiles({1.0: 5.0, inf: 10.0}, (90,)) == {"p90": 1.0}
    assert bench.bucket_percentiles({}, (50,)) == {"p50": None}
    assert bench.bucket_percentiles({1.0: 0.0, inf: 0.0}, (50,)) == {"p50": None}


def test_a_histogram_read_only_once_gives_no_percentiles() -> None:
    """What the peers counted during the load: the difference of two readings; a reading that
    failed (a peer's /metrics unreadable) gives no figure rather than a wrong one."""
    start, end = {1.0: 4.0, math.inf: 5.0}, {1.0: 10.0, math.inf: 15.0}
    assert bench._histogram_delta(start, end) == {1.0: 6.0, math.inf: 10.0}
    assert bench._histogram_delta(None, end) is None and bench._histogram_delta(start, None) is None
    assert bench.bucket_percentiles(bench._histogram_delta(None, end) or {}, (50,)) == {"p50": None}


def test_finalisation_buckets_sum_the_channels_of_an_exposition() -> None:
    name = bench.FINALISATION_METRIC
    lines = ["# HELP other_seconds x", "# TYPE other_seconds histogram"]
    lines += [f'other_seconds_bucket{{le="{le}"}} 7.0' for le in ("1.0", "+Inf")]
    lines += [f"# HELP {name} From intake to final", f"# TYPE {name} histogram"]
    for channel, counts in (("a", (1.0, 3.0, 3.0)), ("b", (0.0, 2.0, 4.0))):
        for le, count in zip(("0.5", "1.0", "+Inf"), counts, strict=True):
            lines.append(f'{name}_bucket{{channel="{channel}",le="{le}"}} {count}')
        lines.append(f'{name}_count{{channel="{channel}"}} {counts[-1]}')
        lines.append(f'{name}_sum{{channel="{channel}"}} 1.5')
    buckets = bench.finalisation_buckets("\n".join(lines) + "\n")
    assert buckets == {0.5: 1.0, 1.0: 5.0, math.inf: 7.0}
    assert bench.finalisation_buckets("# nothing here\n") == {}


def test_submission_counters_and_what_a_call_carried() -> None:
    calls, sent = bench.SUBMISSION_COUNTERS
    text = "\n".join(
        [
            "# HELP loopchain_rest_submission_calls Calls",
            "# TYPE loopchain_rest_submission_calls counter",
            f"{calls} 12.0",
            "# HELP loopchain_rest_submissions_sent Submissions",
            "# TYPE loopchain_rest_submissions_sent counter",
            f"{sent} 90.0",
            "# HELP loopchain_rest_requests HTTP requests",
            "# TYPE loopchain_rest_requests counter",
            'loopchain_rest_requests_total{route="/x",method="GET",status="200"} 5.0',
        ]
    )
    assert bench.submission_counters(text + "\n") == (12.0, 90.0)
    assert bench.submission_counters("# nothing here\n") is None  # a tree without them
    assert bench.per_call((12.0, 90.0), (32.0, 250.0)) == 8.0
    assert bench.per_call((12.0, 90.0), (12.0, 90.0)) is None  # no call in between
    assert bench.per_call(None, (32.0, 250.0)) is None


def test_milliseconds_and_json_safety() -> None:
    assert bench.milliseconds(0.12345) == 123.5
    assert bench.milliseconds(None) is None
    assert bench.milliseconds(math.inf) == math.inf
    value = {"a": math.inf, "b": [1.5, math.nan, {"c": -math.inf}], "d": "x", "e": 3}
    assert bench.json_safe(value) == {"a": None, "b": [1.5, None, {"c": None}], "d": "x", "e": 3}


def test_ratio_of_figures() -> None:
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(0.0, 2.0) == 0.0
    assert bench.ratio(1.0, 0.0) is None
    assert bench.ratio(None, 2.0) is None and bench.ratio(2.0, None) is None
    assert bench.ratio(math.inf, 2.0) is None and bench.ratio(2.0, math.inf) is None
    current = {"a": 2, "b": 1.0, "c": None, "d": "text", "e": True, "only_current": 1}
    baseline = {"a": 3, "b": 4.0, "c": 1.0, "d": "text", "e": True}
    assert bench.ratios(current, baseline) == {
        "a": 0.667,
        "b": 0.25,
        "c": None,
        "d": None,
        "e": None,
    }


def test_format_value() -> None:
    assert bench.format_value(None) == "-"
    assert bench.format_value(math.inf) == "inf"
    assert bench.format_value(12) == "12"
    assert bench.format_value(1234.56) == "1235"
    assert bench.format_value(12.345) == "12.3"
    assert bench.format_value(1.2345) == "1.23"
    assert bench.format_value(0.0012345) == "0.00123"
    assert bench.format_value("calm") == "calm"


def _run(**figures: Any) -> dict[str, Any]:
    return {"rev": "abc1234", "figures": figures, "details": {}}


def test_table_of_one_run_has_no_ratio_column() -> None:
    text = bench.format_table({"current": _run(ready_s=8.5, idle_rss_mb=700.0)}, {})
    lines = text.splitlines()
    assert lines[0].split() == ["figure", "current", "abc1234"]
    assert set(lines[1]) == {"-"}
    assert lines[2].startswith("seconds until all peers ready") and lines[2].endswith("8.50")
    assert lines[3].startswith("idle summed RSS (MB)") and lines[3].endswith("700")
    assert len(lines) == 4  # figures a run does not have are left out
    assert "ratio" not in text


def test_table_of_two_runs_with_ratios_and_details() -> None:
    baseline = _run(committed_per_s=100.0, final_p99_ms=200.0, unfinal=0, calm_s=1.0)
    current = _run(committed_per_s=150.0, final_p99_ms=math.inf, unfinal=3, calm_s=None)
    current["details"] = {
        "final_within_drain": "final within 15 s of load end: 7 of 10 acknowledged",
        "answers": {"200": 10, "503": 2, "timeout": 1},
    }
    runs = {"baseline": baseline, "current": current}
    text = bench.format_table(runs, bench.ratios(current["figures"], baseline["figures"]))
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["figure"][-1] == "ratio"
    assert rows["committed tx/s"][-3:] == ["100", "150", "1.50"]
    assert rows["finalisation p99 under load (ms)"][-3:] == ["200", "inf", "-"]
    assert "not calm within 60 s" in text
    assert "current: final within 15 s of load end: 7 of 10 acknowledged" in text
    assert "current: answers by status: 200: 10, 503: 2, timeout: 1" in text


def test_report_has_runs_settings_and_ratios_in_strict_json() -> None:
    options = bench.parse_args(["-c", "4", "-d", "5", "--baseline", "HEAD"])
    runs = {
        "baseline": _run(committed_per_s=100.0, final_p50_ms=math.inf),
        "current": _run(committed_per_s=50.0, final_p50_ms=10.0),
    }
    summary, found = bench.report(runs, options)
    assert found == {"committed_per_s": 0.5, "final_p50_ms": None}
    assert summary["ratios"] == found
    assert summary["settings"]["clients"] == 4 and summary["settings"]["duration_s"] == 5.0
    assert summary["baseline"]["figures"]["final_p50_ms"] is None  # inf is not JSON
    single, none = bench.report({"current": runs["current"]}, options)
    assert none == {} and "ratios" not in single


def test_rounds_merge_into_medians_and_keep_each_round() -> None:
    rounds = [
        _run(committed_per_s=100.0, cpu_s_per_tx=0.002, calm_s=None, unfinal=0),
        _run(committed_per_s=130.0, cpu_s_per_tx=0.001, calm_s=0.5, unfinal=2),
        _run(committed_per_s=90.0, cpu_s_per_tx=0.003, calm_s=0.7, unfinal=1),
    ]
    merged = bench.merge_rounds(rounds)
    assert merged["figures"] == {
        "committed_per_s": 100.0,
        "cpu_s_per_tx": 0.002,
        "calm_s": 0.7,  # not a number in every round: the last round's
        "unfinal": 1,
    }
    assert merged["rounds"] == [r["figures"] for r in rounds] and merged["rev"] == "abc1234"
    assert bench.merge_rounds(rounds[:1]) == rounds[0]  # one round: unchanged, no "rounds"
    base = [_run(committed_per_s=100.0, cpu_s_per_tx=0.002, final_p99_ms=500.0)] * 2
    runs = {
        "baseline": bench.merge_rounds(base),
        "current": bench.merge_rounds(
            [
                _run(committed_per_s=120.0, cpu_s_per_tx=0.001, final_p99_ms=math.inf),
                _run(committed_per_s=90.0, cpu_s_per_tx=0.002, final_p99_ms=400.0),
            ]
        ),
    }
    options = bench.parse_args(["--baseline", "HEAD", "--rounds", "2"])
    summary, found = bench.report(runs, options)
    assert found["committed_per_s"] == 1.05 and summary["settings"]["rounds"] == 2
    assert summary["round_ratios"] == [
        {"committed_per_s": 1.2, "cpu_s_per_tx": 0.5, "final_p99_ms": None},
        {"committed_per_s": 0.9, "cpu_s_per_tx": 1.0, "final_p99_ms": 0.8},
    ]
    assert bench.spread_lines(summary["round_ratios"])[0] == (
        "ratio of committed_per_s in each round: 1.20, 0.9"
    )
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])


def test_loads_in_a_row_report_a_line_each_and_the_last_as_figures() -> None:
    """`--loads N`: a soak on one network; each load's trend (the peers' CPU per transaction
    beside the rest: what grows first as the stores grow) and the last load as figures, so two
    runs compare how they hold, not only how they start."""
    first = {"committed": 1000, "committed_per_s": 100.0, "cpu_s_per_tx": 0.0006,
             "cpu_s_peer": 0.4, "final_p99_ms": 900.0, "answers_503": 0, "unfinal": 0,
             "compacted_kb_per_tx": 2.5, "load_s": 10.0}  # fmt: skip
    last = dict(first, committed=800, committed_per_s=80.0, cpu_s_peer=0.4, answers_503=7)
    loads = [bench.load_trend(first, 700.0), bench.load_trend(last, 760.5)]
    assert loads[0]["cpu_s_peer_per_tx"] == 0.0004 and loads[1]["cpu_s_peer_per_tx"] == 0.0005
    assert loads[1]["rss_after_mb"] == 760.5 and "load_s" not in loads[1]
    run = _run(committed_per_s=100.0, **{f"last_load_{k}": v for k, v in loads[-1].items()})
    run["details"] = {"loads": loads}
    text = bench.format_table({"current": run}, {})
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["last of the loads in a row: committed tx/s"][-1] == "80.0"
    assert [line.split()[-1] for line in text.splitlines() if "answers (503)" in line] == ["7"]
    assert "current load 1: 100 tx/s, CPU 0.6 ms/tx (peers 0.4), p99 900 ms, 503: 0" in text
    assert "current load 2: 80.0 tx/s, CPU 0.6 ms/tx (peers 0.5), p99 900 ms, 503: 7" in text
    assert "compacting 2.50 KB/tx, RSS after 760 MB" in text
    options = bench.parse_args(["--loads", "3"])
    assert (
        options.loads == 3 and bench.report({"current": run}, options)[0]["settings"]["loads"] == 3
    )
    assert bench.parse_args([]).loads == 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--loads", "0"])


# ------------------------------------------------------------------ reply shapes


def test_tx_block_height_of_reply_shapes() -> None:
    assert bench.tx_block_height({"response_code": 0, "block_height": 5}) == 5
    assert bench.tx_block_height({"response_code": 0, "block_height": -1}) == -1
    assert bench.tx_block_height({"response_code": 0, "block_height": 0}) == 0
    assert bench.tx_block_height({"meta": {"block_height": "7"}}) == 7
    assert bench.tx_block_height({"response_code": -4, "message": "not found"}) is None
    assert bench.tx_block_height(None) is None
    assert bench.tx_block_height({"block_height": "x"}) is None


def test_retry_after_seconds() -> None:
    assert bench.retry_after_seconds(None) is None
    assert bench.retry_after_seconds("2") == 2.0
    assert bench.retry_after_seconds(" 0.5 ") == 0.5
    assert bench.retry_after_seconds("-3") == 0.0
    assert bench.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert bench.retry_after_seconds("inf") is None


def test_calm_verdict() -> None:
    calm = {"tx_pool_size": 0, "block_height": 9}
    assert bench.calm_verdict({"": [calm, calm, calm, calm]}) == ""
    assert "did not answer" in bench.calm_verdict({"": [calm, None, calm, calm]})
    busy = {"tx_pool_size": 3, "block_height": 9}
    assert "pools not empty" in bench.calm_verdict({"": [calm, busy, calm, calm]})
    behind = {"tx_pool_size": 0, "block_height": 8}
    assert "heights differ (a: [8, 9])" in bench.calm_verdict({"": [calm] * 4, "a": [behind, calm]})


def test_channels_and_arguments() -> None:
    options = bench.parse_args(["--channels", "alpha, beta", "-d", "1m"])
    assert options.channels == ("alpha", "beta") and options.duration == 60.0
    assert options.clients == 64 and not options.json
    assert bench.rest_url(2, "/api/v1/blocks", "beta") == (
        "http://127.0.0.1:9200/api/v1/blocks?channel=beta"
    )
    assert bench.rest_url(0, "/api/v1/status/peer") == "http://127.0.0.1:9000/api/v1/status/peer"
    for bad in (["-c", "0"], ["-d", "0"], ["--channels", ","], ["--channels", "a b"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_a_baseline_by_environment_runs_this_tree_first_with_those_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = bench.parse_args(["--baseline-env", "INTAKE_LOG=false", "--baseline-env", "A_B=1"])
    assert options.baseline_env == (("INTAKE_LOG", "false"), ("A_B", "1"))
    calls: list[tuple[str, Path, dict[str, str] | None]] = []

    def run_once(tree, options, label, after_run=False, env=None, channels=None):  # type: ignore[no-untyped-def]
        calls.append((label, tree, env))
        return {"figures": {}}

    monkeypatch.setattr(bench, "run_once", run_once)
    bench.run_all(options, lambda label, run: None)
    assert calls == [
        ("baseline", options.tree, {"INTAKE_LOG": "false", "A_B": "1"}),
        ("current", options.tree, None),
    ]
    for bad in (["--baseline-env", "INTAKE_LOG"], ["--baseline-env", "lower=1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_baseline_channels_run_this_tree_first_with_its_own_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, Path, Any]] = []

    def run_once(tree, options, label, after_run=False, env=None, channels=None):  # type: ignore[no-untyped-def]
        calls.append((label, tree, channels))
        return {"figures": {}}

    monkeypatch.setattr(bench, "run_once", run_once)
    options = bench.parse_args(["--channels", "a,b", "--baseline-channels", "default"])
    assert options.channels == ("a", "b") and options.baseline_channels == ()
    bench.run_all(options, lambda label, run: None)
    assert calls == [("baseline", options.tree, ()), ("current", options.tree, None)]
    calls.clear()
    bench.run_all(bench.parse_args(["--channels", "a,b"]), lambda label, run: None)
    assert calls == [("current", options.tree, None)], "no baseline unless asked for"
    assert bench.parse_args(["--baseline-channels", "x"]).baseline_channels == ("x",)
    with pytest.raises(SystemExit):
        bench.parse_args(["--baseline-channels", "a b"])


# ------------------------------------------------------------------ /proc readers


def test_parse_proc_stat_with_an_awkward_command_name() -> None:
    fields = ["S", "42", *["0"] * 9, "150", "25", *["0"] * 6, "9999", "0"]
    stat = bench.parse_proc_stat("123 (a) b (c)) " + " ".join(fields) + "\n")
    assert (stat.pid, stat.ppid, stat.utime, stat.stime, stat.starttime) == (
        123,
        42,
        150,
        25,
        9999,
    )
    assert stat.cpu_seconds == pytest.approx(175 / os.sysconf("SC_CLK_TCK"))


def test_own_stat_matches_the_kernel() -> None:
    stats = bench.read_proc_stats()
    own = stats[os.getpid()]
    assert own.ppid == os.getppid()
    times = os.times()
    assert own.cpu_seconds == pytest.approx(times.user + times.system, abs=0.1)


def test_process_tree_rss_and_kinds_include_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = None
        for _ in range(50):  # until the child has exec'd python
            stats = bench.read_proc_stats()
            pids = bench.descendants(os.getpid(), stats)
            if child.pid in pids and bench.read_rss_kb(child.pid):
                found = pids
                break
            time.sleep(0.05)
        assert found is not None and found[0] == os.getpid()
        assert bench.descendants(-1, stats) == []
        total, split = bench.tree_rss_mb(os.getpid())
        own = bench.read_rss_kb(os.getpid())
        kid = bench.read_rss_kb(child.pid)
        assert own and kid
        assert total == pytest.approx((own + kid) / 1024, rel=0.2)
        assert set(split) == set(bench.KINDS)
        assert split["other"] == pytest.approx(total, abs=0.2)  # pytest is no network process
        # the child shares its libraries with this process: counted once, the pair is smaller
        pss = bench.tree_pss_mb(os.getpid())
        assert 0 < pss < total
        # anonymous pages: this process's and the child's own, no library counted
        anon = bench.tree_anon_mb(os.getpid())
        own_anon = bench.read_anon_kb(os.getpid())
        assert own_anon and own_anon / 1024 < anon < total
    finally:
        child.kill()
        child.wait()


def test_classify_network_processes() -> None:
    py = "/repo/.venv/bin/python"
    assert bench.classify([py, "/repo/radiostation.py", "-o", "c.json"]) == "radiostation"
    assert bench.classify([py, "./peer.py", "-p", "7100"]) == "peer"
    assert bench.classify([py, "/repo/rest_proxy.py", "-p", "7100"]) == "rest_proxy"
    assert bench.classify([py, "-m", "loopchain.scoreservice.process", "--socket", "s"]) == "score"
    assert bench.classify(["bash", "/repo/localnet.sh", "--data", "d"]) is None
    assert bench.classify([]) is None


def test_cpu_meter_counts_the_window_and_processes_that_appear() -> None:
    meter = bench.CpuMeter(os.getpid())
    meter.sample(with_rss=True)
    assert 0 < meter.peak_anon_mb < meter.peak_rss_mb  # libraries are mapped files, not anonymous
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    said = "print('burnt', flush=True)\ntime.sleep(30)\n"
    child = subprocess.Popen([sys.executable, "-c", burn + said], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        # the child has burnt its 0.3 s once it says so (a second's sleep was not always enough
        # on a loaded machine: a flake review saw 0.47 s counted)
        ready, _, _ = select.select([child.stdout], [], [], 60.0)
        assert ready and child.stdout.readline() == "burnt\n", "the child said nothing for 60 s"
        meter.sample()
        split = meter.by_kind()
        assert set(split) == set(bench.KINDS)
        assert split["other"] >= 0.5  # our 0.3 s and the child's, counted from zero
        assert sum(split.values()) == split["other"]
        assert meter.processes() >= 2
    finally:
        child.kill()
        child.wait()
    meter.sample()  # an exited child keeps its last sampled seconds
    assert meter.by_kind()["other"] >= split["other"]


def test_cpu_meter_splits_off_what_other_threads_than_the_main_one_burn() -> None:
    """LevelDB's compaction and gRPC's threads burn CPU outside the event loop's thread: the meter
    tells that share apart (a child burns 0.4 s in a second thread and 0.2 s in its main one)."""
    burn = (
        "import sys, threading, time\n"
        "def burn(s):\n"
        "    end = time.thread_time() + s\n"
        "    while time.thread_time() < end: pass\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "t = threading.Thread(target=burn, args=(0.4,)); t.start(); burn(0.2); t.join()\n"
        "print('burnt', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None

    def line() -> str:
        ready, _, _ = select.select([child.stdout], [], [], 60.0)
        assert ready, "the child said nothing for 60 s"
        return child.stdout.readline()  # type: ignore[union-attr]

    try:
        assert line() == "ready\n"
        meter = bench.CpuMeter(child.pid)
        meter.sample()  # from here: the burning only
        child.stdin.write("go\n")
        child.stdin.flush()
        assert line() == "burnt\n"
        meter.sample()
        total, outside = meter.by_kind()["other"], meter.outside_main_thread()["other"]
        assert 0.35 <= outside <= total, (outside, total)
        assert 0.15 <= total - outside <= 0.3, (outside, total)  # the main thread's 0.2 s
    finally:
        child.kill()
        child.wait()


def test_port_busy_sees_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert bench.port_busy(port)
        assert bench.busy_ports([port]) == [port]
    assert not bench.port_busy(port)


# ------------------------------------------------------------------ the command, no network


def _bench_of_a_failing_tree(tmp_path: Path, peer_log: str, output: str = "") -> str:
    """The bench's stderr for a tree whose localnet.sh writes `peer_log` (shell words, expanded)
    as peer 7100's log, prints `output` and exits 1; the logs it keeps are removed."""
    if bench.busy_ports():
        pytest.skip("a network already runs on the fixed local ports")
    tree = tmp_path / "tree"
    tree.mkdir()
    script = tree / "localnet.sh"
    script.write_text(
        "#!/usr/bin/env bash\n"
        "DATA=$2\n"
        'mkdir -p "$DATA/logs"\n'
        f'echo "{peer_log}" > "$DATA/logs/peer_7100.log"\n'
        + (f'echo "{output}"\n' if output else "")
        + "exit 1\n"
    )
    script.chmod(0o755)
    code, out, err = run_tool(BENCH, "--tree", str(tree), "--idle-only", deadline=60)
    assert code == 1 and out == "", err
    kept = re.search(r"network data kept in (\S+)", err)
    assert kept is not None, err  # the logs stay for a look; this test cleans up
    shutil.rmtree(kept.group(1))
    return err


def test_a_network_that_fails_to_start_shows_its_logs(tmp_path: Path) -> None:
    err = _bench_of_a_failing_tree(
        tmp_path, "peer says: the store is damaged", "localnet.sh: peer_7100 exited"
    )
    assert "localnet.sh exited (code 1)" in err
    assert "peer says: the store is damaged" in err and "peer_7100 exited" in err
    assert_clean_log(err, BENCH)


def test_the_tree_runs_its_own_loopchain_first(tmp_path: Path) -> None:
    """A baseline worktree shares this repo's .venv, whose editable install maps `loopchain` to
    this repo: the tree's own package comes first on the import path of all it starts."""
    err = _bench_of_a_failing_tree(tmp_path, "import path: $PYTHONPATH")
    assert f"import path: {tmp_path.resolve() / 'tree'}" in err, err


def test_complaints_are_counted_from_the_peers_logs_between_marks(tmp_path: Path) -> None:
    tree, data = tmp_path / "tree", tmp_path / "data"
    (tree / "loopchain" / "peer").mkdir(parents=True)
    (data / "logs").mkdir(parents=True)
    source = tree / "loopchain" / "peer" / "channel_service.py"
    source.write_text('log.info("... %d pooled): complaining", ...)\n')
    complaint = "INFO channel c: no progress in round {} for 1.00 s (...; 5 pooled): complaining\n"
    logs = {name: data / "logs" / f"{name}.log" for name in ("peer_7100", "peer_7200")}
    logs["peer_7100"].write_text(complaint.format(0) + "INFO block 0 final\n")
    net = bench.LocalNet(tree, data, [])
    start = net.log_marks()
    with open(logs["peer_7100"], "a") as log_file:
        log_file.write("INFO block 1 final\n" + complaint.format(3))
    logs["peer_7200"].write_text(complaint.format(3) + complaint.format(4))  # a new log
    (data / "logs" / "radiostation.log").write_text(complaint.format(9))  # not a peer's
    end = net.log_marks()
    with open(logs["peer_7200"], "a") as log_file:
        log_file.write(complaint.format(5))
    after = net.log_marks()
    assert net.complaints(start, end) == 3  # the one logged before the start is not counted
    assert net.complaints(end, after) == 1
    assert net.complaints(after, after) == 0
    source.write_text("# a tree from before complaints were logged\n")
    assert net.complaints(start, end) is None  # unknown, not zero


def test_compaction_is_read_from_the_peers_block_stores(tmp_path: Path) -> None:
    """What LevelDB wrote compacting, summed over the peers' block stores (a SCORE's state store
    is not counted), from LevelDB's own log of a real store."""
    data = tmp_path / "data"
    net = bench.LocalNet(tmp_path / "tree", data, [])
    assert net.compaction_bytes() == 0  # no store yet
    blocks = data / "storage" / "peer_7100" / "loopchain_default" / "blocks"
    with LevelDBStore(blocks, write_buffer_mb=1) as kv:
        for rewrite in range(2):  # the same keys twice: tables that overlap are merged
            for i in range(384):
                kv.put(i.to_bytes(4, "big"), bytes([rewrite]) * 4096)
        kv._db.compact_range(start=b"", stop=b"\xff" * 5)
    written = net.compaction_bytes()
    assert written >= 384 * 4096, written  # the live values went through a compaction at least
    state = data / "storage" / "peer_7100" / "loopchain_default" / "score_state"
    state.mkdir()
    (state / "LOG").write_text("Compacted 1@0 + 0@1 files => 999999 bytes\n")
    other = data / "storage" / "peer_7200" / "loopchain_default" / "blocks"
    other.mkdir(parents=True)
    (other / "LOG").write_text("... Compacted 1@1 + 2@2 files => 1000 bytes\nunrelated\n")
    assert net.compaction_bytes() == written + 1000


def test_busy_ports_refuse_to_start(tmp_path: Path) -> None:
    server: socket.socket | None = None  # None: something else holds it, refused the same
    if not bench.port_busy(9002):
        # with SO_REUSEADDR: a local network another test ran leaves TIME_WAIT on 9002 (its
        # RadioStation's REST closes first) for a minute, and a plain bind was refused then
        with contextlib.suppress(OSError):  # taken meanwhile by another
            server = hold_port(9002)
    try:
        code, out, err = run_tool(BENCH, "--idle-only", deadline=60)
    finally:
        if server is not None:
            server.close()
    assert code == 1 and out == ""
    assert "9002" in err and "in use" in err
    assert "starting" not in err


# ------------------------------------------------------------------ end to end (slow)

LOAD_FIGURES = (
    "load_s",
    "acked",
    "acked_per_s",
    "committed",
    "committed_per_s",
    "final_p50_ms",
    "final_p90_ms",
    "final_p99_ms",
    "peer_final_p50_ms",
    "peer_final_p99_ms",
    "submissions_per_call",
    "unfinal",
    "answers_503",
    "answers_other_errors",
    "cpu_s",
    "cpu_s_per_tx",
    *(f"cpu_s_{kind}" for kind in bench.KINDS),
    "cpu_s_load_generator",
    "cores_busy",
    "rss_peak_mb",
    "anon_peak_mb",
    "rss_after_mb",
    "anon_after_mb",
    "calm_s",
    "rounds_load",
    "blocks_load",
    "failed_rounds_load",
    "failed_rounds_after",
    "complaints_load",
    "complaints_after",
    "compacted_kb_per_tx",
)


@pytest.mark.slow
def test_bench_short_load_prints_every_figure() -> None:
    code, out, err = run_tool(
        BENCH, "-c", "4", "-d", "5", "--v3", "--loads", "2", "--queries", "3", "--polls", "3",
        "--json", deadline=600,
    )  # fmt: skip
    assert code == 0, f"{out}\n{err}"
    assert_clean_log(err, BENCH)
    summary = last_json(out)
    assert summary["settings"]["clients"] == 4 and summary["settings"]["duration_s"] == 5.0
    assert "baseline" not in summary and "ratios" not in summary
    run = summary["current"]
    figures = run["figures"]
    for key in (
        "ready_s",
        "idle_rss_mb",
        "idle_pss_mb",
        "idle_anon_mb",
        "idle_p50_ms",
        "idle_p90_ms",
        "idle_unfinal",
        *LOAD_FIGURES,
    ):
        assert key in figures, key
    assert 0 < figures["ready_s"] < bench.READY_DEADLINE
    assert 100 < figures["idle_rss_mb"] < 20_000
    assert 0 < figures["idle_pss_mb"] < figures["idle_rss_mb"]
    assert 0 < figures["idle_anon_mb"] < figures["idle_rss_mb"]
    assert figures["idle_unfinal"] == 0
    assert 0 < figures["idle_p50_ms"] <= figures["idle_p90_ms"]
    assert figures["load_s"] == pytest.approx(5, abs=1)
    assert 0 < figures["committed"] <= figures["acked"]
    assert figures["committed_per_s"] == pytest.approx(
        figures["committed"] / figures["load_s"], rel=0.02
    )
    assert 0 < figures["final_p50_ms"] <= figures["final_p90_ms"] <= figures["final_p99_ms"]
    # the peers' own histograms saw the load's transactions become final
    assert 0 < figures["peer_final_p50_ms"] <= figures["peer_final_p99_ms"] < 60_000
    assert 1 <= figures["submissions_per_call"] <= 4  # 4 clients, one submission in flight each
    assert figures["unfinal"] == 0
    assert figures["cpu_s"] > 0 and figures["cpu_s_peer"] > 0 and figures["cpu_s_rest_proxy"] > 0
    for kind in ("peer", "rest_proxy", "score"):  # gRPC's threads, LevelDB's compaction, ...
        assert 0 <= figures[f"cpu_s_{kind}_threads"] < figures[f"cpu_s_{kind}"], kind
    assert figures["cpu_s_per_tx"] == pytest.approx(
        figures["cpu_s"] / figures["committed"], rel=0.05
    )
    # the load generator's own CPU is reported beside the network's, not in it
    assert figures["cpu_s_load_generator"] > 0
    cores = run["details"]["cores"]
    assert 0 < figures["cores_busy"] <= cores + 0.5, (figures["cores_busy"], cores)
    assert 0 < figures["anon_peak_mb"] < figures["rss_peak_mb"]
    assert 0 < figures["anon_after_mb"] < figures["rss_after_mb"]
    assert figures["calm_s"] is not None and 0 <= figures["calm_s"] < bench.CALM_DEADLINE
    assert figures["blocks_load"] > 0
    details = run["details"]
    assert details["answers"]["200"] == figures["acked"]
    assert (
        f"{figures['committed']} of {figures['acked']} acknowledged"
        in (details["final_within_drain"])
    )
    assert set(details["idle_rss_mb_by_kind"]) == set(bench.KINDS)
    assert details["idle_rss_mb_by_kind"]["peer"] > 0
    assert details["idle_rss_mb_by_kind"]["rest_proxy"] > 0
    assert details["idle_rss_mb_by_kind"]["radiostation"] > 0
    # the v3 load: client-signed transfers, every one final, beside v1's figures
    assert 0 < figures["v3_committed"] == figures["v3_acked"] and figures["v3_unfinal"] == 0
    assert figures["v3_answers_other_errors"] == 0 and figures["v3_cpu_s_per_tx"] > 0
    assert details["v3_answers"]["200"] == figures["v3_acked"]
    # two loads in a row on the one network: a trend line each, the second's as figures
    assert [load["unfinal"] for load in details["loads"]] == [0, 0]
    assert details["loads"][0]["committed_per_s"] == figures["committed_per_s"]
    assert figures["last_load_committed_per_s"] == details["loads"][1]["committed_per_s"] > 0
    assert 0 < figures["last_load_cpu_s_peer_per_tx"] < figures["last_load_cpu_s_per_tx"]
    # the query load after them: loadtool's query, answered, its CPU sampled over it alone
    assert summary["settings"]["queries_s"] == 3.0
    # the phase ends with the answer of the last query in flight at 3 s (each bounded)
    assert 3 <= figures["query_s"] <= 3 + bench.REQUEST_TIMEOUT + 1
    assert figures["query_answers_200"] > 0
    assert figures["query_answered_per_s"] == pytest.approx(
        figures["query_answers_200"] / figures["query_s"], rel=0.05
    )
    assert figures["query_answers_none"] == 0
    assert details["query_answers"]["200"] == figures["query_answers_200"]
    assert 0 < figures["query_p50_ms"] <= figures["query_p99_ms"]
    assert figures["query_cpu_s"] > 0
    for kind in ("peer", "rest_proxy", "score"):  # a query crosses all three
        assert figures[f"query_cpu_ms_{kind}_per_query"] > 0, kind
    assert figures["query_cpu_ms_per_query"] == pytest.approx(
        sum(figures[f"query_cpu_ms_{kind}_per_query"] for kind in bench.KINDS), rel=0.01
    )
    # then the polls: the results of transactions the v1 loads saw committed, every one executed
    assert summary["settings"]["polls_s"] == 3.0
    assert "submitting" not in err  # the loads left transactions to poll
    check_poll_figures(figures, details, 3.0)
    assert not bench.busy_ports(), "the network was not stopped"


def check_poll_figures(figures: dict[str, Any], details: dict[str, Any], seconds: float) -> None:
    """A poll phase of `seconds` asked only for committed transactions, and had them answered."""
    assert seconds <= figures["poll_s"] <= seconds + bench.REQUEST_TIMEOUT + 1
    assert figures["poll_answers_200"] > 0
    assert figures["poll_results_executed"] == figures["poll_answers_200"]
    assert details["poll_results"] == {"0": figures["poll_answers_200"]}
    statuses = [key for key in figures if re.fullmatch(r"poll_answers_\d+", key)]
    assert sorted(statuses) == ["poll_answers_200", "poll_answers_503"]  # no 404: all known
    assert figures["poll_answers_none"] == 0
    assert details["poll_answers"]["200"] == figures["poll_answers_200"]
    assert figures["poll_answered_per_s"] == pytest.approx(
        figures["poll_answers_200"] / figures["poll_s"], rel=0.05
    )
    assert 0 < figures["poll_p50_ms"] <= figures["poll_p99_ms"]
    for kind in ("peer", "rest_proxy"):  # a poll crosses both
        assert figures[f"poll_cpu_ms_{kind}_per_poll"] > 0, kind
    assert figures["poll_cpu_ms_per_poll"] == pytest.approx(
        sum(figures[f"poll_cpu_ms_{kind}_per_poll"] for kind in bench.KINDS), rel=0.01
    )
    assert figures["poll_cpu_s_load_generator"] > 0 and figures["poll_cores_busy"] > 0


def _polls_alone(*options: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The summary, figures and stderr of 2 s of polls by 8 clients with no load nor idle phase,
    checked as a poll phase that had everything it asked for answered."""
    code, out, err = run_tool(
        BENCH, "-c", "8", "--no-idle", "--no-load", "--polls", "2", *options, "--json",
        deadline=600,
    )  # fmt: skip
    assert code == 0, f"{out}\n{err}"
    assert_clean_log(err, BENCH)
    summary = last_json(out)
    assert summary["settings"]["no_load"] and summary["settings"]["polls_s"] == 2.0
    figures, details = summary["current"]["figures"], summary["current"]["details"]
    assert "acked" not in figures and "query_s" not in figures  # the polls alone
    check_poll_figures(figures, details, 2.0)
    assert not bench.busy_ports(), "the network was not stopped"
    return summary, figures, err


@pytest.mark.slow
def test_bench_polls_alone_poll_the_transactions_they_submit_first() -> None:
    # 8 clients: 4 on each channel, each asking for transactions of its own channel only
    _, _, err = _polls_alone("--channels", "alpha,beta")
    assert f"submitting {bench.POLL_SEED} transactions to poll in alpha, beta" in err


@pytest.mark.slow
def test_bench_block_polls_need_no_transactions() -> None:
    summary, _, err = _polls_alone("--poll-api", "v3-block")
    assert summary["settings"]["poll_api"] == "v3-block"
    assert "submitting" not in err  # nothing seeded: the last block is there from the start


def _bench_worktrees() -> list[str]:
    listing = subprocess.run(
        ["git", "worktree", "list"], cwd=bench._REPO, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if "bench-baseline-" in line]


@pytest.mark.slow
def test_bench_against_a_baseline_worktree_prints_ratios() -> None:
    before = _bench_worktrees()
    code, out, err = run_tool(
        BENCH, "--idle-only", "--no-idle", "--baseline", "HEAD", "--json", deadline=600
    )
    assert code == 0, f"{out}\n{err}"
    summary = last_json(out)
    assert summary["baseline"]["figures"]["ready_s"] > 0
    assert summary["current"]["figures"]["ready_s"] > 0
    assert summary["ratios"]["ready_s"] > 0 and summary["ratios"]["idle_rss_mb"] > 0
    assert "bench-baseline-" in summary["baseline"]["tree"]
    assert not Path(summary["baseline"]["tree"]).exists()
    assert _bench_worktrees() == before  # its worktree was removed


def test_a_submission_answer_is_counted_and_says_how_long_to_wait() -> None:
    state = bench.LoadState(run_id="r")
    assert state.record_answer("ab" * 32) is None and "ab" * 32 in state.acked
    assert state.record_answer((503, 0.5)) == 0.5
    assert state.record_answer((503, 3600.0)) == bench.RETRY_AFTER_CAP
    assert state.record_answer(("timeout", None)) == bench.ERROR_BACKOFF
    assert state.answers == {"200": 1, "503": 2, "timeout": 1}


def test_failed_calls_are_counted_by_kind() -> None:
    assert bench.failure_kind(TimeoutError()) == "timeout"
    refused = aiohttp.ClientConnectionError("refused")
    assert bench.failure_kind(refused) == "connection error"
    assert bench.failure_kind(ValueError("not JSON")) == "bad reply"


def test_v3_senders_sign_transfers_the_node_accepts() -> None:
    senders = bench.V3Senders([Signer.generate() for _ in range(2)], "hx" + "1" * 40)
    first, second = senders.body(0, 7), senders.body(1, 7)
    assert first["method"] == "icx_sendTransaction" and first["jsonrpc"] == "2.0"
    checked = verify_send_params(first["params"])  # shape, hash and signature as a peer checks
    assert checked.sender == senders.accounts[0].address and checked.to == senders.sink
    assert checked.value == 1 and checked.nid == 3 and checked.nonce == 7
    assert verify_send_params(second["params"]).sender == senders.accounts[1].address
    assert bench.v3_url(1, "kofia") == f"http://127.0.0.1:{bench.REST_PORTS[1]}/api/v3/kofia"
    assert bench.is_v3(bench.v3_url(0)) and not bench.is_v3(bench.rest_url(0, "/api/v1/blocks"))
    assert bench.parse_args(["--v3"]).v3 and not bench.parse_args([]).v3


# ------------------------------------------------------------------ query load (--queries)


def test_query_answers_as_figures_by_status() -> None:
    assert bench.answer_figures({}, "query") == {
        "query_answers_200": 0,
        "query_answers_503": 0,
        "query_answers_none": 0,
    }
    answers = {"200": 90, "503": 5, "500": 2, "404": 1, "timeout": 3, "connection error": 1}
    assert bench.answer_figures(answers, "query") == {
        "query_answers_200": 90,
        "query_answers_404": 1,
        "query_answers_500": 2,
        "query_answers_503": 5,
        "query_answers_none": 4,
    }


def test_query_figures_rate_latency_and_cpu_per_answered_query() -> None:
    cpu = {"radiostation": 0.02, "peer": 6.0, "rest_proxy": 3.0, "score": 1.0, "other": 0.0}
    answers = {"200": 4000, "503": 10, "timeout": 1}
    latencies = [0.001 * (n % 100 + 1) for n in range(4000)]  # 1 ... 100 ms, 40 of each
    found = bench.read_figures("query", answers, latencies, cpu, seconds=10.0, own_cpu=(4.0, 10.5))
    figures = found["figures"]
    assert figures["query_s"] == 10.0 and figures["query_answered_per_s"] == 400.0
    assert figures["query_p50_ms"] == 50.0 and figures["query_p99_ms"] == 99.0
    assert figures["query_answers_200"] == 4000 and figures["query_answers_503"] == 10
    assert figures["query_answers_none"] == 1
    assert figures["query_cpu_s"] == 10.02
    assert figures["query_cpu_ms_per_query"] == 2.505  # 10.02 s / 4000 answered
    assert figures["query_cpu_ms_peer_per_query"] == 1.5
    assert figures["query_cpu_ms_rest_proxy_per_query"] == 0.75
    assert figures["query_cpu_ms_score_per_query"] == 0.25
    assert figures["query_cpu_ms_radiostation_per_query"] == 0.005
    assert figures["query_cpu_ms_other_per_query"] == 0.0
    assert figures["query_cpu_s_load_generator"] == 4.0
    assert figures["query_cores_busy"] == 1.34  # (10.02 + 4) / 10.5
    assert found["details"]["query_answers"] == {"200": 4000, "503": 10, "timeout": 1}
    assert found["details"]["query_cpu_s_by_kind"] == cpu
    none = bench.read_figures("query", {"503": 3}, [], cpu, seconds=0.0)["figures"]
    assert none["query_answered_per_s"] is None and none["query_p50_ms"] is None
    assert none["query_cpu_ms_per_query"] is None and none["query_cores_busy"] is None


def test_query_rows_with_every_status_answered_and_ratios() -> None:
    cpu = dict.fromkeys(bench.KINDS, 1.0)
    base = bench.read_figures("query", {"200": 100, "500": 2}, [0.01] * 100, cpu, 10.0)
    current = bench.read_figures("query", {"200": 200, "429": 1}, [0.005] * 200, cpu, 10.0)
    runs = {"baseline": _run(**base["figures"]), "current": _run(**current["figures"])}
    runs["current"]["details"] = current["details"]
    text = bench.format_table(runs, bench.ratios(runs["current"]["figures"], base["figures"]))

    def row(title: str) -> list[str]:
        (line,) = [line for line in text.splitlines() if line.startswith(title + "  ")]
        return line.split()[-3:]

    assert row("queries: answered (200) per s") == ["10.0", "20.0", "2.00"]
    assert row("queries: latency p50 of the answered (ms)") == ["10.0", "5.00", "0.5"]
    assert row("queries: CPU ms per answered query") == ["50.0", "25.0", "0.5"]
    assert row("queries:   CPU ms peers") == ["10.0", "5.00", "0.5"]
    assert row("queries: answers 429") == ["-", "1", "-"]  # a status only one run saw
    assert row("queries: answers 500") == ["2", "-", "-"]
    titles = [re.split(r"\s{2,}\S", line)[0] for line in text.splitlines()]
    order = ["queries: answers 503 (overload)", "queries: answers 429", "queries: answers 500"]
    assert [titles.index(title) for title in order] == sorted(titles.index(t) for t in order)
    assert titles.index("queries: no HTTP answer (timeout, connection)") > titles.index(order[-1])
    assert "current query: answers by status: 200: 200, 429: 1" in text


def test_queries_and_no_load_options() -> None:
    options = bench.parse_args([])
    assert options.queries == 0 and not options.no_load and options.tx_load
    options = bench.parse_args(["--no-load", "--queries", "30"])
    assert options.queries == 30.0 and options.no_load and not options.tx_load
    assert bench.parse_args(["--queries", "1m"]).queries == 60.0
    assert bench.parse_args(["--queries", "0"]).queries == 0.0
    assert not bench.parse_args(["--idle-only"]).tx_load
    summary, _ = bench.report({"current": _run()}, options)
    assert summary["settings"]["queries_s"] == 30.0 and summary["settings"]["no_load"]
    for bad in (["--queries", "-1"], ["--queries", "x"], ["--idle-only", "--queries", "5"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_round_ratios_only_of_the_figures_the_runs_have() -> None:
    base = [_run(query_answered_per_s=100.0, query_cpu_ms_per_query=2.0, query_p99_ms=8.0)] * 2
    current = [_run(query_answered_per_s=110.0, query_cpu_ms_per_query=1.0, query_p99_ms=8.0)] * 2
    runs = {"baseline": bench.merge_rounds(base), "current": bench.merge_rounds(current)}
    per_round = bench.round_ratios(runs)
    assert (
        per_round
        == [{"query_answered_per_s": 1.1, "query_cpu_ms_per_query": 0.5, "query_p99_ms": 1.0}] * 2
    )
    lines = bench.spread_lines(per_round)
    assert lines[0] == "ratio of query_answered_per_s in each round: 1.10, 1.10"
    assert len(lines) == 3  # none of a transaction load that did not run


async def test_query_client_counts_answers_over_one_connection_and_waits_as_told() -> None:
    bodies: list[Any] = []
    peers: set[Any] = set()
    answered = 0

    async def mixed(request: web.Request) -> web.Response:
        nonlocal answered
        bodies.append(await request.json())
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        answered += 1
        if answered % 4 == 3:
            return web.json_response({}, status=503, headers={"Retry-After": "0"})
        if answered % 4 == 0:
            return web.json_response({}, status=500)
        return web.json_response({"response_code": 0, "response": {}})

    async def busy(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({}, status=503, headers={"Retry-After": "5"})

    body = bench.json.dumps(bench.DEFAULT_QUERY).encode()
    async with _serving(web.post("/mixed", mixed), web.post("/busy", busy)) as base:
        state = bench.ReadState()
        mixed_query = bench.query_request(f"{base}/mixed", body)
        # (1.5 s for the 5 round trips needed, 200 200 503 500 200: 0.3 s was enough for a
        # machine 5x slower than this one; room to spare)
        await bench.read_client(state, mixed_query, time.monotonic() + 1.5)
        assert state.answers["200"] > 2 and state.answers["503"] >= 1
        assert set(state.answers) == {"200", "503", "500"} and state.in_flight == 0
        assert len(state.latencies) == state.answers["200"] and min(state.latencies) > 0
        assert bodies == [bench.DEFAULT_QUERY] * len(bodies) and len(peers) == 1  # keep-alive
        state = bench.ReadState()
        started = time.monotonic()
        busy_query = bench.query_request(f"{base}/busy", body)
        # (the window ends before the capped wait of RETRY_AFTER_CAP does: one answer)
        await bench.read_client(state, busy_query, started + 0.9 * bench.RETRY_AFTER_CAP)
        assert state.answers == {"503": 1}  # Retry-After: 5 kept it waiting until the end
        assert time.monotonic() - started < 4.0  # the end, not the 5 s it was told to wait
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    state = bench.ReadState()
    refused = bench.query_request(f"http://127.0.0.1:{free}/", body)
    await bench.read_client(state, refused, time.monotonic() + 0.2)
    assert set(state.answers) == {"connection error"} and not state.latencies


@contextlib.asynccontextmanager
async def _serving(*routes: web.RouteDef) -> AsyncIterator[str]:
    """An HTTP server with `routes` on a free loopback port, for as long as the block runs: its
    base URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _asked(request: Any, times: int) -> list[Any]:
    """The answers of `times` reads by `request`, one after another on one session."""
    async with aiohttp.ClientSession() as session:
        return [await request(session, sent_before) for sent_before in range(times)]


# ------------------------------------------------------------------ result polls (--polls)


def test_poll_figures_are_the_query_figures_named_for_polls_with_the_executed_results() -> None:
    cpu = {"radiostation": 0.0, "peer": 2.0, "rest_proxy": 1.0, "score": 0.0, "other": 0.0}
    answers = {"200": 1000, "404": 2, "503": 1, "timeout": 1}
    latencies = [0.001 * (n % 4 + 1) for n in range(1000)]  # 1 ... 4 ms
    found = bench.read_figures(
        "poll", answers, latencies, cpu, 5.0, (1.0, 5.0), {"0": 990, "2": 10}
    )
    figures = found["figures"]
    assert figures["poll_s"] == 5.0 and figures["poll_answered_per_s"] == 200.0
    assert figures["poll_p50_ms"] == 2.0 and figures["poll_p99_ms"] == 4.0
    assert figures["poll_results_executed"] == 990
    assert {key: n for key, n in figures.items() if key.startswith("poll_answers_")} == {
        "poll_answers_200": 1000,
        "poll_answers_404": 2,
        "poll_answers_503": 1,
        "poll_answers_none": 1,
    }
    assert figures["poll_cpu_s"] == 3.0 and figures["poll_cpu_ms_per_poll"] == 3.0
    assert figures["poll_cpu_ms_peer_per_poll"] == 2.0
    assert figures["poll_cpu_ms_rest_proxy_per_poll"] == 1.0
    assert figures["poll_cpu_s_load_generator"] == 1.0 and figures["poll_cores_busy"] == 0.8
    # the query phase's figures, each named for polls, and the executed results beside them
    query = bench.read_figures("query", answers, latencies, cpu, 5.0, (1.0, 5.0))
    renamed = {key.replace("query", "poll"): value for key, value in query["figures"].items()}
    assert figures == {**renamed, "poll_results_executed": 990}
    assert found["details"] == {
        "poll_answers": {"200": 1000, "404": 2, "503": 1, "timeout": 1},
        "poll_cpu_s_by_kind": cpu,
        "poll_results": {"0": 990, "2": 10},
    }
    # answered, none executed (unknown to the SCORE, or not yet): it shows
    waiting = bench.read_figures("poll", {"200": 3}, [0.001] * 3, cpu, 1.0, results={"2": 3})
    assert waiting["figures"]["poll_results_executed"] == 0
    nothing = bench.read_figures("poll", {"503": 3}, [], cpu, 1.0, results={})["figures"]
    assert nothing["poll_results_executed"] == 0 and nothing["poll_cpu_ms_per_poll"] is None


def test_result_code_of_a_transaction_result_reply() -> None:
    assert bench.result_code({"response_code": 0, "response": {"code": 0}}) == "0"
    waiting = {"response_code": 0, "response": {"code": 2, "message": "not invoked yet"}}
    assert bench.result_code(waiting) == "2"
    for odd in (None, [], {}, {"response": None}, {"response": {"code": "0"}}, {"response": {}}):
        assert bench.result_code(odd) == "?", odd
    assert bench.result_code({"response": {"code": True}}) == "?"


def test_the_polls_take_acknowledged_transactions_seen_final_in_their_channel() -> None:
    state = bench.LoadState(run_id="r")
    for number in range(6):
        state.record_ack(f"a{number}", float(number))
    state.record_final("a3", 1.0, "alpha")  # final in another order than acknowledged
    state.record_final("a1", 2.0, "alpha")
    state.record_final("a0", 2.0, "beta")
    state.record_final("a0", 3.0, "alpha")  # seen again: the first block's channel counts
    state.record_final("idle", 2.0, "alpha")  # final, but not acknowledged by this load
    state.record_final("a2", 2.0, "gamma")  # in a channel not asked for; a4, a5 never final
    assert bench.committed_hashes(state, ["alpha", "beta"]) == {
        "alpha": ["a1", "a3"],
        "beta": ["a0"],
    }
    assert bench.committed_hashes(state, ["delta"]) == {"delta": []}
    many = bench.LoadState(run_id="r")
    for number in range(10):
        many.record_ack(f"h{number}", 0.0)
        many.record_final(f"h{number}", 1.0)
    assert bench.committed_hashes(many, [""], limit=4) == {"": ["h0", "h2", "h5", "h7"]}
    assert bench.committed_hashes(many, [""])[""] == [f"h{number}" for number in range(10)]
    assert bench.spread(["x", "y"], 2) == ["x", "y"] and bench.spread([], 3) == []


class _RefusingSession:
    """Stands in for a client session: notes each URL asked for, and sends nothing."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def request(self, method: str, url: str, **_: Any) -> Any:
        assert method == "GET"
        self.urls.append(url)
        raise aiohttp.ClientConnectionError("not sent")


async def test_a_poll_asks_for_each_hash_in_turn_in_its_channel() -> None:
    url = f"http://127.0.0.1:{bench.REST_PORTS[2]}{bench.POLL_PATH}"
    session = _RefusingSession()
    request = bench.poll_request(url, "alpha", ["h0", "h1", "h2"], first=4)
    answers = [await request(session, sent_before) for sent_before in range(4)]  # type: ignore[arg-type]
    assert answers == [("connection error", None, None)] * 4
    assert session.urls == [
        f"{url}?hash={tx_hash}&channel=alpha" for tx_hash in ("h1", "h2", "h0", "h1")
    ]
    session = _RefusingSession()
    await bench.poll_request(url, "", ["h0", "h1"])(session, 3)  # type: ignore[arg-type]
    assert session.urls == [f"{url}?hash=h1"]  # the default channel: no channel argument
    with pytest.raises(ValueError):
        bench.poll_request(url, "", [])


async def test_poll_client_counts_answers_and_result_codes_over_one_connection() -> None:
    import asyncio

    executed, waiting, unknown = "ee" * 32, "aa" * 32, "cc" * 32
    answered = 8  # the client is stopped while it waits for the next answer
    asked: list[str] = []
    peers: set[Any] = set()
    enough, release = asyncio.Event(), asyncio.Event()

    async def result(request: web.Request) -> web.Response:
        asked.append(request.query_string)
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if len(asked) > answered:
            enough.set()
            await release.wait()
        if len(asked) == 4:
            return web.json_response({}, status=503, headers={"Retry-After": "0"})
        if request.query["hash"] == unknown:
            return web.json_response({"response_code": -4, "message": "not found"}, status=404)
        code = 0 if request.query["hash"] == executed else 2
        return web.json_response({"response_code": 0, "response": {"code": code}})

    state = bench.ReadState()
    async with _serving(web.get(bench.POLL_PATH, result)) as base:
        try:
            url = base + bench.POLL_PATH
            request = bench.poll_request(url, "beta", [executed, waiting, unknown], first=1)
            client = asyncio.create_task(bench.read_client(state, request, time.monotonic() + 600))
            await asyncio.wait_for(enough.wait(), 60)  # a bound on a broken client, not a clock
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
        finally:
            release.set()
    cycle = [waiting, unknown, executed]
    assert asked == [f"hash={cycle[n % 3]}&channel=beta" for n in range(answered + 1)]
    assert len(peers) == 1  # one keep-alive connection
    # waiting (code 2), unknown (404), executed, 503, unknown, executed, waiting, unknown
    assert state.answers == {"200": 4, "404": 3, "503": 1}
    assert state.results == {"0": 2, "2": 2}
    assert len(state.latencies) == 4 and min(state.latencies) > 0 and state.in_flight == 0
    state = bench.ReadState()
    await bench.read_client(state, request, time.monotonic() - 1)  # over before it began
    assert not state.answers and not state.results


def test_result_code_of_a_v3_transaction_result_reply() -> None:
    assert bench.v3_result_code({"result": {"status": "0x1", "txHash": "0x" + "ab" * 32}}) == "0"
    failed = {"result": {"status": "0x0", "failure": {"code": "0x7d64", "message": "no"}}}
    assert bench.v3_result_code(failed) == "32100"
    for odd in (
        None,
        {},
        {"error": {"code": -31002, "message": "pending"}},
        {"result": {"status": "0x2"}},
        {"result": {"status": "0x0", "failure": {"code": "0xg"}}},
        {"result": {"status": "0x0"}},
        {"result": []},
    ):
        assert bench.v3_result_code(odd) == "?", odd


async def test_a_v3_poll_asks_icx_get_transaction_result_of_each_hash_in_turn() -> None:
    executed, failed = "ee" * 32, "ff" * 32
    asked: list[dict[str, Any]] = []

    async def v3(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        tx_hash = body["params"]["txHash"][2:]
        if tx_hash == failed:
            result = {"status": "0x0", "failure": {"code": "0x7d64", "message": "no"}}
        else:
            result = {"status": "0x1"}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    async with _serving(web.post("/api/v3/alpha", v3)) as base:
        url = base + "/api/v3/alpha"
        answers = await _asked(bench.v3_poll_request(url, [executed, failed], first=1), 3)
    assert answers == [("200", None, "32100"), ("200", None, "0"), ("200", None, "32100")]
    assert [body["method"] for body in asked] == ["icx_getTransactionResult"] * 3
    assert [body["params"] for body in asked] == [
        {"txHash": "0x" + tx_hash} for tx_hash in (failed, executed, failed)
    ]
    with pytest.raises(ValueError):
        bench.v3_poll_request(url, [])


async def test_a_v3_balance_poll_asks_the_balance_of_an_account_of_each_hash() -> None:
    asked: list[dict[str, Any]] = []

    async def v3(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        value = "many" if body["params"]["address"].endswith("ff" * 20) else "0x2a"
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": value})

    async with _serving(web.post("/api/v3", v3)) as base:
        url = base + "/api/v3"
        answers = await _asked(bench.v3_poll_request(url, ["ab" * 32, "ff" * 32], balances=True), 2)
    assert answers == [("200", None, "0"), ("200", None, "?")]  # a hex number, or not
    assert [(body["method"], body["params"]) for body in asked] == [
        ("icx_getBalance", {"address": "hx" + "ab" * 20}),
        ("icx_getBalance", {"address": "hx" + "ff" * 20}),
    ]
    assert bench.v3_balance_code({"result": "0x0"}) == "0"
    for odd in (None, {}, {"result": 5}, {"result": "0X1"}, {"error": {"code": -32602}}):
        assert bench.v3_balance_code(odd) == "?", odd


async def test_a_v3_call_poll_calls_the_score_it_is_given() -> None:
    asked: list[dict[str, Any]] = []

    async def v3(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        if body["params"]["data"]["params"]["n"] == "ffffffff":
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -1}})
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"pong": 1}})

    score = "cx" + "12" * 20
    async with _serving(web.post("/api/v3", v3)) as base:
        request = bench.v3_poll_request(base + "/api/v3", ["ab" * 32, "ff" * 32], call_to=score)
        answers = await _asked(request, 2)
    assert [answer[2] for answer in answers] == ["0", "?"]  # a result, or not
    assert [(body["method"], body["params"]) for body in asked] == [
        (
            "icx_call",
            {"to": score, "dataType": "call", "data": {"method": "ping", "params": {"n": n}}},
        )
        for n in ("abababab", "ffffffff")
    ]
    assert bench.parse_args(["--polls", "5", "--poll-api", "v3-call"]).poll_api == "v3-call"


async def test_a_block_poll_asks_for_the_last_block_the_same_way_each_time() -> None:
    asked: list[tuple[str, str, Any]] = []
    block = {"height": 7, "block_hash": "ab" * 32}

    async def v1(request: web.Request) -> web.Response:
        asked.append((request.method, request.path_qs, None))
        code = 0 if len(asked) == 1 else 9000
        return web.json_response({"response_code": code, "block_data_json": block})

    async def v3(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append((request.method, request.path_qs, body))
        result = block if len(asked) == 3 else {"height": "7"}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    async with _serving(web.get("/api/v1/blocks", v1), web.post("/api/v3/beta", v3)) as base:
        v1_answers = await _asked(bench.block_poll_request(base + "/api/v1/blocks?channel=b"), 2)
        v3_answers = await _asked(bench.block_poll_request(base + "/api/v3/beta", v3=True), 2)
    assert [answer[2] for answer in v1_answers] == ["0", "?"]  # a block, or an error code
    assert [answer[2] for answer in v3_answers] == ["0", "?"]  # a block, or a height as text
    assert asked == [
        ("GET", "/api/v1/blocks?channel=b", None),
        ("GET", "/api/v1/blocks?channel=b", None),
        *(
            ("POST", "/api/v3/beta", {"jsonrpc": "2.0", "id": n, "method": "icx_getLastBlock"})
            for n in (0, 1)
        ),
    ]
    for odd in (
        None,
        [],
        {},
        {"response_code": 0},
        {"response_code": 0, "block_data_json": []},
        {"response_code": False, "block_data_json": block},
        dict(EMPTY_CHAIN),  # what the proxy answers before the genesis block
    ):
        assert bench.block_code(odd) == "?", odd
    for odd in (None, {"result": None}, {"result": {"height": True}}, {"error": {"code": -1}}):
        assert bench.v3_block_code(odd) == "?", odd
    assert bench.v3_block_code({"result": {"height": -1}}) == "?"
    for api in bench.BLOCK_POLLS:
        assert bench.parse_args(["--polls", "5", "--poll-api", api]).poll_api == api


def test_poll_rows_after_the_query_rows_with_every_status_and_ratios() -> None:
    cpu = dict.fromkeys(bench.KINDS, 1.0)
    base = bench.read_figures("poll", {"200": 100, "404": 3}, [0.01] * 100, cpu, 10.0, (0, 0), {})
    current = bench.read_figures(
        "poll", {"200": 200}, [0.005] * 200, cpu, 10.0, results={"0": 150, "2": 50}
    )
    base["figures"]["poll_results_executed"] = 100
    query = bench.read_figures("query", {"200": 100, "404": 1}, [0.01] * 100, cpu, 10.0)
    runs = {
        "baseline": _run(**query["figures"], **base["figures"]),
        "current": _run(**current["figures"]),
    }
    runs["current"]["details"] = current["details"]
    text = bench.format_table(runs, bench.ratios(current["figures"], runs["baseline"]["figures"]))

    def row(title: str) -> list[str]:
        (line,) = [line for line in text.splitlines() if line.startswith(title + "  ")]
        return line.split()[-3:]

    assert row("polls: answered (200) per s") == ["10.0", "20.0", "2.00"]
    assert row("polls:   of which executed (response code 0)") == ["100", "150", "1.50"]
    assert row("polls: latency p99 of the answered (ms)") == ["10.0", "5.00", "0.5"]
    assert row("polls: CPU ms per answered poll") == ["50.0", "25.0", "0.5"]
    assert row("polls:   CPU ms SCORE") == ["10.0", "5.00", "0.5"]
    assert row("polls: answers 404") == ["3", "-", "-"]
    assert row("queries: answers 404") == ["1", "-", "-"]  # each phase its own statuses
    assert row("queries:   CPU ms SCORE") == ["10.0", "-", "-"]
    lines = text.splitlines()

    def position(title: str) -> int:
        (found,) = [n for n, line in enumerate(lines) if line.startswith(title + "  ")]
        return found

    order = [
        "queries: no HTTP answer (timeout, connection)",
        "polls: answered (200) per s",
        "polls: answers 200",
        "polls:   of which executed (response code 0)",
        "polls: answers 503 (overload)",
        "polls: answers 404",
        "polls: no HTTP answer (timeout, connection)",
        "polls: cores busy: network + load generator",
    ]
    assert [position(title) for title in order] == sorted(position(title) for title in order)
    assert "current poll: answers by status: 200: 200" in text
    assert "current poll: result codes of the 200 answers: 0: 150, 2: 50" in text


def test_read_clients_take_turns_over_the_peers_then_the_channels_as_the_load() -> None:
    places = bench.client_places(9, ["a", "b"])
    assert places == [(peer, "a") for peer in range(4)] + [(peer, "b") for peer in range(4)] + [
        (0, "a")
    ]
    assert bench.client_places(2, [""]) == [(0, ""), (1, "")]


def test_polls_option() -> None:
    assert bench.parse_args([]).polls == 0
    options = bench.parse_args(["--no-load", "--no-idle", "--polls", "15"])
    assert options.polls == 15.0 and options.queries == 0 and not options.tx_load
    assert bench.parse_args(["--queries", "5", "--polls", "1m"]).polls == 60.0
    assert bench.parse_args(["--polls", "0"]).polls == 0.0
    assert options.poll_api == "v1"
    assert bench.parse_args(["--polls", "5", "--poll-api", "v3"]).poll_api == "v3"
    assert bench.parse_args(["--polls", "5", "--poll-api", "v3-balance"]).poll_api == "v3-balance"
    summary, _ = bench.report({"current": _run()}, options)
    assert summary["settings"]["polls_s"] == 15.0 and summary["settings"]["queries_s"] == 0
    assert summary["settings"]["poll_api"] == "v1"
    for bad in (
        ["--polls", "-1"],
        ["--polls", "x"],
        ["--idle-only", "--polls", "5"],
        ["--polls", "5", "--poll-api", "v2"],
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_round_ratios_of_the_polls() -> None:
    base = [_run(poll_answered_per_s=200.0, poll_cpu_ms_per_poll=1.0, poll_p99_ms=4.0)] * 2
    current = [_run(poll_answered_per_s=300.0, poll_cpu_ms_per_poll=0.8, poll_p99_ms=2.0)] * 2
    runs = {"baseline": bench.merge_rounds(base), "current": bench.merge_rounds(current)}
    per_round = bench.round_ratios(runs)
    assert (
        per_round
        == [{"poll_answered_per_s": 1.5, "poll_cpu_ms_per_poll": 0.8, "poll_p99_ms": 0.5}] * 2
    )
    assert bench.spread_lines(per_round) == [
        "ratio of poll_answered_per_s in each round: 1.50, 1.50",
        "ratio of poll_cpu_ms_per_poll in each round: 0.8, 0.8",
        "ratio of poll_p99_ms in each round: 0.5, 0.5",
    ]
