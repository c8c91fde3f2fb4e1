"""Rebuild a channel's chain tip (and the validator sets around it) from its block store."""

from __future__ import annotations

from loopchain.blockchain.block_store import BlockStore, BlockStoreError
from loopchain.blockchain.chain import ChainTip
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate


def restore_tip(store: BlockStore, channel: str) -> tuple[ChainTip, QuorumCertificate | None]:
    """The tip of the stored chain; validator sets come from the newest updates carried in blocks."""
    found = store.tip()
    if found is None:
        return ChainTip(channel), None
    block, qc = found
    # The newest block carrying a validator update fixes the next set; the one before it (or the
    # same one, when it is older than the tip or is the first block) the set that certified the tip.
    updates = store.update_heights(limit=2)
    if not updates:
        raise BlockStoreError(f"block store of {channel} holds no validator set (no first block?)")

    def update_at(height: int) -> ValidatorSet:
        carrier = store.block_by_height(height)
        if carrier is None or carrier.validator_update is None:
            raise BlockStoreError(
                f"block store of {channel} lacks the validator update at {height}"
            )
        return carrier.validator_update

    next_validators = update_at(updates[0])
    if updates[0] < block.height or block.height == 0:
        voting_tip = next_validators
    else:
        voting_tip = update_at(updates[1]) if len(updates) > 1 else next_validators
    tip = ChainTip(
        channel=channel,
        height=block.height,
        block_hash=block.hash,
        round=block.header.round,
        timestamp=block.header.timestamp,
        state_height=block.header.state_height,
        validators=voting_tip,
        next_validators=next_validators,
    )
    return tip, qc
