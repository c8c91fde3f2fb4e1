"""Rebuild a channel's chain tip (and the validator sets around it) from its block store."""

from __future__ import annotations

from loopchain.blockchain.block_store import BlockStore, BlockStoreError
from loopchain.blockchain.chain import ChainTip, hands_over
from loopchain.types.block import Block
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate


def restore_tip(store: BlockStore, channel: str) -> tuple[ChainTip, QuorumCertificate | None]:
    """The tip of the stored chain: the point of its parent (the sets come from the updates
    carried in blocks), advanced by the tip block as the consensus does."""
    found = store.tip()
    if found is None:
        return ChainTip(channel), None
    block, qc = found
    if block.height == 0:
        return ChainTip(channel).advance(block), qc
    parent = _block_at(store, channel, block.height - 1)
    chain_set, pending = _sets_after(store, channel, parent.height)
    point = ChainTip(
        channel=channel,
        height=parent.height,
        block_hash=parent.hash,
        round=parent.header.round,
        next_validators=chain_set,
        pending=pending,
    )
    return point.advance(block), qc


def _sets_after(
    store: BlockStore, channel: str, height: int
) -> tuple[ValidatorSet, ValidatorSet | None]:
    """The chain's set and the pending one once the final block at `height` is in: the newest set
    carried at or below it is pending unless a block up to `height` handed it over; the chain's
    set is then the one before it."""
    pending: ValidatorSet | None = None
    for carrier_height in store.iter_update_heights():
        if carrier_height > height:
            continue
        update = _update_of(store, channel, carrier_height)
        if carrier_height == 0 or _handed_over(store, channel, carrier_height, height, update):
            return update, pending
        if pending is not None:  # two sets pending at once: not a chain this version made
            raise BlockStoreError(
                f"block store of {channel} carries a set at {carrier_height} "
                "while another is pending"
            )
        pending = update
    raise BlockStoreError(f"block store of {channel} holds no validator set (no first block?)")


def _handed_over(
    store: BlockStore, channel: str, carrier_height: int, height: int, update: ValidatorSet
) -> bool:
    """A block above `carrier_height`, up to `height`, hands the chain over to `update`."""
    parent = _block_at(store, channel, carrier_height)
    for child_height in range(carrier_height + 1, height + 1):
        child = _block_at(store, channel, child_height)
        if hands_over(parent.header.round, update, child):
            return True
        parent = child
    return False


def _block_at(store: BlockStore, channel: str, height: int) -> Block:
    block = store.block_by_height(height)
    if block is None:
        raise BlockStoreError(f"block store of {channel} lacks block {height}")
    return block


def _update_of(store: BlockStore, channel: str, height: int) -> ValidatorSet:
    update = _block_at(store, channel, height).validator_update
    if update is None:
        raise BlockStoreError(f"block store of {channel} lacks the validator update at {height}")
    return update
