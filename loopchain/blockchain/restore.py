"""Rebuild a channel's chain tip (and the validator sets around it) from its block store."""

from __future__ import annotations

from loopchain.blockchain.block_store import BlockStore
from loopchain.blockchain.chain import ChainTip
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate


def restore_tip(store: BlockStore, channel: str) -> tuple[ChainTip, QuorumCertificate | None]:
    """The tip of the stored chain; validator sets come from the newest updates carried in blocks."""
    found = store.tip()
    if found is None:
        return ChainTip(channel), None
    block, qc = found
    # Walk back to the newest block carrying a validator update: it fixes the sets at the tip.
    next_validators: ValidatorSet | None = None
    voting_tip: ValidatorSet | None = None
    height = block.height
    while height >= 0 and voting_tip is None:
        current = store.block_by_height(height)
        if current is None:
            raise RuntimeError(f"block store of {channel} lacks height {height}")
        update = current.validator_update
        if update is not None:
            if next_validators is None:
                next_validators = update
                if height < block.height or height == 0:
                    voting_tip = update
            else:
                voting_tip = update
        height -= 1
    tip = ChainTip(
        channel=channel,
        height=block.height,
        block_hash=block.hash,
        round=block.header.round,
        timestamp=block.header.timestamp,
        validators=voting_tip,
        next_validators=next_validators,
    )
    return tip, qc
