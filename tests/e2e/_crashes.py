"""What the crash tests share: a network of peers that get killed, and what its clients were told
was accepted (test_crash_points.py, test_crash_soak.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from loopchain import failpoints
from tools.procs import LocalNetwork, http, post_json, wait_until

DOUBLE_VOTE = "signed two different votes"


class Crashes:
    """A network of peers and what its clients were told was accepted."""

    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self.ports = sorted(net.peers)
        self.acknowledged: list[str] = []

    def submit(self, port: int, tag: str) -> str:
        reply = post_json(f"{self.net.rest(port)}/api/v1/transactions", {"tag": tag})
        assert reply["response_code"] == 0, reply
        self.acknowledged.append(str(reply["tx_hash"]))
        return str(reply["tx_hash"])

    def start(self, port: int, points: str = "", wait: bool = True) -> None:
        with environment(failpoints.ENV, points):
            self.net.start_peer(port, wait=wait)

    def final_everywhere(self, tx_hash: str) -> bool:
        for port in self.ports:
            status, body = http("GET", f"{self.net.rest(port)}/api/v1/transactions?hash={tx_hash}")
            if status != 200 or int(body["block_height"]) < 0:
                return False
        return True

    def converged(self) -> dict[str, Any] | None:
        """The common tip of every peer once they agree on it and executed all of it."""
        seen = set()
        for port in self.ports:
            s = self.net.status(port)
            if s["tx_pool_size"] or s["executed_height"] != s["block_height"]:
                return None
            seen.add((s["block_height"], s["block_hash"], s["state_root"]))
        return {"tip": seen.pop()} if len(seen) == 1 else None

    def double_voters(self) -> list[str]:
        """Names of the processes whose logs say a validator signed two different votes."""
        return [proc.name for proc in self.net.procs if DOUBLE_VOTE in proc.log_text()]

    def check(self) -> None:
        """Nothing acknowledged is lost, every peer is at the same tip and state root, and no
        peer saw a validator sign two different votes for one round."""
        pending = list(self.acknowledged)

        def all_final() -> bool:
            while pending and self.final_everywhere(pending[0]):
                pending.pop(0)
            return not pending

        wait_until(all_final, 90, f"every acknowledged transaction final ({pending[:1]} not)")
        wait_until(self.converged, 60, "every peer at the same tip and state root")
        assert not (voters := self.double_voters()), f"a double vote in the logs of {voters}"


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set environment variable `name` to `value` for the block (processes started in it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
