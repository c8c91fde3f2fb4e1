"""tools/log_parser.py on files in the format deploy/fluentd/fluent.conf writes (JSON lines with the
record's fields plus `tag` and `time`): readable lines out, errors listed, counts per process,
malformed lines counted and never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests._exec import python_after
from tools import log_parser


def line(tag: str, time: str, **record: object) -> str:
    return json.dumps({**record, "tag": tag, "time": time})


PEER = [
    line(
        "loopchain.peer",
        "2025-01-01T10:00:00.100+0000",
        level="INFO",
        logger="loopchain.peer",
        message="started",
        process="peer:7100",
        pid=10,
    ),
    line(
        "loopchain.peer",
        "2025-01-01T10:00:02.000+0000",
        level="WARNING",
        logger="loopchain.peer.node",
        message="it failed",
        process="peer:7100",
        pid=10,
        exc_text='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad',
    ),
    line(
        "loopchain.peer",
        "2025-01-01T10:00:03.000+0000",
        level="ERROR",
        logger="loopchain.peer",
        message="store full\nsecond line",
        process="peer:7100",
        pid=10,
    ),
]
EVENTS = [
    line(
        "loopchain.peer.event",
        "2025-01-01T10:00:01.000+0000",
        event="AddBlock",
        channel="loopchain_default",
        height=3,
        process="peer:7100",
        pid=10,
    ),
    line(
        "loopchain.peer.event",
        "2025-01-01T10:00:04.000+0000",
        event="Error",
        channel="loopchain_default",
        message="SCORE unavailable",
        process="peer:7100",
        pid=10,
    ),
]
RS = [
    line(
        "loopchain.radiostation",
        "2025-01-01T11:00:00.500+0100",  # 10:00:00.500 UTC: merged by the instant, not the text
        level="CRITICAL",
        logger="loopchain.radiostation",
        message="cannot start",
        process="radiostation:7102",
        pid=20,
    ),
]


def write_dir(tmp_path: Path) -> Path:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "loopchain.peer.20250101.log").write_text("\n".join(PEER) + "\n")
    (logs / "loopchain.peer.event.20250101.log").write_text("\n".join(EVENTS) + "\n")
    with gzip.open(logs / "loopchain.radiostation.20250101.log.gz", "wt") as file:
        file.write("\n".join(RS) + "\n")
    (logs / "buffer.b5f.log.meta").write_bytes(b"\x85\xa1binary")  # fluentd's own: not read
    return logs


def test_a_directory_is_merged_by_time_with_errors_listed_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.log"
    assert log_parser.main([str(write_dir(tmp_path)), str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines == [
        "2025-01-01T10:00:00.100+0000 peer:7100 INFO     loopchain.peer: started",
        "2025-01-01T11:00:00.500+0100 radiostation:7102 CRITICAL loopchain.radiostation: "
        "cannot start",
        '2025-01-01T10:00:01.000+0000 peer:7100 EVENT    AddBlock channel="loopchain_default" '
        "height=3",
        "2025-01-01T10:00:02.000+0000 peer:7100 WARNING  loopchain.peer.node: it failed | "
        "ValueError: bad",
        "2025-01-01T10:00:03.000+0000 peer:7100 ERROR    loopchain.peer: store full\\nsecond line",
        '2025-01-01T10:00:04.000+0000 peer:7100 EVENT    Error channel="loopchain_default" '
        'message="SCORE unavailable"',
    ]
    printed = capsys.readouterr().out
    errors = [lines[1], lines[3], lines[4], lines[5]]
    assert [p for p in printed.splitlines() if p in lines] == errors
    assert "    ValueError: bad" in printed  # the exception's traceback, indented
    assert "6 records from 3 file(s)" in printed
    assert "peer:7100: 5 records (2 events), 3 errors" in printed
    assert "radiostation:7102: 1 records (0 events), 1 errors" in printed
    assert "0 malformed lines skipped" in printed


def test_malformed_lines_are_counted_and_named_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.log"
    long_line = json.dumps({"message": "x" * (log_parser.MAX_LINE + 10), "time": 1})
    source.write_text(
        "\n".join(
            [
                PEER[0],
                "{not json",
                "[1, 2]",
                json.dumps({"message": "no time"}),
                json.dumps({"message": "bad time", "time": "yesterday"}),
                long_line,
                "",
                "\udcff\x00 binary",
                "[" * 100_000,
                PEER[2],
            ]
        )
        + "\n",
        errors="surrogateescape",
    )
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    printed = capsys.readouterr().out
    assert "7 malformed lines skipped" in printed
    for number, why in [
        (2, "not JSON"),
        (3, "not a JSON object but list"),
        (4, "no usable time: None"),
        (5, "no usable time: 'yesterday'"),
        (6, f"longer than {log_parser.MAX_LINE} characters"),
        (8, "not JSON"),
        (9, "not JSON"),
    ]:
        assert f"one.log:{number}: {why}" in printed
    assert "peer:7100: 2 records (0 events), 1 errors" in printed


def test_numbers_as_times_and_records_without_a_process(tmp_path: Path) -> None:
    source = tmp_path / "x.log"
    source.write_text(json.dumps({"tag": "other", "time": 5, "level": "INFO", "message": "m"}))
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert out.read_text() == "5 other INFO     ?: m\n"


def test_lines_in_fluentds_default_format_are_read(tmp_path: Path) -> None:
    """fluentd's out_file default, `time<TAB>tag<TAB>{record}` (what loopchain's collector
    wrote, a docker log driver's record holding its line in `log`), was skipped as not JSON."""
    source = tmp_path / "loopchain.log"
    rows = [
        '2025-01-01T10:00:00+00:00\tloopchain.peer\t{"log": "peer started\\n", "level": "INFO"}',
        '2025-01-01T10:00:01+00:00\tloopchain.peer\t{"message": "store full", "level": "ERROR"}',
    ]
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert out.read_text().splitlines() == [
        "2025-01-01T10:00:00+00:00 loopchain.peer INFO     ?: peer started",
        "2025-01-01T10:00:01+00:00 loopchain.peer ERROR    ?: store full",
    ]


def test_a_docker_lines_level_is_read_from_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The original collector's lines hold a process's text line in `log`, its level inside it
    (loopchain's format, and this project's stderr): their errors were never shown (review)."""
    source = tmp_path / "loopchain.log"
    texts = [
        "2026-01-01 00:00:00,000,001 81 1402 hx12ab icon_dex ERROR    [peer.py:run:10] lost",
        "2026-01-01 00:00:01,000 WARNING [peer] loopchain.peer: slow, no ERROR yet",
        "2026-01-01 00:00:02,000 CRITICAL [radiostation] loopchain.rs: store gone",
        "plain text, not a log line, naming ERROR late",
    ]
    rows = [
        f"2026-01-01T00:00:0{i}+00:00\tdocker.peer\t{json.dumps({'log': t + chr(10)})}"
        for i, t in enumerate(texts)
    ]
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    levels = [line.split()[2] for line in out.read_text().splitlines()]
    assert levels == ["ERROR", "WARNING", "CRITICAL", "?"]
    printed = capsys.readouterr().out
    assert "2 errors" in printed and "lost" in printed and "store gone" in printed, printed


def test_append_adds_to_out_as_loopchains_log_parser_did(tmp_path: Path) -> None:
    """A script running the original once a file gathered every file's lines in OUT; here OUT
    is replaced unless -a is given (review)."""
    out = tmp_path / "all.log"
    for index in range(2):
        source = tmp_path / f"{index}.log"
        record = {"tag": "p", "time": index, "level": "INFO", "message": f"m{index}"}
        source.write_text(json.dumps(record) + "\n")
        assert log_parser.main(["-a", str(source), str(out)]) == 0
    assert out.read_text() == "0 p INFO     ?: m0\n1 p INFO     ?: m1\n"
    assert log_parser.main([str(tmp_path / "1.log"), str(out)]) == 0
    assert out.read_text() == "1 p INFO     ?: m1\n"


@pytest.mark.parametrize("make", ["missing", "empty-dir"])
def test_unusable_input_is_an_error_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str
) -> None:
    source = tmp_path / "in"
    if make == "empty-dir":
        source.mkdir()
    assert log_parser.main([str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("log_parser.py: error: ") and str(source) in err
    assert "Traceback" not in err


def test_a_text_log_is_refused_as_not_the_collectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LOG_FILE_PATH log (./localnet.sh's logs/ folder) read 0 records, wrote an empty OUT and
    exited 0 (operator review): it is already readable, and is said to be."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "peer_7100.log").write_text(
        "2026-12-07 22:11:57,969 INFO    [peer:7100] loopchain.peer.node: peer id hx5b\n" * 3
    )
    out = tmp_path / "merged.txt"
    out.write_text("kept\n")
    assert log_parser.main([str(logs), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("log_parser.py: error: ") and "holds no collector record" in err, err
    assert "none of its 3 lines is one" in err and "Traceback" not in err
    assert out.read_text() == "kept\n"
    # appending to an OUT that did not exist: it is not left behind, empty (review)
    new_out = tmp_path / "new.txt"
    assert log_parser.main(["-a", str(logs), str(new_out)]) == 2
    assert not new_out.exists()


def test_help_names_both_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        log_parser.main(["--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    assert "IN" in usage and "OUT" in usage and "collector" in usage
    assert "Exit status: 0 when at least one file could be read" in " ".join(usage.split())


def peer_lines(count: int, start: float = 0.0) -> list[str]:
    return [
        json.dumps(
            {"tag": "loopchain.peer", "time": start + i, "level": "INFO", "message": f"m{i}"}
        )
        for i in range(count)
    ]


def test_a_truncated_or_corrupt_gzip_is_a_problem_of_that_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "a.good.log").write_text("\n".join(peer_lines(3, start=0.5)) + "\n")
    whole = gzip.compress(("\n".join(peer_lines(20_000)) + "\n").encode())
    (logs / "b.truncated.log.gz").write_bytes(whole[: len(whole) // 2])  # half-written
    (logs / "c.notgzip.log.gz").write_bytes(b"plain text, not gzip\n")  # BadGzipFile
    damaged = bytearray(gzip.compress(("\n".join(peer_lines(50)) + "\n").encode()))
    damaged[12:40] = b"\xff" * 28  # a valid header, then deflate data zlib refuses
    (logs / "d.damaged.log.gz").write_bytes(bytes(damaged))
    out = tmp_path / "out.log"
    assert log_parser.main([str(logs), str(out)]) == 0
    written = out.read_text().splitlines()
    kept = len(written) - 3
    assert 0 < kept < 20_000, kept  # the lines read before the truncation are kept
    assert sum(" m" not in w for w in written) == 0
    printed = capsys.readouterr().out
    assert "3 of 4 file(s) could not be read to the end" in printed
    assert "b.truncated.log.gz: " in printed and "end-of-stream" in printed
    assert "c.notgzip.log.gz: " in printed and "Not a gzipped file" in printed
    assert "d.damaged.log.gz: " in printed
    assert "a.good.log" not in printed


def test_no_readable_file_at_all_is_exit_1_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "x.log.gz").write_bytes(b"not gzip")
    whole = gzip.compress(b"\n".join(p.encode() for p in peer_lines(5)))
    (logs / "y.log.gz").write_bytes(whole[:15])  # ends inside the first block
    assert log_parser.main([str(logs), str(tmp_path / "out.log")]) == 1
    printed = capsys.readouterr()
    assert "2 of 2 file(s) could not be read" in printed.out
    assert "x.log.gz: " in printed.out and "y.log.gz: " in printed.out
    assert "no file could be read" in printed.err
    assert "Traceback" not in printed.out + printed.err


def test_malformed_lines_are_counted_and_only_the_first_ones_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = log_parser.Summary()
    source = tmp_path / "bad.log"
    source.write_text("{not json\n" * 5_000 + PEER[0] + "\n")
    assert len(list(log_parser.read_entries(source, summary))) == 1
    assert summary.malformed_count == 5_000
    assert len(summary.malformed) == log_parser.MAX_SHOWN_MALFORMED
    assert summary.malformed[0].startswith("bad.log:1: not JSON")
    assert summary.malformed[-1].startswith("bad.log:10: not JSON")
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1
    printed = capsys.readouterr().out
    assert "5000 malformed lines skipped" in printed and "... and 4990 more" in printed


def test_a_file_out_of_time_order_is_sorted_within_the_window(tmp_path: Path) -> None:
    """fluentd writes in arrival order: after a collector outage, bursts of several processes
    interleave. Entries out of place by less than the window come out in time order."""
    logs = tmp_path / "log"
    logs.mkdir()
    late = peer_lines(300, start=1000.0)  # times 1000..1299 ...
    burst = peer_lines(300, start=1000.5)  # ... and a burst with times between them, after them
    (logs / "a.log").write_text("\n".join(late + burst) + "\n")
    (logs / "b.log").write_text("\n".join(peer_lines(100, start=1100.25)) + "\n")
    out = tmp_path / "out.log"
    assert log_parser.main([str(logs), str(out)]) == 0
    times = [float(w.split()[0]) for w in out.read_text().splitlines()]
    assert len(times) == 700
    assert times == sorted(times)


def test_entries_out_of_place_by_more_than_the_window_are_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_parser, "WINDOW_ENTRIES", 10)
    source = tmp_path / "x.log"
    source.write_text("\n".join(peer_lines(30, start=100.0) + peer_lines(5, start=0.0)) + "\n")
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert len(out.read_text().splitlines()) == 35
    assert "5 records written out of time order" in capsys.readouterr().out


def test_numbers_python_cannot_hold_are_malformed_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.log"
    source.write_text(
        "\n".join(
            [
                PEER[0],
                '{"time": 1, "n": ' + "9" * 5000 + "}",  # int() refuses more than 4300 digits
                '{"time": 1' + "0" * 400 + "}",  # float() overflows
                '{"time": NaN}',
                '{"time": Infinity}',
                '{"time": 1e999}',
                PEER[2],
            ]
        )
        + "\n"
    )
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    printed = capsys.readouterr().out
    assert "5 malformed lines skipped" in printed
    assert "one.log:2: not JSON" in printed
    for number in (3, 4, 5, 6):
        assert f"one.log:{number}: no usable time" in printed


def test_control_characters_in_messages_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.log"
    record = {
        "tag": "peer",
        "time": 1,
        "level": "ERROR",
        "message": "a\x1b]0;owned\x07b\x9b2J\r\n",
        "exc_text": "Traceback\nValueError: \x1b[2J",
    }
    source.write_text(json.dumps(record) + "\n")
    out = tmp_path / "out.log"
    assert log_parser.main([str(source), str(out)]) == 0
    written = out.read_text()
    printed = capsys.readouterr().out
    for text in (written, printed):
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text and "\r" not in text
    assert "a\\x1b]0;owned\\x07b\\x9b2J\\r\\n" in written
    assert "ValueError: \\x1b[2J" in printed


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "log_parser.py"


def run_limited(
    logs: Path, out: Path, soft: int, hard: int | None
) -> subprocess.CompletedProcess[str]:
    """tools/log_parser.py LOGS OUT run as a file in a process started with RLIMIT_NOFILE
    (soft, hard); hard None: the hard limit this process has."""
    current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limits = (soft, current_hard if hard is None else hard)
    return subprocess.run(
        python_after(
            f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, {limits!r})",
            str(SCRIPT),
            str(logs),
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def many_files(tmp_path: Path, count: int) -> Path:
    logs = tmp_path / "log"
    logs.mkdir()
    for index in range(count):
        (logs / f"{index:03}.log").write_text(peer_lines(1, start=index)[0] + "\n")
    return logs


def test_a_low_soft_limit_of_open_files_is_raised_for_the_inputs(tmp_path: Path) -> None:
    """300 files under `ulimit -Sn 128`: the soft limit is raised (the hard one allows it) and
    every file is read (they failed with "Too many open files")."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 300 + log_parser.SPARE_DESCRIPTORS:
        pytest.skip(f"the hard limit of open files here is {hard}")
    logs = many_files(tmp_path, 300)
    out = tmp_path / "out.log"
    done = run_limited(logs, out, 128, None)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    assert "Traceback" not in done.stderr and "cannot open" not in done.stdout
    assert "300 records from 300 file(s)" in done.stdout
    assert len(out.read_text().splitlines()) == 300


def test_more_files_than_the_hard_limit_allows_are_refused_clearly(tmp_path: Path) -> None:
    """More files than the process may ever open at once: exit 2 naming how many it can read,
    before OUT is touched (it was exit 1 with OUT missing the files it could not open)."""
    logs = many_files(tmp_path, 60)
    out = tmp_path / "out.log"
    out.write_text("kept\n")
    done = run_limited(logs, out, 40, 40)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("log_parser.py: error: 60 input files")
    expected = f"can read at most {40 - log_parser.SPARE_DESCRIPTORS} files at once"
    assert expected in done.stderr and "ulimit -n" in done.stderr, done.stderr
    assert out.read_text() == "kept\n"


def test_out_may_not_be_an_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`log_parser.py c.log c.log` wiped the collected log and said "0 records", exit 0."""
    collected = tmp_path / "c.log"
    collected.write_text("\n".join(PEER) + "\n")
    before = collected.read_bytes()
    alias = tmp_path / "alias.log"
    alias.symlink_to(collected)
    linked = tmp_path / "hard.log"
    os.link(collected, linked)
    for out in (collected, alias, linked, tmp_path / "." / "c.log"):
        assert log_parser.main([str(collected), str(out)]) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("log_parser.py: error: OUT ") and "is the input file" in err, err
        assert collected.read_bytes() == before
    # a file of an input folder too
    logs = write_dir(tmp_path)
    inside = logs / "loopchain.peer.20250101.log"
    held = inside.read_bytes()
    assert log_parser.main([str(logs), str(inside)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert inside.read_bytes() == held


def test_a_new_out_inside_the_input_folder_is_written_and_not_read(tmp_path: Path) -> None:
    logs = write_dir(tmp_path)
    out = logs / "all.log"
    assert log_parser.main([str(logs), str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(PEER) + len(EVENTS) + len(RS)
    assert sorted(p.name for p in logs.iterdir() if p.name.startswith(".")) == []  # no temporary


def test_out_is_replaced_only_when_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OUT goes to a temporary file next to it, renamed at the end: a run that fails midway
    leaves the old OUT whole and no temporary file."""
    logs = write_dir(tmp_path)
    out = tmp_path / "out.log"
    out.write_text("the previous run\n")
    out.chmod(0o640)

    def failing(files: list[Path], written: Any, shown: Any) -> log_parser.Summary:
        written.write("half of it\n")
        assert out.read_text() == "the previous run\n"  # not truncated while reading
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_parser, "run", failing)
    assert log_parser.main([str(logs), str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_text() == "the previous run\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    assert log_parser.main([str(logs), str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(PEER) + len(EVENTS) + len(RS)
    assert out.stat().st_mode & 0o777 == 0o640  # the mode of the OUT it replaced
