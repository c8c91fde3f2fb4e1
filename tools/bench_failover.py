#!/usr/bin/env python3
"""Benchmark: leader failover — time from kill -9 of the leader to the next finalized block.

    .venv/bin/python tools/bench_failover.py [--trials 5] [--peers 4] [--rate 20] [--json] [--keep-dir]

Starts a real RadioStation and N peers (with their REST proxies) on free ports in a temporary
directory, with default settings, once. Each trial: a light, steady stream of transactions goes to
the peers that are not the leader; when every peer names the same leader and it is early enough in
its turn (so spinning cannot hand the role over by itself), the tool records t0, kills the leader's
process group with SIGKILL (the peer and its REST proxy), and polls the survivors every 20 ms until
one of them has finalized a block above the height at the kill, proposed in a later round by
another peer; that is t1, and failover = t1 - t0. The killed peer is then restarted and must catch
up before the next trial. Prints every trial and the median, min and max (one JSON line with --json).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loopchain import configure_default
from loopchain.configure import Config, load_config
from tools.procs import LocalNetwork

POLL_INTERVAL = 0.02
HTTP_TIMEOUT = 2.0
FAILOVER_DEADLINE = 120.0
SETTLE_DEADLINE = 90.0
PEER_START_DEADLINE = 40.0
REPORTED_SETTINGS = (
    "TIMEOUT_FOR_LEADER_COMPLAIN",
    "MAX_TIMEOUT_FOR_LEADER_COMPLAIN",
    "INTERVAL_BLOCKGENERATION",
    "LEADER_BLOCK_CREATION_LIMIT",
    "HEARTBEAT_INTERVAL",
)


Statuses = dict[int, dict[str, Any] | None]


class BenchError(RuntimeError):
    """The network did not reach a state the benchmark needs within its deadline."""


@dataclass(frozen=True)
class Options:
    trials: int
    peers: int
    rate: float
    json: bool
    keep_dir: bool


@dataclass
class Trial:
    """One kill and what followed."""

    trial: int
    killed_port: int
    killed_id: str
    kill_height: int
    kill_round: int
    failover_s: float = -1.0  # first survivor with a new leader's final block
    all_survivors_s: float = -1.0  # every survivor has one
    new_leader: str = ""
    new_height: int = -1
    restart_s: float = -1.0  # restarted peer's REST answers
    catchup_s: float = -1.0  # restarted peer reached the survivors' height


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------ HTTP helpers


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """The JSON object at `url`, or None when the peer is down, slow or answers an error."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def statuses(session: aiohttp.ClientSession, ports: Sequence[int]) -> Statuses:
    """/api/v1/status/peer of each port, fetched concurrently (None for a peer that is down)."""
    found = await asyncio.gather(
        *(get_json(session, f"{LocalNetwork.rest(p)}/api/v1/status/peer") for p in ports)
    )
    return dict(zip(ports, found, strict=True))


class TxStream:
    """A steady stream of `rate` transactions per second, round-robin over `targets` (ports)."""

    def __init__(self, session: aiohttp.ClientSession, rate: float) -> None:
        self.session = session
        self.period = 1.0 / rate
        self.targets: list[int] = []
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        """Send until cancelled; missed slots are skipped, not made up."""
        next_at = time.monotonic()
        while True:
            targets = list(self.targets)
            if targets:
                await self._send(targets[(self.sent + self.failed) % len(targets)])
            next_at = max(next_at + self.period, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _send(self, port: int) -> None:
        url = f"{LocalNetwork.rest(port)}/api/v1/transactions"
        body = {"data": f"failover bench {self.sent + self.failed}"}
        try:
            async with self.session.post(url, json=body) as response:
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            self.sent += 1
        else:
            self.failed += 1


# ------------------------------------------------------------------ the benchmark


class FailoverBench:
    """The local network, the transaction stream and the trials."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.net = LocalNetwork(
            workdir, {"HEARTBEAT_INTERVAL": configure_default.HEARTBEAT_INTERVAL}
        )
        self.config: Config = load_config(str(self.net.config_path))
        self.blocks_per_leader = int(self.config.LEADER_BLOCK_CREATION_LIMIT)
        self.ports: list[int] = []
        self.peer_ids: dict[int, str] = {}

    async def start(self, session: aiohttp.ClientSession, stream: TxStream) -> None:
        """Start the RadioStation and the peers; wait until all peers validate one chain."""
        await asyncio.to_thread(self.net.start_radiostation)
        for _ in range(self.options.peers):
            port = self.net.start_peer(wait=False)
            self.ports.append(port)
            await self._wait_rest(session, port)
        stream.targets = list(self.ports)
        found = await self._wait_for(session, self._all_validating, SETTLE_DEADLINE, "all peers")
        self.peer_ids = {port: str(status["peer_id"]) for port, status in found.items()}

    async def _wait_rest(self, session: aiohttp.ClientSession, port: int) -> None:
        """Wait until the peer's REST proxy answers; fail at once when the peer exits."""
        proc = self.net.peers[port]
        end = time.monotonic() + PEER_START_DEADLINE
        while time.monotonic() < end:
            if await get_json(session, f"{LocalNetwork.rest(port)}/api/v1/status/peer"):
                return
            if not proc.alive:
                raise BenchError(f"peer {port} exited; its log is {proc.log_path}")
            await asyncio.sleep(POLL_INTERVAL)
        raise BenchError(f"peer {port} did not answer within {PEER_START_DEADLINE:.0f} s")

    def _all_validating(self, found: Statuses) -> bool:
        """Every peer is up, counts every peer as a validator of the set in force with none
        pending, and the chain has grown. While the set that adds the last peers is pending, a
        quorum needs the old set's too: a leader killed then may halt the channel for good."""
        good = [s for s in found.values() if s is not None]
        return len(good) == len(found) and all(
            int(s["validator_count"]) == self.options.peers
            and not int(s.get("pending_validator_count", 0))
            and int(s["block_height"]) >= 1
            for s in good
        )

    async def _wait_for(
        self,
        session: aiohttp.ClientSession,
        ready: Callable[[Statuses], bool],
        deadline: float,
        what: str,
    ) -> dict[int, dict[str, Any]]:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            found = await statuses(session, self.ports)
            if ready(found):
                return {p: s for p, s in found.items() if s is not None}
            await asyncio.sleep(POLL_INTERVAL)
        raise BenchError(f"timed out after {deadline:.0f} s waiting for {what}")

    def _leader_early_in_turn(self, found: Statuses) -> bool:
        """Every peer names one leader that knows it leads, early enough in its turn of rounds."""
        if any(s is None for s in found.values()):
            return False
        good = [s for s in found.values() if s is not None]
        leaders = {s["leader_id"] for s in good}
        if len(leaders) != 1:
            return False
        leader = next(iter(leaders))
        own = [s for s in good if s["peer_id"] == leader]
        if not own or own[0]["peer_type"] != "1":
            return False
        if self.blocks_per_leader < 10:
            return True
        position = int(own[0]["round"]) % self.blocks_per_leader
        return 3 <= position <= self.blocks_per_leader - 6

    async def trial(self, number: int, session: aiohttp.ClientSession, stream: TxStream) -> Trial:
        """Kill the leader, time the failover, restart the killed peer and let it catch up."""
        # 1. find the leader at a moment when only a failover can change it
        found = await self._wait_for(
            session, self._leader_early_in_turn, SETTLE_DEADLINE, "a settled leader"
        )
        leader_id = str(next(iter(found.values()))["leader_id"])
        port = next((p for p, pid in self.peer_ids.items() if pid == leader_id), None)
        if port is None:
            raise BenchError(f"the leader {leader_id} is none of the peers started here")
        survivors = [p for p in self.ports if p != port]
        stream.targets = list(survivors)
        trial = Trial(
            trial=number,
            killed_port=port,
            killed_id=leader_id,
            kill_height=max(int(s["block_height"]) for s in found.values()),
            kill_round=max(int(s["round"]) for s in found.values()),
        )
        # 2. kill -9 the peer and its REST proxy (one process group)
        t0 = time.monotonic()
        self.net.peers[port].kill9()
        # 3. wait for a block of a later round, by another leader, to be final on the survivors
        await self._time_failover(session, trial, survivors, t0)
        # 4. bring the peer back and let it catch up
        started = time.monotonic()
        self.net.start_peer(port, wait=False)
        await self._wait_rest(session, port)
        trial.restart_s = time.monotonic() - started
        await self._wait_caught_up(session, trial, survivors)
        trial.catchup_s = time.monotonic() - started - trial.restart_s
        stream.targets = list(self.ports)
        return trial

    async def _time_failover(
        self, session: aiohttp.ClientSession, trial: Trial, survivors: list[int], t0: float
    ) -> None:
        done: dict[int, float] = {}
        while len(done) < len(survivors):
            if time.monotonic() - t0 > FAILOVER_DEADLINE:
                raise BenchError(
                    f"trial {trial.trial}: only {len(done)} of {len(survivors)} survivors "
                    f"finalized a new leader's block within {FAILOVER_DEADLINE:.0f} s"
                )
            polled = time.monotonic()
            waiting = [p for p in survivors if p not in done]
            tops = await asyncio.gather(*(self._timed_top(session, p) for p in waiting))
            for port, (seen, data) in zip(waiting, tops, strict=True):
                if data is not None and self._is_new_leaders_block(trial, data):
                    done[port] = seen - t0
                    if len(done) == 1:
                        trial.new_leader = str(data["peer_id"])
                        trial.new_height = int(data["height"])
            await asyncio.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - polled)))
        trial.failover_s = min(done.values())
        trial.all_survivors_s = max(done.values())

    async def _timed_top(
        self, session: aiohttp.ClientSession, port: int
    ) -> tuple[float, dict[str, Any] | None]:
        """(time of the answer, block_data_json of the peer's last final block)."""
        body = await get_json(session, f"{LocalNetwork.rest(port)}/api/v1/blocks")
        seen = time.monotonic()
        data = body.get("block_data_json") if body is not None else None
        return seen, data if isinstance(data, dict) else None

    @staticmethod
    def _is_new_leaders_block(trial: Trial, data: dict[str, Any]) -> bool:
        return (
            int(data["height"]) > trial.kill_height
            and int(data.get("round", trial.kill_round + 1)) > trial.kill_round
            and data["peer_id"] != trial.killed_id
        )

    async def _wait_caught_up(
        self, session: aiohttp.ClientSession, trial: Trial, survivors: list[int]
    ) -> None:
        found = await statuses(session, survivors)
        target = max(int(s["block_height"]) for s in found.values() if s is not None)

        def caught_up(now: Statuses) -> bool:
            mine = now.get(trial.killed_port)
            return mine is not None and int(mine["block_height"]) >= target

        await self._wait_for(
            session, caught_up, SETTLE_DEADLINE, f"peer {trial.killed_port} to catch up"
        )

    def stop(self) -> list[str]:
        """Stop every process; names of those whose logs hold a traceback."""
        self.net.stop_all()
        return self.net.tracebacks()


# ------------------------------------------------------------------ reporting


def describe(trial: Trial) -> str:
    return (
        f"trial {trial.trial}: killed leader {trial.killed_id[:12]} (port {trial.killed_port}) "
        f"at height {trial.kill_height} round {trial.kill_round}; "
        f"failover {trial.failover_s:.3f} s (all survivors {trial.all_survivors_s:.3f} s), "
        f"new leader {trial.new_leader[:12]} finalized height {trial.new_height}; "
        f"restart {trial.restart_s:.1f} s, catch-up {trial.catchup_s:.1f} s"
    )


@dataclass
class Summary:
    """Figures over all trials."""

    peers: int
    rate: float
    settings: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)
    tx_sent: int = 0
    tx_failed: int = 0
    tracebacks: list[str] = field(default_factory=list)
    workdir: str = ""

    def figures(self) -> dict[str, Any]:
        times = [t.failover_s for t in self.trials]
        everyone = [t.all_survivors_s for t in self.trials]
        return {
            "benchmark": "leader_failover",
            "peers": self.peers,
            "trials": len(times),
            "tx_rate": self.rate,
            "failover_s": [round(t, 4) for t in times],
            "median_s": round(statistics.median(times), 4) if times else None,
            "min_s": round(min(times), 4) if times else None,
            "max_s": round(max(times), 4) if times else None,
            "all_survivors_median_s": round(statistics.median(everyone), 4) if times else None,
            "tx_sent": self.tx_sent,
            "tx_failed": self.tx_failed,
            "settings": self.settings,
            "tracebacks": self.tracebacks,
            "workdir": self.workdir,
            "details": [asdict(t) for t in self.trials],
        }


def cancel_on_signals() -> None:
    """SIGINT and SIGTERM cancel the running task, so the network is still stopped cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)


async def run(options: Options, workdir: Path, summary: Summary) -> None:
    cancel_on_signals()
    bench = FailoverBench(options, workdir)
    summary.settings = {key: bench.config[key] for key in REPORTED_SETTINGS}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        stream = TxStream(session, options.rate)
        sender = asyncio.create_task(stream.run(), name="tx-stream")
        try:
            say(f"starting a RadioStation and {options.peers} peers in {workdir} ...")
            await bench.start(session, stream)
            say(f"network up; settings {summary.settings}; {options.rate:g} tx/s to non-leaders")
            for number in range(1, options.trials + 1):
                trial = await bench.trial(number, session, stream)
                summary.trials.append(trial)
                say(describe(trial))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            summary.tx_sent, summary.tx_failed = stream.sent, stream.failed
            summary.tracebacks = await asyncio.to_thread(bench.stop)


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Leader failover: time from kill -9 of the leader to the next finalized block."
    )
    parser.add_argument("--trials", type=int, default=5, help="kills to time (default 5)")
    parser.add_argument("--peers", type=int, default=4, help="peers in the network (default 4)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="transactions per second (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    parser.add_argument(
        "--keep-dir", action="store_true", help="keep the network's directory (logs, stores)"
    )
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    if not 4 <= args.peers <= 9:
        parser.error(
            f"--peers must be 4..9, got {args.peers} "
            "(with fewer than 4, the survivors of a kill hold no quorum)"
        )
    if not 0 < args.rate <= 1000:
        parser.error(f"--rate must be above 0 and at most 1000, got {args.rate:g}")
    return Options(args.trials, args.peers, args.rate, args.json, args.keep_dir)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench_failover_"))
    summary = Summary(options.peers, options.rate, {})
    code = 0
    try:
        asyncio.run(run(options, workdir, summary))
    except (
        BenchError,
        AssertionError,
    ) as exc:  # tools.procs reports its timeouts as AssertionError
        print(f"bench_failover: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_failover: interrupted; the network was stopped", file=sys.stderr)
        code = 130
    if summary.tracebacks:
        print(f"bench_failover: tracebacks in the logs of {summary.tracebacks}", file=sys.stderr)
        code = code or 1
    keep = options.keep_dir or code == 1
    if keep:
        summary.workdir = str(workdir)
        say(f"network directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = summary.figures()
    if summary.trials:
        say(
            f"leader failover over {figures['trials']} trials: median {figures['median_s']:.3f} s, "
            f"min {figures['min_s']:.3f} s, max {figures['max_s']:.3f} s"
        )
    if options.json:
        print(json.dumps(figures, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
