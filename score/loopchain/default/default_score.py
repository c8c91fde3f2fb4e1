"""The default SCORE: accepts every transaction and echoes queries."""

from __future__ import annotations

from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, TransactionView


class UserScore(ScoreBase):
    """Every transaction succeeds without touching state; a query returns its params unchanged."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Accept the transaction."""
        return None

    def query(self, params: str) -> str:
        """Echo the params JSON string as given."""
        return params
