"""Failure sample: never returns from invoke (tests the step limit and the invoke deadline)."""

from __future__ import annotations

import json
from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, TransactionView


def spin() -> None:
    """Loop forever."""
    while True:
        pass


class UserScore(ScoreBase):
    """invoke never returns; query {"method": "loop"} never returns, other queries are echoed."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Never return."""
        spin()
        return None

    def query(self, params: str) -> str:
        """Never return for {"method": "loop"}; echo anything else."""
        try:
            request = json.loads(params)
        except json.JSONDecodeError:
            return params
        if isinstance(request, dict) and request.get("method") == "loop":
            spin()
        return params
