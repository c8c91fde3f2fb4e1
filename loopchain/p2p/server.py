"""The peer's gRPC server: its PeerService on the public port (and, with TLS, a plain loopback
port for its own REST proxy and tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypedDict

import grpc

from loopchain.configure import Config
from loopchain.p2p import grpc_util
from loopchain.p2p.peer_service import (
    MAX_CLIENT_STREAMS,
    MAX_INBOUND_STREAMS,
    PeerBackend,
    PeerServicer,
    ServiceMonitor,
    max_proposal_bytes,
)
from loopchain.p2p.worker_link import ForwardedCallers, WorkerLink
from loopchain.protos import loopchain_pb2_grpc as pb_grpc

# calls a peer takes at once besides its inbound link streams and its REST proxy's
# REST_MAX_INFLIGHT (other peers' one-off calls, the RadioStation's probes, tools); more are
# answered RESOURCE_EXHAUSTED
MAX_OTHER_CALLS = 256


def _max_unary(config: Config) -> int:
    """One-off calls a peer takes at once: its proxy's and the others'; the rest of its call
    bound stays for streams, which such calls cannot crowd out."""
    return int(config.REST_MAX_INFLIGHT) + MAX_OTHER_CALLS


def _max_calls(config: Config) -> int:
    """Calls one source (an address: grpc_util.call_source) may have open on a peer's port at
    once, before their requests are read; each kind is bounded in all where it is handled."""
    return MAX_INBOUND_STREAMS + MAX_CLIENT_STREAMS + _max_unary(config)


# the server a peer serves its own REST proxy on: its connections (one process, a channel each
# for its calls and its batch streams), and the one-off calls it may make besides its
# REST_MAX_INFLIGHT reads (batches falling back from their streams, health probes)
OWN_PROXY_CONNECTIONS = 8
OWN_PROXY_OTHER_CALLS = 64


class PeerServer:
    """A started PeerService (and the server of its own proxy, `own`); `stop` ends the inbound
    streams of other peers' links and lets calls in flight finish for `grace` seconds."""

    def __init__(
        self, server: grpc.aio.Server, servicer: PeerServicer, own: PeerServer | None = None
    ) -> None:
        self._server = server
        self._servicer = servicer
        self._own = own

    def serving_channels(self, count: int) -> None:
        """See PeerServicer.serving_channels."""
        self._servicer.serving_channels(count)

    async def stop(self, grace: float) -> None:
        await asyncio.gather(
            self._stop(grace), *([self._own.stop(grace)] if self._own is not None else [])
        )

    async def _stop(self, grace: float) -> None:
        await self._servicer.end_streams(grace)
        await self._server.stop(grace=grace)


async def _serve(
    config: Config,
    servicer: PeerServicer,
    bind: Callable[[grpc.aio.Server], None],
    max_rpcs: int | None,
    max_unary: int | None = None,
    max_connections: int = grpc_util.SERVER_MAX_CONNECTIONS,
    own: PeerServer | None = None,
) -> PeerServer:
    """Start a server of `servicer` bound by `bind`, taking `max_rpcs` calls at once, of them
    `max_unary` one-off calls, and `max_connections` connections a port; the refusals of malformed requests are counted by the servicer's
    monitor."""
    monitor = servicer.monitor
    server = grpc_util.create_server(
        config,
        monitor.rpc_error if monitor is not None else None,
        max_receive=grpc_util.max_request_bytes(config),
        max_rpcs=max_rpcs,
        max_unary=max_unary,
        max_connections=max_connections,
    )
    pb_grpc.add_PeerServiceServicer_to_server(servicer, server)
    bind(server)
    await server.start()
    return PeerServer(server, servicer, own)


class _Sizes(TypedDict):
    max_proposal: int
    max_reply: int
    max_proposal_txs: int


def _sizes(config: Config) -> _Sizes:
    """A PeerServicer's bounds: of a proposal it takes (bytes, transactions), of a reply it
    makes."""
    return {
        "max_proposal": max_proposal_bytes(int(config.MAX_BLOCK_KBYTES)),
        "max_reply": int(config.GRPC_MAX_MESSAGE_BYTES),
        "max_proposal_txs": int(config.MAX_BLOCK_TX_NUM),
    }


async def start_peer_server(
    backend: PeerBackend,
    peer_id: str,
    config: Config,
    port: int,
    tls: grpc_util.Tls | None,
    monitor: ServiceMonitor | None = None,
    workers: Callable[[str], WorkerLink | None] | None = None,
    own_socket: str | None = None,
) -> PeerServer:
    """Bind and start the server (OSError with a clear message when a port is taken); errors it
    answers are counted by `monitor`, whose metrics GetMetrics serves. Calls naming a channel
    `workers` has a link for go to that channel's worker process. With `own_socket`, the same
    service is served on that unix socket too, with bounds of its own, for the REST proxy this
    peer starts: whatever other callers hold of the port's connections and calls, its proxy
    still reaches it."""

    def bind(server: grpc.aio.Server) -> None:
        grpc_util.bind(server, config.IP_LOCAL, port, tls)
        if tls is not None:
            grpc_util.bind(server, "127.0.0.1", port + int(config.PORT_DIFF_INNER_SERVICE))

    def make_servicer() -> PeerServicer:
        return PeerServicer(backend, peer_id, tls, monitor, workers=workers, **_sizes(config))

    servicer = make_servicer()
    own = None
    if own_socket is not None:
        own = await _serve(
            config,
            make_servicer(),
            _unix_socket(own_socket),
            int(config.REST_MAX_INFLIGHT) + OWN_PROXY_OTHER_CALLS + MAX_CLIENT_STREAMS,
            int(config.REST_MAX_INFLIGHT) + OWN_PROXY_OTHER_CALLS,
            OWN_PROXY_CONNECTIONS,
        )
    ports = 1 if tls is None else 2
    try:
        return await _serve(
            config,
            servicer,
            bind,
            _max_calls(config),
            _max_unary(config),
            grpc_util.connections_a_port(ports),
            own,
        )
    except BaseException:
        if own is not None:
            await own.stop(0)
        raise


def _unix_socket(path: str) -> Callable[[grpc.aio.Server], None]:
    def bind(server: grpc.aio.Server) -> None:
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise OSError(f"cannot listen on unix:{path}")

    return bind


async def start_worker_server(
    backend: PeerBackend,
    peer_id: str,
    config: Config,
    socket_path: str,
    tls: grpc_util.Tls | None,
    monitor: ServiceMonitor | None = None,
) -> PeerServer:
    """A channel worker's server, on a unix socket only its peer reaches: who calls is what the
    peer names in the call's metadata (with TLS on; without it, no one is named)."""
    callers = ForwardedCallers() if tls is not None else None
    servicer = PeerServicer(backend, peer_id, None, monitor, callers=callers, **_sizes(config))
    # its one caller, the peer, forwards the calls it took within its own bounds (and its link
    # holds a stream per caller link: a bound per connection would make them wait for good)
    return await _serve(config, servicer, _unix_socket(socket_path), max_rpcs=None)
