"""loopchain.monitor_log's shipping, in this process, against a real forward-protocol receiver on
127.0.0.1: what a record and an event carry, and that a collector that is down or never reads
costs counted entries but never blocks an emit or the close."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from loopchain import monitor_log
from loopchain.monitor_log import ShippingHandler
from tests._forward_receiver import ForwardReceiver
from tools.procs import wait_until

PROCESS = "peer:7777"


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    with ForwardReceiver() as running:
        yield running


def dead_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_records_and_events_arrive_tagged_with_their_fields(receiver: ForwardReceiver) -> None:
    handler = ShippingHandler("127.0.0.1", receiver.port, "peer", PROCESS)
    log = logging.getLogger("loopchain.test.shipping")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        before = time.time()
        log.info("block %d added", 12, extra={"channel": "kofia"})
        log.info("a SCORE's record", extra={"relayed": True})  # which its SCORE ships itself
        try:
            raise ValueError("broken")
        except ValueError:
            log.exception("it failed")
        handler.ship_event("AddBlock", {"channel": "kofia", "height": 12, "hash": b"\x01"})
        handler.ship_event("Odd", {"value": object()})  # not msgpack-able: sent as its str()
        wait_until(lambda: len(receiver.entries) == 4, 30, "4 entries")
    finally:
        log.removeHandler(handler)
        handler.close()
    info, error, added, odd = receiver.entries
    tags = [e.tag for e in receiver.entries]
    assert tags == [
        "loopchain.peer",
        "loopchain.peer",
        "loopchain.peer.event",
        "loopchain.peer.event",
    ]
    assert info.record == {
        "level": "INFO",
        "logger": "loopchain.test.shipping",
        "message": "block 12 added",
        "process": PROCESS,
        "pid": handler._pid,
        "channel": "kofia",
    }
    assert before - 1 <= info.time <= time.time() + 1 and info.time != int(info.time)
    assert error.record["level"] == "ERROR" and error.record["message"] == "it failed"
    exc_text = error.record["exc_text"]
    assert "Traceback" in exc_text and "ValueError: broken" in exc_text
    assert added.record == {
        "event": "AddBlock",
        "channel": "kofia",
        "height": 12,
        "hash": b"\x01",
        "process": PROCESS,
        "pid": handler._pid,
    }
    assert odd.record["value"].startswith("<object object at")
    assert handler.dropped == 0 and receiver.errors == []


def test_a_dead_collector_costs_every_entry_counted_and_never_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = ShippingHandler("127.0.0.1", dead_port(), "score", "score", pending_bytes=2000)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("m" * 100,), None)
    sent = 300
    for _ in range(sent):
        handler.handle(record)
    # the kept bytes overflow every ~15 records: dropped while the process runs
    wait_until(lambda: handler.dropped >= sent // 2, 30, "drops counted while running")
    start = time.monotonic()
    handler.close()
    assert time.monotonic() - start < 5.0
    assert handler.dropped == sent  # the rest, kept for a collector that never came, at close
    # after a refused connect the sender pauses (0.5 s, doubling): a few attempts, not one per entry
    assert 1 <= handler.sender.attempts < 20, handler.sender.attempts
    handler.handle(record)  # after close: counted, not raised
    assert handler.dropped == sent + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == monitor_log.__name__]
    assert len(warnings) == 2, (
        warnings
    )  # one while dropping (then at most one a minute), one at close
    assert "unreachable or too slow" in warnings[0]
    assert f"{sent} records and events were not delivered" in warnings[1]


def test_a_collector_that_never_reads_blocks_no_emit_and_no_close() -> None:
    """The sender thread sits in a send that times out only after a minute: emits still return at
    once (the bounded queue drops its oldest entries) and close gives up at its deadline."""
    with ForwardReceiver(read=False) as stalled:
        handler = ShippingHandler(
            "127.0.0.1",
            stalled.port,
            "rest_proxy",
            "rest:1",
            queue_entries=50,
            send_timeout=60.0,
            close_deadline=0.5,
        )
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("m" * 16000,), None)
        sent = 3000  # 48 MB: more than any socket buffers hold
        start = time.monotonic()
        for _ in range(sent):
            handler.handle(record)
        emitting = time.monotonic() - start
        wait_until(lambda: stalled.connections >= 1, 30, "the sender connected")
        wait_until(lambda: handler.dropped > 0, 30, "queue overflow counted")
        assert emitting < 30.0, f"{sent} emits took {emitting:.1f} s: they waited for the collector"
        start = time.monotonic()
        handler.close()
        closing = time.monotonic() - start
    assert closing < 5.0, f"close took {closing:.1f} s with a stalled collector"
    assert handler.dropped >= sent - 50 - 48 * 64, handler.dropped  # at most ~3 MB got through
    assert handler.dropped <= sent


def test_start_shipping_installs_the_handler_and_the_event_sink(receiver: ForwardReceiver) -> None:
    root = logging.getLogger()
    try:
        handler = monitor_log.start_shipping("127.0.0.1", receiver.port, "radiostation", "rs:1")
        assert handler in root.handlers
        monitor_log.event("Error", message="a test error")
        logging.getLogger("loopchain.test").warning("a warning")
        logging.getLogger(monitor_log.__name__).warning("about shipping: stays local")
        wait_until(lambda: len(receiver.entries) >= 2, 30, "the event and the record")
    finally:
        monitor_log.stop_shipping()
    assert handler not in root.handlers
    monitor_log.event("Error", message="after stop: a no-op")
    tags = sorted(e.tag for e in receiver.entries)
    assert tags == ["loopchain.radiostation", "loopchain.radiostation.event"]
    assert monitor_log.dropped_records() == 0


def test_unknown_process_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown process kind"):
        ShippingHandler("127.0.0.1", 1, "wallet", "w")


def _queue_bytes_now(handler: ShippingHandler) -> int:
    """The bytes in the sender's queue, summed from its entries (under the queue's lock)."""
    entries = handler.sender._queue
    with entries.mutex:
        return sum(len(item) for item in entries.queue if isinstance(item, bytes))


def test_large_records_for_a_collector_that_never_reads_stay_within_the_queue_bytes() -> None:
    """Records of the largest size (message and exception text cut to their maximum) against a
    collector that never reads: the queue keeps at most QUEUE_BYTES of them, dropping (and
    counting) the oldest, however many entries it may hold."""
    with ForwardReceiver(read=False) as stalled:
        handler = ShippingHandler(
            "127.0.0.1", stalled.port, "peer", PROCESS, send_timeout=60.0, close_deadline=0.2
        )
        try:
            record = logging.LogRecord(
                "x",
                logging.ERROR,
                __file__,
                1,
                "%s",
                ("m" * 2 * monitor_log.MAX_MESSAGE_CHARS,),
                None,
            )
            record.exc_text = "e" * 2 * monitor_log.MAX_EXC_CHARS
            sent = 400  # ~32 MB packed: far more than QUEUE_BYTES, far fewer than QUEUE_ENTRIES
            assert sent < monitor_log.QUEUE_ENTRIES
            largest = 0
            for _ in range(sent):
                handler.handle(record)
                queued = _queue_bytes_now(handler)
                assert queued <= monitor_log.QUEUE_BYTES, queued
                largest = max(largest, queued)
            entry = len(handler.sender._make_packet(handler.record_label, 0.0, {"m": "m" * 81920}))
            assert largest > monitor_log.QUEUE_BYTES - 2 * entry, largest  # the bound, not less
            assert handler.queued_bytes == _queue_bytes_now(handler)
            # what the socket, the pending bytes and the send in progress took is at most a few MB
            assert handler.dropped >= sent - monitor_log.QUEUE_BYTES // entry - (8 << 20) // entry
            assert handler.dropped <= sent
        finally:
            handler.close()


def test_a_record_larger_than_the_queue_bytes_is_dropped_and_counted(
    receiver: ForwardReceiver,
) -> None:
    handler = ShippingHandler("127.0.0.1", receiver.port, "peer", PROCESS, queue_bytes=10_000)
    try:
        big = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("m" * 20_000,), None)
        small = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("small",), None)
        handler.handle(big)
        handler.handle(small)
        wait_until(lambda: len(receiver.entries) == 1, 30, "the small record")
    finally:
        handler.close()
    assert receiver.entries[0].record["message"] == "small"
    assert handler.dropped == 1


def test_module_reports_the_queued_bytes(receiver: ForwardReceiver) -> None:
    assert monitor_log.queued_bytes() == 0  # not shipping
    handler = monitor_log.start_shipping("127.0.0.1", receiver.port, "peer", PROCESS)
    try:
        assert monitor_log.queued_bytes() == handler.queued_bytes >= 0
    finally:
        monitor_log.stop_shipping()
    assert monitor_log.queued_bytes() == 0
