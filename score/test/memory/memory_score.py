"""Failure sample: allocates without bound in invoke (tests the SCORE process memory limit)."""

from __future__ import annotations

import json
from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, TransactionView

CHUNK_BYTES = 64 * 1024 * 1024


def exhaust_memory() -> None:
    """Keep allocating (and touching) 64 MiB chunks until the process runs out of memory."""
    chunks: list[bytes] = []
    while True:
        chunks.append(b"\x01" * CHUNK_BYTES)


class UserScore(ScoreBase):
    """invoke allocates until MemoryError (or the kernel kills it); query may do the same."""

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Allocate without bound."""
        exhaust_memory()
        return None

    def query(self, params: str) -> str:
        """Allocate without bound for {"method": "allocate"}; echo anything else."""
        try:
            request = json.loads(params)
        except json.JSONDecodeError:
            return params
        if isinstance(request, dict) and request.get("method") == "allocate":
            exhaust_memory()
        return params
