"""The userspace switch of the network-namespace tests (tests/e2e/_tapswitch.py), its ports pipes
instead of TAP devices: where frames go, when, and which are dropped; and how the namespaces'
network reads its answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e import _netns, _tapswitch
from tests.e2e._tapswitch import Switch

A, B, C = (bytes([2, 0, 0, 0, 0, n]) for n in (1, 2, 3))
BROADCAST = b"\xff" * 6


def frame(destination: bytes, source: bytes, payload: bytes = b"x" * 50) -> bytes:
    return destination + source + b"\x08\x00" + payload


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made = [os.pipe() for _ in range(3)]
    for read, _ in made:
        os.set_blocking(read, False)
    yield made
    for read, write in made:
        os.close(read)
        os.close(write)


def received(read: int) -> list[bytes]:
    """The frames written to a pipe so far (each frame here is 64 bytes)."""
    try:
        data = os.read(read, 1 << 16)
    except BlockingIOError:
        return []
    return [data[i : i + 64] for i in range(0, len(data), 64)]


def test_unknown_and_broadcast_frames_flood_known_ones_go_to_their_port(
    pipes: list[tuple[int, int]],
) -> None:
    ports = [write for _, write in pipes]
    switch = Switch(ports)
    first = frame(B, A)
    switch.arrived(ports[0], first, 0.0)  # B unknown: to every other port
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[], [first], [first]]

    reply = frame(A, B)
    switch.arrived(ports[1], reply, 0.0)  # A was seen on port 0
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[reply], [], []]

    hello = frame(BROADCAST, C)
    switch.arrived(ports[2], hello, 0.0)
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[hello], [hello], []]


def test_frames_wait_the_delay_in_order(pipes: list[tuple[int, int]]) -> None:
    ports = [write for _, write in pipes]
    switch = Switch(ports)
    assert switch.command("delay 200") == "ok"
    switch.arrived(ports[1], frame(A, B), 0.0)  # learn B
    frames = [frame(B, A, bytes([n]) * 50) for n in range(3)]
    for n, each in enumerate(frames):
        switch.arrived(ports[0], each, n * 0.01)
    assert switch.send_due(0.1) == pytest.approx(0.1)  # the first frame is due at 0.2
    assert received(pipes[1][0]) == []
    switch.send_due(0.215)
    assert received(pipes[1][0]) == frames[:2]
    assert switch.send_due(0.3) is None
    assert received(pipes[1][0]) == frames[2:]


def test_loss_drops_a_share_and_counts_it(pipes: list[tuple[int, int]]) -> None:
    ports = [write for _, write in pipes]
    switch = Switch(ports)
    assert switch.command("loss 100") == "ok"
    for _ in range(5):
        switch.arrived(ports[0], frame(BROADCAST, A), 0.0)
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[], [], []]
    assert switch.command("dropped") == "ok 5"
    assert switch.command("loss 0") == "ok"
    switch.arrived(ports[0], frame(BROADCAST, A), 0.0)
    switch.send_due(0.0)
    assert len(received(pipes[1][0])) == 1


def test_a_full_queue_drops_what_comes(
    pipes: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tapswitch, "MAX_QUEUED", 2)
    ports = [write for _, write in pipes]
    switch = Switch(ports)
    switch.command("delay 10")
    for _ in range(4):
        switch.arrived(ports[0], frame(BROADCAST, A), 0.0)
    assert len(switch.waiting) == 2
    assert switch.dropped == 2


def test_unknown_commands_and_runts_are_refused(pipes: list[tuple[int, int]]) -> None:
    switch = Switch([write for _, write in pipes])
    assert switch.command("jitter 5").startswith("error")
    assert switch.command("delay abc").startswith("error: not a number")
    assert switch.command("loss 5%").startswith("error: not a number")
    for word in ("inf", "-inf", "nan", "1e999"):
        assert switch.command(f"delay {word}").startswith("error: not a number")
        assert switch.command(f"loss {word}").startswith("error: not a number")
    assert switch.delay == 0.0 and switch.loss == 0.0
    switch.arrived(pipes[0][1], b"short", 0.0)
    assert switch.waiting == [] and switch.where == {}


def test_a_cut_drops_the_ip_frames_between_two_ports_both_ways_until_joined(
    pipes: list[tuple[int, int]],
) -> None:
    ports = [write for _, write in pipes]
    switch = Switch(ports)
    switch.arrived(ports[0], frame(BROADCAST, A), 0.0)
    switch.arrived(ports[1], frame(BROADCAST, B), 0.0)
    switch.send_due(0.0)
    [received(r) for r, _ in pipes]  # learnt: A on port 0, B on port 1
    assert switch.command("cut 0 1") == "ok"
    to_b, to_a, hello = frame(B, A), frame(A, B), frame(BROADCAST, A)
    switch.arrived(ports[0], to_b, 0.0)
    switch.arrived(ports[1], to_a, 0.0)
    switch.arrived(ports[0], hello, 0.0)  # a broadcast still reaches the ports not cut off
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[], [], [hello]]
    arp = B + A + b"\x08\x06" + b"x" * 50  # ARP passes: no host is told the other is gone
    switch.arrived(ports[0], arp, 0.0)
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[], [arp], []]
    assert switch.command("join") == "ok"
    switch.arrived(ports[0], to_b, 0.0)
    switch.send_due(0.0)
    assert [received(r) for r, _ in pipes] == [[], [to_b], []]
    assert switch.command("cut 0 7").startswith("error: no such port")
    assert switch.command("cut -1 0").startswith("error: no such port")
    assert switch.command("cut 0 x").startswith("error: not a number")


@pytest.mark.parametrize(
    ("script", "answer"),
    [
        ("print('ok 3', flush=True); import time; time.sleep(60)", "ok 3"),
        ("import time; time.sleep(60)", "no answer within"),
        ("pass", "the userspace switch ended (status 0)"),
    ],
)
def test_the_network_waits_for_the_switchs_answer_with_a_deadline(
    monkeypatch: pytest.MonkeyPatch, script: str, answer: str
) -> None:
    """The namespaces' network reads the switch's answers with a deadline: a switch stuck or
    gone fails the test that drives it instead of hanging it."""
    if "no answer" in answer:  # (the others wait as long as a real switch is given)
        monkeypatch.setattr(_netns, "COMMAND_TIMEOUT", 0.5)
    network = object.__new__(_netns.VirtualNetwork)
    network.switch = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        if answer.startswith("ok"):
            assert network._switch_answer() == answer
        else:
            with pytest.raises(_netns.NetnsError, match=re.escape(answer)):
                network._switch_answer()
    finally:
        network.switch.kill()
        network.switch.wait(30)
        for stream in (network.switch.stdin, network.switch.stdout):
            assert stream is not None
            stream.close()
