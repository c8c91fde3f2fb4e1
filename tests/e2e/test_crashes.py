"""A crash costs only time: kill -9 of a peer ends its REST proxy and SCORE process too, and the
restarted peer gets its ports back (the real radiostation.py, peer.py and their children)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.procs import LocalNetwork, child_pids, pid_alive, wait_until


def test_killed_peer_takes_its_children_along_and_gets_its_ports_back(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path)
    try:
        net.start_radiostation()
        port = net.start_peer()
        popen = net.peers[port].popen
        assert popen is not None

        def both_children() -> dict[int, str] | None:
            kids = child_pids(popen.pid)
            rest = any("rest_proxy.py" in c for c in kids.values())
            score = any("scoreservice.process" in c for c in kids.values())
            return kids if rest and score else None

        children = wait_until(both_children, 30, "the peer's REST proxy and SCORE process")
        os.kill(popen.pid, signal.SIGKILL)  # the peer alone: its children are not signalled
        popen.wait()
        wait_until(
            lambda: not any(pid_alive(pid) for pid in children), 15, "the orphaned children to end"
        )
        net.start_peer(port)  # the same ports, at once
        assert net.status(port)["peer_id"]
        log = net.peers[port].log_text()
        assert "address already in use" not in log and "cannot listen" not in log, log[-2000:]
    finally:
        net.stop_and_check()
