"""A peer whose SCORE is not the validators' says so. A validator and two auditors in a listed
channel: one auditor's DEFAULT_SCORE_REPOSITORY_PATH holds another package under the channel's
package name (as a package changed after blocks were made, or another checkout, would). Before,
that auditor executed every block with it and served its own results and queries without a word:
an auditor never votes, so no vote of its could be refused. Now it logs that its state differs
from the one the chain carries, once, and answers no query; the validator and the other auditor
say nothing of it and answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e._crashes import environment
from tools.procs import ROOT, LocalNetwork, get, http, wait_until

CHANNEL = "loopchain_default"
DEADLINE = 60.0
DIVERGED = "differs from the one the chain carries"


def other_repository(path: Path) -> Path:
    """A SCORE repository whose loopchain/default is score/test/raises (every invoke fails)."""
    shutil.copytree(ROOT / "score" / "test" / "raises", path / "loopchain" / "default")
    return path


def test_a_peer_whose_score_is_not_the_validators_says_its_state_differs(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path, {"ENABLE_CHANNEL_AUTH": True})
    validator, honest, odd = ports = sorted(net.new_peer_port() for _ in range(3))
    ids = {port: net.make_peer_key(port) for port in ports}
    peers = [{"peer_id": ids[validator], "peer_target": f"127.0.0.1:{validator}"}] + [
        {"peer_id": ids[p], "peer_target": f"127.0.0.1:{p}", "role": "auditor"}
        for p in (honest, odd)
    ]
    (tmp_path / "channel_manage_data.json").write_text(json.dumps({CHANNEL: {"peers": peers}}))
    try:
        net.start_radiostation()
        net.start_peer(validator)
        net.start_peer(honest)
        with environment("DEFAULT_SCORE_REPOSITORY_PATH", str(other_repository(tmp_path / "o"))):
            net.start_peer(odd)
        roles = {validator: "validator", honest: "auditor", odd: "auditor"}
        wait_until(
            lambda: all(net.status(p)["role"] == role for p, role in roles.items()),
            DEADLINE,
            "a validator and two auditors",
        )
        # each block carries the roots of an earlier one: a few transactions, one after another
        for n in range(3):
            tx_hash = net.submit(validator, {"divergence": n})
            wait_until(
                lambda h=tx_hash: all(net.final_on(p, h) for p in ports),
                DEADLINE,
                f"transaction {n} final on every peer",
            )
        odd_peer = net.peers[odd]
        wait_until(lambda: DIVERGED in odd_peer.log_text(), DEADLINE, "the odd auditor's word")
        said = [line for line in odd_peer.log_text().splitlines() if DIVERGED in line]
        assert len(said) == 1, said
        assert " ERROR " in said[0] and "loopchain/default" not in said[0], said
        assert "test/raises version 1.0.0" in said[0], said  # the package it runs, named
        status = get(f"{net.rest(odd)}/api/v1/status/score")
        assert "this peer's state differs from the chain's from height" in status["message"]
        # nor does it answer queries as if its state were the chain's (it did before)
        query = json.dumps({"method": "echo", "params": {"n": 1}, "channel": CHANNEL}).encode()
        code, answer = http("POST", f"{net.rest(odd)}/api/v1/query", query)
        assert "differs from the chain's from height" in json.dumps(answer), (code, answer)
        assert "ask another peer" in json.dumps(answer) and code != 200, (code, answer)
        for port in (validator, honest):
            code, answer = http("POST", f"{net.rest(port)}/api/v1/query", query)
            assert code == 200 and answer["response_code"] == 0, (port, code, answer)
        for port in (validator, honest):
            assert DIVERGED not in net.peers[port].log_text(), port
            assert "differs" not in str(get(f"{net.rest(port)}/api/v1/status/score")), port
            assert "still differs" not in net.peers[port].log_text(), port
        # every peer holds the same blocks: only the odd one's results differ
        top = min(net.height(p) for p in ports)
        for height in range(top + 1):
            assert len({net.block_hash_at(p, height) for p in ports}) == 1, height
    finally:
        net.stop_and_check()
