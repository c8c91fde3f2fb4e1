"""The options of the project's gRPC clients and servers agree with each other."""

from __future__ import annotations

from loopchain.configure import load_config
from loopchain.p2p import grpc_util

CONFIG = load_config(environ={})


def test_servers_welcome_the_keepalive_pings_their_clients_send() -> None:
    """A client pings every keepalive_time while it has calls open (a proxy's idle batch
    streams, an idle link stream); a server taking pings less often than that counts strikes
    and ends the connection with GOAWAY "too_many_pings" (an ERROR line in the client's log)."""
    server = dict(grpc_util.server_options(CONFIG, 1 << 20, None))
    for watched in (False, True):
        client = dict(grpc_util.channel_options(CONFIG, watched=watched))
        interval = client["grpc.keepalive_time_ms"]
        assert server["grpc.http2.min_ping_interval_without_data_ms"] < interval


def test_a_peer_link_pings_every_second_calls_open_or_not_and_servers_take_it() -> None:
    """A peer link pings without calls open, and a server without calls takes those pings (else
    it allows one in two hours); a ping not answered in time ends the connection, whichever
    part of gRPC sent it (a keepalive, or a flow-control probe, whose own timeout is a minute)."""
    server = dict(grpc_util.server_options(CONFIG, 1 << 20, None))
    link = dict(grpc_util.channel_options(CONFIG, watched=True))
    assert link["grpc.keepalive_time_ms"] == grpc_util.LINK_PING_INTERVAL_MS
    assert (
        link["grpc.keepalive_permit_without_calls"]
        == server["grpc.keepalive_permit_without_calls"]
        == 1
    )
    timeout = grpc_util.LINK_PING_TIMEOUT_MS
    assert link["grpc.keepalive_timeout_ms"] == link["grpc.http2.ping_timeout_ms"] == timeout
    assert link["grpc.http2.max_pings_without_data"] == 0
    other = dict(grpc_util.channel_options(CONFIG))
    assert other["grpc.keepalive_time_ms"] == grpc_util.CLIENT_PING_INTERVAL_MS
    assert "grpc.keepalive_permit_without_calls" not in other


def test_a_connection_attempt_is_given_up_well_before_grpcs_twenty_seconds() -> None:
    """gRPC gives a connection attempt 20 s by default: across a network that drops packets
    silently, an attempt made during a cut held the connection's return up to ~8 s past the heal
    (the kernel's SYN retransmissions). Every channel gives one up after MIN_CONNECT_TIMEOUT_MS,
    room for the handshakes' three round trips between far peers and a lost packet, and beyond
    gRPC's longest backoff between two attempts, so that the attempts follow each other."""
    for watched in (False, True):
        options = dict(grpc_util.channel_options(CONFIG, watched=watched))
        connect = options["grpc.min_reconnect_backoff_ms"]
        assert connect == grpc_util.MIN_CONNECT_TIMEOUT_MS
        assert options["grpc.max_reconnect_backoff_ms"] <= connect < 20_000
        assert connect >= 3 * 2 * 300 + 2 * 1000  # 3 round trips at 300 ms, 2 retransmissions
