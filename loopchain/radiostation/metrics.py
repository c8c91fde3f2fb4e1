"""The RadioStation's Prometheus metrics, served read-only at GET /metrics of its REST port: peers
registered and connected per channel (read when scraped), leader changes, refused operator calls
and refused gRPC calls. Label values are the configured channels and fixed sets of reasons,
methods and codes, never what a caller sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from loopchain.process_metrics import register_process_collectors
from loopchain.radiostation.registry import PeerView

METRICS_PATH = "/metrics"
STATUS_CONNECTED = 1
PEER_TYPE_LEADER = 1
ADMIN_REFUSALS = ("no_token", "wrong_token")
GRPC_METHODS = ("ConnectPeer", "GetPeerList", "Heartbeat")

Views = Callable[[], Mapping[str, Sequence[PeerView]]]


class _PeerCollector(Collector):
    """Counts each channel's registered and connected peers when scraped."""

    def __init__(self, views: Views) -> None:
        self._views = views

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "loopchain_radiostation_peers_registered",
                "Peers registered in the channel",
                labels=["channel"],
            ),
            GaugeMetricFamily(
                "loopchain_radiostation_peers_connected",
                "Peers of the channel whose heartbeat is fresh",
                labels=["channel"],
            ),
            GaugeMetricFamily(
                "loopchain_radiostation_leader_known",
                "1 when a connected peer reports itself the channel's leader",
                labels=["channel"],
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        registered, connected, leader = families = self._families()
        for channel, views in sorted(self._views().items()):
            live = [v for v in views if v.status == STATUS_CONNECTED]
            registered.add_metric([channel], len(views))
            connected.add_metric([channel], len(live))
            leader.add_metric([channel], any(v.peer_type == PEER_TYPE_LEADER for v in live))
        return families


class StationMetrics:
    """The metrics of one RadioStation, in a registry of their own."""

    def __init__(self, views: Views, *, process: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.leader_changes = Counter(
            "loopchain_radiostation_leader_changes",
            "Times a channel's leader, as its peers report it, changed",
            ["channel"],
            registry=self.registry,
        )
        self.admin_refused = Counter(
            "loopchain_radiostation_admin_refused",
            "Operator calls refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.grpc_refused = Counter(
            "loopchain_radiostation_grpc_refused",
            "gRPC calls refused, by method and response code",
            ["method", "code"],
            registry=self.registry,
        )
        self.registry.register(_PeerCollector(views))
        if process:
            register_process_collectors(self.registry, "loopchain_radiostation")

    def refused_call(self, method: str, code: str) -> None:
        """Count a refused gRPC call (method one of GRPC_METHODS, code a status or response code
        name)."""
        self.grpc_refused.labels(method, code).inc()

    def route(self) -> web.RouteDef:
        """GET /metrics: the exposition in the Prometheus text format."""

        async def metrics(request: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return web.get(METRICS_PATH, metrics)
