"""Failure sample: raises on every transaction and query (tests result code 9000)."""

from __future__ import annotations

from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, TransactionView

MESSAGE = "test/raises always fails"


class UserScore(ScoreBase):
    """Writes one key, then raises a plain RuntimeError (any exception counts, not only ScoreError)."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Write, then raise: the engine must discard the write."""
        self.put_json("written-before-raising", transaction.tx_hash)
        raise RuntimeError(MESSAGE)

    def query(self, params: str) -> str:
        """Raise."""
        raise RuntimeError(MESSAGE)
