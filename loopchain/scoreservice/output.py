"""A SCORE process's output, logged by the process that runs it (its peer, or channel worker).

With --log-records the SCORE process writes each log record to stderr as one line of JSON
(`RecordLines`); its supervisor reads that pipe, stdout and stderr alike, in a thread
(`ScoreOutput`) and logs every record through its own handlers. So a SCORE's records reach
LOG_FILE_PATH (before, they went to stderr only: a file rotated by several processes cannot take
a writer whose clock is UTC, as a SCORE's is), in the peer's time zone and at the peer's level,
labelled with their channel (`[score:C]`), and each whole: what is not such a record (a print,
the query watchdog's stack dump, a crash before logging started) is logged a line at a time at
WARNING, as `[score:C] output`, never cut into by the peer's lines as on a shared stderr.

A SCORE is other people's code: each line read is bounded (MAX_LINE_BYTES, the rest of a longer
one skipped and counted), every field of a record checked, and at most LINES_PER_SECOND lines are
logged, the rest counted and said with the next one. The pipe is read at once whatever is logged,
so a SCORE never waits on its peer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from loopchain.configure import RefusalLog
from loopchain.safe_text import MAX_LOG_MESSAGE, bounded, one_line

RECORD_MARK = "\x1e"  # ASCII record separator: starts a line that is a log record
MAX_LINE_BYTES = 64 * 1024  # a line read (a record's JSON, its traceback with it, fits)
MAX_TRACE_CHARS = 32 * 1024  # a record's traceback, its end kept
MAX_NAME_CHARS = 200  # a logger's name
MAX_CLOCK_GAP = 86_400.0  # seconds a record's time may be from the reader's (else: the reader's)
LINES_PER_SECOND = 1000.0  # lines logged a second at most, per SCORE process
OUTPUT_LOGGER = "loopchain.score.output"  # the logger of what is not a record (and of them all)


def _tail(text: str, limit: int) -> str:
    """`text`, of its last `limit` characters at most (a traceback's end says most)."""
    if len(text) <= limit:
        return text
    return f"({len(text) - limit} characters cut)\n{text[-limit:]}"


class RecordLines(logging.Formatter):
    """The SCORE process's stderr formatter with --log-records: a record as one line, RECORD_MARK
    and JSON of its time, level, logger, message and traceback (all ASCII)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "t": record.created,
            "l": record.levelno,
            "n": record.name,
            "m": one_line(bounded(record.getMessage(), MAX_LOG_MESSAGE)),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["x"] = _tail(record.exc_text, MAX_TRACE_CHARS)
        return RECORD_MARK + json.dumps(fields)


class ScoreOutput:
    """Reads the pipe of one SCORE process (`fd`, taken over) in a thread until its end, logging
    what comes through the logger OUTPUT_LOGGER, each record named `[label] <its logger>`."""

    def __init__(
        self,
        fd: int,
        label: str,
        per_second: float = LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self._logger = logging.getLogger(OUTPUT_LOGGER)
        self._pace = RefusalLog(self._logger, per_second, clock)
        self._stream = open(fd, "rb", buffering=MAX_LINE_BYTES)  # read and closed by the thread
        self._thread = threading.Thread(target=self._read, name=f"output of {label}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the pipe's end (every line logged); whether it came."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def unlogged(self) -> int:
        """Lines read but not logged since the last logged line (over LINES_PER_SECOND)."""
        return self._pace.suppressed

    def _read(self) -> None:
        with self._stream as stream:
            while line := stream.readline(MAX_LINE_BYTES):
                cut = 0
                if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while rest := stream.readline(MAX_LINE_BYTES):  # skip the rest of this line
                        if rest.endswith(b"\n"):
                            cut += len(rest) - 1
                            break
                        cut += len(rest)
                self._log(line, cut)

    def _log(self, line: bytes, cut: int) -> None:
        if not line.strip():  # the blank lines between a stack dump's threads
            return
        untold = self._pace.take()
        if untold is None:
            return
        try:
            record = self._record(line.rstrip(b"\r\n").decode("utf-8", "replace"), cut)
            if untold:
                record.msg += f" ({untold} more lines of this SCORE process not logged)"
            if self._logger.isEnabledFor(record.levelno):
                self._logger.handle(record)
        except Exception:  # a handler's trouble is its own (logging says so); never this thread's
            logging.getLogger(__name__).exception("could not log a line of %s", self.label)

    def _record(self, text: str, cut: int) -> logging.LogRecord:
        now = time.time()
        fields = _record_fields(text[1:]) if text.startswith(RECORD_MARK) and not cut else None
        if fields is None:
            message = one_line(bounded(text, MAX_LOG_MESSAGE))
            if cut:
                message += f" ... ({cut} more bytes of this line cut)"
            fields = {"l": logging.WARNING, "n": "output", "m": message}
        record = logging.LogRecord(
            f"[{self.label}] {fields['n']}", fields["l"], "", 0, fields["m"], None, None
        )
        at = fields.get("t")
        if at is not None and abs(at - now) <= MAX_CLOCK_GAP:
            record.created, record.msecs = at, (at - int(at)) * 1000
        record.exc_text = fields.get("x")
        record.relayed = True  # the SCORE process ships its own records (monitor_log)
        return record


def _record_fields(text: str) -> dict[str, Any] | None:
    """The checked fields of a record line's JSON (RecordLines), None when it is not one."""
    try:
        fields = json.loads(text)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    at, level, name, message, trace = (fields.get(k) for k in ("t", "l", "n", "m", "x"))
    if not isinstance(name, str) or not isinstance(message, str):
        return None
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= logging.CRITICAL:
        level = logging.WARNING
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at):
        at = None
    return {
        "t": at,
        "l": level,
        "n": one_line(bounded(name, MAX_NAME_CHARS)),
        "m": one_line(bounded(message, MAX_LOG_MESSAGE)),
        "x": _writable(_tail(trace, MAX_TRACE_CHARS)) if isinstance(trace, str) and trace else None,
    }


def _writable(text: str) -> str:
    """`text` with any lone surrogate as a backslash escape: a log file takes it (one_line does
    the same for a line; a traceback keeps its lines)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
