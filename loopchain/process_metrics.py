"""What every process's /metrics shows about the process itself, beside its own figures: CPU,
memory and open files (prometheus_client's ProcessCollector) and the log records and monitoring
events it failed to deliver to the log collector and the bytes it keeps for one it cannot reach
(loopchain.monitor_log)."""

from __future__ import annotations

from collections.abc import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loopchain import monitor_log

# No `*_created` series: they double the text and no dashboard of ours reads them.
prometheus_client.disable_created_metrics()


class _Shipping(Collector):
    def __init__(self, namespace: str) -> None:
        self._namespace = namespace

    def collect(self) -> Iterable[Metric]:
        dropped = CounterMetricFamily(
            f"{self._namespace}_monitor_log_dropped",
            "Log records and monitoring events this process failed to deliver to the collector",
        )
        dropped.add_metric([], float(monitor_log.dropped_records()))
        pending = GaugeMetricFamily(
            f"{self._namespace}_monitor_log_pending_bytes",
            "Bytes kept for a log collector that cannot be reached now",
        )
        pending.add_metric([], float(monitor_log.pending_bytes()))
        return [dropped, pending]


def register_process_collectors(registry: CollectorRegistry, namespace: str) -> None:
    """Add the process's own figures to `registry`, named `<namespace>_process_*` and
    `<namespace>_monitor_log_dropped_total` and `<namespace>_monitor_log_pending_bytes`."""
    ProcessCollector(namespace=namespace, registry=registry)
    registry.register(_Shipping(namespace))
