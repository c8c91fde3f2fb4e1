"""Work on what the network brought, a slice of the event loop at a time: signatures, blocks.

What other peers send can carry thousands of transactions whose signatures this peer has not
checked: a range of synced blocks (up to SYNC_BATCH_BLOCKS blocks of up to MAX_BLOCK_TX_NUM each),
a relayed batch (up to 1,000) or a proposal. Recovering a key takes ~50 us here, and checked in one
turn of the event loop a synced range held it for seconds: a peer restarted under load answered
neither its REST proxy (which answered 504 after its 5 s deadline) nor its probes. Checked here
first, each good signature is kept on its transaction, and the checks that follow recover nothing.

The slice is a time, not a count: a few hundred signatures (a proposal's that were not relayed
first, a relayed batch) go in one turn as before, for the turn a vote waits for costs every
round; only more is spread. A count of 64 cost 8 % of the committed tx/s under 64 clients. A
synced range's blocks are decoded so too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from loopchain.types.transaction import Transaction

TURN_BUDGET_S = 0.01  # working this long gives the event loop a turn (~200 keys recovered here)


class TurnBudget:
    """Work done in pieces (a signature, a block decoded) that gives the event loop a turn once
    the pieces since the last have taken TURN_BUDGET_S."""

    def __init__(self) -> None:
        self._deadline = time.monotonic() + TURN_BUDGET_S

    async def spent(self) -> None:
        """A piece is done: a turn for the others when the budget is used up."""
        if time.monotonic() >= self._deadline:
            await asyncio.sleep(0)
            self._deadline = time.monotonic() + TURN_BUDGET_S


async def check_signatures(txs: Iterable[Transaction], *, until_bad: bool = True) -> bool:
    """Recover the signatures of `txs` not known good yet, giving the event loop a turn every
    TURN_BUDGET_S; False when one is bad (the check that follows refuses it and names it). With
    `until_bad` it stops there: a block with one is refused as a whole, so the rest are not worth
    recovering (relayed transactions are judged one by one: it goes on)."""
    good, budget = True, TurnBudget()
    for tx in txs:
        if tx.signature_checked:
            continue
        if not tx.verify_signature():
            good = False
            if until_bad:
                return False
        await budget.spent()
    return good
