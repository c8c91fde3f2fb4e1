"""A userspace Ethernet switch over TAP devices that delays, and may drop, every frame it carries:
the stand-in for netem on kernels without sch_netem (this one has none), so that tests can put
latency and loss between peers in network namespaces.

Run as a process (root, /dev/net/tun):

    python -m tests.e2e._tapswitch NAME [NAME ...]

It creates one TAP device per NAME in the namespace it runs in, writes "ready" on stdout, and
forwards frames between them as a learning bridge does: to the port a destination MAC was last
seen on, to every other port when unknown or broadcast. Each frame waits `delay` milliseconds
before it goes out (one way; a round trip crosses twice), so it behaves as netem's delay on every
host's egress. Lines on stdin change the link, each answered "ok" on stdout:

    delay MS        the one-way delay (0: none)
    loss PERCENT    the share of frames dropped on arrival (0-100)
    cut I J         drop every IP packet between ports I and J (indices in NAME order), both
                    ways, without a word, as a firewall or a routed network's cut does; ARP
                    still passes, so a connection attempt is not refused by its own host
                    (EHOSTUNREACH, or EINVAL for a blackhole route) but waits for its timeout
    join            remove every cut

The caller moves the devices into other namespaces (`ip link set NAME netns NS`); they stay
attached. The switch exits when its stdin closes, and its devices go with it. At most MAX_QUEUED
frames wait at once (netem's limit, ten times over); more are dropped, as a full qdisc drops.
"""

from __future__ import annotations

import fcntl
import heapq
import math
import os
import random
import selectors
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536
MAX_QUEUED = 10_000
ARP = b"\x08\x06"  # the EtherType of ARP frames, which a cut lets pass
READS_PER_WAKE = 64  # frames read from one port before the others get a turn


def open_tap(name: str) -> int:
    """A TAP device `name` (Ethernet frames, no packet information header); its descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


class Switch:
    """Ports (TAP descriptors), a MAC table, and the frames waiting for their time."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.delay = 0.0  # seconds
        self.loss = 0.0  # probability
        self.where: dict[bytes, int] = {}  # MAC -> the port it was last seen on
        self.waiting: list[tuple[float, int, int, bytes]] = []  # (due, seq, in port, frame)
        self.seq = 0
        self.dropped = 0
        self.cuts: set[tuple[int, int]] = set()  # (in port, out port): their frames are dropped

    def arrived(self, port: int, frame: bytes, now: float) -> None:
        if len(frame) < 14:
            return
        self.where[frame[6:12]] = port
        if (self.loss and random.random() < self.loss) or len(self.waiting) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.seq += 1
        heapq.heappush(self.waiting, (now + self.delay, self.seq, port, frame))

    def send_due(self, now: float) -> float | None:
        """Send every frame whose time has come; seconds until the next one (None: none waits)."""
        while self.waiting and self.waiting[0][0] <= now:
            _, _, port, frame = heapq.heappop(self.waiting)
            destination = frame[0:6]
            out = self.where.get(destination) if not destination[0] & 1 else None
            targets = [out] if out is not None else [p for p in self.ports if p != port]
            for fd in targets:
                if fd == port or ((port, fd) in self.cuts and frame[12:14] != ARP):
                    continue
                try:
                    os.write(fd, frame)
                except OSError:  # a full or downed device: the frame is lost, as on a wire
                    self.dropped += 1
        return self.waiting[0][0] - now if self.waiting else None

    def command(self, line: str) -> str:
        words = line.split()
        try:
            if len(words) == 2 and words[0] == "delay":
                self.delay = max(0.0, _finite(words[1]) / 1000)
            elif len(words) == 2 and words[0] == "loss":
                self.loss = min(max(_finite(words[1]), 0.0), 100.0) / 100
            elif words == ["dropped"]:
                return f"ok {self.dropped}"
            elif len(words) == 3 and words[0] == "cut":
                if not all(0 <= int(word) < len(self.ports) for word in words[1:]):
                    raise IndexError(line)
                a, b = (self.ports[int(word)] for word in words[1:])
                self.cuts |= {(a, b), (b, a)}
            elif words == ["join"]:
                self.cuts.clear()
            else:
                return f"error: unknown command {line!r}"
        except ValueError:
            return f"error: not a number in {line!r}"
        except IndexError:
            return f"error: no such port in {line!r}"
        return "ok"


def _finite(word: str) -> float:
    """`word` as a finite number (ValueError for "inf" and "nan" too: a frame delayed by
    infinity never leaves, and the queue's order breaks on NaN)."""
    value = float(word)
    if not math.isfinite(value):
        raise ValueError(word)
    return value


def serve(names: list[str]) -> None:
    ports = [open_tap(name) for name in names]
    switch = Switch(ports)
    selector = selectors.DefaultSelector()
    for fd in ports:
        selector.register(fd, selectors.EVENT_READ)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    pending = b""
    timeout: float | None = None
    while True:
        for key, _ in selector.select(timeout):
            fd = key.fd
            if fd == stdin:
                data = os.read(stdin, 4096)
                if not data:
                    return  # the caller is gone: so are the devices
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    print(switch.command(line.decode()), flush=True)
                continue
            now = time.monotonic()
            for _ in range(READS_PER_WAKE):
                try:
                    frame = os.read(fd, MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # the device is going away
                    break
                switch.arrived(fd, frame, now)
        timeout = switch.send_due(time.monotonic())


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m tests.e2e._tapswitch NAME NAME [NAME ...]")
    serve(sys.argv[1:])
