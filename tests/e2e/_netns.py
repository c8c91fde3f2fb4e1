"""A small virtual network of Linux network namespaces for partition tests (root and iproute2).

Layout (all names carry a per-run suffix, so parallel or leftover runs never clash):

    root namespace                 hub namespace                       host namespaces
    lcXXXXXXh 10.213.N.1/24 ── up0 ─┐
                                     br0 10.213.N.2/24 ── h0 ── eth0 10.213.N.10/24  (lcXXXXXXn0)
                                        (bridge)       ── h1 ── eth0 10.213.N.11/24  (lcXXXXXXn1)
                                                       ── ...

The bridge lives in a namespace of its own, so the host's firewall (e.g. a FORWARD policy of DROP
seen by bridged traffic through br_netfilter) never sees the traffic between hosts. Partitions are
blackhole routes inside the host namespaces (packets to a cut-off address are dropped silently, as on
a broken link); healing removes them.

A network made with `switched=True` joins the hosts' eth0 not to the bridge but to a userspace switch
(tests/e2e/_tapswitch.py, over TAP devices) with one more port on the bridge: every frame a host
sends or receives crosses it, so it can delay and drop them (netem's job, on kernels without
sch_netem).
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence

from tests.e2e._tapswitch import open_tap

SUBNET_PREFIX = "10.213"
HOST_OFFSET = 10  # host i has the address .(10 + i)
COMMAND_TIMEOUT = 20.0


class NetnsError(RuntimeError):
    """An `ip` or `tc` command failed."""


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaces, veth pairs and bridges cannot be used here; None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (run the partition tests as root)"
    if shutil.which("ip") is None:
        return "iproute2 is not installed (no `ip` command)"
    probe = f"lcprobe{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", probe])
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "-n", probe, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a bridge or a veth pair: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def switch_unavailable_reason() -> str | None:
    """Why a switched network cannot be made here (no TUN/TAP); None when it can. Tried with a
    throwaway TAP device, which goes when its descriptor closes."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN/TAP)"
    try:
        os.close(open_tap(f"lcprobe{secrets.token_hex(3)}"))
    except OSError as exc:
        return f"cannot make a TAP device: {exc}"
    return None


def _used_third_octets() -> set[int]:
    """Third octets of 10.213.x.0/24 networks the root namespace already has addresses or routes in."""
    used: set[int] = set()
    text = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    text += _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    probe = ipaddress.ip_network(f"{SUBNET_PREFIX}.0.0/16")
    for word in text.split():
        try:
            network = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if network.version != 4 or not network.overlaps(probe):
            continue
        if network.prefixlen <= 16:
            return set(range(256))  # something already covers all of 10.213/16
        low = int(network.network_address.packed[2])
        high = int(network.broadcast_address.packed[2])
        used.update(range(low, high + 1))
    return used


class VirtualNetwork:
    """`hosts` namespaces on one bridge, reachable from the root namespace; `destroy` undoes all."""

    def __init__(self, hosts: int, switched: bool = False) -> None:
        self.suffix = secrets.token_hex(3)
        self.switched = switched
        self.switch: subprocess.Popen[str] | None = None
        self.hub = f"lc{self.suffix}hub"
        self.host_link = f"lc{self.suffix}h"  # the root namespace's end of its veth pair
        self.namespaces = [f"lc{self.suffix}n{i}" for i in range(hosts)]
        self.blocked: set[tuple[int, int]] = set()
        self.silent = False  # cuts made by the switch (partition(silent=True))
        self.created: list[str] = []  # namespaces made so far, for destroy
        self._pick_subnet()

    def _pick_subnet(self) -> None:
        free = sorted(set(range(1, 255)) - _used_third_octets())
        if not free:
            raise NetnsError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")
        self.subnet = f"{SUBNET_PREFIX}.{random.choice(free)}"
        self.root_address = f"{self.subnet}.1"
        self.hub_address = f"{self.subnet}.2"
        self.addresses = [f"{self.subnet}.{HOST_OFFSET + i}" for i in range(len(self.namespaces))]

    # ------------------------------------------------------------ build and tear down

    def create(self) -> VirtualNetwork:
        """Build the namespaces, the bridge and the links; on failure undo what was built. Should a
        parallel run have taken the same subnet at the same moment, build again on another."""
        for _ in range(5):
            try:
                self._create()
                if not self._subnet_shared():
                    return self
            except BaseException:
                self.destroy()
                raise
            self.destroy()
            self._pick_subnet()
        raise NetnsError("kept colliding with other networks' subnets")

    def _subnet_shared(self) -> bool:
        """Another link of the root namespace has an address in this network's subnet."""
        ours = ipaddress.ip_network(f"{self.subnet}.0/24")
        for line in _run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
            words = line.split()
            if len(words) < 4 or words[1].split("@")[0] == self.host_link:
                continue
            try:
                network = ipaddress.IPv4Interface(words[3]).network
            except ValueError:
                continue
            if network.overlaps(ours):
                return True
        return False

    def _create(self) -> None:
        _run(["ip", "netns", "add", self.hub])
        self.created.append(self.hub)
        hub = ["ip", "-n", self.hub]
        _run([*hub, "link", "set", "lo", "up"])
        _run([*hub, "link", "add", "br0", "type", "bridge"])
        _run([*hub, "addr", "add", f"{self.hub_address}/24", "dev", "br0"])
        _run([*hub, "link", "set", "br0", "up"])
        _run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", "up0"])
        _run(["ip", "link", "set", "up0", "netns", self.hub])
        _run([*hub, "link", "set", "up0", "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.root_address}/24", "dev", self.host_link])
        _run(["ip", "link", "set", self.host_link, "up"])
        taps = self._start_switch() if self.switched else []
        for index, (name, address) in enumerate(zip(self.namespaces, self.addresses, strict=True)):
            _run(["ip", "netns", "add", name])
            self.created.append(name)
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            if taps:
                _run(["ip", "link", "set", taps[index], "netns", name])
                _run(["ip", "-n", name, "link", "set", taps[index], "name", "eth0"])
            else:
                _run([*hub, "link", "add", f"h{index}", "type", "veth", "peer", "name", "eth0"])
                _run([*hub, "link", "set", "eth0", "netns", name])
                _run([*hub, "link", "set", f"h{index}", "master", "br0", "up"])
            _run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"])
            _run(["ip", "-n", name, "link", "set", "eth0", "up"])
        if taps:  # the switch's last port is on the bridge: the hosts reach the hub and the root
            _run(["ip", "link", "set", taps[-1], "netns", self.hub])
            _run([*hub, "link", "set", taps[-1], "master", "br0", "up"])

    def _start_switch(self) -> list[str]:
        """Start the userspace switch with a port per host and one for the bridge; their names."""
        taps = [f"lc{self.suffix}t{i}" for i in range(len(self.namespaces))] + [
            f"lc{self.suffix}tu"
        ]
        self.switch = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e._tapswitch", *taps],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        ready = self._switch_answer()
        if ready != "ready":
            raise NetnsError(f"the userspace switch did not start: {ready!r}")
        return taps

    def _switch_answer(self) -> str:
        """The switch's next line, waited for at most COMMAND_TIMEOUT: a switch stuck or gone is
        an error, not a test hung for good. (It answers each command with one line, and the next
        command waits for it: no second line sits in the stream's buffer unseen by select.)"""
        assert self.switch is not None and self.switch.stdout is not None
        ready, _, _ = select.select([self.switch.stdout], [], [], COMMAND_TIMEOUT)
        if not ready:
            raise NetnsError(f"the userspace switch gave no answer within {COMMAND_TIMEOUT:.0f} s")
        line = self.switch.stdout.readline()
        if not line:
            try:
                status = self.switch.wait(COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
            raise NetnsError(f"the userspace switch ended (status {status})")
        return line.strip()

    def _switch_command(self, line: str) -> str:
        if self.switch is None or self.switch.stdin is None:
            raise NetnsError("this network has no switch (make it with switched=True)")
        self.switch.stdin.write(line + "\n")
        self.switch.stdin.flush()
        answer = self._switch_answer()
        if not answer.startswith("ok"):
            raise NetnsError(f"the switch answered {line!r} with {answer!r}")
        return answer

    def destroy(self) -> None:
        """Delete every namespace and link this network made (safe to call twice)."""
        switch, self.switch = self.switch, None
        if switch is not None:  # its TAP devices end with it
            switch.kill()
            switch.wait(COMMAND_TIMEOUT)
            for stream in (switch.stdin, switch.stdout):
                if stream is not None:
                    stream.close()
        for name in reversed(self.created):
            _run(["ip", "netns", "del", name], check=False)
        self.created.clear()
        # a namespace's links go with it, but the kernel frees them lazily: delete ours now
        if _run(["ip", "link", "show", self.host_link], check=False).returncode == 0:
            _run(["ip", "link", "del", self.host_link], check=False)

    # ------------------------------------------------------------ running things inside

    def exec_prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program inside host `index`'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[index]]

    @property
    def hub_prefix(self) -> list[str]:
        """The command prefix that runs a program in the hub namespace (on the bridge address)."""
        return ["ip", "netns", "exec", self.hub]

    # ------------------------------------------------------------ partitions and delay

    def _route(self, action: str, src: int, dst: int) -> None:
        _run(["ip", "-n", self.namespaces[src], "route", action, "blackhole", self.addresses[dst]])

    def cut(self, src: int, dst: int) -> None:
        """Drop every packet between hosts `src` and `dst` (both directions)."""
        for a, b in ((src, dst), (dst, src)):
            if (a, b) not in self.blocked:
                self._route("add", a, b)
                self.blocked.add((a, b))

    def partition(self, *groups: Iterable[int], silent: bool = False) -> None:
        """Split the hosts into `groups`: hosts of different groups cannot reach each other (every
        host still reaches the root and the hub namespaces). By blackhole routes, which refuse a
        host's own connection attempts at once (EINVAL); `silent` (a switched network): by the
        switch, which drops their frames without a word, as a cut wire or a firewall does (an
        attempt waits for its connect timeout)."""
        sides = [set(group) for group in groups]
        for i, side in enumerate(sides):
            for other in sides[i + 1 :]:
                for a in side:
                    for b in other:
                        if silent:
                            self._switch_command(f"cut {a} {b}")
                            self.silent = True
                        else:
                            self.cut(a, b)

    def heal(self) -> None:
        """Remove every cut."""
        for a, b in sorted(self.blocked):
            self._route("del", a, b)
        self.blocked.clear()
        if self.silent:
            self._switch_command("join")
            self.silent = False

    def add_delay(self, milliseconds: float) -> None:
        """Delay every frame between hosts, and between a host and the bridge, by `milliseconds`
        one way (a switched network)."""
        self._switch_command(f"delay {milliseconds}")

    def set_loss(self, percent: float) -> None:
        """Drop `percent` of the frames the switch carries (a switched network)."""
        self._switch_command(f"loss {percent}")

    def remove_delay(self) -> None:
        self._switch_command("delay 0")

    def dropped(self) -> int:
        """Frames the switch has dropped so far (lost to `set_loss`, or to a full queue)."""
        return int(self._switch_command("dropped").split()[1])
