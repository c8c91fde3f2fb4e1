"""The peer's Prometheus metrics: one registry per peer (never the process-wide default, so several
peers or channel services in one test process keep their own figures), served as text through the
peer's GetMetrics call and from there by its REST proxy at /metrics.

Every series of a channel carries the label `channel`; its values are the channels the RadioStation
granted this peer, never a name a client sent. Other label values come from fixed sets (refusal
reasons, gRPC method names and status codes), so no caller can grow the number of series.

Cost: figures that can be read when Prometheus scrapes (height, round, pool size and bytes, view
changes) are read then by a collector; the hot path only counts per batch and per block.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from loopchain.process_metrics import register_process_collectors
from loopchain.types.block import Block

MAX_EXPOSITION_BYTES = 1 << 20  # what GetMetrics answers at most
PROCESS_FAMILY_PREFIX = "loopchain_process_"  # one process's own figures (process_metrics)
MAX_PENDING_INTAKES = 10_000  # transactions whose intake time is kept until their block is final
SAMPLES_PER_BATCH = 16  # of each accepted batch, the first ones are timed to finality

# Why this peer refused an input: a fixed set of label values.
REFUSAL_REASONS = (
    "invalid",  # malformed or not acceptable (bad JSON, size, signature, time, known already)
    "pool_full",  # the pool or the intake is at capacity
    "denied",  # not allowed (an auditor takes no transactions, a caller outside the channel)
    "unavailable",  # the channel is halted or stopping
    "relayed_invalid",  # a transaction relayed by another peer failed its checks
    "relayed_syncing",  # relayed while this peer syncs far behind (its sender holds it)
    "relayed_unpaid",  # a relayed v3 transaction whose sender cannot pay, dropped once pooled
    "relayed_unchecked",  # a relayed v3 transaction not pooled: too many wait for their check
    "relayed_pool_full",  # relayed, of a writer holding its share of the pool (its peer holds it)
    "wrong_channel",  # a consensus message named another channel
)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
SCORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ChannelGauges:
    """What a channel reports when it is scraped."""

    height: int
    executed_height: int
    round: int
    view_changes: int  # rounds entered without a certified block (complaints, timeouts)
    complaints: int  # complaints this peer made
    pool_size: int
    pool_bytes: int
    is_leader: bool
    round_timeout: float  # the round timer before failures double it (it follows slow rounds)


class ChannelMetrics:
    """The counters and histograms of one channel, children bound to its label once."""

    def __init__(self, peer: PeerMetrics, channel: str) -> None:
        self.channel = channel
        self.peer = peer
        self.committed_txs = peer.committed_txs.labels(channel)
        self.committed_blocks = peer.committed_blocks.labels(channel)
        self.accepted_txs = peer.accepted_txs.labels(channel)
        self.finalisation = peer.finalisation.labels(channel)
        self.score_execution = peer.score_execution.labels(channel)
        self._refused = {r: peer.refused.labels(channel, r) for r in REFUSAL_REASONS}
        self._intakes: dict[bytes, float] = {}  # tx hash -> monotonic intake time (insert order)

    def refused(self, reason: str, count: int = 1) -> None:
        """Count `count` refused inputs for `reason` (one of REFUSAL_REASONS)."""
        self._refused[reason].inc(count)

    def accepted(self, count: int, sample: Iterable[bytes], now: float | None = None) -> None:
        """A batch of `count` transactions was accepted into the pool: count it and time the
        hashes of `sample` (at most SAMPLES_PER_BATCH are kept) until their block is final."""
        self.accepted_txs.inc(count)
        intakes = self._intakes
        now = time.monotonic() if now is None else now
        for tx_hash in itertools.islice(sample, SAMPLES_PER_BATCH):
            if len(intakes) >= MAX_PENDING_INTAKES:  # the oldest never became final: forget it
                del intakes[next(iter(intakes))]
            intakes[tx_hash] = now

    def committed(self, block: Block, now: float | None = None) -> None:
        """A block became final: count it and observe the finality of its timed transactions."""
        self.committed_blocks.inc()
        self.committed_txs.inc(len(block.transactions))
        intakes = self._intakes
        if not intakes:
            return
        now = time.monotonic() if now is None else now
        for tx in block.transactions:
            started = intakes.pop(tx.hash, None)
            if started is not None:
                self.finalisation.observe(now - started)

    @property
    def pending_intakes(self) -> int:
        """Accepted transactions timed and not final yet."""
        return len(self._intakes)


class _ChannelCollector(Collector):
    """Reads each channel's gauges when the registry is scraped."""

    def __init__(self, channels: Callable[[], Mapping[str, Callable[[], ChannelGauges]]]) -> None:
        self._channels = channels

    def describe(self) -> Iterable[Metric]:
        """The families' names, without reading any channel (for the registry's name checks)."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for name, read in sorted(self._channels().items()):
            gauges = read()
            for key, family in families.items():
                family.add_metric([name], float(getattr(gauges, key)))
        return list(families.values())

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        return {
            "height": GaugeMetricFamily(
                "loopchain_block_height", "Height of the last final block", labels=["channel"]
            ),
            "executed_height": GaugeMetricFamily(
                "loopchain_executed_height",
                "Height of the last block the SCORE executed",
                labels=["channel"],
            ),
            "round": GaugeMetricFamily(
                "loopchain_round", "Consensus round this peer is in", labels=["channel"]
            ),
            "view_changes": CounterMetricFamily(
                "loopchain_view_changes",
                "Rounds entered without a certified block (leader complaints, timeouts)",
                labels=["channel"],
            ),
            "complaints": CounterMetricFamily(
                "loopchain_leader_complaints",
                "Complaints against a leader this peer made",
                labels=["channel"],
            ),
            "pool_size": GaugeMetricFamily(
                "loopchain_tx_pool_size", "Transactions in the pool", labels=["channel"]
            ),
            "pool_bytes": GaugeMetricFamily(
                "loopchain_tx_pool_bytes",
                "Memory the transactions in the pool hold (estimated; TX_POOL_MAX_BYTES bounds it)",
                labels=["channel"],
            ),
            "is_leader": GaugeMetricFamily(
                "loopchain_is_leader", "1 while this peer leads the round", labels=["channel"]
            ),
            "round_timeout": GaugeMetricFamily(
                "loopchain_round_timeout_seconds",
                "The round timer before failures double it: TIMEOUT_FOR_LEADER_COMPLAIN, or more "
                "where certified rounds take longer",
                labels=["channel"],
            ),
        }


class _RestartsCollector(Collector):
    """Reads how often child processes were started again when the registry is scraped: by
    `label` (one series per key of what `restarts` returns), or one series when `label` is ""."""

    def __init__(
        self, name: str, documentation: str, label: str, restarts: Callable[[], Mapping[str, int]]
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._restarts = restarts

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, count in sorted(self._restarts().items()):
            family.add_metric([key] if self._label else [], float(count))
        return [family]

    def _family(self) -> CounterMetricFamily:
        labels = [self._label] if self._label else None
        return CounterMetricFamily(self._name, self._documentation, labels=labels)


class PeerMetrics:
    """The metrics of one peer process object, in their own registry."""

    def __init__(
        self,
        channels: Callable[[], Mapping[str, Callable[[], ChannelGauges]]] = dict,
        *,
        process: bool = False,
        worker_restarts: Callable[[], Mapping[str, int]] | None = None,
        proxy_restarts: Callable[[], int] | None = None,
    ) -> None:
        """`worker_restarts`: the restarts of the peer's channel workers by channel (a peer
        running its channels in worker processes); `proxy_restarts`: of its REST proxy."""
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.committed_txs = Counter(
            "loopchain_committed_txs",
            "Transactions in blocks this peer finalised",
            ["channel"],
            registry=registry,
        )
        self.committed_blocks = Counter(
            "loopchain_committed_blocks",
            "Blocks this peer finalised",
            ["channel"],
            registry=registry,
        )
        self.accepted_txs = Counter(
            "loopchain_accepted_txs",
            "Client transactions this peer accepted into its pool",
            ["channel"],
            registry=registry,
        )
        self.finalisation = Histogram(
            "loopchain_finalisation_seconds",
            "From this peer accepting a transaction to its block being final (sampled per batch)",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.score_execution = Histogram(
            "loopchain_score_execution_seconds",
            "Time the SCORE took to execute one final block",
            ["channel"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.refused = Counter(
            "loopchain_refused_inputs",
            "Inputs this peer refused, by reason",
            ["channel", "reason"],
            registry=registry,
        )
        self.rpc_errors = Counter(
            "loopchain_grpc_errors",
            "gRPC calls this peer answered with an error, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.channel_stopped = Gauge(
            "loopchain_channel_stopped",
            "1 once a channel stopped on this peer for good (its storage failed, or its worker "
            "crashed too often: the log says why); the peer's other channels go on",
            ["channel"],
            registry=registry,
        )
        registry.register(_ChannelCollector(channels))
        if worker_restarts is not None:
            registry.register(
                _RestartsCollector(
                    "loopchain_channel_worker_restarts",
                    "Times a channel's worker process exited and was started again",
                    "channel",
                    worker_restarts,
                )
            )
        if proxy_restarts is not None:
            registry.register(
                _RestartsCollector(
                    "loopchain_rest_proxy_restarts",
                    "Times this peer's REST proxy process exited and was started again",
                    "",
                    lambda: {"": proxy_restarts()},
                )
            )
        if process:  # CPU, memory and open files of this process (not in tests' shared process)
            register_process_collectors(registry, "loopchain")

    def channel(self, name: str) -> ChannelMetrics:
        """The metrics of channel `name` (a channel this peer serves)."""
        return ChannelMetrics(self, name)

    def rpc_error(self, method: str, code: str) -> None:
        """Count a gRPC call answered with status `code` (method and code from fixed sets)."""
        self.rpc_errors.labels(method, code).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (at most MAX_EXPOSITION_BYTES)."""
        text = generate_latest(self.registry)
        if len(text) > MAX_EXPOSITION_BYTES:
            raise OverflowError(
                f"the metrics exposition is {len(text)} bytes, limit {MAX_EXPOSITION_BYTES}"
            )
        return text


def merged_exposition(own: bytes, workers: Mapping[str, bytes]) -> bytes:
    """One exposition of a peer and its channel workers: each family once, with the samples of
    all of them. A worker's process figures (CPU, memory, open files) are labelled with its
    channel; its other series without a channel (gRPC errors by method and code, log shipping)
    are added to the peer's, so the peer's figures mean the same with workers or without."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, frozenset[tuple[str, str]]], float] = {}

    def add(text: bytes, channel: str | None) -> None:
        for family in text_string_to_metric_families(text.decode()):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
            per_process = family.name.startswith(PROCESS_FAMILY_PREFIX)
            for sample in family.samples:
                labels = sample.labels
                if channel is not None and per_process and "channel" not in labels:
                    labels = {**labels, "channel": channel}
                key = (family.name, sample.name, frozenset(labels.items()))
                values[key] = values.get(key, 0.0) + sample.value

    add(own, None)
    for channel, text in sorted(workers.items()):
        add(text, channel)
    for (family_name, name, labels), value in values.items():
        families[family_name].samples.append(Sample(name, dict(labels), value))

    class _Merged(Collector):
        def collect(self) -> Iterable[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    text = generate_latest(registry)
    if len(text) > MAX_EXPOSITION_BYTES:
        raise OverflowError(
            f"the metrics exposition is {len(text)} bytes, limit {MAX_EXPOSITION_BYTES}"
        )
    return text
