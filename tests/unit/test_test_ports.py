"""The ports the test networks take: outside the kernel's ephemeral range (where no outgoing
connection can take one before the node binds it), one pytest-xdist worker's share apart from
another's, and a node that ends before it serves is reported at once with its output."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tools import procs
from tools.procs import INNER_DIFF, REST_DIFF, Proc, free_port_pair, free_tls_port, wait_serving


def _workers(monkeypatch: pytest.MonkeyPatch, worker: int, count: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))


def _outside(ports: tuple[int, ...], low: int, high: int) -> bool:
    return all(procs.PORT_FLOOR <= p <= procs.MAX_PORT and not low <= p <= high for p in ports)


def test_ports_are_free_and_outside_the_ephemeral_range() -> None:
    low, high = procs._ephemeral_range()
    taken: set[int] = set()
    for _ in range(20):
        port = free_tls_port(taken)
        ports = (port, port + REST_DIFF, port + INNER_DIFF)
        assert _outside(ports, low, high), (ports, low, high)
        assert set(ports) <= taken
    pair = free_port_pair(taken)
    assert _outside((pair, pair + REST_DIFF), low, high) and {pair, pair + REST_DIFF} <= taken
    assert len(taken) == 20 * 3 + 2  # no port given twice


@pytest.mark.parametrize(
    ("low", "high", "pairs_above", "triples_above"),
    [
        (32768, 60999, True, False),  # Linux's default: pairs also fit above, triples only below
        (40000, 50000, True, True),
        (20000, 64000, False, False),  # room below only
        (12000, 64000, False, False),  # one base below for pairs; none for triples: the kernel's
    ],
)
def test_ports_keep_clear_of_any_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch, low: int, high: int, pairs_above: bool, triples_above: bool
) -> None:
    monkeypatch.setattr(procs, "_ephemeral_range", lambda: (low, high))
    for reach, above in ((REST_DIFF, pairs_above), (INNER_DIFF, triples_above)):
        spans = procs._port_bases(reach)
        bases = [base for span in spans for base in span]
        assert any(base > high for base in bases) == above
        for base in bases:
            assert _outside((base, base + procs.PORT_STRIDE - 1 + reach), low, high), base
        picked = [next(procs._candidate_ports(reach)) for _ in range(50)]
        if bases:
            assert all(_outside((p, p + reach), low, high) for p in picked)
        else:  # no room at all: the kernel's ports, still usable
            assert all(p + reach <= procs.MAX_PORT for p in picked)


def test_a_port_in_taken_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    base = procs.PORT_FLOOR + 11
    picks = iter([base, base - REST_DIFF, base + 1])
    monkeypatch.setattr(procs, "_candidate_ports", lambda reach: picks)
    taken = {base}
    assert free_port_pair(taken) == base + 1 and taken == {base, base + 1, base + 1 + REST_DIFF}


def test_a_listening_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    free = free_port_pair()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        picks = iter([busy, busy - REST_DIFF, free])
        monkeypatch.setattr(procs, "_candidate_ports", lambda reach: picks)
        assert free_port_pair() == free


def test_a_port_an_earlier_connection_left_in_time_wait_can_still_be_held() -> None:
    """`free_port_pair` hands out ports whose earlier connections are in TIME_WAIT (servers bind
    with SO_REUSEADDR); a test holding such a port to see a node fail to listen on it must bind
    the same way. A plain bind refused it: CI failed test_port_in_use_exits_1 so."""
    port = free_port_pair()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its port keeps a TIME_WAIT
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    with procs.hold_port(port):
        with socket.socket() as other, pytest.raises(OSError):  # held: nobody else listens
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
            other.listen()


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_each_worker_keeps_every_port_of_a_node_in_its_own_share(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    seen: dict[int, set[int]] = {}
    for worker in range(count):
        _workers(monkeypatch, worker, count)
        taken: set[int] = set()
        for _ in range(30):
            free_tls_port(taken)
        seen[worker] = {p % procs.PORT_STRIDE % count for p in taken}
        assert seen[worker] == {worker}, (worker, sorted(taken)[:10])


def test_a_node_that_ends_before_serving_fails_the_wait_at_once(tmp_path: Path) -> None:
    proc = Proc("early", ["-c", "print('cannot start: port taken'); exit(1)"], tmp_path).start()
    proc.wait(30)
    port = free_port_pair()
    with pytest.raises(AssertionError, match=r"(?s)early ended with 1 .*cannot start: port taken"):
        wait_serving(proc, f"http://127.0.0.1:{port}/", 600, "its REST API")
