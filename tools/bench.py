#!/usr/bin/env python3
"""Benchmark of the local network in one run: start-up, memory, latency, throughput, CPU, calm.

    .venv/bin/python tools/bench.py [-c 64] [-d 60] [--channels A,B] [--baseline REV] [--rounds N]
                                    [--queries S] [--polls S] [--no-load] [--json]
                                    [--poll-api v1|v3|v3-balance|v3-call|v1-block|v3-block]

Starts `./localnet.sh --data <tmpdir>` of a source tree (the repo root by default) in its own
process group, and measures, in order:

1. seconds from the launch until every peer's REST status answers 200 (per channel);
2. the summed VmRSS of the network's process tree after ~3 s idle, its summed PSS (each page
   shared by n processes counted 1/n in each: the libraries every process maps count once), and
   its summed anonymous RSS (no file-backed pages: what varies least between runs);
3. idle finalisation latency: 20 transactions one at a time, ack -> `block_height >= 0` in
   `GET /api/v1/transactions?hash=` on the same peer (polled every 20 ms);
4. load: N keep-alive clients round-robin over the 4 peers (and the channels) for D seconds; a 503
   with Retry-After makes a client wait min(Retry-After, 1 s);
5. committed tx/s counted from the chain (a watcher walks new blocks of peer 0 every 100 ms):
   acknowledged transactions final within 15 s of the load's end, divided by the load duration, and
   ack -> final latency percentiles (a transaction never seen final counts as infinity), and p50
   and p99 of what the peers' own finalisation histograms counted meanwhile (intake to final on
   each peer's clock: with hundreds of clients this process's own queueing delays what it sees);
6. CPU seconds (utime + stime of every process of the tree) over the load and its drain, per
   committed transaction and per process kind, with the share of each kind spent outside its
   processes' main (event-loop) threads: gRPC's threads, LevelDB's compaction, executors;
7. the summed RSS after the load (and its peak during the load), each with its anonymous part
   (LevelDB maps the table files it compacts: RSS spikes under load that are page cache, not heap);
8. seconds from the load's end until calm: every peer answers its status within 1 s with an empty
   pool and the same height, and every acknowledged transaction is final; rounds that made no block.

`--v3` adds, after the v1 load, the same load of ICON v3 transfers (`icx_sendTransaction` on
`/api/v3[/<channel>]`), each client signing 1-loop transfers from its own account, funded first by the
development genesis account of ./localnet.sh; its figures are reported beside v1's with a `v3_`
prefix (committed tx/s, finalisation percentiles, CPU per transaction, answers).

`--queries S` adds, after the transaction load(s), S seconds of read-only SCORE queries: the same N
keep-alive clients round-robin over the 4 peers (and the channels), each POSTing what
`tools/loadtool.py -t 1` sends (loadtool's default query body) to `/api/v1/query` back to back
(a 503 with Retry-After makes it wait as in the load). Its figures, prefixed `query_`: answered
(200) queries/s, the answers by HTTP status, the latency p50/p99 of the answered queries, and the
network's CPU (every process of the tree, from /proc, sampled over the query phase only) per
answered query, in all and by process kind. The phase lasts until the last client's query in
flight at S seconds has its answer. `--no-load` skips the transaction loads (v1 and `--v3`):
`--no-load --queries S` measures the queries alone; `--idle-only` runs no load at all.

`--polls S` adds, after the transaction load(s) and the queries if any, S seconds of polls (by
default of transaction results; `--poll-api` below): the same N keep-alive clients, spread over the peers and channels as the query
clients are, each GETting `/api/v1/transactions/result?hash=H[&channel=C]` back to back, H cycling
through up to POLL_HASHES transactions known to be committed on its channel: the v1 load's
acknowledged transactions its chain watcher saw in a block, or, without a load (or when it left
none in a channel), POLL_SEED transactions per channel that the phase submits first and waits
for, until calm, outside the measured window. The same client, phase and figures as the queries
(shared code), prefixed `poll_`, and `poll_results_executed`: the 200 answers whose
`response.code` is 0 (executed), so that polls of unknown or unexecuted transactions show.
`--poll-api v3` polls as ICON's clients do instead: JSON-RPC `icx_getTransactionResult` to
`/api/v3[/<channel>]` (one lookup of the result with its transaction in the proxy), a result
whose `status` is 0x1 counted as executed; `--poll-api v3-balance` asks `icx_getBalance` of as many
accounts ("hx" and the first 40 hex digits of each hash), a hex answer counted as code 0;
`--poll-api v3-call` sends `icx_call` of the channel SCORE's `ping` query (its address from
`icx_getNetworkInfo`; the default SCORE answers any query with the query itself), an answer with
a result counted as code 0. `--poll-api v1-block` and `v3-block` poll the channel's last block, as
explorers and wallets do: `GET /api/v1/blocks` and `icx_getLastBlock`, an answer that holds a block
with its height counted as code 0 (no transactions are needed: nothing is seeded).

`--baseline REV` runs the same benchmark first on a git worktree of REV (its `.venv` a symlink to
this repo's), then on the tree, and prints both side by side with the ratio current / baseline.
`--baseline-env KEY=VALUE` (repeatable) configures the baseline run by environment; without
`--baseline` the baseline is this same tree, so `--baseline-env INTAKE_LOG=false` gives the cost of
the durable intake as a ratio within one run. `--baseline-channels A,B|default` sets the channels
of the baseline run the same way: `--channels A,B --baseline-channels default` compares two
channels with one.
`--rounds N` runs the baseline and the tree N times each, alternately (baseline, tree, baseline,
...), and reports each figure's median and, per round, the ratios of committed tx/s, CPU per
transaction and p99: the speed of a shared machine drifts by tens of per cent between minutes, so
one pair of runs cannot tell a change of a few per cent from the drift.
The network is always stopped (SIGTERM to its process group, SIGKILL after 10 s), also on Ctrl-C.
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
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loopchain.types.crypto import Signer
from tools.loadtool import (
    DEFAULT_QUERY,
    DEV_KEY,
    LoadError,
    RestTransport,
    fund,
    parse_duration,
    percentile,
    retry_after_seconds,
    transfer_params,
)

_REPO = Path(__file__).resolve().parents[1]
PEERS = 4
PEER_PORTS = tuple(7100 + 100 * i for i in range(PEERS))
REST_PORTS = tuple(9000 + 100 * i for i in range(PEERS))
RADIOSTATION_PORTS = (7102, 9002)
NETWORK_PORTS = (*PEER_PORTS, *REST_PORTS, *RADIOSTATION_PORTS)

READY_DEADLINE = 180.0  # launch -> every peer answers
READY_POLL = 0.2
IDLE_SETTLE = 3.0
IDLE_TXS = 20
IDLE_POLL = 0.02
IDLE_TX_DEADLINE = 30.0
HTTP_TIMEOUT = 5.0  # control requests (status, blocks, tx lookups)
REQUEST_TIMEOUT = 30.0  # load requests
RETRY_AFTER_CAP = 1.0
OVERLOAD_ANSWERS = ("503", "400 -31001")  # "try again shortly": v1's 503, v3's pool overflow
ERROR_BACKOFF = 0.05
WATCH_INTERVAL = 0.1
DRAIN = 15.0
CALM_POLL = 0.2
CALM_STATUS_TIMEOUT = 1.0
CALM_DEADLINE = 60.0
PROGRESS_INTERVAL = 5.0
SAMPLE_INTERVAL = 0.5
STOP_GRACE = 10.0
PORT_FREE_WAIT = 20.0  # between two runs, for the previous network's sockets to close
LOG_TAIL_LINES = 25
KINDS = ("radiostation", "peer", "rest_proxy", "score", "other")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark cannot go on (ports busy, network did not start, bad worktree)."""


def say(text: str) -> None:
    """A progress line on stderr (stdout is for the table or the JSON)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ pure helpers


def ratio(current: float | None, baseline: float | None) -> float | None:
    """current / baseline, or None when either is missing or infinite, or baseline is 0."""
    if current is None or baseline is None or baseline == 0:
        return None
    if math.isinf(current) or math.isinf(baseline):
        return None
    return current / baseline


def ratios(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float | None]:
    """The ratio of every numeric figure present in both runs, rounded to 3 decimals."""
    found: dict[str, float | None] = {}
    for key, value in current.items():
        if key in baseline:
            value_ratio = ratio(_number(value), _number(baseline[key]))
            found[key] = None if value_ratio is None else round(value_ratio, 3)
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def format_value(value: Any) -> str:
    """A figure for the table: '-' when missing, 'inf' when never reached, else ~3-4 digits."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def percentiles(values: Sequence[float], points: Iterable[int]) -> dict[str, float | None]:
    """Nearest-rank percentiles (loadtool's) keyed "p50"...; inf stays inf, none gives None."""
    return {f"p{p}": percentile(values, p) for p in points}


def milliseconds(seconds: float | None) -> float | None:
    """Seconds as milliseconds rounded to 0.1 (None and inf pass through)."""
    if seconds is None or math.isinf(seconds):
        return seconds
    return round(seconds * 1000, 1)


def bucket_percentiles(
    cumulative: Mapping[float, float], points: Iterable[int]
) -> dict[str, float | None]:
    """Percentiles keyed "p50"... of a histogram given as cumulative counts by upper bound (+inf
    included), interpolated within a bucket as Prometheus's histogram_quantile does; one that
    falls in the +inf bucket is the highest finite bound. None when the histogram is empty."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    found: dict[str, float | None] = {}
    for point in points:
        found[f"p{point}"] = None
        if total <= 0:
            continue
        rank = total * point / 100
        lower, below = 0.0, 0.0
        for bound in bounds:
            count = cumulative[bound]
            if count >= rank and count > below:
                if math.isinf(bound):
                    found[f"p{point}"] = lower
                else:
                    found[f"p{point}"] = lower + (bound - lower) * (rank - below) / (count - below)
                break
            lower, below = bound, count
    return found


FINALISATION_METRIC = "loopchain_finalisation_seconds"  # each peer's histogram (peer/metrics.py)


def finalisation_buckets(exposition: str) -> dict[float, float]:
    """The cumulative counts by upper bound of FINALISATION_METRIC in a Prometheus text
    exposition, summed over its channels ({} when it has none)."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != FINALISATION_METRIC:
            continue
        for sample in family.samples:
            if sample.name == FINALISATION_METRIC + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


# what each REST proxy counts of its calls to its peer (rest/metrics.py): calls, submissions
SUBMISSION_COUNTERS = (
    "loopchain_rest_submission_calls_total",
    "loopchain_rest_submissions_sent_total",
)


def submission_counters(exposition: str) -> tuple[float, float] | None:
    """(calls carrying submissions, submissions they carried) in a proxy's exposition; None when
    it has no such counters (a tree before they were added)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in SUBMISSION_COUNTERS:
                values[sample.name] = sample.value
    if len(values) != len(SUBMISSION_COUNTERS):
        return None
    calls, sent = (values[name] for name in SUBMISSION_COUNTERS)
    return calls, sent


def per_call(start: tuple[float, float] | None, end: tuple[float, float] | None) -> float | None:
    """Submissions per call between two readings of the summed counters (None when unknown)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 2)


def json_safe(value: Any) -> Any:
    """The value with every infinite or NaN float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def tx_block_height(body: Any) -> int | None:
    """The block height of a GET /api/v1/transactions reply (-1 while pooled), or None."""
    if not isinstance(body, dict):
        return None
    for holder in (body, body.get("meta"), body.get("result")):
        if isinstance(holder, dict) and "block_height" in holder:
            try:
                return int(holder["block_height"])
            except (TypeError, ValueError):
                return None
    return None


def calm_verdict(statuses: Mapping[str, Sequence[Mapping[str, Any] | None]]) -> str:
    """'' when every peer of every channel answered with an empty pool at one height, else why not.

    `statuses` maps each channel to the status replies of its peers (None: no answer within 1 s).
    """
    for channel, replies in statuses.items():
        if any(reply is None for reply in replies):
            return f"a peer did not answer its status within {CALM_STATUS_TIMEOUT:g} s ({channel})"
        pools = [int(reply.get("tx_pool_size", 0) or 0) for reply in replies if reply]
        if any(pools):
            return f"tx pools not empty ({channel}: {pools})"
        heights = {int(reply.get("block_height", -1)) for reply in replies if reply}
        if len(heights) > 1:
            return f"heights differ ({channel}: {sorted(heights)})"
    return ""


# ------------------------------------------------------------------ the process tree


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmark uses (CPU times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    starttime: int

    @property
    def cpu_seconds(self) -> float:
        return (self.utime + self.stime) / CLOCK_TICKS


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (the command name may hold spaces and parentheses)."""
    close = text.rindex(")")
    pid = int(text[: text.index("(")].strip())
    rest = text[close + 2 :].split()  # rest[0] is field 3 (state): field k is rest[k - 3]
    return ProcStat(pid, int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19]))


def read_proc_stats() -> dict[int, ProcStat]:
    """The stat of every process now alive (processes vanishing meanwhile are skipped)."""
    found: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat_file:
                found[int(name)] = parse_proc_stat(stat_file.read())
        except (OSError, ValueError, IndexError):
            continue
    return found


def read_main_thread_cpu(pid: int) -> float | None:
    """CPU seconds of a process's main thread (its event loop in every process of the network);
    the rest of its CPU is in other threads: gRPC's, LevelDB's compaction, executors."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as stat_file:
            return parse_proc_stat(stat_file.read()).cpu_seconds
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int, stats: Mapping[int, ProcStat]) -> list[int]:
    """`root` (if alive) and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found = [root] if root in stats else []
    index = 0
    while index < len(found):
        found.extend(sorted(children.get(found[index], ())))
        index += 1
    return found


def _proc_field_kb(path: str, field: str) -> int | None:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB, or None when it is gone or has no memory (zombie)."""
    return _proc_field_kb(f"/proc/{pid}/status", "VmRSS:")


def read_pss_kb(pid: int) -> int | None:
    """Proportional set size in kB: each page shared by n processes counts 1/n in each (the
    grpc, Python and OpenSSL libraries that every process maps count once in a sum)."""
    return _proc_field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def read_anon_kb(pid: int) -> int | None:
    """RssAnon of a process in kB (its resident memory that no file backs)."""
    return _proc_field_kb(f"/proc/{pid}/status", "RssAnon:")


def read_cmdline(pid: int) -> list[str]:
    """The argument vector of a process ([] when gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def classify(cmdline: Sequence[str]) -> str | None:
    """The kind of a network process by its command line, or None when unknown."""
    if any("loopchain.scoreservice" in arg for arg in cmdline):
        return "score"
    names = {Path(arg).name for arg in cmdline}
    for script, kind in (
        ("radiostation.py", "radiostation"),
        ("rest_proxy.py", "rest_proxy"),
        ("peer.py", "peer"),
    ):
        if script in names:
            return kind
    return None


def tree_kinds(pids: Sequence[int], stats: Mapping[int, ProcStat]) -> dict[int, str]:
    """The kind of every process of a tree; an unknown Python process is of its parent's kind."""
    kinds: dict[int, str] = {}
    for pid in pids:  # parents first
        cmdline = read_cmdline(pid)
        kind = classify(cmdline)
        if kind is None:
            parent = kinds.get(stats[pid].ppid) if pid in stats else None
            is_python = bool(cmdline) and "python" in Path(cmdline[0]).name
            kind = parent if parent is not None and is_python else "other"
        kinds[pid] = kind
    return kinds


def tree_rss_mb(root: int) -> tuple[float, dict[str, float]]:
    """The summed VmRSS (MB) of the tree under `root`, and its split by process kind."""
    stats = read_proc_stats()
    pids = descendants(root, stats)
    kinds = tree_kinds(pids, stats)
    split = dict.fromkeys(KINDS, 0.0)
    for pid in pids:
        split[kinds[pid]] += (read_rss_kb(pid) or 0) / 1024
    return round(sum(split.values()), 1), {kind: round(mb, 1) for kind, mb in split.items()}


def tree_pss_mb(root: int) -> float:
    """The summed PSS (MB) of the tree under `root`: its memory with shared pages counted once."""
    return _tree_sum_mb(root, read_pss_kb)


def tree_anon_mb(root: int) -> float:
    """The summed anonymous RSS (MB) of the tree under `root`: the heaps and stacks, without the
    mapped files (libraries) whose resident pages vary between runs of the same tree: its summed
    RSS read 725 and 670 MB an hour apart, ~45 MB of that in file-backed pages."""
    return _tree_sum_mb(root, read_anon_kb)


def _tree_sum_mb(root: int, read_kb: Callable[[int], int | None]) -> float:
    pids = descendants(root, read_proc_stats())
    return round(sum((read_kb(pid) or 0) for pid in pids) / 1024, 1)


class CpuMeter:
    """CPU seconds of a process tree over a window, following processes that appear or exit.

    A process alive at the first sample counts from that sample; one that appears later counts
    from zero; one that exits counts up to its last sample.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._first: dict[tuple[int, int], float] = {}
        self._last: dict[tuple[int, int], float] = {}
        self._first_main: dict[tuple[int, int], float] = {}  # the main thread's share
        self._last_main: dict[tuple[int, int], float] = {}
        self._kind: dict[tuple[int, int], str] = {}
        self._started = False
        self.peak_rss_mb = 0.0
        # anonymous pages only: the peak of RSS under load also holds the block stores' table
        # files that LevelDB maps while it compacts (page cache, let go as the files are deleted)
        self.peak_anon_mb = 0.0

    def sample(self, with_rss: bool = False) -> None:
        stats = read_proc_stats()
        pids = descendants(self.root, stats)
        new = [pid for pid in pids if (pid, stats[pid].starttime) not in self._kind]
        kinds = tree_kinds(pids, stats) if new else {}
        for pid in pids:
            key = (pid, stats[pid].starttime)
            main = read_main_thread_cpu(pid)
            if key not in self._kind:
                self._kind[key] = kinds[pid]
                self._first[key] = stats[pid].cpu_seconds if not self._started else 0.0
                self._first_main[key] = (main or 0.0) if not self._started else 0.0
            self._last[key] = stats[pid].cpu_seconds
            if main is not None:
                self._last_main[key] = main
        self._started = True
        if with_rss:
            rss = sum((read_rss_kb(pid) or 0) for pid in pids) / 1024
            self.peak_rss_mb = max(self.peak_rss_mb, round(rss, 1))
            anon = sum((read_anon_kb(pid) or 0) for pid in pids) / 1024
            self.peak_anon_mb = max(self.peak_anon_mb, round(anon, 1))

    def by_kind(self) -> dict[str, float]:
        split = dict.fromkeys(KINDS, 0.0)
        for key, last in self._last.items():
            split[self._kind[key]] += max(0.0, last - self._first[key])
        return {kind: round(seconds, 2) for kind, seconds in split.items()}

    def outside_main_thread(self) -> dict[str, float]:
        """By process kind, the CPU seconds spent outside the processes' main threads."""
        split = dict.fromkeys(KINDS, 0.0)
        for key, last in self._last.items():
            main = max(0.0, self._last_main.get(key, 0.0) - self._first_main.get(key, 0.0))
            split[self._kind[key]] += max(0.0, last - self._first[key] - main)
        return {kind: round(seconds, 2) for kind, seconds in split.items()}

    def processes(self) -> int:
        return len(self._kind)


# ------------------------------------------------------------------ the network


def port_busy(port: int) -> bool:
    """True when something listens on 127.0.0.1:port or the port cannot be bound as a server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def busy_ports(ports: Iterable[int] = NETWORK_PORTS) -> list[int]:
    return [port for port in ports if port_busy(port)]


def is_v3(url: str) -> bool:
    return "/api/v3" in url


def v3_url(peer: int, channel: str = "") -> str:
    """The JSON-RPC v3 endpoint of a peer's REST proxy (for `channel`, else the default one)."""
    return f"http://127.0.0.1:{REST_PORTS[peer]}/api/v3" + (f"/{channel}" if channel else "")


@dataclass
class V3Senders:
    """One funded account per load client, each signing 1-loop transfers back to the funder."""

    accounts: list[Signer]
    sink: str
    channels: Sequence[str] = ("",)
    nids: dict[str, int] = field(default_factory=dict)  # each channel's, as its peer says

    def body(self, index: int, seq: int) -> dict[str, Any]:
        nid = self.nids.get(_channel_of(index, self.channels), 3)
        params = transfer_params(self.accounts[index], self.sink, 1, nid, nonce=seq)
        return {"jsonrpc": "2.0", "id": seq, "method": "icx_sendTransaction", "params": params}


async def fund_v3_senders(clients: int, channels: Sequence[str]) -> V3Senders:
    """A fresh account per client, funded on its client's channel through peer 0."""
    funder = Signer(bytes.fromhex(DEV_KEY))
    accounts = [Signer.generate() for _ in range(clients)]
    senders = V3Senders(accounts, funder.address, list(channels))
    for number, channel in enumerate(channels):
        mine = [a for i, a in enumerate(senders.accounts) if _channel_of(i, channels) == channel]
        base = f"http://127.0.0.1:{REST_PORTS[0]}"
        transport = RestTransport(base, channel, REQUEST_TIMEOUT, 4)
        try:
            # each channel its own network id (a v3 transaction names no channel)
            senders.nids[channel] = await transport.network_id()
            await fund(transport, funder, mine, senders.nids[channel])
        except LoadError as exc:
            raise BenchError(f"cannot fund the v3 accounts of channel {number}: {exc}") from None
        finally:
            await transport.close()
    return senders


def _channel_of(index: int, channels: Sequence[str]) -> str:
    return channels[(index // PEERS) % len(channels)]


def rest_url(peer: int, path: str, channel: str = "") -> str:
    query = f"?channel={channel}" if channel else ""
    return f"http://127.0.0.1:{REST_PORTS[peer]}{path}{query}"


COMPLAINT_LOGGED = "): complaining"  # how a peer's log line of a leader complaint ends
# how LevelDB's own log (LOG in each store's directory) reports the bytes a compaction wrote
COMPACTED = re.compile(rb"Compacted .* => (\d+) bytes")


class LocalNet:
    """`./localnet.sh --data DIR` of a source tree, in its own process group."""

    def __init__(
        self,
        tree: Path,
        data: Path,
        channels: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tree = tree
        self.data = data
        self.channels = list(channels)
        self.env = dict(env or {})  # configuration by environment (INTAKE_LOG=false, ...)
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched = 0.0
        self._seen: dict[int, int] = {}  # pid -> starttime of every tree process seen

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @staticmethod
    def check_ports() -> None:
        """BenchError naming the busy ones unless every port of the network is free."""
        busy = busy_ports()
        if busy:
            raise BenchError(
                f"ports {', '.join(map(str, busy))} are in use; the benchmark needs "
                f"{', '.join(map(str, NETWORK_PORTS))} free (is a local network running?)"
            )

    def start(self) -> None:
        self.check_ports()
        script = self.tree / "localnet.sh"
        if not script.exists():
            raise BenchError(f"{script} does not exist")
        self.data.mkdir(parents=True, exist_ok=True)
        command = [str(script), "--data", str(self.data)]
        if self.channels:
            command += ["--channels", ",".join(self.channels)]
        with open(self.data / "localnet.out", "wb") as out:
            self.launched = time.monotonic()
            self.proc = subprocess.Popen(
                command,
                cwd=self.tree,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(),
            )

    def environment(self) -> dict[str, str]:
        """What the tree's localnet.sh runs with: this environment, the tree's own `loopchain`
        ahead of any other on the import path (the tools it runs from `tools/` would otherwise
        import the package the shared .venv installed in editable mode: this repo's, not a
        baseline worktree's), and the run's configuration."""
        path = os.environ.get("PYTHONPATH")
        tree_first = str(self.tree.resolve()) + (os.pathsep + path if path else "")
        return {**os.environ, "PYTHONPATH": tree_first, **self.env}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_tree(self) -> None:
        """Note every process of the tree (with its start time), to be sure to stop it."""
        if self.proc is None:
            return
        stats = read_proc_stats()
        for pid in descendants(self.proc.pid, stats):
            self._seen[pid] = stats[pid].starttime

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s; then any straggler of the tree."""
        if self.proc is None:
            return
        with _signals_ignored():
            with contextlib.suppress(Exception):
                self.remember_tree()
            pgid = self.proc.pid
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and (self._group_alive(pgid) or self._stragglers()):
                time.sleep(0.1)
            _signal_group(pgid, signal.SIGKILL)
            for pid in self._stragglers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def _group_alive(self, pgid: int) -> bool:
        assert self.proc is not None
        self.proc.poll()  # reap localnet.sh itself
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _stragglers(self) -> list[int]:
        """Remembered tree processes still alive (same pid and start time), zombies aside."""
        stats = read_proc_stats()
        alive = []
        for pid, starttime in self._seen.items():
            stat = stats.get(pid)
            if stat is not None and stat.starttime == starttime and read_rss_kb(pid) is not None:
                alive.append(pid)
        return alive

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of localnet.sh's output and of every log in DATA/logs."""
        parts = []
        for path in [self.data / "localnet.out", *self._node_logs()]:
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def _node_logs(self) -> list[Path]:
        """Each node's log and (localnet.sh since it rotates them) its other output."""
        logs = self.data / "logs"
        return sorted([*logs.glob("*.log"), *logs.glob("*.out")])

    def log_marks(self) -> dict[str, int]:
        """How long each peer's log is now: complaints logged after are counted from there."""
        marks = {}
        for path in (self.data / "logs").glob("peer_*.log"):
            with contextlib.suppress(OSError):
                marks[path.name] = path.stat().st_size
        return marks

    def complaints(self, since: Mapping[str, int], until: Mapping[str, int]) -> int | None:
        """Leader complaints the peers logged between two marks (`log_marks`); None for a tree
        whose peers do not log them (before 0988cf7)."""
        try:
            source = (self.tree / "loopchain" / "peer" / "channel_service.py").read_text()
        except OSError:
            return None
        if COMPLAINT_LOGGED not in source:
            return None
        count = 0
        for name, end in until.items():
            start = since.get(name, 0)
            with contextlib.suppress(OSError), open(self.data / "logs" / name, "rb") as log_file:
                log_file.seek(start)
                count += log_file.read(max(0, end - start)).count(COMPLAINT_LOGGED.encode())
        return count

    def compaction_bytes(self) -> int:
        """Bytes LevelDB has written so far compacting the peers' block stores (each store is
        opened once in a run: its LOG holds every compaction since)."""
        total = 0
        for path in (self.data / "storage").glob("peer_*/*/blocks/LOG"):
            with contextlib.suppress(OSError):
                total += sum(int(found) for found in COMPACTED.findall(path.read_bytes()))
        return total

    def log_problems(self) -> dict[str, int]:
        """Lines with a traceback, ERROR or WARNING per log file name (only those with any)."""
        found: dict[str, int] = {}
        for path in self._node_logs():
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for word in ("Traceback", "ERROR", "WARNING"):
                count = text.count(word)
                if count:
                    found[f"{path.name} {word}"] = count
        return found


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@contextlib.contextmanager
def _signals_ignored() -> Any:
    """Ctrl-C and SIGTERM are held off while the network is being stopped."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ HTTP helpers


def failure_kind(exc: BaseException) -> str:
    """How an HTTP call failed, as the answers table counts it."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connection error"
    return "bad reply"


async def get_json(
    session: aiohttp.ClientSession, url: str, timeout: float = HTTP_TIMEOUT
) -> tuple[int | str, Any]:
    """(HTTP status or "timeout"/"connection error"/"bad reply", the JSON body or None)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return failure_kind(exc), None


async def status_of(
    session: aiohttp.ClientSession, peer: int, channel: str, timeout: float = HTTP_TIMEOUT
) -> dict[str, Any] | None:
    status, body = await get_json(session, rest_url(peer, "/api/v1/status/peer", channel), timeout)
    return body if status == 200 and isinstance(body, dict) else None


async def wait_ready(net: LocalNet, session: aiohttp.ClientSession) -> float:
    """Seconds from the launch until every peer's status (per channel) answered 200."""
    pending = {(peer, channel) for peer in range(PEERS) for channel in net.channels or [""]}
    now = time.monotonic()
    while pending:
        if not net.alive():
            raise BenchError(f"localnet.sh exited (code {net.proc and net.proc.returncode})")
        if time.monotonic() - net.launched > READY_DEADLINE:
            waiting = ", ".join(
                f"{REST_PORTS[p]}{'/' + c if c else ''}" for p, c in sorted(pending)
            )
            raise BenchError(f"peers not ready within {READY_DEADLINE:g} s: {waiting}")
        replies = await asyncio.gather(
            *(status_of(session, peer, channel, 2.0) for peer, channel in sorted(pending))
        )
        now = time.monotonic()
        for key, reply in zip(sorted(pending), replies, strict=True):
            if reply is not None:
                pending.discard(key)
        if pending:
            await asyncio.sleep(READY_POLL)
    return round(now - net.launched, 2)


# ------------------------------------------------------------------ idle latency


async def idle_latency(
    session: aiohttp.ClientSession, channels: Sequence[str], run_id: str
) -> dict[str, Any]:
    """Ack -> final of IDLE_TXS transactions sent one at a time, round-robin over the peers."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    for index in range(IDLE_TXS):
        peer, channel = index % PEERS, channels[index % len(channels)] if channels else ""
        body = {"data": {"bench": run_id, "idle": index}}
        tx_hash = await _post_tx(session, rest_url(peer, "/api/v1/transactions", channel), body)
        if isinstance(tx_hash, tuple):
            errors[str(tx_hash[0])] += 1
            latencies.append(math.inf)
            continue
        acked = time.monotonic()
        latencies.append(await _until_final(session, peer, channel, tx_hash, acked) - acked)
    figures = percentiles(latencies, (50, 90))
    return {
        "latencies_s": latencies,
        "p50_ms": milliseconds(figures["p50"]),
        "p90_ms": milliseconds(figures["p90"]),
        "unfinal": sum(1 for latency in latencies if math.isinf(latency)),
        "errors": dict(errors),
    }


async def _post_tx(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> str | tuple[int | str, float | None]:
    """The tx_hash, or (status or error kind, Retry-After seconds)."""
    try:
        async with session.post(url, json=body) as resp:
            retry = retry_after_seconds(resp.headers.get("Retry-After"))
            if resp.status == 400 and is_v3(url):  # a JSON-RPC error: counted by its code
                reply = await resp.json(content_type=None)
                error = reply.get("error") if isinstance(reply, dict) else None
                return f"400 {error.get('code') if isinstance(error, dict) else '?'}", retry
            if resp.status != 200:
                await resp.read()
                return resp.status, retry
            reply = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return failure_kind(exc), None
    if isinstance(reply, dict) and reply.get("tx_hash"):
        return str(reply["tx_hash"])
    if isinstance(reply, dict) and isinstance(reply.get("result"), str):  # JSON-RPC v3
        return str(reply["result"]).removeprefix("0x")
    return "200 without tx_hash", None


async def _until_final(
    session: aiohttp.ClientSession, peer: int, channel: str, tx_hash: str, since: float
) -> float:
    """When the peer first reports the transaction in a block (inf after IDLE_TX_DEADLINE)."""
    url = rest_url(peer, "/api/v1/transactions", channel)
    url += ("&" if "?" in url else "?") + f"hash={tx_hash}"
    while time.monotonic() - since < IDLE_TX_DEADLINE:
        status, body = await get_json(session, url)
        height = tx_block_height(body) if status == 200 else None
        if height is not None and height >= 0:
            return time.monotonic()
        await asyncio.sleep(IDLE_POLL)
    return math.inf


# ------------------------------------------------------------------ load


@dataclass
class LoadState:
    """What the clients and the watchers share during the load (monotonic seconds)."""

    run_id: str
    acked: dict[str, float] = field(default_factory=dict)  # tx_hash -> ack time
    final: dict[str, float] = field(default_factory=dict)  # tx_hash -> first seen final
    final_channel: dict[str, str] = field(default_factory=dict)  # tx_hash -> channel of its block
    pending: set[str] = field(default_factory=set)  # acked, not yet seen final
    answers: Counter[str] = field(default_factory=Counter)
    watch_errors: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    blocks_seen: int = 0

    def record_ack(self, tx_hash: str, when: float) -> None:
        self.acked[tx_hash] = when
        if tx_hash not in self.final:
            self.pending.add(tx_hash)

    def record_final(self, tx_hash: str, when: float, channel: str = "") -> None:
        if tx_hash not in self.final:
            self.final[tx_hash] = when
            self.final_channel[tx_hash] = channel
            self.pending.discard(tx_hash)

    def record_answer(self, answer: str | tuple[int | str, float | None]) -> float | None:
        """Count the answer to a submission (its hash, or (kind, Retry-After)): None when it was
        acknowledged, else how long its client waits before it sends again."""
        if isinstance(answer, str):
            self.answers["200"] += 1
            self.record_ack(answer, time.monotonic())
            return None
        kind, retry = answer
        self.answers[str(kind)] += 1
        # a 503, or a v3 pool overflow, says when to come back
        return ERROR_BACKOFF if retry is None else min(retry, RETRY_AFTER_CAP)

    def errors(self) -> tuple[int, int]:
        """(overload answers: 503, or JSON-RPC -31001 on v3; other non-200 answers and failures)."""
        unavailable = sum(self.answers.get(key, 0) for key in OVERLOAD_ANSWERS)
        other = sum(
            n for key, n in self.answers.items() if key != "200" and key not in OVERLOAD_ANSWERS
        )
        return unavailable, other


async def load_client(
    state: LoadState, index: int, url: str, end: float, v3: V3Senders | None = None
) -> None:
    """POST transactions one at a time over a keep-alive session until `end` (v1, or v3
    transfers signed by the client's own account)."""
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        seq = 0
        while time.monotonic() < end:
            if v3 is not None:
                body = v3.body(index, seq)
            else:
                body = {"data": {"bench": state.run_id, "client": index, "seq": seq}}
            seq += 1
            state.in_flight += 1
            try:
                answer = await _post_tx(session, url, body)
            finally:
                state.in_flight -= 1
            wait = state.record_answer(answer)
            if wait is not None:
                await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))


async def watch_chain(
    state: LoadState, channel: str, start_height: int, stop: asyncio.Event
) -> None:
    """Walk the new final blocks of peer 0 every 100 ms, recording when each tx is first seen."""
    transport = RestTransport(f"http://127.0.0.1:{REST_PORTS[0]}", channel, HTTP_TIMEOUT, 2)
    seen = start_height
    try:
        while not stop.is_set():
            try:
                tip = await transport.last_block()
                if tip is not None and tip.height > seen:
                    for block in await transport.new_blocks(tip, seen, stop):
                        now = time.monotonic()
                        state.blocks_seen += 1
                        for tx_hash in block.tx_hashes or ():
                            state.record_final(tx_hash, now, channel)
                        seen = max(seen, block.height)
            except LoadError as exc:
                state.watch_errors[exc.kind] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
    finally:
        await transport.close()


async def _tip_height(session: aiohttp.ClientSession, channel: str) -> int:
    status, body = await get_json(session, rest_url(0, BLOCKS_PATH, channel))
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"cannot read the last block of peer 0 ({status})")
    return int((body.get("block_data_json") or {}).get("height", -1))


async def _progress(line: Callable[[], str], stop: asyncio.Event, label: str) -> None:
    """`line()` as a progress line every PROGRESS_INTERVAL until `stop`."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL)
        if stop.is_set():
            return
        say(f"{label}: {line()}")


def _load_progress(state: LoadState, started: float) -> str:
    unavailable, other = state.errors()
    return (
        f"{time.monotonic() - started:5.1f} s  acked {len(state.acked)}  "
        f"503 {unavailable}  other errors {other}  final {len(state.acked) - len(state.pending)}"
    )


async def _sample_cpu(meter: CpuMeter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(meter.sample, True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL)


async def _rounds(session: aiohttp.ClientSession, channels: Sequence[str]) -> dict[str, Any]:
    """Round, height and complaint count of peer 0 in each channel (None where unknown)."""
    found: dict[str, Any] = {}
    for channel in channels:
        status = await status_of(session, 0, channel)
        found[channel] = {
            key: (status or {}).get(key) for key in ("round", "block_height", "leader_complaint")
        }
    return found


@dataclass
class ProxyMetrics:
    """What the network's REST proxies' /metrics hold, summed over the peers: the peers'
    finalisation histogram (cumulative counts by bound) and the proxies' submission counters.
    Either is None when a proxy's could not be read (or, for the counters, has none)."""

    finalisation: dict[float, float] | None
    submissions: tuple[float, float] | None


async def _proxy_metrics(session: aiohttp.ClientSession) -> ProxyMetrics:
    """Every proxy's /metrics (each carrying its peer's), summed."""
    total: dict[float, float] = {}
    counted: tuple[float, float] | None = (0.0, 0.0)
    for peer in range(PEERS):
        try:
            async with session.get(
                rest_url(peer, "/metrics"), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
            ) as response:
                if response.status != 200:
                    return ProxyMetrics(None, None)
                text = await response.text()
            buckets, counters = finalisation_buckets(text), submission_counters(text)
        except (aiohttp.ClientError, TimeoutError, ValueError):  # ValueError: no exposition
            return ProxyMetrics(None, None)
        for bound, count in buckets.items():
            total[bound] = total.get(bound, 0.0) + count
        counted = (
            None
            if counted is None or counters is None
            else (counted[0] + counters[0], counted[1] + counters[1])
        )
    return ProxyMetrics(total, counted)


def _advance(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> int | None:
    total = 0
    for channel, values in after.items():
        start, end = before.get(channel, {}).get(key), values.get(key)
        if not isinstance(start, int) or not isinstance(end, int):
            return None
        total += end - start
    return total


async def wait_calm(
    session: aiohttp.ClientSession, state: LoadState, channels: Sequence[str], since: float
) -> tuple[float | None, str]:
    """Seconds from `since` until calm (None after CALM_DEADLINE) and the last reason why not."""
    reason = ""
    while time.monotonic() - since < CALM_DEADLINE:
        replies = await asyncio.gather(
            *(
                status_of(session, peer, channel, CALM_STATUS_TIMEOUT)
                for channel in channels
                for peer in range(PEERS)
            )
        )
        statuses = {
            channel: replies[i * PEERS : (i + 1) * PEERS] for i, channel in enumerate(channels)
        }
        reason = calm_verdict(statuses)
        if not reason and state.pending:
            reason = f"{len(state.pending)} acknowledged transactions not final"
        if not reason:
            return round(time.monotonic() - since, 2), ""
        await asyncio.sleep(CALM_POLL)
    return None, reason


async def run_load(
    session: aiohttp.ClientSession,
    net: LocalNet,
    clients: int,
    duration: float,
    label: str,
    v3: V3Senders | None = None,
) -> dict[str, Any]:
    """The load phase and everything measured from it (and, neither figures nor details,
    "committed_hashes": a sample of the acknowledged transactions seen final, by channel)."""
    channels = net.channels or [""]
    state = LoadState(run_id=uuid.uuid4().hex[:12])
    heights = {channel: await _tip_height(session, channel) for channel in channels}
    rounds_start = await _rounds(session, channels)
    metrics_start = await _proxy_metrics(session)
    marks_start = net.log_marks()
    compacted_start = net.compaction_bytes()
    meter = CpuMeter(net.pid)
    await asyncio.to_thread(meter.sample, True)
    own_cpu_start, window_start = _own_cpu_seconds(), time.monotonic()
    stop_watch, stop_sampling, stop_progress = asyncio.Event(), asyncio.Event(), asyncio.Event()
    watchers = [
        asyncio.create_task(watch_chain(state, channel, heights[channel], stop_watch))
        for channel in channels
    ]
    sampler = asyncio.create_task(_sample_cpu(meter, stop_sampling))
    started = time.monotonic()
    end = started + duration
    progress = asyncio.create_task(
        _progress(lambda: _load_progress(state, started), stop_progress, label)
    )
    try:
        tasks = [
            asyncio.create_task(
                load_client(
                    state,
                    index,
                    v3_url(index % PEERS, _channel_of(index, channels))
                    if v3 is not None
                    else rest_url(
                        index % PEERS, "/api/v1/transactions", _channel_of(index, channels)
                    ),
                    end,
                    v3,
                )
            )
            for index in range(clients)
        ]
        await asyncio.wait(tasks, timeout=max(0.0, end - time.monotonic()))
        load_end = time.monotonic()
        in_flight = state.in_flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_progress.set()
        await progress
        acked_in_window = len(state.acked)
        say(f"{label}: load over: {acked_in_window} acked; draining and waiting for calm")
        rounds_end = await _rounds(session, channels)
        marks_end = net.log_marks()
        calm_task = asyncio.create_task(wait_calm(session, state, channels, load_end))
        while state.pending and time.monotonic() - load_end < DRAIN:
            await asyncio.sleep(WATCH_INTERVAL)
        stop_sampling.set()
        await sampler
        await asyncio.to_thread(meter.sample, True)
        own_cpu = (_own_cpu_seconds() - own_cpu_start, time.monotonic() - window_start)
        drain_s = time.monotonic() - load_end
        calm_s, calm_reason = await calm_task
        rounds_calm = await _rounds(session, channels)
        metrics_end = await _proxy_metrics(session)
        marks_calm = net.log_marks()
        compacted = net.compaction_bytes() - compacted_start
    finally:
        stop_watch.set()
        stop_sampling.set()
        stop_progress.set()
        await asyncio.gather(*watchers, sampler, progress, return_exceptions=True)
    found = _load_figures(
        state,
        meter,
        load_seconds=load_end - started,
        drain_seconds=drain_s,
        load_end=load_end,
        in_flight=in_flight,
        calm=(calm_s, calm_reason),
        rounds=(rounds_start, rounds_end, rounds_calm),
        own_cpu=own_cpu,
        complaints=(net.complaints(marks_start, marks_end), net.complaints(marks_end, marks_calm)),
        compacted_bytes=compacted,
        peer_finalisation=_histogram_delta(metrics_start.finalisation, metrics_end.finalisation),
        submissions_per_call=per_call(metrics_start.submissions, metrics_end.submissions),
    )
    # neither figures nor details: what a poll phase after the load may poll (`--polls`)
    found["committed_hashes"] = committed_hashes(state, channels)
    return found


def _histogram_delta(
    start: Mapping[float, float] | None, end: Mapping[float, float] | None
) -> dict[float, float] | None:
    """What a cumulative histogram counted between two readings (None when either is missing)."""
    if start is None or end is None:
        return None
    return {bound: count - start.get(bound, 0.0) for bound, count in end.items()}


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (the load generator), all its threads."""
    times = os.times()
    return times.user + times.system


def _load_figures(
    state: LoadState,
    meter: CpuMeter,
    *,
    load_seconds: float,
    drain_seconds: float,
    load_end: float,
    in_flight: int,
    calm: tuple[float | None, str],
    rounds: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    own_cpu: tuple[float, float] = (0.0, 0.0),
    complaints: tuple[int | None, int | None] = (None, None),
    compacted_bytes: int | None = None,
    peer_finalisation: Mapping[float, float] | None = None,
    submissions_per_call: float | None = None,
) -> dict[str, Any]:
    """`own_cpu`: the load generator's CPU seconds over the CPU window, and that window's length;
    `complaints`: the leader complaints the peers logged during the load and after it;
    `compacted_bytes`: what LevelDB wrote compacting the block stores from load start to calm;
    `peer_finalisation`: what the peers' finalisation histograms counted from load start to calm
    (their own clock from intake to final, free of this process's and the watcher's queueing);
    `submissions_per_call`: what the proxies' calls to their peers carried on average."""
    acked = len(state.acked)
    committed = sum(
        1 for tx_hash in state.acked if state.final.get(tx_hash, math.inf) <= load_end + DRAIN
    )
    latencies = [
        max(0.0, state.final[tx_hash] - ack) if tx_hash in state.final else math.inf
        for tx_hash, ack in state.acked.items()
    ]
    lat = percentiles(latencies, (50, 90, 99))
    cpu = meter.by_kind()
    cpu_total = round(sum(cpu.values()), 2)
    unavailable, other = state.errors()
    start, end, after = rounds
    rounds_load, blocks_load = _advance(start, end, "round"), _advance(start, end, "block_height")
    rounds_after, blocks_after = _advance(end, after, "round"), _advance(end, after, "block_height")
    figures: dict[str, Any] = {
        "load_s": round(load_seconds, 2),
        "acked": acked,
        "acked_per_s": round(acked / load_seconds, 1) if load_seconds > 0 else None,
        "committed": committed,
        "committed_per_s": round(committed / load_seconds, 1) if load_seconds > 0 else None,
        "final_p50_ms": milliseconds(lat["p50"]),
        "final_p90_ms": milliseconds(lat["p90"]),
        "final_p99_ms": milliseconds(lat["p99"]),
        **{
            f"peer_final_{point}_ms": milliseconds(value)
            for point, value in bucket_percentiles(peer_finalisation or {}, (50, 99)).items()
        },
        "submissions_per_call": submissions_per_call,
        "unfinal": sum(1 for latency in latencies if math.isinf(latency)),
        "answers_503": unavailable,
        "answers_other_errors": other,
        "cpu_s": cpu_total,
        "cpu_s_per_tx": round(cpu_total / committed, 5) if committed else None,
        **{f"cpu_s_{kind}": seconds for kind, seconds in cpu.items()},
        **{
            f"cpu_s_{kind}_threads": seconds
            for kind, seconds in meter.outside_main_thread().items()
            if kind in ("peer", "rest_proxy", "score")
        },
        "cpu_s_load_generator": round(own_cpu[0], 2),
        # how many of the machine's cores the network and its load kept busy: near the core
        # count, the machine is saturated and more work (another channel) cannot add throughput
        "cores_busy": round((cpu_total + own_cpu[0]) / own_cpu[1], 2) if own_cpu[1] > 0 else None,
        "rss_peak_mb": meter.peak_rss_mb,
        "anon_peak_mb": meter.peak_anon_mb,
        "calm_s": calm[0],
        "rounds_load": rounds_load,
        "blocks_load": blocks_load,
        "failed_rounds_load": _difference(rounds_load, blocks_load),
        "failed_rounds_after": _difference(rounds_after, blocks_after),
        "complaints_load": complaints[0],
        "complaints_after": complaints[1],
        "compacted_kb_per_tx": (
            round(compacted_bytes / 1024 / committed, 2)
            if compacted_bytes is not None and committed
            else None
        ),
    }
    details = {
        "answers": dict(state.answers.most_common()),
        "final_within_drain": f"final within {DRAIN:g} s of load end: {committed} of {acked} "
        "acknowledged",
        "in_flight_at_end": in_flight,
        "drain_s": round(drain_seconds, 2),
        "calm": "calm" if calm[0] is not None else f"not calm within {CALM_DEADLINE:g} s",
        "calm_last_reason": calm[1],
        "blocks_seen": state.blocks_seen,
        "watch_errors": dict(state.watch_errors),
        "processes_seen": meter.processes(),
        "cores": os.cpu_count(),
        "status_at_load_start": start,
        "status_at_load_end": end,
        "status_at_calm": after,
    }
    return {"figures": figures, "details": details}


def _difference(rounds: int | None, blocks: int | None) -> int | None:
    return None if rounds is None or blocks is None else rounds - blocks


# ------------------------------------------------------------------ read phases (queries, polls)

QUERY_PATH = "/api/v1/query"  # a peer's REST proxy: the JSON body goes verbatim to the SCORE
POLL_PATH = "/api/v1/transactions/result"  # a peer's REST proxy: ?hash=H[&channel=C]
BLOCKS_PATH = "/api/v1/blocks"  # a peer's REST proxy: the last block [?channel=C]
BLOCK_POLLS = ("v1-block", "v3-block")  # --poll-api values that poll the last block
POLL_HASHES = 1024  # per channel: the committed transactions the polls cycle through, at most
POLL_SEED = 64  # per channel: what the poll phase submits itself when it knows none committed
SEED_SUBMIT_DEADLINE = 30.0  # for every one of those to be acknowledged
# the read phases by figure prefix, with what the table calls their requests
READ_PHASES = {"query": "queries", "poll": "polls"}


@dataclass
class ReadState:
    """What the clients of a read phase (queries, polls) count (monotonic seconds)."""

    answers: Counter[str] = field(default_factory=Counter)  # HTTP status, or how a call failed
    latencies: list[float] = field(default_factory=list)  # of the answered (200) requests
    results: Counter[str] = field(default_factory=Counter)  # result codes the 200 answers carried
    in_flight: int = 0


# what a read request got: the HTTP status answered, or "timeout"/"connection error"/"bad
# reply"; the Retry-After seconds; the result code a 200 answer carried (None: it has none)
ReadAnswer = tuple[str, float | None, str | None]
# one request of a read client, given its keep-alive session and how many it sent before
ReadRequest = Callable[[aiohttp.ClientSession, int], Awaitable[ReadAnswer]]


async def read_client(state: ReadState, request: ReadRequest, end: float) -> None:
    """Send `request` one at a time over a keep-alive session until `end` (the request in flight
    then is answered first); a 503 with Retry-After waits min(Retry-After, 1 s) as in the load,
    another failure ERROR_BACKOFF."""
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sent_before = 0
        while time.monotonic() < end:
            sent = time.monotonic()
            state.in_flight += 1
            try:
                answer, retry, result = await request(session, sent_before)
            finally:
                state.in_flight -= 1
            sent_before += 1
            state.answers[answer] += 1
            if answer == "200":
                state.latencies.append(time.monotonic() - sent)
                if result is not None:
                    state.results[result] += 1
                continue
            wait = ERROR_BACKOFF if retry is None else min(retry, RETRY_AFTER_CAP)
            await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))


async def _ask(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    code_of: Callable[[Any], str] | None = None,
    **request: Any,
) -> ReadAnswer:
    """One read request (`request`: aiohttp's arguments); with `code_of`, the result code it
    reads from a 200 answer's JSON (a reply that is not JSON: "bad reply")."""
    try:
        async with session.request(method, url, **request) as resp:
            retry = retry_after_seconds(resp.headers.get("Retry-After"))
            if resp.status != 200 or code_of is None:
                await resp.read()
                return str(resp.status), retry, None
            reply = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return failure_kind(exc), None, None
    return "200", retry, code_of(reply)


def query_request(url: str, body: bytes) -> ReadRequest:
    """POST `body` (a query) to `url`, a peer's QUERY_PATH, every time."""

    async def send(session: aiohttp.ClientSession, _sent_before: int) -> ReadAnswer:
        return await _ask(
            session, "POST", url, data=body, headers={"Content-Type": "application/json"}
        )

    return send


def result_code(reply: Any) -> str:
    """The `response.code` of a transaction result reply as text ("0": executed, "2": not
    invoked yet), "?" when it has none."""
    response = reply.get("response") if isinstance(reply, dict) else None
    code = response.get("code") if isinstance(response, dict) else None
    return str(code) if isinstance(code, int) and not isinstance(code, bool) else "?"


def v3_result_code(reply: Any) -> str:
    """The result code of an icx_getTransactionResult reply as text: "0" for status 0x1
    (executed, success), the failure's code (decimal) for status 0x0, "?" otherwise."""
    result = reply.get("result") if isinstance(reply, dict) else None
    status = result.get("status") if isinstance(result, dict) else None
    if status == "0x1":
        return "0"
    failure = result.get("failure") if isinstance(result, dict) else None
    code = failure.get("code") if isinstance(failure, dict) else None
    if status == "0x0" and isinstance(code, str) and code.startswith("0x"):
        try:
            return str(int(code, 16))
        except ValueError:
            pass
    return "?"


def v3_balance_code(reply: Any) -> str:
    """ "0" for an icx_getBalance reply whose result is a hex number, "?" otherwise."""
    value = reply.get("result") if isinstance(reply, dict) else None
    return "0" if isinstance(value, str) and re.fullmatch(r"0x[0-9a-f]+", value) else "?"


def v3_call_code(reply: Any) -> str:
    """ "0" for an icx_call reply with a result (what the SCORE answered), "?" otherwise."""
    return "0" if isinstance(reply, dict) and "result" in reply else "?"


def block_code(reply: Any) -> str:
    """ "0" for a GET /api/v1/blocks reply with response_code 0 and a block with its height,
    "?" otherwise."""
    if not isinstance(reply, dict) or type(reply.get("response_code")) is not int:
        return "?"
    block = reply.get("block_data_json") if reply["response_code"] == 0 else None
    height = block.get("height") if isinstance(block, dict) else None
    return "0" if type(height) is int and height >= 0 else "?"  # -1: an empty chain


def v3_block_code(reply: Any) -> str:
    """ "0" for an icx_getLastBlock reply whose result is a block with its height, "?"
    otherwise."""
    result = reply.get("result") if isinstance(reply, dict) else None
    height = result.get("height") if isinstance(result, dict) else None
    return "0" if type(height) is int and height >= 0 else "?"


def block_poll_request(url: str, v3: bool = False) -> ReadRequest:
    """The last block, asked the same way every time: GET `url`, a peer's /api/v1/blocks for
    the channel; with `v3`, POST to `url`, its v3 endpoint for the channel, icx_getLastBlock."""

    async def send(session: aiohttp.ClientSession, sent_before: int) -> ReadAnswer:
        if not v3:
            return await _ask(session, "GET", url, block_code)
        body = {"jsonrpc": "2.0", "id": sent_before, "method": "icx_getLastBlock"}
        return await _ask(session, "POST", url, v3_block_code, json=body)

    return send


def v3_poll_request(
    url: str, hashes: Sequence[str], first: int = 0, balances: bool = False, call_to: str = ""
) -> ReadRequest:
    """POST to `url`, a peer's v3 endpoint for the channel, icx_getTransactionResult of
    hashes[first], then of the next one each time, cycling; with `balances`, icx_getBalance of
    the account "hx" + the hash's first 40 digits instead; with `call_to` (the channel SCORE's
    address), icx_call of its "ping" query, the hash's first 8 digits as its param."""
    if not hashes:
        raise ValueError("no transaction to poll")

    async def send(session: aiohttp.ClientSession, sent_before: int) -> ReadAnswer:
        tx_hash = hashes[(first + sent_before) % len(hashes)]
        code_of = v3_result_code
        if call_to:
            method, code_of = "icx_call", v3_call_code
            data = {"method": "ping", "params": {"n": tx_hash[:8]}}
            params: dict[str, Any] = {"to": call_to, "dataType": "call", "data": data}
        elif balances:
            method, code_of = "icx_getBalance", v3_balance_code
            params = {"address": "hx" + tx_hash[:40]}
        else:
            method, params = "icx_getTransactionResult", {"txHash": "0x" + tx_hash}
        body = {"jsonrpc": "2.0", "id": sent_before, "method": method, "params": params}
        return await _ask(session, "POST", url, code_of, json=body)

    return send


async def score_addresses(
    session: aiohttp.ClientSession, channels: Sequence[str]
) -> dict[str, str]:
    """The address of each channel's SCORE, from the first peer's icx_getNetworkInfo."""
    found = {}
    for channel in channels:
        body = {"jsonrpc": "2.0", "id": 1, "method": "icx_getNetworkInfo"}
        async with session.post(v3_url(0, channel), json=body) as resp:
            reply = await resp.json()
        result = reply.get("result") if isinstance(reply, dict) else None
        address = result.get("scoreAddress") if isinstance(result, dict) else None
        if not isinstance(address, str):
            name = channel or "the default channel"
            raise RuntimeError(f"icx_getNetworkInfo of {name} named no SCORE address: {reply}")
        found[channel] = address
    return found


def poll_request(url: str, channel: str, hashes: Sequence[str], first: int = 0) -> ReadRequest:
    """GET from `url`, a peer's POLL_PATH, the result of hashes[first], then of the next one
    each time, cycling (in `channel`; "" for the default one)."""
    if not hashes:
        raise ValueError("no transaction to poll")
    channel_arg = f"&channel={channel}" if channel else ""

    async def send(session: aiohttp.ClientSession, sent_before: int) -> ReadAnswer:
        tx_hash = hashes[(first + sent_before) % len(hashes)]
        return await _ask(session, "GET", f"{url}?hash={tx_hash}{channel_arg}", result_code)

    return send


def spread(items: Sequence[str], limit: int) -> list[str]:
    """At most `limit` of `items`, evenly spaced over them, in their order."""
    if len(items) <= limit:
        return list(items)
    return [items[index * len(items) // limit] for index in range(limit)]


def committed_hashes(
    state: LoadState, channels: Sequence[str], limit: int = POLL_HASHES
) -> dict[str, list[str]]:
    """By channel, at most `limit` of the acknowledged transactions that the chain watcher saw
    in a block of that channel, spread evenly over them in the order they were acknowledged."""
    found: dict[str, list[str]] = {channel: [] for channel in channels}
    for tx_hash in state.acked:
        channel = state.final_channel.get(tx_hash)
        if channel is not None and channel in found:
            found[channel].append(tx_hash)
    return {channel: spread(hashes, limit) for channel, hashes in found.items()}


def _read_progress(state: ReadState, started: float) -> str:
    answered = state.answers.get("200", 0)
    other = sum(state.answers.values()) - answered
    return (
        f"{time.monotonic() - started:5.1f} s  answered {answered}  "
        f"503 {state.answers.get('503', 0)}  not answered (all but 200) {other}"
    )


async def run_reads(
    net: LocalNet,
    requests: Sequence[ReadRequest],
    duration: float,
    label: str,
    prefix: str,
    with_results: bool = False,
) -> dict[str, Any]:
    """A read phase: a keep-alive client per request, each sending its request back to back for
    `duration` seconds, with the network's CPU sampled from the first request to the last
    answer; its figures prefixed `prefix` (with the result codes answered if `with_results`)."""
    state = ReadState()
    meter = CpuMeter(net.pid)
    stop_sampling, stop_progress = asyncio.Event(), asyncio.Event()
    await asyncio.to_thread(meter.sample, True)
    own_cpu_start, started = _own_cpu_seconds(), time.monotonic()
    sampler = asyncio.create_task(_sample_cpu(meter, stop_sampling))
    progress = asyncio.create_task(
        _progress(lambda: _read_progress(state, started), stop_progress, label)
    )
    tasks = [
        asyncio.create_task(read_client(state, request, started + duration)) for request in requests
    ]
    try:
        await asyncio.gather(*tasks)  # each ends by the end + REQUEST_TIMEOUT at the latest
        seconds = time.monotonic() - started
        stop_sampling.set()
        await sampler
        await asyncio.to_thread(meter.sample, True)
        own_cpu = (_own_cpu_seconds() - own_cpu_start, time.monotonic() - started)
    finally:
        for task in tasks:
            task.cancel()
        stop_sampling.set()
        stop_progress.set()
        await asyncio.gather(*tasks, sampler, progress, return_exceptions=True)
    say(f"{label}: {READ_PHASES[prefix]} over: {state.answers.get('200', 0)} answered")
    return read_figures(
        prefix,
        state.answers,
        state.latencies,
        meter.by_kind(),
        seconds,
        own_cpu,
        state.results if with_results else None,
    )


def client_places(clients: int, channels: Sequence[str]) -> list[tuple[int, str]]:
    """The peer and channel of each client of a read phase, as in the load: round-robin over
    the peers, the channels taking turns by PEERS clients."""
    return [(index % PEERS, _channel_of(index, channels)) for index in range(clients)]


async def run_queries(net: LocalNet, clients: int, duration: float, label: str) -> dict[str, Any]:
    """The query phase: `clients` keep-alive clients spread over the peers (and channels) as in
    the load, each sending loadtool's query back to back for `duration` seconds."""
    channels = net.channels or [""]
    body = json.dumps(DEFAULT_QUERY).encode()  # what tools/loadtool.py -t 1 sends
    requests = [
        query_request(rest_url(peer, QUERY_PATH, channel), body)
        for peer, channel in client_places(clients, channels)
    ]
    return await run_reads(net, requests, duration, label, "query")


async def run_polls(
    session: aiohttp.ClientSession,
    net: LocalNet,
    clients: int,
    duration: float,
    label: str,
    known: Mapping[str, Sequence[str]],
    api: str = "v1",
) -> dict[str, Any]:
    """The poll phase: `clients` keep-alive clients spread over the peers (and channels) as the
    query clients are, each polling back to back for `duration` seconds: the last block of its
    channel (`api` in BLOCK_POLLS), or transaction results (or balances, or SCORE calls: `api`),
    cycling through the transactions `known` committed in its channel (or, where none are,
    through POLL_SEED submitted first)."""
    channels = net.channels or [""]
    places = client_places(clients, channels)
    if api in BLOCK_POLLS:  # the last block: no transactions to know of
        requests = [
            block_poll_request(v3_url(peer, channel), v3=True)
            if api == "v3-block"
            else block_poll_request(rest_url(peer, BLOCKS_PATH, channel))
            for peer, channel in places
        ]
        return await run_reads(net, requests, duration, label, "poll", with_results=True)
    hashes = {channel: spread(known.get(channel, ()), POLL_HASHES) for channel in channels}
    unknown = [channel for channel in channels if not hashes[channel]]
    if unknown:
        names = ", ".join(channel or "the default channel" for channel in unknown)
        say(f"{label}: submitting {POLL_SEED} transactions to poll in {names}; waiting for calm")
        hashes.update(await seed_transactions(session, unknown))
        say(f"{label}: {sum(len(hashes[channel]) for channel in unknown)} of them final")
    scores = await score_addresses(session, channels) if api == "v3-call" else {}
    requests = [
        v3_poll_request(
            v3_url(peer, channel),
            hashes[channel],
            first=index,
            balances=api == "v3-balance",
            call_to=scores.get(channel, ""),
        )
        if api != "v1"
        else poll_request(rest_url(peer, POLL_PATH), channel, hashes[channel], first=index)
        for index, (peer, channel) in enumerate(places)
    ]
    return await run_reads(net, requests, duration, label, "poll", with_results=True)


async def seed_transactions(
    session: aiohttp.ClientSession, channels: Sequence[str]
) -> dict[str, list[str]]:
    """POLL_SEED v1 transactions per channel, submitted at once round-robin over the peers as in
    the load, then waited for until calm (CALM_DEADLINE): those seen final, by channel."""
    state = LoadState(run_id=uuid.uuid4().hex[:12])
    heights = {channel: await _tip_height(session, channel) for channel in channels}
    stop_watch = asyncio.Event()
    watchers = [
        asyncio.create_task(watch_chain(state, channel, heights[channel], stop_watch))
        for channel in channels
    ]
    try:
        deadline = time.monotonic() + SEED_SUBMIT_DEADLINE
        await asyncio.gather(
            *(
                _submit_seed(session, state, channel, number, deadline)
                for channel in channels
                for number in range(POLL_SEED)
            )
        )
        calm_s, reason = await wait_calm(session, state, channels, time.monotonic())
    finally:
        stop_watch.set()
        await asyncio.gather(*watchers, return_exceptions=True)
    found = committed_hashes(state, channels)
    if calm_s is None:
        say(f"seeding the polls: not calm within {CALM_DEADLINE:g} s: {reason}")
    empty = [channel or "the default channel" for channel in channels if not found[channel]]
    if empty:
        raise BenchError(
            f"none of the transactions submitted to poll became final in {', '.join(empty)} "
            f"(answers: {dict(state.answers)}; {reason or 'calm'})"
        )
    return found


async def _submit_seed(
    session: aiohttp.ClientSession, state: LoadState, channel: str, number: int, deadline: float
) -> None:
    """Submit one v1 transaction as the load builds them until acknowledged or `deadline`."""
    url = rest_url(number % PEERS, "/api/v1/transactions", channel)
    attempt = 0
    while time.monotonic() < deadline:
        body = {"data": {"bench": state.run_id, "poll_seed": number, "attempt": attempt}}
        attempt += 1
        wait = state.record_answer(await _post_tx(session, url, body))
        if wait is None:
            return
        await asyncio.sleep(wait)


def answer_figures(answers: Mapping[str, int], prefix: str) -> dict[str, int]:
    """A read phase's answers as figures: `<prefix>_answers_<status>` for 200, 503 (always, 0
    if none) and every other HTTP status answered; `<prefix>_answers_none` for calls with no
    HTTP answer (timeouts, connection errors, bad replies)."""
    statuses = {"200": 0, "503": 0}
    none = 0
    for key, count in answers.items():
        if key.isdigit():
            statuses[key] = statuses.get(key, 0) + count
        else:
            none += count
    figures = {f"{prefix}_answers_{key}": statuses[key] for key in sorted(statuses)}
    figures[f"{prefix}_answers_none"] = none
    return figures


def read_figures(
    prefix: str,
    answers: Mapping[str, int],
    latencies: Sequence[float],
    cpu: Mapping[str, float],
    seconds: float,
    own_cpu: tuple[float, float] = (0.0, 0.0),
    results: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The figures of a read phase, each prefixed `prefix` ("query", "poll"): `answers`: count
    by HTTP status (or failure kind); `latencies`: seconds of the answered (200) requests;
    `cpu`: the network's CPU seconds by process kind over the phase; `seconds`: from the first
    request to the last answer; `own_cpu`: the load generator's CPU seconds over the CPU window,
    and that window's length; `results`: the 200 answers by the result code they carried, when
    the requests have one (`<prefix>_results_executed`: code 0)."""
    answered = answers.get("200", 0)
    lat = percentiles(latencies, (50, 99))
    cpu_total = round(sum(cpu.values()), 2)

    def per_request_ms(cpu_seconds: float) -> float | None:
        return round(cpu_seconds * 1000 / answered, 4) if answered else None

    figures: dict[str, Any] = {
        f"{prefix}_s": round(seconds, 2),
        f"{prefix}_answered_per_s": round(answered / seconds, 1) if seconds > 0 else None,
        f"{prefix}_p50_ms": milliseconds(lat["p50"]),
        f"{prefix}_p99_ms": milliseconds(lat["p99"]),
        **answer_figures(answers, prefix),
        **({} if results is None else {f"{prefix}_results_executed": results.get("0", 0)}),
        f"{prefix}_cpu_s": cpu_total,
        f"{prefix}_cpu_ms_per_{prefix}": per_request_ms(cpu_total),
        **{
            f"{prefix}_cpu_ms_{kind}_per_{prefix}": per_request_ms(cpu.get(kind, 0.0))
            for kind in KINDS
        },
        f"{prefix}_cpu_s_load_generator": round(own_cpu[0], 2),
        f"{prefix}_cores_busy": (
            round((cpu_total + own_cpu[0]) / own_cpu[1], 2) if own_cpu[1] > 0 else None
        ),
    }
    details: dict[str, Any] = {
        f"{prefix}_answers": dict(Counter(answers).most_common()),
        f"{prefix}_cpu_s_by_kind": dict(cpu),
    }
    if results is not None:
        details[f"{prefix}_results"] = dict(Counter(results).most_common())
    return {"figures": figures, "details": details}


# ------------------------------------------------------------------ one run


@dataclass(frozen=True)
class Options:
    clients: int
    duration: float
    channels: tuple[str, ...]
    baseline: str | None
    tree: Path
    json: bool
    idle_only: bool
    no_idle: bool
    keep_data: bool
    baseline_env: tuple[tuple[str, str], ...] = ()
    baseline_channels: tuple[str, ...] | None = None  # None: the same as `channels`
    v3: bool = False
    rounds: int = 1
    loads: int = 1  # loads in a row on the one network (the figures are the first's)
    queries: float = 0.0  # seconds of the query load after the transaction loads (0: none)
    polls: float = 0.0  # seconds of transaction result polls after those (0: none)
    poll_api: str = "v1"  # how the polls ask (--poll-api): v1 GET .../transactions/result, ...
    no_load: bool = False  # no transaction load (v1 or v3)

    @property
    def tx_load(self) -> bool:
        return not (self.idle_only or self.no_load)


# What each of several loads in a row on one network reports (`--loads`): how the network holds
# as its stores grow; the last load's are figures too ("last_load_..."), compared between runs.
LOAD_TREND = (
    "committed_per_s",
    "cpu_s_per_tx",
    "cpu_s_peer",
    "final_p99_ms",
    "answers_503",
    "unfinal",
    "compacted_kb_per_tx",
    "rss_after_mb",
)


def load_trend(figures: Mapping[str, Any], rss_after_mb: float) -> dict[str, Any]:
    """The LOAD_TREND figures of one load, its peers' CPU per committed transaction beside them
    (what grows first as the block stores grow: LevelDB compacting them)."""
    trend = {key: figures.get(key) for key in LOAD_TREND}
    trend["rss_after_mb"] = rss_after_mb
    committed, peer_cpu = figures.get("committed"), figures.get("cpu_s_peer")
    trend["cpu_s_peer_per_tx"] = round(peer_cpu / committed, 6) if committed and peer_cpu else None
    return trend


async def measure(net: LocalNet, options: Options, label: str) -> dict[str, Any]:
    """Every figure of one run on a started network."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ready_s = await wait_ready(net, session)
        say(f"{label}: all peers ready after {ready_s:.2f} s; idle {IDLE_SETTLE:g} s")
        await asyncio.sleep(IDLE_SETTLE)
        idle_rss, idle_split = await asyncio.to_thread(tree_rss_mb, net.pid)
        idle_pss = await asyncio.to_thread(tree_pss_mb, net.pid)
        idle_anon = await asyncio.to_thread(tree_anon_mb, net.pid)
        net.remember_tree()
        figures: dict[str, Any] = {
            "ready_s": ready_s,
            "idle_rss_mb": idle_rss,
            "idle_pss_mb": idle_pss,
            "idle_anon_mb": idle_anon,
        }
        details: dict[str, Any] = {"idle_rss_mb_by_kind": idle_split}
        if not options.no_idle:
            say(f"{label}: idle latency over {IDLE_TXS} transactions")
            idle = await idle_latency(session, net.channels, uuid.uuid4().hex[:12])
            figures.update(
                idle_p50_ms=idle["p50_ms"], idle_p90_ms=idle["p90_ms"], idle_unfinal=idle["unfinal"]
            )
            details["idle_errors"] = idle["errors"]
        known: dict[str, list[str]] = {}  # channel -> transactions the v1 loads saw committed
        if options.tx_load:
            loads = []
            for index in range(options.loads):
                tag = label if options.loads == 1 else f"{label} load {index + 1}/{options.loads}"
                say(f"{tag}: load: {options.clients} clients for {options.duration:g} s")
                load = await run_load(session, net, options.clients, options.duration, tag)
                for channel, hashes in load["committed_hashes"].items():
                    known.setdefault(channel, []).extend(hashes)
                rss_after, rss_split = await asyncio.to_thread(tree_rss_mb, net.pid)
                loads.append(load_trend(load["figures"], rss_after))
                if index == 0:
                    figures.update(load["figures"])
                    details.update(load["details"])
                    figures["rss_after_mb"] = rss_after
                    figures["anon_after_mb"] = await asyncio.to_thread(tree_anon_mb, net.pid)
                    details["rss_after_mb_by_kind"] = rss_split
            if options.loads > 1:
                details["loads"] = loads
                figures.update({f"last_load_{key}": value for key, value in loads[-1].items()})
        if options.v3 and options.tx_load:
            say(f"{label}: funding {options.clients} v3 accounts")
            senders = await fund_v3_senders(options.clients, net.channels or [""])
            say(f"{label}: v3 load: {options.clients} clients for {options.duration:g} s")
            v3 = await run_load(
                session, net, options.clients, options.duration, f"{label} v3", senders
            )
            figures.update({f"v3_{key}": value for key, value in v3["figures"].items()})
            details.update({f"v3_{key}": value for key, value in v3["details"].items()})
        if options.queries > 0 and not options.idle_only:
            say(f"{label}: query load: {options.clients} clients for {options.queries:g} s")
            queries = await run_queries(net, options.clients, options.queries, f"{label} queries")
            figures.update(queries["figures"])
            details.update(queries["details"])
        if options.polls > 0 and not options.idle_only:
            say(f"{label}: poll load: {options.clients} clients for {options.polls:g} s")
            polls = await run_polls(
                session,
                net,
                options.clients,
                options.polls,
                f"{label} polls",
                known,
                options.poll_api,
            )
            figures.update(polls["figures"])
            details.update(polls["details"])
        if not net.alive():
            raise BenchError("localnet.sh exited during the benchmark")
    return {"figures": figures, "details": details}


def run_once(
    tree: Path,
    options: Options,
    label: str,
    after_run: bool = False,
    env: Mapping[str, str] | None = None,
    channels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Start the network of `tree` (with `env` added to its environment, serving `channels`,
    by default the options' channels), measure it, stop it (always); the run's figures.

    `after_run`: a network was just stopped, so give its ports a moment to be released.
    """
    if after_run:
        _wait_ports_free()
    LocalNet.check_ports()
    data = Path(tempfile.mkdtemp(prefix=f"bench-data-{label}-"))
    served = options.channels if channels is None else tuple(channels)
    net = LocalNet(tree, data, served, env)
    result: dict[str, Any] = {"label": label, "tree": str(tree), "rev": describe_rev(tree)}
    if env:
        result["env"] = dict(env)
        result["rev"] += " " + " ".join(f"{k}={v}" for k, v in env.items())
    if channels is not None:
        result["rev"] += f" channels={','.join(served) or 'default'}"
    keep = options.keep_data  # and when the network failed, for its logs
    try:
        say(f"{label}: starting {tree}/localnet.sh --data {data}")
        net.start()
        result.update(asyncio.run(measure(net, options, label)))
    except BenchError as exc:
        keep = True
        raise BenchError(f"{label}: {exc}\n{net.log_tail()}") from None
    finally:
        say(f"{label}: stopping the network")
        net.stop()
        problems = net.log_problems()
        if keep:
            say(f"{label}: network data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    result["details"]["log_problems"] = problems
    return result


def _wait_ports_free() -> None:
    deadline = time.monotonic() + PORT_FREE_WAIT
    while busy_ports() and time.monotonic() < deadline:
        time.sleep(0.5)


def describe_rev(tree: Path) -> str:
    """The short commit of a tree, with '+dirty' when it has uncommitted changes."""
    try:
        rev = _git(tree, "rev-parse", "--short", "HEAD").strip()
        dirty = _git(tree, "status", "--porcelain", "--untracked-files=no").strip()
    except BenchError:
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def _git(tree: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"git {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


# ------------------------------------------------------------------ baseline worktree


@contextlib.contextmanager
def baseline_tree(repo: Path, rev: str) -> Any:
    """A git worktree of `rev` with this repo's .venv linked in and its stubs generated."""
    commit = _git(repo, "rev-parse", "--short", f"{rev}^{{commit}}").strip()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", commit)
    path = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{safe}-"))
    added = False
    try:
        say(f"baseline: git worktree of {rev} ({commit}) in {path}")
        _git(repo, "worktree", "add", "--detach", str(path), commit)
        added = True
        venv = repo / ".venv"
        if not (venv / "bin" / "python").exists():
            raise BenchError(f"{venv} has no bin/python to link into the baseline worktree")
        (path / ".venv").symlink_to(venv.resolve(), target_is_directory=True)
        generate = path / "generate_code.sh"
        if not generate.exists():
            raise BenchError(f"{rev} has no generate_code.sh")
        done = subprocess.run(
            [str(generate)],
            cwd=path,
            env={**os.environ, "PYTHON": ".venv/bin/python"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchError(f"generate_code.sh failed in {path}:\n{done.stderr}")
        yield path
    finally:
        with _signals_ignored():
            if added:
                with contextlib.suppress(BenchError):
                    _git(repo, "worktree", "remove", "--force", str(path))
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(BenchError):
                _git(repo, "worktree", "prune")


# ------------------------------------------------------------------ the report

KIND_TITLES = {
    "radiostation": "radiostation",
    "peer": "peers",
    "rest_proxy": "REST proxies",
    "score": "SCORE",
    "other": "other",
}


def read_rows(prefix: str, with_results: bool = False) -> tuple[tuple[str, str], ...]:
    """The table rows of a read phase's figures (`read_figures`), titled by READ_PHASES."""
    name = READ_PHASES[prefix]
    executed = (f"{prefix}_results_executed", f"{name}:   of which executed (response code 0)")
    return (
        (f"{prefix}_s", f"{name}: load duration (s)"),
        (f"{prefix}_answered_per_s", f"{name}: answered (200) per s"),
        (f"{prefix}_p50_ms", f"{name}: latency p50 of the answered (ms)"),
        (f"{prefix}_p99_ms", f"{name}: latency p99 of the answered (ms)"),
        (f"{prefix}_answers_200", f"{name}: answers 200"),
        *((executed,) if with_results else ()),
        (f"{prefix}_answers_503", f"{name}: answers 503 (overload)"),
        # here a row for each other HTTP status answered (table_rows)
        (f"{prefix}_answers_none", f"{name}: no HTTP answer (timeout, connection)"),
        (f"{prefix}_cpu_s", f"{name}: CPU seconds"),
        (f"{prefix}_cpu_ms_per_{prefix}", f"{name}: CPU ms per answered {prefix}"),
        *(
            (f"{prefix}_cpu_ms_{kind}_per_{prefix}", f"{name}:   CPU ms {KIND_TITLES[kind]}")
            for kind in KINDS
        ),
        (f"{prefix}_cpu_s_load_generator", f"{name}: CPU s of the load generator (not in the sum)"),
        (f"{prefix}_cores_busy", f"{name}: cores busy: network + load generator"),
    )


# (key, label) in table order; the unit is in the label
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("ready_s", "seconds until all peers ready"),
    ("idle_rss_mb", "idle summed RSS (MB)"),
    ("idle_pss_mb", "idle summed PSS (MB, shared pages once)"),
    ("idle_anon_mb", "idle summed anonymous RSS (MB, no files)"),
    ("idle_p50_ms", "idle finalisation p50 (ms)"),
    ("idle_p90_ms", "idle finalisation p90 (ms)"),
    ("idle_unfinal", "idle transactions never final"),
    ("load_s", "load duration (s)"),
    ("acked", "acknowledged transactions"),
    ("acked_per_s", "acknowledged tx/s"),
    ("committed", "committed (final within 15 s of end)"),
    ("committed_per_s", "committed tx/s"),
    ("final_p50_ms", "finalisation p50 under load (ms)"),
    ("final_p90_ms", "finalisation p90 under load (ms)"),
    ("final_p99_ms", "finalisation p99 under load (ms)"),
    ("peer_final_p50_ms", "  the same p50 by the peers' histograms (ms)"),
    ("peer_final_p99_ms", "  the same p99 by the peers' histograms (ms)"),
    ("submissions_per_call", "transactions per submission call from proxy to peer"),
    ("unfinal", "acknowledged, never seen final"),
    ("answers_503", "overload answers (503; v3: -31001)"),
    ("answers_other_errors", "other errors"),
    ("cpu_s", "CPU seconds (load + drain)"),
    ("cpu_s_per_tx", "CPU seconds per committed tx"),
    ("cpu_s_radiostation", "  CPU s radiostation"),
    ("cpu_s_peer", "  CPU s peers"),
    ("cpu_s_peer_threads", "    of which outside the event loop's thread"),
    ("cpu_s_rest_proxy", "  CPU s REST proxies"),
    ("cpu_s_rest_proxy_threads", "    of which outside the event loop's thread"),
    ("cpu_s_score", "  CPU s SCORE"),
    ("cpu_s_score_threads", "    of which outside the main thread"),
    ("cpu_s_other", "  CPU s other"),
    ("cpu_s_load_generator", "CPU s of the load generator (not in the sum)"),
    ("cores_busy", "cores busy: network + load generator"),
    ("rss_peak_mb", "peak summed RSS under load (MB)"),
    ("anon_peak_mb", "  the same, anonymous only (MB, no files)"),
    ("rss_after_mb", "summed RSS after load (MB)"),
    ("anon_after_mb", "  the same, anonymous only (MB, no files)"),
    ("calm_s", "seconds until calm after load"),
    ("rounds_load", "rounds during load"),
    ("blocks_load", "blocks during load"),
    ("failed_rounds_load", "failed rounds during load"),
    ("failed_rounds_after", "failed rounds after load"),
    ("complaints_load", "leader complaints logged during load"),
    ("complaints_after", "leader complaints logged after load"),
    ("compacted_kb_per_tx", "KB LevelDB rewrote compacting, per tx"),
    ("last_load_committed_per_s", "last of the loads in a row: committed tx/s"),
    ("last_load_cpu_s_per_tx", "  CPU seconds per committed tx"),
    ("last_load_cpu_s_peer_per_tx", "  of which the peers'"),
    ("last_load_final_p99_ms", "  finalisation p99 (ms)"),
    ("last_load_answers_503", "  overload answers (503)"),
    ("last_load_unfinal", "  acknowledged, never seen final"),
    ("last_load_compacted_kb_per_tx", "  KB LevelDB rewrote compacting, per tx"),
    ("last_load_rss_after_mb", "  summed RSS after it (MB)"),
    ("v3_acked", "v3: acknowledged transfers"),
    ("v3_committed_per_s", "v3: committed tx/s"),
    ("v3_final_p50_ms", "v3: finalisation p50 under load (ms)"),
    ("v3_final_p99_ms", "v3: finalisation p99 under load (ms)"),
    ("v3_unfinal", "v3: acknowledged, never seen final"),
    ("v3_answers_503", "v3: overload answers (-31001)"),
    ("v3_answers_other_errors", "v3: other errors"),
    ("v3_cpu_s_per_tx", "v3: CPU seconds per committed tx"),
    ("v3_cpu_s_rest_proxy", "v3:   CPU s REST proxies"),
    ("v3_cpu_s_peer", "v3:   CPU s peers"),
    ("v3_calm_s", "v3: seconds until calm after load"),
    *read_rows("query"),
    *read_rows("poll", with_results=True),
)
# a figure that counts a read phase's answers of one HTTP status: (prefix, status)
STATUS_FIGURE = re.compile(rf"({'|'.join(READ_PHASES)})_answers_(\d+)")


def table_rows(keys: Iterable[str]) -> list[tuple[str, str]]:
    """TABLE_ROWS with, after the 503 answers of each read phase (queries, polls), a row for
    each other HTTP status that one of `keys` (the runs' figures) counts it answered with."""
    known = {key for key, _ in TABLE_ROWS}
    others: dict[str, list[tuple[int, str]]] = {}
    for key in set(keys) - known:
        found = STATUS_FIGURE.fullmatch(key)
        if found:
            others.setdefault(found[1], []).append((int(found[2]), key))
    rows = []
    for key, title in TABLE_ROWS:
        rows.append((key, title))
        found = STATUS_FIGURE.fullmatch(key)
        if found and found[2] == "503":
            name = READ_PHASES[found[1]]
            rows.extend(
                (other, f"{name}: answers {status}")
                for status, other in sorted(others.get(found[1], ()))
            )
    return rows


def format_table(runs: Mapping[str, Mapping[str, Any]], run_ratios: Mapping[str, Any]) -> str:
    """The figures of one or two runs (baseline first) as aligned text, with ratios if two."""
    labels = list(runs)
    header = ["figure", *(f"{label} {runs[label].get('rev', '')}".strip() for label in labels)]
    if run_ratios:
        header.append("ratio")
    rows = [header]
    for key, title in table_rows(key for label in labels for key in runs[label]["figures"]):
        values = [runs[label]["figures"].get(key) for label in labels]
        if all(key not in runs[label]["figures"] for label in labels):
            continue
        row = [
            title,
            *(
                _table_value(key, value, runs[label])
                for label, value in zip(labels, values, strict=True)
            ),
        ]
        if run_ratios:
            row.append(format_value(run_ratios.get(key)))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    for label in labels:
        lines.extend(_detail_lines(label, runs[label].get("details", {})))
    return "\n".join(lines)


def _table_value(key: str, value: Any, run: Mapping[str, Any]) -> str:
    if key == "calm_s" and value is None:
        return f"not calm within {CALM_DEADLINE:g} s"
    if value is None and key.startswith(("final_p", "idle_p")):
        unfinal = run["figures"].get("unfinal" if key.startswith("final") else "idle_unfinal")
        return "inf" if unfinal else "-"
    return format_value(value)


def _detail_lines(label: str, details: Mapping[str, Any]) -> list[str]:
    lines = []
    if "final_within_drain" in details:
        lines.append(f"{label}: {details['final_within_drain']}")
    for prefix in ("", "v3_", *(f"{read}_" for read in READ_PHASES)):
        if f"{prefix}final_within_drain" in details and prefix:
            lines.append(f"{label} {prefix[:-1]}: {details[f'{prefix}final_within_drain']}")
        if f"{prefix}answers" in details:
            answers = details[f"{prefix}answers"]
            shown = ", ".join(f"{key}: {n}" for key, n in answers.items()) or "none"
            lines.append(
                f"{label}{' ' + prefix[:-1] if prefix else ''}: answers by status: {shown}"
            )
    for prefix in READ_PHASES:
        if f"{prefix}_results" in details:
            codes = details[f"{prefix}_results"]
            shown = ", ".join(f"{key}: {n}" for key, n in codes.items()) or "none"
            lines.append(f"{label} {prefix}: result codes of the 200 answers: {shown}")
    for number, load in enumerate(details.get("loads", ()), 1):
        lines.append(
            f"{label} load {number}: {format_value(load['committed_per_s'])} tx/s, "
            f"CPU {format_value(_ms(load['cpu_s_per_tx']))} ms/tx "
            f"(peers {format_value(_ms(load['cpu_s_peer_per_tx']))}), "
            f"p99 {format_value(load['final_p99_ms'])} ms, 503: {format_value(load['answers_503'])}, "
            f"never final: {format_value(load['unfinal'])}, "
            f"compacting {format_value(load['compacted_kb_per_tx'])} KB/tx, "
            f"RSS after {format_value(load['rss_after_mb'])} MB"
        )
    if details.get("calm_last_reason"):
        lines.append(f"{label}: not calm: {details['calm_last_reason']}")
    if details.get("watch_errors"):
        lines.append(f"{label}: chain watcher errors: {details['watch_errors']}")
    if details.get("idle_errors"):
        lines.append(f"{label}: idle latency errors: {details['idle_errors']}")
    if details.get("log_problems"):
        lines.append(f"{label}: log lines: {details['log_problems']}")
    return lines


def _ms(seconds: Any) -> float | None:
    return round(seconds * 1000, 3) if _is_number(seconds) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def merge_rounds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run from several rounds of it: each figure is its median over the rounds (one that is
    not a number in every round is the last round's), the details are the last round's, and
    each round's figures are kept under "rounds"."""
    last = results[-1]
    if len(results) == 1:
        return dict(last)
    keys = list(dict.fromkeys(key for result in results for key in result["figures"]))
    figures: dict[str, Any] = {}
    for key in keys:
        values = [result["figures"].get(key) for result in results]
        numeric = all(_is_number(value) for value in values)
        figures[key] = statistics.median(values) if numeric else last["figures"].get(key)
    return {**last, "figures": figures, "rounds": [dict(r["figures"]) for r in results]}


# figures whose ratio in each round the table shows, to tell a change from the machine's drift
SPREAD_FIGURES = (
    "committed_per_s",
    "cpu_s_per_tx",
    "final_p99_ms",
    "query_answered_per_s",
    "query_cpu_ms_per_query",
    "query_p99_ms",
    "poll_answered_per_s",
    "poll_cpu_ms_per_poll",
    "poll_p99_ms",
)


def round_ratios(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, float | None]]:
    """current / baseline of each round (rounds run in pairs), for the SPREAD_FIGURES that the
    runs have (no transaction load, or no query or poll load, has no such figures)."""
    if "baseline" not in runs or "current" not in runs:
        return []
    pairs = list(
        zip(runs["baseline"].get("rounds", ()), runs["current"].get("rounds", ()), strict=True)
    )
    keys = [key for key in SPREAD_FIGURES if any(key in b or key in c for b, c in pairs)]
    return [
        {key: ratio(current.get(key), baseline.get(key)) for key in keys}
        for baseline, current in pairs
    ]


def spread_lines(per_round: Sequence[Mapping[str, float | None]]) -> list[str]:
    """A line per SPREAD_FIGURE in the rounds: its ratio in each round."""
    lines = []
    for key in SPREAD_FIGURES:
        if not any(key in r for r in per_round):
            continue
        found = [format_value(r.get(key)) for r in per_round]
        lines.append(f"ratio of {key} in each round: {', '.join(found)}")
    return lines


def report(
    runs: Mapping[str, dict[str, Any]], options: Options
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON object, the ratios) of the finished runs."""
    run_ratios: dict[str, Any] = {}
    if "baseline" in runs and "current" in runs:
        run_ratios = ratios(runs["current"]["figures"], runs["baseline"]["figures"])
    summary: dict[str, Any] = {
        "benchmark": "bench",
        "settings": {
            "clients": options.clients,
            "duration_s": options.duration,
            "channels": list(options.channels),
            "peers": PEERS,
            "baseline": options.baseline,
            "baseline_env": dict(options.baseline_env),
            "baseline_channels": (
                None if options.baseline_channels is None else list(options.baseline_channels)
            ),
            "rounds": options.rounds,
            "loads": options.loads,
            "no_load": options.no_load,
            "queries_s": options.queries,
            "polls_s": options.polls,
            "poll_api": options.poll_api,
        },
        **runs,
    }
    if run_ratios:
        summary["ratios"] = run_ratios
    if options.rounds > 1 and run_ratios:
        summary["round_ratios"] = round_ratios(runs)
    return json_safe(summary), run_ratios


# ------------------------------------------------------------------ command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"--baseline-env wants KEY=VALUE; got {text!r}")
    return key, value


def _channels(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in names):
        raise argparse.ArgumentTypeError(f"--channels wants names like A,B; got {text!r}")
    return names


def _baseline_channels(text: str) -> tuple[str, ...]:
    return () if text.strip() == "default" else _channels(text)


def _duration_or_off(text: str) -> float:
    """A duration as -d takes it, or 0 (off)."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return _duration(text)


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Start the local network and measure start-up, memory, latency, "
        "throughput, CPU and calm; optionally against a baseline revision.",
    )
    add = parser.add_argument
    add("-c", "--clients", type=_positive_int, default=64, help="load clients (default 64)")
    add("-d", "--duration", type=_duration, default=60.0, help="load seconds (default 60)")
    add("--channels", type=_channels, default=(), help="channels A,B (default: the default one)")
    add("--baseline", metavar="REV", help="run a git worktree of REV first and compare")
    add(
        "--baseline-env",
        metavar="KEY=VALUE",
        type=_env_setting,
        action="append",
        default=[],
        help="configuration for the baseline run by environment (repeatable); without "
        "--baseline the baseline is this tree, e.g. --baseline-env INTAKE_LOG=false",
    )
    add(
        "--baseline-channels",
        metavar="A,B|default",
        type=_baseline_channels,
        help="channels of the baseline run (default: those of --channels); without --baseline "
        "the baseline is this tree, e.g. --channels A,B --baseline-channels default gives two "
        "channels against one as a ratio within one run",
    )
    add("--tree", type=Path, default=_REPO, help="source tree to run (default: this repo)")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    add("--idle-only", action="store_true", help="skip the loads (transactions, queries, polls)")
    add("--no-load", action="store_true", help="skip the transaction loads (v1 and --v3)")
    add("--no-idle", action="store_true", help="skip the idle latency")
    add("--keep-data", action="store_true", help="keep each run's network directory and logs")
    add("--v3", action="store_true", help="also load ICON v3 client-signed transfers after v1")
    add(
        "--rounds",
        type=_positive_int,
        default=1,
        help="run the baseline and the current tree this many times each, alternating, and "
        "report each figure's median (the machine's speed drifts between runs; default 1)",
    )
    add(
        "--loads",
        type=_positive_int,
        default=1,
        help="load each network this many times in a row (a soak: how it holds as its stores "
        "grow); the table's figures are the first load's, with the last's and a line per load "
        "(default 1)",
    )
    add(
        "--queries",
        metavar="SECONDS",
        type=_duration_or_off,
        default=0.0,
        help="after the transaction loads, the same clients send loadtool's query (-t 1) to "
        "/api/v1/query back to back for this long (default 0: no query load)",
    )
    add(
        "--polls",
        metavar="SECONDS",
        type=_duration_or_off,
        default=0.0,
        help="after the transaction loads and queries, the same clients poll back to back for "
        "this long (default 0: no polls): transaction results (/api/v1/transactions/result) of "
        "committed transactions, the load's or a few it submits first, or as --poll-api says",
    )
    add(
        "--poll-api",
        choices=("v1", "v3", "v3-balance", "v3-call", *BLOCK_POLLS),
        default="v1",
        help="how the polls ask: v1 GET /api/v1/transactions/result (default), v3 "
        "icx_getTransactionResult as ICON's clients do, v3 icx_getBalance of as many accounts, "
        "v3 icx_call of the channel SCORE's ping query, or the last block: v1-block GET "
        "/api/v1/blocks, v3-block icx_getLastBlock",
    )
    args = parser.parse_args(argv)
    if args.idle_only and args.queries > 0:
        parser.error("--idle-only runs no load; for the queries alone: --no-load --queries S")
    if args.idle_only and args.polls > 0:
        parser.error("--idle-only runs no load; for the polls alone: --no-load --polls S")
    tree = args.tree.resolve()
    if not (tree / "localnet.sh").exists():
        parser.error(f"--tree {tree} has no localnet.sh")
    return Options(
        clients=args.clients,
        duration=args.duration,
        channels=args.channels,
        baseline=args.baseline,
        tree=tree,
        baseline_env=tuple(args.baseline_env),
        baseline_channels=args.baseline_channels,
        json=args.json,
        idle_only=args.idle_only,
        no_idle=args.no_idle,
        keep_data=args.keep_data,
        v3=args.v3,
        rounds=args.rounds,
        loads=args.loads,
        queries=args.queries,
        polls=args.polls,
        poll_api=args.poll_api,
        no_load=args.no_load,
    )


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_all(options: Options, on_run: Callable[[str, dict[str, Any]], None]) -> None:
    """Each round: the baseline run (if any), then the current one, each reported to `on_run`."""
    env = dict(options.baseline_env)
    channels = options.baseline_channels  # None: the baseline serves the same channels
    with contextlib.ExitStack() as stack:
        base: Path | None = None
        if options.baseline:
            base = stack.enter_context(baseline_tree(options.tree, options.baseline))
        elif env or channels is not None:
            base = options.tree
        for index in range(options.rounds):
            if options.rounds > 1:
                say(f"round {index + 1} of {options.rounds}")
            if base is not None:
                on_run("baseline", run_once(base, options, "baseline", index > 0, env, channels))
            after = base is not None or index > 0
            on_run("current", run_once(options.tree, options, "current", after_run=after))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _raise_interrupt)  # same clean stop as Ctrl-C
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        run_all(options, lambda label, run: rounds.setdefault(label, []).append(run))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; the network was stopped", file=sys.stderr)
        return 130
    runs = {label: merge_rounds(results) for label, results in rounds.items()}
    summary, run_ratios = report(runs, options)
    if options.json:
        print(json.dumps(summary))
    else:
        print(format_table(runs, run_ratios))
        if "round_ratios" in summary:
            print(f"medians of {options.rounds} rounds, run alternately")
            print("\n".join(spread_lines(summary["round_ratios"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
