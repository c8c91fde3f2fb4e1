"""Monitoring events (CreateTx, AddBlock, InvokeResult, Query, Error, ...) and the log collector.

Code anywhere in the node calls `event("AddBlock", channel="loopchain_default", height=12, ...)`.
Nothing happens unless a process has installed a sink (MONITOR_LOG on: the fluentd forward shipping
sets one at start-up). With monitoring off an event costs a call and its arguments; a call site
whose fields cost more (a list, a loop) asks enabled() first.
A sink must never block or raise: it is called on the event loop.

The second half ships log records and events to a fluentd collector (see start_shipping).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Sink = Callable[[str, Mapping[str, Any]], None]

_sink: Sink | None = None


def event(name: str, **fields: Any) -> None:
    """Hand one monitoring event to the installed sink, if any."""
    sink = _sink
    if sink is not None:
        sink(name, fields)


def enabled() -> bool:
    """Whether a sink is installed: call sites whose fields cost something to build ask first."""
    return _sink is not None


def set_sink(sink: Sink | None) -> Sink | None:
    """Install `sink` (None removes it); returns the one it replaces."""
    global _sink
    previous, _sink = _sink, sink
    return previous


# ------------------------------------------------------------------ shipping to the collector
#
# With MONITOR_LOG on, each process calls start_shipping() once after setup_logging(): its log
# records and its events go over the fluentd forward protocol to MONITOR_LOG_HOST:MONITOR_LOG_PORT,
# tagged for routing in a fluentd <match>:
#   loopchain.<kind>          a log record: level, logger, message, process, pid (and exc_text,
#                             channel when there are)
#   loopchain.<kind>.event    an event: event (its name), process, pid and the event's fields
# where <kind> is radiostation, peer, rest_proxy or score, and process is the label of the
# process's stderr lines (e.g. "peer:7100"). Each entry carries its time with nanoseconds.
#
# fluent-logger's asynchronous sender does the sending on its own thread from a bounded queue
# that drops its oldest entries when full (QUEUE_ENTRIES entries or QUEUE_BYTES packed bytes,
# whichever comes first: an entry holds up to ~16K characters of message and 64K of exception
# text), so emitting never waits for the collector and a collector that never reads costs at most
# QUEUE_BYTES of memory (plus PENDING_BYTES and the entry being sent). A collector that is down or never reads costs entries, never the node's time: the
# thread's connect and send time out after SEND_TIMEOUT; after a failed connect or send it makes
# no new attempt for a pause growing from RETRY_MIN to RETRY_MAX (a collector that refuses
# connections would otherwise be asked once per entry, at the cost of a core); entries it could not
# send are kept up to PENDING_BYTES (fluent-logger copies them at each failure, so this stays small)
# and then dropped, and exit waits at most CLOSE_DEADLINE for what is queued.
# Every entry lost on the way (queue overflow, the kept bytes dropped, not sent by exit) is
# counted: dropped_records().

QUEUE_ENTRIES = 10_000  # entries waiting for the sender thread
QUEUE_BYTES = (
    4 << 20
)  # ... and at most this many bytes of them (packed); the oldest dropped past it
PENDING_BYTES = 64 << 10  # bytes kept for a collector that is unreachable, then dropped
RETRY_MIN = 0.5  # seconds without an attempt after the first failure, doubled up to RETRY_MAX
RETRY_MAX = 30.0
SEND_TIMEOUT = 3.0  # seconds the sender thread gives one connect or send
CLOSE_DEADLINE = 1.0  # seconds exit waits for the queue to reach the collector
MAX_MESSAGE_CHARS = 16_384  # a longer log message is cut (its full text stays on stderr)
MAX_EXC_CHARS = 65_536
WARNING_INTERVAL = 60.0  # seconds between two warnings that entries are being dropped
TAG_PREFIX = "loopchain"
KINDS = frozenset({"radiostation", "peer", "rest_proxy", "score"})

_own_log = logging.getLogger(__name__)


class ShippingHandler(logging.Handler):
    """A logging handler shipping records (and, as the event sink, events) to a fluentd collector
    through fluent-logger's asynchronous sender; never blocks, counts what it loses."""

    def __init__(
        self,
        host: str,
        port: int,
        kind: str,
        process: str,
        *,
        queue_entries: int = QUEUE_ENTRIES,
        queue_bytes: int = QUEUE_BYTES,
        pending_bytes: int = PENDING_BYTES,
        send_timeout: float = SEND_TIMEOUT,
        close_deadline: float = CLOSE_DEADLINE,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown process kind {kind!r} (one of {sorted(KINDS)})")
        super().__init__()
        self.target = f"{host}:{port}"
        self.process = process
        self.record_label = kind
        self.event_label = f"{kind}.event"
        self.close_deadline = close_deadline
        self._pid = os.getpid()
        self._drops = 0
        self._drops_lock = threading.Lock()
        self._closing = False
        self._deadline: float | None = None
        self._next_warning = 0.0
        self.addFilter(_not_own_records)
        self.sender = _sender_class()(
            TAG_PREFIX,
            host=host,
            port=port,
            bufmax=pending_bytes,
            timeout=send_timeout,
            nanosecond_precision=True,
            msgpack_kwargs={"default": str},  # an event field of any type goes as its str()
            buffer_overflow_handler=self._pending_dropped,
            queue_maxsize=queue_entries,
            queue_circular=True,
            queue_overflow_handler=self._oldest_dropped,
            queue_bytes=queue_bytes,
        )

    @property
    def dropped(self) -> int:
        """Entries (records and events) lost on the way to the collector so far."""
        return self._drops

    @property
    def queued_bytes(self) -> int:
        """Packed bytes of the entries waiting for the sender thread (at most QUEUE_BYTES)."""
        return int(self.sender._queue.bytes)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry: dict[str, Any] = {
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage()[:MAX_MESSAGE_CHARS],
                "process": self.process,
                "pid": self._pid,
            }
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                entry["exc_text"] = record.exc_text[:MAX_EXC_CHARS]
            channel = getattr(record, "channel", None)
            if channel is not None:
                entry["channel"] = str(channel)
        except Exception:  # a message whose arguments do not format: as logging does, report it
            self.handleError(record)
            return
        self._ship(self.record_label, record.created, entry)

    def ship_event(self, name: str, fields: Mapping[str, Any]) -> None:
        """The event sink: one event to the collector (`event`, `process`, `pid` set here)."""
        self._ship(
            self.event_label,
            time.time(),
            {**fields, "event": name, "process": self.process, "pid": self._pid},
        )

    def _ship(self, label: str, when: float, entry: dict[str, Any]) -> None:
        if self._closing or not self.sender.emit_with_time(label, when, entry):
            self._count(1)

    def flush(self) -> None:
        """Wait until the sender thread has taken every queued entry, at most `close_deadline`
        seconds from the first flush or close (logging flushes, then closes, at exit; lifecycle's
        forced exit flushes before os._exit)."""
        end = self._end()
        while self.sender._queue.qsize() and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        """Stop shipping: give the queue until the deadline to reach the collector, count what
        did not and say so on the process's other handlers."""
        if self._closing:
            return
        self._closing = True
        remove_sink(self.ship_event)
        # fluent's close() puts an end mark behind the queue and joins the sender thread, which
        # may sit in a send to a slow collector: it runs on a daemon thread of its own (never
        # holding up the interpreter's exit), waited for until the deadline.
        closer = threading.Thread(target=self.sender.close, name="monitor-log-close", daemon=True)
        closer.start()
        closer.join(max(0.0, self._end() - time.monotonic()))
        if closer.is_alive():
            self._count(self.sender._queue.qsize())
        pending = self.sender.pendings
        if pending:
            self._count(_entries_in(pending))
        super().close()
        if self._drops:
            _own_log.warning(
                "monitor log: %d records and events were not delivered to the collector at %s",
                self._drops,
                self.target,
            )

    def _end(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.close_deadline
        return self._deadline

    def _oldest_dropped(self, _entry: bytes) -> None:
        self._count(1)  # the queue was full: its oldest entry made room (called under its lock)

    def _pending_dropped(self, pending: bytes) -> None:
        self._count(_entries_in(pending))  # the collector could not be reached for too long

    def _count(self, entries: int) -> None:
        with self._drops_lock:
            self._drops += entries
            now = time.monotonic()
            warn = not self._closing and now >= self._next_warning
            if warn:
                self._next_warning = now + WARNING_INTERVAL
        if warn:  # stays local: this module's records are never shipped
            _own_log.warning(
                "monitor log: the collector at %s is unreachable or too slow; %d records and "
                "events dropped so far",
                self.target,
                self._drops,
            )


_SENDER: type | None = None


def _sender_class() -> type:
    """fluent-logger's asynchronous sender with a pause after each failure (made at first use:
    only a process that ships pays for importing fluent-logger)."""
    global _SENDER
    if _SENDER is not None:
        return _SENDER
    from fluent import asyncsender

    class PausingSender(asyncsender.FluentSender):  # type: ignore[misc]
        """Sends nothing for a growing pause after a failed connect or send: the entries of
        that pause are kept (up to its bufmax) or dropped, never each tried against the collector.
        Its queue is bounded by `queue_bytes` packed bytes as well as by entries: the oldest
        entries make room for a new one (each counted by the overflow handler); an entry larger
        than the bound on its own is refused (emit_with_time returns False)."""

        attempts = 0  # connects or sends tried (the sender thread's, read by tests)
        _retry_at = 0.0
        _pause = 0.0

        def __init__(self, *args: Any, queue_bytes: int = QUEUE_BYTES, **kwargs: Any) -> None:
            self.queue_bytes = queue_bytes
            self._queue_ready = threading.Event()  # the sender thread starts in super().__init__
            super().__init__(*args, **kwargs)
            self._queue = _ByteQueue(self.queue_maxsize)  # fluent's own is still empty
            self._queue_ready.set()

        def _send_loop(self) -> None:
            self._queue_ready.wait()  # take entries from the queue that counts bytes
            super()._send_loop()

        def _send(self, bytes_: bytes) -> bool:
            size = len(bytes_)
            with self.lock:
                if self._closed or size > self.queue_bytes:
                    return False
                entries = self._queue
                # only emits put (under self.lock): room made here stays until the put
                while entries.full() or entries.bytes + size > self.queue_bytes:
                    try:
                        oldest = entries.get(block=False)
                    except queue.Empty:  # the sender thread took the rest meanwhile
                        break
                    self._queue_overflow_handler(oldest)
                entries.put(bytes_, block=False)
                return True

        def _send_data(self, bytes_: bytes) -> None:
            if time.monotonic() < self._retry_at:
                raise OSError("the collector failed recently; next attempt after a pause")
            self.attempts += 1
            try:
                super()._send_data(bytes_)
            except OSError:
                self._pause = min(max(2 * self._pause, RETRY_MIN), RETRY_MAX)
                self._retry_at = time.monotonic() + self._pause
                raise
            self._pause = 0.0

    _SENDER = PausingSender
    return _SENDER


class _ByteQueue(queue.Queue[Any]):
    """A queue that keeps the total size of the bytes in it (`bytes`, updated under its lock)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.bytes = 0

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.bytes += len(item) if isinstance(item, bytes | bytearray) else 0

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= len(item) if isinstance(item, bytes | bytearray) else 0
        return item


def _not_own_records(record: logging.LogRecord) -> bool:
    """Records about the shipping itself stay local (no loop through a failing collector); a
    SCORE process's records its peer logs (relayed, scoreservice/output.py) the SCORE ships itself."""
    return record.name != __name__ and not getattr(record, "relayed", False)


def _entries_in(packed: bytes) -> int:
    """How many forward-protocol entries a run of msgpack packets holds."""
    import msgpack

    unpacker = msgpack.Unpacker(max_buffer_size=max(len(packed), 1))
    unpacker.feed(packed)
    count = 0
    with contextlib.suppress(ValueError, msgpack.UnpackException):
        for _ in unpacker:
            count += 1
    return count


_handler: ShippingHandler | None = None


def start_shipping(host: str, port: int, kind: str, process: str) -> ShippingHandler:
    """Ship this process's log records (a handler on the root logger) and events (the sink) to
    the collector at host:port; `kind` names the tags, `process` labels each entry."""
    global _handler
    stop_shipping()
    handler = ShippingHandler(host, port, kind, process)
    logging.getLogger().addHandler(handler)
    set_sink(handler.ship_event)
    _handler = handler
    return handler


def stop_shipping() -> None:
    """Remove and close the handler start_shipping installed, if any (bounded, see close())."""
    global _handler
    handler, _handler = _handler, None
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def dropped_records() -> int:
    """Records and events this process failed to deliver to the collector (0 when not shipping)."""
    handler = _handler
    return handler.dropped if handler is not None else 0


def queued_bytes() -> int:
    """Packed bytes of the entries waiting for the sender thread (at most QUEUE_BYTES); 0 when
    not shipping."""
    handler = _handler
    return handler.queued_bytes if handler is not None else 0


def pending_bytes() -> int:
    """Bytes kept for a collector that cannot be reached now (sent, or dropped past
    PENDING_BYTES, later); 0 when not shipping."""
    handler = _handler
    if handler is None:
        return 0
    return len(handler.sender.pendings or b"")


def remove_sink(sink: Sink) -> None:
    """Remove `sink` if it is the installed one."""
    global _sink
    if _sink == sink:
        _sink = None
