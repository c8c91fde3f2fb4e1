"""A crash costs only time: kill -9 of a peer ends its REST proxy and SCORE process too, and the
restarted peer gets its ports back (the real radiostation.py, peer.py and their children)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from tools.procs import LocalNetwork, child_pids, http, pid_alive, wait_until


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


def test_sigterm_under_load_ends_every_process_by_itself_and_tears_nothing(
    tmp_path: Path,
) -> None:
    net = LocalNetwork(tmp_path)
    try:
        net.start_radiostation()
        ports = [net.start_peer() for _ in range(2)]
        acknowledged: list[str] = []
        stop_load = threading.Event()

        def client(index: int) -> None:
            base = net.rest(ports[index % len(ports)])
            body = json.dumps({"client": index}).encode()
            while not stop_load.is_set():
                with contextlib.suppress(OSError, ValueError):
                    status, reply = http("POST", f"{base}/api/v1/transactions", body, timeout=5)
                    if status == 200 and reply.get("response_code") == 0:
                        acknowledged.append(str(reply["tx_hash"]))

        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for thread in clients:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 200, 120, "200 acknowledged transactions")
        for proc in net.procs:  # every process at once, the clients still sending
            proc.send_signal(signal.SIGTERM)
        for proc in net.procs:  # no second signal: each ends by itself (or its watchdog ends it)
            assert proc.wait(timeout=60) == 0, f"{proc.name} did not end cleanly"
        stop_load.set()
        for thread in clients:
            thread.join(30)
        net.assert_clean_logs()
        # nothing torn: the same stores start again and finalise everything acknowledged
        net.start_radiostation()
        for port in ports:
            net.start_peer(port)

        def all_final() -> bool:
            while acknowledged:
                status, body = http(
                    "GET", f"{net.rest(ports[0])}/api/v1/transactions?hash={acknowledged[-1]}"
                )
                if status != 200 or int(body["block_height"]) < 0:
                    return False
                acknowledged.pop()
            return True

        wait_until(all_final, 120, "every acknowledged transaction final after the restart")
    finally:
        net.stop_and_check()


def test_a_peer_stopped_under_load_answers_every_submission_in_flight(tmp_path: Path) -> None:
    # SIGTERM to the peer alone (as docker stop and systemd send it): the submissions its proxy
    # answers are taken (200) or refused (503), none "whether it took them is unknown" (a
    # connection the stopping proxy closes under a request gives no answer, as HTTP allows)
    net = LocalNetwork(tmp_path)
    try:
        net.start_radiostation()
        port = net.start_peer()
        base = net.rest(port)
        answers: list[tuple[int, Any]] = []
        stop_load = threading.Event()

        def client(index: int) -> None:
            sent = 0
            while not stop_load.is_set():
                sent += 1
                body = json.dumps({"client": index, "n": sent}).encode()
                try:
                    answers.append(http("POST", f"{base}/api/v1/transactions", body, timeout=30))
                except OSError:  # the proxy gone: no answer, so nothing acknowledged
                    if not net.peers[port].alive:
                        return

        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(32)]
        for thread in clients:
            thread.start()
        wait_until(lambda: len(answers) >= 300, 120, "300 answered submissions")
        net.peers[port].send_signal(signal.SIGTERM)
        assert net.peers[port].wait(timeout=60) == 0
        stop_load.set()
        for thread in clients:
            thread.join(40)
        odd = [(status, reply) for status, reply in answers if status not in (200, 503)]
        assert not odd, odd[:5]
        pending = {str(reply["tx_hash"]) for status, reply in answers if status == 200}
        net.start_peer(port)

        def all_final() -> bool:
            pending.difference_update([tx for tx in list(pending) if net.final_on(port, tx)])
            return not pending

        wait_until(all_final, 120, "every acknowledged transaction final after the restart")
    finally:
        net.stop_and_check()
