"""A SCORE process's output, logged by the process that runs it (its peer, or channel worker).

With --log-records the SCORE process writes each log record to stderr as one line of JSON
(`RecordLines`); its supervisor reads that pipe, stdout and stderr alike, in a thread
(`ScoreOutput`) and logs every record through its own handlers. So a SCORE's records reach
LOG_FILE_PATH (before, they went to stderr only: a file rotated by several processes cannot take
a writer whose clock is UTC, as a SCORE's is), in the peer's time zone and at the peer's level,
labelled with their channel (`[score:C]`), and each whole: what is not such a record (a print,
the query watchdog's stack dump, a crash before logging started) is logged a line at a time at
WARNING, as `[score:C] output`, never cut into by the peer's lines as on a shared stderr.

A SCORE is other people's code: each line is bounded (MAX_LINE_BYTES, the rest of a longer one
skipped and counted), every field of a record checked, and at most LINES_PER_SECOND lines are
logged, the rest counted and said with the next one (or at the pipe's end). Lines past that rate
are counted a chunk at a time, not looked at: a SCORE writing as fast as it can costs its peer
little (per line, in Python, it held the peer's event loop off the interpreter ~5 ms a turn:
review). The pipe is read at once whatever is logged, so a SCORE never waits on its peer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from loopchain.configure import RefusalLog
from loopchain.safe_text import MAX_LOG_MESSAGE, bounded, one_line

RECORD_MARK = "\x1e"  # ASCII record separator: starts a record's JSON
MAX_LINE_BYTES = 64 * 1024  # a line read (a record's JSON, its traceback with it, fits)
MAX_TRACE_CHARS = 32 * 1024  # a record's traceback, its end kept
MAX_NAME_CHARS = 200  # a logger's name
MAX_CLOCK_GAP = 86_400.0  # seconds a record's time may be from the reader's (else: the reader's)
LINES_PER_SECOND = 1000.0  # lines logged a second at most, per SCORE process
CHUNK_BYTES = 64 * 1024  # read from the pipe at a time
POLL_S = 0.5  # how often a reader told to give up (abandon) looks at that
OUTPUT_LOGGER = "loopchain.score.output"  # the logger everything read is logged through
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def level_name(level: int) -> str:
    """The name of the standard level at or below `level` (DEBUG below all): what a SCORE
    process is told to log from, and the level a record it sent is logged at."""
    return logging.getLevelName(max((n for n in _LEVELS if n <= level), default=logging.DEBUG))


def _tail(text: str, limit: int) -> str:
    """`text`, of its last `limit` characters at most (a traceback's end says most)."""
    if len(text) <= limit:
        return text
    return f"({len(text) - limit} characters cut)\n{text[-limit:]}"


class RecordLines(logging.Formatter):
    """The SCORE process's stderr formatter with --log-records: a record as one line, RECORD_MARK
    and JSON of its time, level, logger, message and traceback, in ASCII and shorter than
    MAX_LINE_BYTES (a character outside ASCII takes 6 bytes there, so the bounds in characters
    alone made longer lines, which the peer cut: review)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "t": record.created,
            "l": record.levelno,
            "n": bounded(record.name, MAX_NAME_CHARS),
            "m": one_line(bounded(record.getMessage(), MAX_LOG_MESSAGE)),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["x"] = _tail(record.exc_text, MAX_TRACE_CHARS)
        line = RECORD_MARK + json.dumps(fields)
        while len(line) >= MAX_LINE_BYTES:  # halve the traceback, then the message
            if len(fields.get("x", "")) > 100:
                fields["x"] = _tail(fields["x"], len(fields["x"]) // 2)
            else:
                fields["m"] = bounded(fields["m"], len(fields["m"]) // 2)
            line = RECORD_MARK + json.dumps(fields)
        return line


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
        self._fd = fd
        self._logger = logging.getLogger(OUTPUT_LOGGER)
        self._pace = RefusalLog(self._logger, per_second, clock)  # its grant() alone
        self.unlogged = 0  # lines read and not logged since the last one logged (over the rate)
        self._line = bytearray()  # the line being read, its first MAX_LINE_BYTES
        self._cut = 0  # bytes of it past those, skipped
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"output of {label}", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            os.close(fd)
            raise

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the pipe's end (every line logged); whether it came.
        When it did not (a process the SCORE started and left keeps the pipe open) the reader
        gives up within POLL_S, and closes the pipe (no thread or descriptor left a restart)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandoned.set()
            return False
        return True

    def _read(self) -> None:
        ready = select.poll()  # not select(): a busy peer's descriptors go past 1024
        ready.register(self._fd, select.POLLIN)
        try:
            while not self._abandoned.is_set():
                if not ready.poll(POLL_S * 1000):
                    continue
                chunk = os.read(self._fd, CHUNK_BYTES)
                if not chunk:
                    break
                self._take(chunk)
            if self._line or self._cut:  # its last line, without a newline
                self._end_line()
            if self.unlogged:
                self._emit(self._output_record(""))  # says how many, as any next line would
        except Exception:  # never raised by a line's content; a handler's trouble is its own
            logging.getLogger(__name__).exception("reading the output of %s failed", self.label)
        finally:
            os.close(self._fd)

    def _take(self, chunk: bytes) -> None:
        """The lines `chunk` ends (the first one begun before it): those the pace grants logged,
        the others only counted (found by C code: never looked at line by line)."""
        ends = chunk.count(b"\n")
        granted = self._pace.grant(ends)
        parts = chunk.split(b"\n", granted)
        for part in parts[:granted]:
            self._extend(part)
            self._end_line()
        rest = parts[granted]
        if granted < ends:
            self.unlogged += ends - granted
            self._line.clear()
            self._cut = 0
            rest = rest[rest.rindex(b"\n") + 1 :]
        self._extend(rest)

    def _extend(self, data: bytes) -> None:
        room = MAX_LINE_BYTES - len(self._line)
        self._line += data[:room]
        self._cut += max(0, len(data) - room)

    def _end_line(self) -> None:
        line, cut = bytes(self._line), self._cut
        self._line.clear()
        self._cut = 0
        if not line.strip():  # the blank lines between a stack dump's threads
            return
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        mark = text.find(RECORD_MARK)
        fields = _record_fields(text[mark + 1 :]) if mark >= 0 and not cut else None
        if fields is None:
            self._emit(self._output_record(text, cut))
            return
        if text[:mark].strip():  # a print's text its newline did not follow before the record
            self._emit(self._output_record(text[:mark]))
        self._emit(self._record(fields))

    def _output_record(self, text: str, cut: int = 0) -> logging.LogRecord:
        message = one_line(bounded(text, MAX_LOG_MESSAGE))
        if cut:
            message += f" ... ({cut} more bytes of this line cut)"
        return self._record({"l": logging.WARNING, "n": "output", "m": message})

    def _record(self, fields: dict[str, Any]) -> logging.LogRecord:
        record = logging.LogRecord(
            f"[{self.label}] {fields['n']}", fields["l"], "", 0, fields["m"], None, None
        )
        at = fields.get("t")
        if at is not None and abs(at - time.time()) <= MAX_CLOCK_GAP:
            record.created, record.msecs = at, (at - int(at)) * 1000
        record.exc_text = fields.get("x")
        record.relayed = True  # the SCORE process ships its own records (monitor_log)
        return record

    def _emit(self, record: logging.LogRecord) -> None:
        if not self._logger.isEnabledFor(record.levelno):
            return  # (the count of lines not logged waits for a record that is)
        if self.unlogged:
            record.msg = (
                f"{record.msg} ({self.unlogged} more lines of this SCORE process not logged)"
            )
            record.msg = record.msg.lstrip()
            self.unlogged = 0
        self._logger.handle(record)


def _record_fields(text: str) -> dict[str, Any] | None:
    """The checked fields of a record's JSON (RecordLines), None when it is not one."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):  # a SCORE's forgery nested deep, too
        return None
    if not isinstance(fields, dict):
        return None
    at, level, name, message, trace = (fields.get(k) for k in ("t", "l", "n", "m", "x"))
    if not isinstance(name, str) or not isinstance(message, str):
        return None
    if not isinstance(level, int) or isinstance(level, bool):
        level = logging.WARNING
    if isinstance(at, int) and not isinstance(at, bool):
        at = float(at) if at.bit_length() < 64 else None  # float() of a longer one may overflow
    if not isinstance(at, float) or not math.isfinite(at):
        at = None
    return {
        "t": at,
        "l": logging.getLevelName(level_name(level)),
        "n": one_line(bounded(name, MAX_NAME_CHARS)),
        "m": one_line(bounded(message, MAX_LOG_MESSAGE)),
        "x": _writable(_tail(trace, MAX_TRACE_CHARS)) if isinstance(trace, str) and trace else None,
    }


def _writable(text: str) -> str:
    """`text` with any lone surrogate as a backslash escape: a log file takes it (one_line does
    the same for a line; a traceback keeps its lines)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
