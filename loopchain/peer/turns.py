"""Signatures checked a slice of the event loop at a time.

What other peers send can carry thousands of transactions whose signatures this peer has not
checked: a range of synced blocks (up to SYNC_BATCH_BLOCKS blocks of up to MAX_BLOCK_TX_NUM each),
a relayed batch (up to 1,000) or a proposal. Recovering a key takes ~50 us here, and checked in one
turn of the event loop a synced range held it for seconds: a peer restarted under load answered
neither its REST proxy (which answered 504 after its 5 s deadline) nor its probes. Checked here
first, each good signature is kept on its transaction, and the checks that follow recover nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from loopchain.types.transaction import Transaction

SIGNATURES_PER_TURN = 64  # keys recovered between two turns of the event loop (~3 ms here)


async def check_signatures(txs: Iterable[Transaction], *, until_bad: bool = True) -> bool:
    """Recover the signatures of `txs` not known good yet, SIGNATURES_PER_TURN a turn of the
    event loop; False when one is bad (the check that follows refuses it and names it). With
    `until_bad` it stops there: a block with one is refused as a whole, so the rest are not worth
    recovering (relayed transactions are judged one by one: it goes on)."""
    recovered, good = 0, True
    for tx in txs:
        if tx.signature_checked:
            continue
        if not tx.verify_signature():
            good = False
            if until_bad:
                return False
        recovered += 1
        if recovered % SIGNATURES_PER_TURN == 0:
            await asyncio.sleep(0)
    return good
