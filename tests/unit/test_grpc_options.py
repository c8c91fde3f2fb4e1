"""The options of the project's gRPC clients and servers agree with each other."""

from __future__ import annotations

from loopchain.configure import load_config
from loopchain.p2p import grpc_util

CONFIG = load_config(environ={})


def test_servers_welcome_the_keepalive_pings_their_clients_send() -> None:
    """A client pings every keepalive_time while it has calls open (a proxy's idle batch
    streams, an idle link stream); a server taking pings less often than that counts strikes
    and ends the connection with GOAWAY "too_many_pings" (an ERROR line in the client's log)."""
    client = dict(grpc_util.channel_options(CONFIG))
    server = dict(grpc_util.server_options(CONFIG, 1 << 20, None))
    assert server["grpc.http2.min_ping_interval_without_data_ms"] < client["grpc.keepalive_time_ms"]
