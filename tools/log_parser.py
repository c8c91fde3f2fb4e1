#!/usr/bin/env python3
"""Read the log collector's file output and make it readable.

    tools/log_parser.py IN OUT

IN is a file or a directory of the files deploy/fluentd/fluent.conf writes (`<tag>.<date>.log`,
also gzipped `.log.gz`): JSON lines, each a record shipped with MONITOR_LOG plus the `tag` and
`time` fluentd adds; lines in fluentd's default out_file format, `time<TAB>tag<TAB>{record}` (what
loopchain's collector wrote; a record's `log`, a docker log driver's, is its message), are read too. Log records (tag loopchain.<process kind>) have level, logger, message,
process and pid (and exc_text, channel); events (tag loopchain.<kind>.event) have event and their
fields. The files of a directory are merged by time: fluentd writes each file in the order records
arrive (after a collector outage, bursts of several processes interleave), so the merged entries
pass through a window of WINDOW_ENTRIES (10,000) entries that releases the oldest first; an entry
further out of place than that is written late and counted in the summary.

OUT gets one line per record, `time process level logger: message` (an exception's last line
after ` | `), and per event `time process EVENT name field=value ...`. Printed: every error and
exception (level ERROR or CRITICAL, a record with exception text with its traceback, an Error
event), then the number of records and errors per process, the malformed lines (not JSON, not an
object, no usable time, too long), which are skipped (counted, the first 10 named), and the files
that could not be read to the end (a half-written or corrupt .log.gz, a read error): the lines
read before the problem are kept and the other files are read.

Every file of IN is open at once while they are merged: the soft limit of open files
(RLIMIT_NOFILE) is raised to the hard one first, and more files than that allows are refused
(exit 2, naming how many it can read at once: raise `ulimit -n` or give IN in parts). OUT is
written to a temporary file next to it, which takes OUT's name at the end (OUT is left as it was
when the run fails); OUT may not be one of the input files (exit 2).

Exit status: 0 when at least one file could be read (files with problems are listed), 1 when no
file could be read at all or a file could not be opened, 2 when IN is missing or holds no
collector files or no collector record (text logs, say: LOG_FILE_PATH's), OUT is one of them or
cannot be written, there are more files than this process may open at once (or a usage error).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import contextlib
import datetime
import gzip
import heapq
import json
import math
import os
import resource
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from loopchain.durable import sync_directory
from loopchain.fds import raise_soft_limit

MAX_LINE = 1 << 20  # characters of one JSON line; a longer one is malformed
MAX_SHOWN_MALFORMED = 10
WINDOW_ENTRIES = 10_000  # entries held back to put the merged files in time order
WINDOW_CHARS = 64 << 20  # ... and at most this many characters of their lines
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL"})
# the level words a text log line names among its first words, the first found taken: loopchain's
# "date time,ms pid thread PEER_ID CHANNEL LEVEL [file:func:line] message" (the seventh), this
# project's stderr "date time LEVEL [process] logger: message"; for a docker line's "log"
LEVEL_WORDS = frozenset({"SPAM", "DEBUG", "INFO", "WARNING", "WARN", *ERROR_LEVELS})
LEVEL_WORDS_SEARCHED = 7
LOG_SUFFIXES = (".log", ".log.gz", ".jsonl")
SHOWN_FIELDS_EXCLUDED = frozenset({"event", "process", "pid", "tag", "time"})
SPARE_DESCRIPTORS = 16  # open files besides the inputs: stdio, OUT, the interpreter's own


@dataclass(frozen=True, order=True)
class Entry:
    """One parsed line: its time (for merging), then where it came from and the record."""

    when: float
    source: str = field(compare=False)
    record: dict[str, Any] = field(compare=False)
    size: int = field(default=0, compare=False)  # characters of its line


@dataclass
class Summary:
    """What the run found: records and errors per process, malformed lines (counted, the first
    MAX_SHOWN_MALFORMED kept), files that could not be read to the end (name: why), entries
    written out of time order."""

    records: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    malformed_count: int = 0
    unreadable: list[str] = field(default_factory=list)
    read_nothing: int = 0  # files that failed before their first line
    unopened: int = 0  # files that could not even be opened (their problem is in `unreadable`)
    out_of_order: int = 0
    files: int = 0

    def add_malformed(self, problem: str) -> None:
        self.malformed_count += 1
        if len(self.malformed) < MAX_SHOWN_MALFORMED:
            self.malformed.append(problem)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="log_parser.py",
        description="Merge the log collector's JSON-lines files into readable log lines and list "
        "the errors and exceptions with a count per process.",
        epilog="Exit status: 0 when at least one file could be read (files that could not be read "
        "to the end are listed), 1 when no file could be read or a file could not be opened, "
        "2 when IN is missing or holds no collector files or records, OUT is one of them or "
        "cannot be written, or there are more files than the process may open at once.",
    )
    parser.add_argument("input", metavar="IN", type=Path, help="a collector file or directory")
    parser.add_argument(
        "output", metavar="OUT", type=Path, help="where the log lines go (replaced: see -a)"
    )
    parser.add_argument(
        "-a",
        "--append",
        action="store_true",
        help="add the lines to OUT instead of replacing it, as loopchain's log_parser did (a "
        "script running it once a file)",
    )
    return parser.parse_args(argv)


def input_files(path: Path) -> list[Path]:
    """The file IN, or the collector files at the top of directory IN (sorted by name)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIXES))
    raise FileNotFoundError(f"{path} is neither a file nor a directory")


class UsageError(Exception):
    """A run refused before anything is read or written (exit 2)."""


def check_output(output: Path, files: list[Path]) -> None:
    """Refuse an OUT that is one of the input files (writing it would lose what it holds)."""
    for path in files:
        same = output.resolve() == path.resolve()
        with contextlib.suppress(OSError):  # OUT not there yet: a new file is no input
            same = same or os.path.samefile(output, path)
        if same:
            raise UsageError(f"OUT {output} is the input file {path}: give OUT another name")


def check_descriptors(count: int) -> None:
    """Raise the soft limit of open files as far as `count` inputs need (up to the hard
    limit); refuse when it stays too low for them all to be open at once."""
    soft = raise_soft_limit(count + SPARE_DESCRIPTORS)
    if soft is not None and soft < count + SPARE_DESCRIPTORS:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        raise UsageError(
            f"{count} input files, but this process may open at most {soft} files (hard limit "
            f"{limit}), so it can read at most {max(soft - SPARE_DESCRIPTORS, 0)} files at once: "
            "raise the limit (ulimit -n) or give IN in parts"
        )


@contextlib.contextmanager
def replacing(output: Path) -> Iterator[IO[str]]:
    """A text file that takes `output`'s name when the block ends without an error (a
    temporary file in its folder until then; removed on an error). A special OUT that exists
    (/dev/stdout, a pipe) is written directly."""
    if output.exists() and not output.is_file():
        with output.open("w", encoding="utf-8") as direct:
            yield direct
        return
    folder = output.parent
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            os.chmod(file.fileno(), _mode_for(output))
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        sync_directory(folder)


@contextlib.contextmanager
def appending(output: Path) -> Iterator[IO[str]]:
    """OUT opened to add lines at its end (made when missing, and removed again when the block
    fails before writing any), synced when the block ends."""
    made = not output.exists()
    try:
        with output.open("a", encoding="utf-8") as file:
            yield file
            file.flush()
            if output.is_file():
                os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            if made and output.is_file() and output.stat().st_size == 0:
                output.unlink()
        raise


def _mode_for(output: Path) -> int:
    """OUT's mode when it exists, else that of a new file under the umask."""
    with contextlib.suppress(OSError):
        return output.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of fluentd's injected time (ISO 8601 text or a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            return None
        return seconds if math.isfinite(seconds) else None  # NaN would break the merge order
    if not isinstance(value, str):
        return None
    for parse in (
        datetime.datetime.fromisoformat,
        lambda text: datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z"),
    ):
        try:
            when = parse(value)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        try:
            return when.timestamp()
        except (OverflowError, ValueError):
            return None
    return None


def read_entries(path: Path, summary: Summary) -> Iterator[Entry]:
    """The well-formed entries of one file in order; each malformed line goes to the summary, and
    so does a file that cannot be read to the end (its entries before the problem are yielded)."""
    number = 0
    try:
        file = _open(path)
    except OSError as exc:  # no such file any more, no permission, too many open files
        summary.unreadable.append(f"{path.name}: cannot open: {exc.strerror or exc}")
        summary.read_nothing += 1
        summary.unopened += 1
        return
    try:
        with file:
            while line := file.readline(MAX_LINE + 1):
                number += 1
                where = f"{path.name}:{number}"
                if len(line) > MAX_LINE and not line.endswith("\n"):
                    while (rest := file.readline(MAX_LINE)) and not rest.endswith("\n"):
                        pass
                    summary.add_malformed(f"{where}: longer than {MAX_LINE} characters")
                    continue
                if not line.strip():
                    continue
                entry, problem = _parse_line(line, where)
                if entry is None:
                    summary.add_malformed(f"{where}: {problem}")
                else:
                    yield entry
    except (EOFError, OSError, zlib.error) as exc:  # a half-written or corrupt .gz, a read error
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or repr(exc)
        after = f" (after line {number})" if number else ""
        summary.unreadable.append(f"{path.name}: {reason}{after}")
        summary.read_nothing += 0 if number else 1


def _parse_line(line: str, where: str) -> tuple[Entry | None, str]:
    outer: tuple[str, str] | None = None
    if not line.startswith("{") and line.count("\t") >= 2:
        # fluentd's out_file default, as loopchain's collector wrote: time<TAB>tag<TAB>{record}
        time_text, tag, line = line.split("\t", 2)
        outer = (time_text, tag)
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of >4300 digits
        return None, f"not JSON ({str(exc)[:200]})"
    if not isinstance(record, dict):
        return None, f"not a JSON object but {type(record).__name__}"
    if outer is not None:
        record = {"time": outer[0], "tag": outer[1], **record}
        if "message" not in record and isinstance(record.get("log"), str):
            record["message"] = record["log"].rstrip("\n")  # a docker log driver's line
            level = level_in_text(record["message"])
            if level and "level" not in record:
                record["level"] = level
    when = parse_time(record.get("time"))
    if when is None:
        return None, f"no usable time: {record.get('time')!r:.60}"
    return Entry(when, where, record, len(line)), ""


def level_in_text(text: str) -> str:
    """The level word among the first words of a text log line ("" when none): its errors
    are shown as the original's log_parser showed them (a review found none was)."""
    for word in text.split(maxsplit=LEVEL_WORDS_SEARCHED)[:LEVEL_WORDS_SEARCHED]:
        word = word.strip("[]():,|")
        if word in LEVEL_WORDS:
            return word
    return ""


def process_of(record: dict[str, Any]) -> str:
    return str(record.get("process") or record.get("tag") or "?")


def is_error(record: dict[str, Any]) -> bool:
    if "event" in record:
        return record["event"] == "Error"
    return str(record.get("level", "")).upper() in ERROR_LEVELS or bool(record.get("exc_text"))


def format_line(record: dict[str, Any]) -> str:
    """One readable line for a record or an event (newlines inside shown as \\n)."""
    head = f"{record.get('time', '?')} {process_of(record)}"
    if "event" in record:
        fields = " ".join(
            f"{key}={json.dumps(value, ensure_ascii=False)}"
            for key, value in sorted(record.items())
            if key not in SHOWN_FIELDS_EXCLUDED
        )
        text = f"{head} EVENT    {record['event']} {fields}".rstrip()
    else:
        level = str(record.get("level", "?"))
        text = f"{head} {level:<8} {record.get('logger', '?')}: {record.get('message', '')}"
        exc_text = str(record.get("exc_text") or "").strip()
        if exc_text:
            text += f" | {exc_text.splitlines()[-1]}"
    return text.translate(_CONTROL_ESCAPES)


# Control characters (a terminal's escape sequences among them) shown escaped: \n as \\n, ESC as \\x1b
_CONTROL_ESCAPES = {
    code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0)) if code != 0x09
}


def in_time_order(entries: Iterator[Entry], summary: Summary) -> Iterator[Entry]:
    """`entries` through a window of at most WINDOW_ENTRIES entries (and WINDOW_CHARS characters)
    that releases the oldest first: in time order unless an entry is further out of place, which
    comes out late and is counted in the summary. Equal times keep their order."""
    window: list[tuple[float, int, Entry]] = []
    chars = 0
    last = float("-inf")

    def release() -> Entry:
        nonlocal chars, last
        oldest = heapq.heappop(window)[2]
        chars -= oldest.size
        if oldest.when < last:
            summary.out_of_order += 1
        last = max(last, oldest.when)
        return oldest

    for sequence, entry in enumerate(entries):
        heapq.heappush(window, (entry.when, sequence, entry))
        chars += entry.size
        while len(window) > WINDOW_ENTRIES or chars > WINDOW_CHARS:
            yield release()
    while window:
        yield release()


def run(files: list[Path], out: IO[str], shown: IO[str]) -> Summary:
    """Write every entry of `files` (merged by time, see in_time_order) to `out`, the errors to
    `shown`."""
    summary = Summary(files=len(files))
    merged = heapq.merge(*(read_entries(path, summary) for path in files))
    for entry in in_time_order(merged, summary):
        record = entry.record
        process = process_of(record)
        line = format_line(record)
        out.write(line + "\n")
        summary.records[process] += 1
        if "event" in record:
            summary.events[process] += 1
        if is_error(record):
            summary.errors[process] += 1
            shown.write(line + "\n")
            for trace in str(record.get("exc_text") or "").splitlines():
                shown.write(f"    {trace.translate(_CONTROL_ESCAPES)}\n")
    return summary


def report(summary: Summary, shown: IO[str]) -> None:
    total = sum(summary.records.values())
    shown.write(f"\n{total} records from {summary.files} file(s); per process:\n")
    for process in sorted(summary.records):
        shown.write(
            f"  {process}: {summary.records[process]} records "
            f"({summary.events[process]} events), {summary.errors[process]} errors\n"
        )
    count = summary.malformed_count
    shown.write(f"{count} malformed line{'' if count == 1 else 's'} skipped\n")
    for problem in summary.malformed[:MAX_SHOWN_MALFORMED]:
        shown.write(f"  {problem}\n")
    if count > MAX_SHOWN_MALFORMED:
        shown.write(f"  ... and {count - MAX_SHOWN_MALFORMED} more\n")
    if summary.out_of_order:
        shown.write(
            f"{summary.out_of_order} records written out of time order (more than "
            f"{WINDOW_ENTRIES} entries out of place)\n"
        )
    if summary.unreadable:
        shown.write(
            f"{len(summary.unreadable)} of {summary.files} file(s) could not be read to the end"
            " (the lines before the problem are kept):\n"
        )
        for problem in summary.unreadable:
            shown.write(f"  {problem}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files = input_files(args.input)
        if not files:
            raise FileNotFoundError(f"{args.input} holds no collector files (*.log, *.log.gz)")
        check_output(args.output, files)
        check_descriptors(len(files))
        with appending(args.output) if args.append else replacing(args.output) as out:
            summary = run(files, out, sys.stdout)
            if summary.malformed_count and not sum(summary.records.values()):
                count = summary.malformed_count
                raise UsageError(
                    f"{args.input} holds no collector record: none of its {count} "
                    f"line{'' if count == 1 else 's'} is one (a LOG_FILE_PATH log, such as "
                    "./localnet.sh's logs/NAME.log, is read as it is); OUT is left as it was"
                )
    except (OSError, UsageError) as exc:
        print(f"log_parser.py: error: {exc}", file=sys.stderr)
        return 2
    report(summary, sys.stdout)
    if summary.read_nothing == summary.files:
        print("log_parser.py: error: no file could be read", file=sys.stderr)
        return 1
    if summary.unopened:
        print(
            f"log_parser.py: error: {summary.unopened} of {summary.files} file(s) could not be"
            " opened (listed above); OUT lacks their records",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
