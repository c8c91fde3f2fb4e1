"""Pure functions of tools/loadtool.py: durations, percentiles, targets, arguments, the report."""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import pytest

from loopchain.types.crypto import Signer, encrypted_pem
from loopchain.types.passwords import KEY_PASSWORD_ENV
from tools import loadtool
from tools.loadtool import BlockInfo, Stats, Target, parse_args, parse_duration, percentile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60", 60.0),
        ("60s", 60.0),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("500ms", 0.5),
        (" 10S ", 10.0),
        ("0.25", 0.25),
        (".5s", 0.5),
    ],
)
def test_parse_duration_accepts_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "-5", "1m30s", "abc", "0", "0s", "1 m s"])
def test_parse_duration_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_percentile_unsorted_and_small_inputs():
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0
    assert percentile([30.0, 10.0, 20.0], 99) == 30.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("pct", [-1, 100.5])
def test_percentile_rejects_out_of_range(pct):
    with pytest.raises(ValueError):
        percentile([1.0], pct)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("http://127.0.0.1:9000", Target("rest", "http://127.0.0.1:9000")),
        ("http://localhost:9100/", Target("rest", "http://localhost:9100")),
        ("https://node.example:443", Target("rest", "https://node.example:443")),
        ("127.0.0.1:7100", Target("grpc", "127.0.0.1:7100")),
        ("peer-1:7200", Target("grpc", "peer-1:7200")),
    ],
)
def test_parse_target(text, target):
    assert loadtool.parse_target(text) == target


@pytest.mark.parametrize(
    "text", ["localhost", "http://", "http://host", ":7100", "host:99999", "ftp://h:1"]
)
def test_parse_target_rejects(text):
    with pytest.raises(ValueError):
        loadtool.parse_target(text)


def test_parse_args_defaults():
    args = parse_args([])
    assert args.clients == 1
    assert args.target == Target("rest", "http://127.0.0.1:9000")
    assert args.type == 0
    assert args.channel == ""
    assert args.rate is None
    assert args.drain == 15.0
    assert args.json is False


def test_parse_args_all_flags():
    argv = ["-c", "8", "-p", "127.0.0.1:7100", "-m", "1m", "-t", "1", "--channel", "kofia_1"]
    argv += ["--rate", "250", "--drain", "0", "--timeout", "3", "--json"]
    argv += ["--query-body", '{"method": "get_info"}']
    args = parse_args(argv)
    assert (args.clients, args.target, args.duration) == (8, Target("grpc", "127.0.0.1:7100"), 60.0)
    assert (args.type, args.channel, args.rate, args.drain) == (1, "kofia_1", 250.0, 0.0)
    assert (args.timeout, args.json, args.query_body) == (3.0, True, {"method": "get_info"})


def test_loopchains_option_names_are_taken():
    """loopchain's loadtool took --peer and --mins (minutes); they were unrecognised."""
    args = parse_args(["--peer", "127.0.0.1:7100", "--mins", "2"])
    assert (args.target, args.duration) == (Target("grpc", "127.0.0.1:7100"), 120.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "0"],
        ["--mins", "0"],
        ["-c", "two"],
        ["-m", "soon"],
        ["-t", "3"],
        ["-p", "nowhere"],
        ["--rate", "0"],
        ["--rate", "inf"],
        ["--drain", "-1"],
        ["--query-body", "[1]"],
        ["--query-body", "{"],
    ],
)
def test_parse_args_rejects_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_stats_match_committed_hashes_once():
    stats = Stats()
    stats.record_submit("a", sent=1.0, replied=1.1)
    stats.record_submit("b", sent=2.0, replied=2.1)
    stats.record_block(BlockInfo(5, "h5", "h4", ("x", "a")), observed=3.0)
    stats.record_block(BlockInfo(6, "h6", "h5", ("a", "b")), observed=4.5)
    assert (stats.submitted, stats.committed, stats.height) == (2, 2, 6)
    assert stats.commit_latencies == [2.0, 2.5]
    assert (stats.first_submit, stats.last_commit) == (1.0, 4.5)
    assert stats.submit_times == {}


def test_summary_rates_and_format():
    args = parse_args(["-m", "2s"])
    run = loadtool.Run(args, transport=_NoTransport())
    run.send_seconds = 2.0
    run.stats.record_submit("a", sent=10.0, replied=10.1)
    run.stats.record_submit("b", sent=10.5, replied=10.6)
    run.stats.record_submit("c", sent=11.0, replied=11.1)
    run.stats.record_block(BlockInfo(0, "h0", "", ("a", "b")), observed=12.0)
    run.stats.errors["timeout"] += 2
    summary = loadtool.summarize(run)
    assert summary["submitted"] == 3 and summary["submit_tps"] == 1.5
    assert summary["committed"] == 2 and summary["uncommitted"] == 1
    assert summary["uncommitted_sample"] == ["c"]  # to look up
    assert summary["commit_tps"] == 1.0  # 2 commits over 12.0 - 10.0 s
    assert summary["latency_ms"] == {"p50": 1500.0, "p90": 2000.0, "p99": 2000.0}
    assert summary["errors"] == {"timeout": 2}
    text = loadtool.format_summary(summary)
    assert "submitted   3 tx" in text and "timeout: 2" in text
    assert "uncommitted c" in text


class _NoTransport:
    """A transport that is never called by the pure summary functions."""

    async def close(self) -> None:
        raise AssertionError("not used")


def test_argparse_type_wraps_value_errors():
    convert = loadtool._argparse_type(parse_duration)
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        convert("x")


def _finished_run() -> loadtool.Run:
    run = loadtool.Run(parse_args(["-m", "2s"]), transport=_NoTransport())
    run.started, run.send_seconds = 9.0, 2.0
    for name, sent in (("a", 10.0), ("b", 10.5), ("c", 11.0)):
        run.stats.sent += 1
        run.stats.record_submit(name, sent=sent, replied=sent + 0.1)
        run.stats.answers["http 200"] += 1
    run.stats.sent += 1
    run.stats.errors["http 503 (-7)"] += 1
    run.stats.answers["http 503 (-7)"] += 1
    run.stats.errors["chain poll: timeout"] += 1  # not a request's answer
    run.stats.record_block(BlockInfo(0, "h0", "", ("a", "b")), observed=12.0)
    return run


def test_progress_line_counts_sent_acknowledged_and_errors():
    line = loadtool.progress_line(_finished_run(), now=11.0)
    assert line.split() == (
        "2.0s sent 4 acknowledged 3 (1.5/s) errors 2 committed 2 height 0".split()
    )


def test_report_figures_and_markdown():
    from tools import load_report

    report = load_report.build_report(_finished_run())
    assert report["requests"] == 4 and report["acknowledged"] == 3 and report["committed"] == 2
    assert report["success_rate"] == 0.75
    assert report["answers"] == {"http 200": 3, "http 503 (-7)": 1}
    assert report["latency_ms"] == {"p50": 1500.0, "p90": 2000.0, "p99": 2000.0, "max": 2000.0}
    assert report["reply_latency_ms"]["max"] == 100.0
    assert report["chain_poll_errors"] == {"chain poll: timeout": 1}
    assert report["throughput"] == {"acknowledged_per_s": 1.5, "committed_per_s": 1.0}
    text = load_report.format_markdown(report)
    assert "| success rate | 75.00 % |" in text and "| http 503 (-7) | 1 |" in text
    assert "| commit latency max (ms) | 2000.0 |" in text


def test_report_of_a_run_without_answers_has_no_rates():
    from tools import load_report

    run = loadtool.Run(parse_args(["-t", "1"]), transport=_NoTransport())
    report = load_report.build_report(run)
    assert report["requests"] == 0 and report["success_rate"] is None
    assert report["latency_ms"]["max"] is None and report["committed"] is None
    assert "| success rate | – |" in load_report.format_markdown(report)


def test_progress_and_report_flags():
    args = parse_args(["--progress", "--report", "out"])
    assert args.progress is True and args.report == "out"
    assert parse_args([]).report is None and parse_args([]).progress is False


def test_matplotlib_is_imported_only_for_a_report():
    import subprocess
    import sys

    code = "import sys, tools.loadtool, tools.load_report; print('matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


WITHOUT_MATPLOTLIB = """
import importlib.abc, sys
from pathlib import Path


class NoMatplotlib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoMatplotlib())
from tests.unit.test_loadtool import _finished_run
from tools.load_report import write_report

print(" ".join(p.name for p in write_report(_finished_run(), Path(sys.argv[1]))))
"""


def test_a_report_without_matplotlib_skips_only_the_png(tmp_path):
    """The runtime image installs only requirements.txt: a report is then report.json and
    report.md, a line says why there is no latency.png, and no traceback."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["report.json", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert done.stderr.splitlines() == [
        "loadtool: matplotlib is not installed (No module named 'matplotlib'), "
        "so no latency.png was written"
    ]
    assert json.loads((out / "report.json").read_text())["committed"] == 2
    assert "latency.png" not in (out / "report.md").read_text()


# ------------------------------------------------------------------ -t 2: the funding key

FUNDING_SECRET = bytes(range(1, 33))


def _key_file(tmp_path, data: bytes, mode: int = 0o600):
    path = tmp_path / "funding_key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_the_funding_key_comes_from_a_file_in_hex_or_pem(tmp_path):
    expected = Signer(FUNDING_SECRET).address
    hex_file = _key_file(tmp_path, FUNDING_SECRET.hex().encode() + b"\n")
    args = parse_args(["-t", "2", "--key-file", str(hex_file)])
    assert loadtool.funding_signer(args, environ={}).address == expected
    _key_file(tmp_path, encrypted_pem(Signer(FUNDING_SECRET), "pw"))  # the same file, now PEM
    signer = loadtool.funding_signer(args, environ={KEY_PASSWORD_ENV: "pw"})
    assert signer.address == expected
    with pytest.raises(loadtool.KeyProblem, match="funding_key"):
        loadtool.funding_signer(args, environ={})  # encrypted, and no password


@pytest.mark.parametrize(
    ("data", "mode", "message"),
    [
        (FUNDING_SECRET.hex().encode(), 0o644, "has mode 0644: group or others can access it"),
        (FUNDING_SECRET.hex().encode(), 0o640, "run `chmod 600"),
        (FUNDING_SECRET.hex()[:-1].encode(), 0o600, "is not a private key in hex"),
        (b"zz" + FUNDING_SECRET.hex()[2:].encode(), 0o600, "is not a private key in hex"),
        (b"00" * 32, 0o600, "is not a valid secp256k1 private key"),
        (b"-----BEGIN PRIVATE KEY-----\n" + FUNDING_SECRET.hex().encode(), 0o600, "PEM"),
    ],
)
def test_a_key_file_that_cannot_be_used_is_refused_without_showing_the_key(
    tmp_path, data, mode, message
):
    args = parse_args(["-t", "2", "--key-file", str(_key_file(tmp_path, data, mode))])
    with pytest.raises(loadtool.KeyProblem, match=re.escape(message)) as refused:
        loadtool.funding_signer(args, environ={})
    assert FUNDING_SECRET.hex()[2:10] not in str(refused.value)


def test_the_funding_key_comes_from_the_environment_then_the_development_key(tmp_path):
    args = parse_args(["-t", "2"])
    env = {loadtool.KEY_ENV: "0x" + FUNDING_SECRET.hex()}
    assert loadtool.funding_signer(args, environ=env).address == Signer(FUNDING_SECRET).address
    development = Signer(bytes.fromhex(loadtool.DEV_KEY)).address
    assert loadtool.funding_signer(args, environ={}).address == development
    secret_looking = "5ecre7" * 10
    with pytest.raises(loadtool.KeyProblem) as refused:
        loadtool.funding_signer(args, environ={loadtool.KEY_ENV: secret_looking})
    assert str(refused.value) == "$LOOPCHAIN_LOADTOOL_KEY is not a private key in hex (64 digits)"
    missing = parse_args(["-t", "2", "--key-file", str(tmp_path / "none")])
    with pytest.raises(loadtool.KeyProblem, match=r"cannot read key file .*none"):
        loadtool.funding_signer(missing, environ=env)  # a file given is never passed over


def test_key_on_the_command_line_still_works_with_a_warning(capsys):
    args = parse_args(["-t", "2", "--key", FUNDING_SECRET.hex()])
    env = {loadtool.KEY_ENV: loadtool.DEV_KEY}
    assert loadtool.funding_signer(args, environ=env).address == Signer(FUNDING_SECRET).address
    warning = capsys.readouterr().err
    assert "visible to every user" in warning and "--key-file" in warning
    assert FUNDING_SECRET.hex() not in warning


def test_key_file_and_key_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--key-file", "f", "--key", FUNDING_SECRET.hex()])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_main_refuses_an_unusable_key_in_one_line_before_any_request(tmp_path, capsys):
    key = _key_file(tmp_path, FUNDING_SECRET.hex().encode(), 0o644)
    # a target where nothing listens is never reached: the key is refused first
    argv = ["-t", "2", "-p", "http://127.0.0.1:1", "--key-file", str(key)]
    assert loadtool.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"loadtool: key file {key} has mode 0644")


@pytest.mark.parametrize(
    ("code", "word"),
    [
        (0, "0"),
        (-32603, "-32603"),
        ("-6", "-6"),
        ("x" * 50_000, "?"),  # a server's fresh words each time were a category each
        ("12345678901234567890", "?"),
        (None, "?"),
        (True, "?"),
        ([1], "?"),
    ],
)
def test_an_answers_code_is_a_bounded_error_category(code: object, word: str) -> None:
    assert loadtool._code_word(code) == word


async def test_a_rate_never_holds_a_client_past_the_end_or_a_ctrl_c() -> None:
    """A rate below the clients over the duration had them sleep their slot past -m (200 s at
    --rate 0.01), deaf to Ctrl-C (review): a slot at or past the end is not waited for, and
    stopping ends the wait."""
    stop = asyncio.Event()
    limiter = loadtool.RateLimiter(0.001)  # a slot every 1,000 s
    end = time.monotonic() + 100.0
    assert await limiter.wait(end, stop)  # the first slot is now
    assert not await limiter.wait(end, stop)  # the next is past the end: not waited for
    limiter = loadtool.RateLimiter(0.005)  # 200 s apart, within an end 1,000 s away
    end = time.monotonic() + 1_000.0
    assert await limiter.wait(end, stop)
    waiting = asyncio.ensure_future(limiter.wait(end, stop))
    await asyncio.sleep(0)  # it waits for its slot
    assert not waiting.done()
    stop.set()
    assert await asyncio.wait_for(waiting, 60) is False


@pytest.mark.parametrize(
    ("argv", "hinted"),
    [
        (["-m", "5"], "5"),
        (["-p", "http://x:9000", "-m5"], "5"),
        (["--duration=2.5"], "2.5"),
        (["-m", "5s"], None),
        (["-m", "1m"], None),
        (["--mins", "5"], None),
        ([], None),
    ],
)
def test_a_bare_number_for_m_is_said_to_be_seconds(argv: list[str], hinted: str | None) -> None:
    """loopchain's loadtool read `-m 5` as five minutes (review): a script written for it is told
    this one sends for five seconds, and how to ask for minutes; its -d is taken."""
    hint = loadtool.minutes_hint(argv)
    if hinted is None:
        assert hint == ""
    else:
        assert f"-m {hinted} sends for {hinted} seconds" in hint and f"--mins {hinted}" in hint
    assert parse_args(["-d", *argv]).debug is True
