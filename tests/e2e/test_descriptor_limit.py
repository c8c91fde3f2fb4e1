"""A peer whose process may open few file descriptors (a low hard limit, as some hosts set)
keeps its stores, its SCORE's socket and its links while a flood of connections reaches its gRPC
port: the port's connections take at most half of the descriptors. Before, the flood took them
all: the peer's own sockets failed ('Too many open files') and its REST answered 504."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._flood import flood
from tools.procs import LocalNetwork, wait_until

LIMIT = 512  # descriptors the peer may open: half, 256, for connections to its port
FLOOD = 700  # connections opened to it, each sending an HTTP/2 start and then nothing

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_flood_of_connections_leaves_a_peer_with_few_descriptors_serving(
    tmp_path: Path,
) -> None:
    network = LocalNetwork(tmp_path)
    try:
        network.start_radiostation()
        port = network.start_peer(prefix=["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"])
        wait_until(lambda: network.sees_every_validator(), 60, "the peer to know itself")
        peer = network.peers[port]
        assert peer.popen is not None
        with flood(port, FLOOD):
            tx_hash = network.submit(port, {"flooded": True})
            wait_until(lambda: network.final_on(port, tx_hash) or None, 60, "the tx final")
            held = open_descriptors(peer.popen.pid)
            assert held < LIMIT, held
        network.submit(port, {"after": True})
    finally:
        codes = network.stop_all()
    log = network.peers[port].log_text()
    assert "at most 256 gRPC connections a port (512 wanted)" in log
    assert "Too many open files" not in log
    network.check(codes)
