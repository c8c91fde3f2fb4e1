"""A peer keeps its REST proxy running (real processes): a proxy killed with -9 is started again
on the same port, and one that cannot listen yet (its port still held, as by the proxy of a peer
process killed a moment before) is started again until it can. A peer never runs on without its
REST API, nor is its proxy kept out by other callers holding its gRPC port's connections."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

from loopchain.p2p.grpc_util import SERVER_MAX_CONNECTIONS
from tests._flood import flood
from tools.procs import (
    REST_DIFF,
    LocalNetwork,
    child_pids,
    cmdline_of,
    hold_port,
    http,
    running_network,
    wait_until,
)


def _proxy_of(peer_pid: int) -> int | None:
    found = [pid for pid, cmd in child_pids(peer_pid).items() if "rest_proxy.py" in cmd]
    return found[0] if found else None


def _serving(net: LocalNetwork, port: int) -> bool:
    try:
        status, _ = http("GET", f"{net.rest(port)}/api/v1/status/peer")
    except OSError:
        return False
    return status == 200


def wait_for_another_proxy(
    net: LocalNetwork, port: int, peer_pid: int, old: int, deadline: float
) -> None:
    """Wait until a REST proxy other than `old` serves `port`'s REST API."""

    def served_by_another() -> bool:
        now = _proxy_of(peer_pid)
        return now is not None and now != old and _serving(net, port)

    wait_until(served_by_another, deadline, "a new REST proxy serving the port")


def test_a_killed_proxy_is_started_again_on_its_port(tmp_path: Path) -> None:
    with running_network(tmp_path, 1) as net:
        port, peer = next(iter(net.peers.items()))
        first = _proxy_of(peer.pid)
        assert first is not None and _serving(net, port)
        os.kill(first, signal.SIGKILL)
        wait_for_another_proxy(net, port, peer.pid, first, 60)
        assert f"REST proxy on port {port + REST_DIFF} exited (signal 9)" in peer.log_text()
        with urllib.request.urlopen(f"{net.rest(port)}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "\nloopchain_rest_proxy_restarts_total 1.0\n" in metrics


def test_a_proxy_that_cannot_listen_yet_is_started_again_until_it_can(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path)
    try:
        net.start_radiostation()
        port = net.new_peer_port()
        holder = hold_port(port + REST_DIFF)
        try:
            net.start_peer(port, wait=False)
            peer = net.peers[port]
            retried = f"REST proxy on port {port + REST_DIFF} exited (status 1); starting it again"
            wait_until(lambda: retried in peer.log_text(), 60, "the proxy to be started again")
            assert "cannot listen on" in peer.log_text()
            assert peer.alive
        finally:
            holder.close()
        wait_until(lambda: _serving(net, port), 60, "the REST API once the port is free")
    finally:
        net.stop_and_check()


def test_a_proxy_started_again_reaches_its_peer_while_others_hold_the_peers_port(
    tmp_path: Path,
) -> None:
    """The peer serves the proxy it starts on a socket of its own (named on the proxy's command
    line): with every connection its gRPC port takes held by idle clients (anyone may open them
    without TLS), a proxy killed and started again still reaches its peer, which takes and
    finalises a transaction. (That the port's bound no longer applies to the proxy is shown over
    real servers in tests/integration/test_peer_link.py.)"""
    with running_network(tmp_path, 1) as net:
        port, peer = next(iter(net.peers.items()))
        first = _proxy_of(peer.pid)
        assert first is not None
        assert "--peer-socket" in cmdline_of(first)
        with flood(port, SERVER_MAX_CONNECTIONS + 50):
            os.kill(first, signal.SIGKILL)

            def served_by_another() -> bool:
                now = _proxy_of(peer.pid)
                return now is not None and now != first and _serving(net, port)

            wait_until(served_by_another, 60, "a new REST proxy reaching its peer")
            tx_hash = net.submit(port, {"during": "flood"})
            wait_until(lambda: net.final_on(port, tx_hash), 60, "the transaction final")
