"""A SCORE process's output as its supervisor logs it (loopchain/scoreservice/output.py): its
records through the supervising process's handlers, at their own time and level and named by
their channel; any other line a WARNING of its own; every line bounded and the rate paced. Over a
real pipe and a real reader thread."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterator

import pytest

from loopchain.scoreservice.output import (
    MAX_LINE_BYTES,
    OUTPUT_LOGGER,
    POLL_S,
    RECORD_MARK,
    RecordLines,
    ScoreOutput,
    level_name,
)
from tools.procs import is_problem_line, wait_until

LABEL = "score:ch1"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Kept]:
    logger = logging.getLogger(OUTPUT_LOGGER)
    handler, level = Kept(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Pipe:
    """A pipe whose read end a ScoreOutput reads, written to as a SCORE process would."""

    def __init__(self, **options: object) -> None:
        reading, self.fd = os.pipe()
        self.output = ScoreOutput(reading, LABEL, **options)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        assert self.output.join(30), "the reader did not see the pipe's end"


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def line_of(record: logging.LogRecord) -> bytes:
    return (RecordLines().format(record) + "\n").encode()


def a_record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("loopchain.score.test.kv", level, "x.py", 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_logged_as_the_score_logged_it_named_by_its_channel(
    pipe: Pipe, kept: Kept
) -> None:
    try:
        raise ValueError("broken \udcff state")
    except ValueError:
        failure = sys.exc_info()
    made = a_record("set k to %s", logging.ERROR, exc_info=failure)
    made.args = ("v\nforged line",)
    made.created = float(int(time.time()) - 30) + 0.25
    pipe.write(line_of(made))
    pipe.close()
    [record] = kept.records
    assert record.name == "[score:ch1] loopchain.score.test.kv"
    assert record.levelno == logging.ERROR and record.levelname == "ERROR"
    assert record.getMessage() == "set k to v\\nforged line"  # one line, as the peer writes
    assert record.created == made.created and record.msecs == pytest.approx(250, abs=1e-3)
    assert record.exc_text is not None
    assert record.exc_text.startswith("Traceback (most recent call last):")
    assert "ValueError: broken \\udcff state" in record.exc_text
    assert record.relayed is True  # type: ignore[attr-defined]


def test_other_output_is_a_warning_a_line_at_a_time_without_blank_lines(
    pipe: Pipe, kept: Kept
) -> None:
    pipe.write(b'Thread 0x7f (most recent call first):\n  File "a.py", line 3 in f\n\n\xff tail')
    pipe.close()
    assert [(r.name, r.levelno, r.getMessage()) for r in kept.records] == [
        ("[score:ch1] output", logging.WARNING, "Thread 0x7f (most recent call first):"),
        ("[score:ch1] output", logging.WARNING, '  File "a.py", line 3 in f'),
        ("[score:ch1] output", logging.WARNING, "\ufffd tail"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        RECORD_MARK + "{not json",
        RECORD_MARK + "[1, 2]",
        RECORD_MARK + '{"t": 1, "l": 20, "n": 5, "m": "x"}',
        RECORD_MARK + '{"t": 1, "l": 20, "n": "a"}',
    ],
)
def test_a_line_marked_as_a_record_that_is_none_is_other_output(
    pipe: Pipe, kept: Kept, line: str
) -> None:
    pipe.write(line.encode() + b"\n")
    pipe.close()
    [record] = kept.records
    assert record.name == "[score:ch1] output" and record.levelno == logging.WARNING


def test_a_records_odd_fields_are_taken_as_what_they_can_be(pipe: Pipe, kept: Kept) -> None:
    before = time.time()
    fields = [
        '"t": 1e308, "l": 99, "n": "a\\nb", "m": "m1"',  # a time far off, a level past CRITICAL
        '"t": "now", "l": true, "n": "c", "m": "m2", "x": 7',
        '"t": null, "l": 40, "n": "' + "n" * 1000 + '", "m": "m3", "x": ""',
    ]
    pipe.write("".join(RECORD_MARK + "{" + f + "}\n" for f in fields).encode())
    pipe.close()
    assert [(r.levelno, r.getMessage(), r.exc_text) for r in kept.records] == [
        (logging.CRITICAL, "m1", None),  # any level is taken as the standard one at or below it
        (logging.WARNING, "m2", None),
        (logging.ERROR, "m3", None),
    ]
    assert kept.records[0].name == "[score:ch1] a\\nb"
    assert len(kept.records[2].name) < 300
    assert all(r.created >= before for r in kept.records)


def test_a_line_past_the_bound_is_cut_and_the_next_is_whole(pipe: Pipe, kept: Kept) -> None:
    long = b"y" * (3 * MAX_LINE_BYTES + 10)
    pipe.write(long + b"\n" + b"next\n")
    pipe.close()
    first, second = kept.records
    assert first.getMessage().endswith(
        f"... ({2 * MAX_LINE_BYTES + 10} more bytes of this line cut)"
    )
    assert len(first.getMessage()) < 10_000  # the message bound of any record
    assert second.getMessage() == "next"


def test_a_record_below_the_level_is_not_logged(pipe: Pipe, kept: Kept) -> None:
    pipe.write(line_of(a_record("chatter", logging.DEBUG)) + line_of(a_record("said")))
    pipe.close()
    assert [r.getMessage() for r in kept.records] == ["said"]


def test_lines_past_the_rate_are_counted_and_said_with_the_next(kept: Kept) -> None:
    now = [100.0]
    paced = Pipe(per_second=5.0, clock=lambda: now[0])
    try:
        paced.write(b"".join(b"line %d\n" % n for n in range(20)))
        wait_until(lambda: paced.output.unlogged == 15, 30, "15 lines read and not logged")
        assert [r.getMessage() for r in kept.records] == [f"line {n}" for n in range(5)]
        now[0] += 1.0
        paced.write(b"after\n")
    finally:
        paced.close()
    assert kept.records[-1].getMessage() == (
        "after (15 more lines of this SCORE process not logged)"
    )


def test_a_traceback_past_its_bound_keeps_its_end(pipe: Pipe, kept: Kept) -> None:
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 20_000 + "RecursionError: deep"
    pipe.write(line_of(a_record("failed", logging.ERROR, exc_text=trace)))
    pipe.close()
    [record] = kept.records
    assert record.exc_text is not None and record.exc_text.endswith("RecursionError: deep")
    assert record.exc_text.startswith("(")  # how much was cut
    assert len(record.exc_text) < 40_000


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("t0 t1 WARNING [peer:7100] [score:ch1] output: Traceback (most recent call last):", True),
        (
            "t0 t1 W [p:1] [score:c] output:   + Exception Group Traceback (most recent call last):",
            True,
        ),
        ("t0 t1 ERROR   [peer:7100] [score:ch1] asyncio: Task was destroyed but it is", True),
        ("t0 t1 ERROR   [peer:7100:ch1] asyncio: Task exception was never retrieved", True),
        ("t0 t1 WARNING [peer:7100] [score:ch1] output: printed Traceback (most recent", False),
        ("t0 t1 WARNING [peer:7100] [score:ch1] loopchain.score: Traceback (most recent", False),
        (
            "t0 t1 INFO    [peer:7100] [score:ch1] output: Thread 0x7f (most recent call first):",
            False,
        ),
    ],
)
def test_the_e2e_log_check_sees_a_scores_problems_as_its_peer_logs_them(
    line: str, problem: bool
) -> None:
    """An e2e test fails on a problem in a log (tools/procs.py): a traceback Python printed in a
    SCORE process began a line of the peer's stderr; it is now a record's message."""
    assert is_problem_line(line) is problem


def test_a_record_written_after_a_prints_text_before_its_newline_stays_a_record(
    pipe: Pipe, kept: Kept
) -> None:
    """A print is two writes (its text, then its newline) and stdout and stderr are one pipe:
    another thread's record came between them, and was logged as the print's text (review)."""
    pipe.write(b"p 604" + line_of(a_record("set", logging.ERROR)) + b"\n")
    pipe.close()
    assert [(r.name, r.levelno, r.getMessage()) for r in kept.records] == [
        ("[score:ch1] output", logging.WARNING, "p 604"),
        ("[score:ch1] loopchain.score.test.kv", logging.ERROR, "set"),
    ]


def test_lines_not_logged_when_the_pipe_ends_are_said_then(kept: Kept) -> None:
    """Lines over the rate were said with the next line: a burst a SCORE wrote as it ended (a
    stack dump, then its reason) went without a word (review)."""
    paced = Pipe(per_second=3.0, clock=lambda: 100.0)
    paced.write(b"".join(b"line %d\n" % n for n in range(10)))
    paced.close()
    assert [r.getMessage() for r in kept.records] == [
        "line 0",
        "line 1",
        "line 2",
        "(7 more lines of this SCORE process not logged)",
    ]


@pytest.mark.parametrize(
    "forged",
    [
        RECORD_MARK + '{"t": ' + "9" * 4000 + ', "l": 20, "n": "a", "m": "huge time"}',
        RECORD_MARK + "[" * 60_000,
        RECORD_MARK + '{"t": 1, "l": ' + "7" * 400 + ', "n": "a", "m": "huge level"}',
    ],
)
def test_a_forged_record_makes_no_trouble_of_the_readers_own(
    pipe: Pipe, kept: Kept, caplog: pytest.LogCaptureFixture, forged: str
) -> None:
    """A 4,000-digit time overflowed math.isfinite and 60,000 brackets json.loads's recursion:
    each was logged as this process's own ERROR with a traceback (review)."""
    pipe.write(forged.encode() + b"\n")
    pipe.close()
    [record] = kept.records
    assert record.levelno in (logging.INFO, logging.CRITICAL, logging.WARNING)
    assert not [r for r in caplog.records if r.name == "loopchain.scoreservice.output"]


def test_a_record_of_long_text_outside_ascii_stays_one_record_within_the_line_bound(
    pipe: Pipe, kept: Kept
) -> None:
    """Such a character takes 6 bytes of JSON: an ERROR of 8,000 Korean characters with a long
    traceback made a 70 KB line, which was cut and logged as a WARNING of raw JSON (review)."""
    trace = "Traceback (most recent call last):\n" + "  가\n" * 8000 + "ValueError: 끝"
    made = a_record("가" * 20_000, logging.ERROR, exc_text=trace)
    line = line_of(made)
    assert len(line) < MAX_LINE_BYTES
    pipe.write(line)
    pipe.close()
    [record] = kept.records
    assert (record.name, record.levelno) == ("[score:ch1] loopchain.score.test.kv", logging.ERROR)
    assert record.getMessage().startswith("가" * 100)
    assert record.exc_text is not None and record.exc_text.endswith("ValueError: 끝")


def test_a_pipe_kept_open_by_another_process_is_given_up_after_the_drain(kept: Kept) -> None:
    """A process the SCORE started and left holds the pipe open: each restart waited the whole
    drain and left a thread and a descriptor behind (review). The reader gives up and closes."""
    held = Pipe()
    other = os.dup(held.fd)
    try:
        held.write(b"said\n")
        wait_until(lambda: len(kept.records) == 1, 30, "the first line logged")
        os.close(held.fd)
        held.fd = -1
        assert held.output.join(0.05) is False  # the other writer's copy is open
        assert held.output.join(30 + POLL_S), "the reader did not give up"
        with pytest.raises(BrokenPipeError):  # the reader's end is closed
            os.write(other, b"later\n")
    finally:
        os.close(other)
    assert [r.getMessage() for r in kept.records] == ["said"]


def test_the_level_a_score_is_told_is_a_standard_one() -> None:
    assert [level_name(n) for n in (0, 5, 10, 25, 30, 45, 50, 99)] == [
        "DEBUG",
        "DEBUG",
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "CRITICAL",
    ]


def test_a_pipe_whose_descriptor_is_past_1024_is_read(kept: Kept) -> None:
    """A busy peer holds more than 1,024 descriptors (REST_MAX_CONNECTIONS and its links), and
    select() refuses any past that: the reader would have stopped and left the SCORE to block
    on a full pipe (seen on reading the review's change again)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= FAR:
        pytest.skip(f"descriptors are limited to {hard} here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FAR + 1), hard))
    try:
        reading, writing = os.pipe()
        os.dup2(reading, FAR, inheritable=False)
        os.close(reading)
        output = ScoreOutput(FAR, LABEL)
        os.write(writing, b"far\n")
        os.close(writing)
        assert output.join(30)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [r.getMessage() for r in kept.records] == ["far"]


FAR = 1500


def test_the_count_of_lines_not_logged_goes_with_a_record_that_is_logged(kept: Kept) -> None:
    """It went with the next record even when that one was below the level, and was lost with
    it (review)."""
    now = [100.0]
    paced = Pipe(per_second=2.0, clock=lambda: now[0])
    try:
        paced.write(b"a\nb\nc\n")
        wait_until(lambda: paced.output.unlogged == 1, 30, "a line read and not logged")
        now[0] += 1.0
        paced.write(line_of(a_record("chatter", logging.DEBUG)) + b"d\n")
    finally:
        paced.close()
    assert [r.getMessage() for r in kept.records] == [
        "a",
        "b",
        "d (1 more lines of this SCORE process not logged)",
    ]
