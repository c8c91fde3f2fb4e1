"""A SCORE process's records are in its peer's LOG_FILE_PATH (the real radiostation.py and
peer.py): before, a SCORE process logged to the stderr it shares with its peer alone, unlabelled
and in UTC, so an operator reading the peer's log file never saw them."""

from __future__ import annotations

import re
from pathlib import Path

from tools.procs import LocalNetwork, child_pids, wait_until

CHANNEL = "loopchain_default"


def test_a_peers_log_file_holds_its_score_processs_records_from_start_to_stop(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "node.log"
    net = LocalNetwork(tmp_path, {"LOG_FILE_PATH": str(log_file), "LOOPCHAIN_LOG_LEVEL": "INFO"})
    try:
        net.start_radiostation()
        port = net.start_peer()
        popen = net.peers[port].popen
        assert popen is not None
        said = re.compile(
            rf"\[peer:{port}\] \[score:{CHANNEL}\] loopchain\.score: SCORE process (\d+) (\w+)"
        )

        def score_said(word: str) -> list[int]:
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            return [int(m[1]) for m in said.finditer(text) if m[2] == word]

        [pid] = wait_until(
            lambda: score_said("serving"), 60, "the SCORE's first record in the file"
        )
        assert "scoreservice.process" in child_pids(popen.pid)[pid]
    finally:
        net.stop_and_check()
    # its last record, written as it stopped with its peer, is in the file too
    assert score_said("stopping") == [pid]
