"""Rebuild a channel's chain tip (and the validator sets around it) from its block store."""

from __future__ import annotations

from loopchain.blockchain.block_store import BlockStore, BlockStoreError
from loopchain.blockchain.chain import ChainTip
from loopchain.types.block import Block
from loopchain.types.validators import JointSet, ValidatorSet, Voters
from loopchain.types.vote import QuorumCertificate


def restore_tip(store: BlockStore, channel: str) -> tuple[ChainTip, QuorumCertificate | None]:
    """The tip of the stored chain; validator sets come from the updates carried in blocks."""
    found = store.tip()
    if found is None:
        return ChainTip(channel), None
    block, qc = found
    chain_set, pending = _sets_after(store, channel, block.height)
    tip = ChainTip(
        channel=channel,
        height=block.height,
        block_hash=block.hash,
        round=block.header.round,
        timestamp=block.header.timestamp,
        state_height=block.header.state_height,
        validators=_voters_of(store, channel, block),
        next_validators=chain_set,
        pending=pending,
    )
    return tip, qc


def _voters_of(store: BlockStore, channel: str, block: Block) -> Voters:
    """Who certified the final `block` (`ChainTip.voting_set_for` from its parent)."""
    if block.height == 0:
        return _update_of(store, channel, 0)
    chain_set, pending = _sets_after(store, channel, block.height - 1)
    if pending is None:
        return chain_set
    if block.header.validators_hash == pending.hash:  # a handover as earlier versions made it
        return pending
    return JointSet(chain_set, pending)


def _sets_after(
    store: BlockStore, channel: str, height: int
) -> tuple[ValidatorSet, ValidatorSet | None]:
    """The chain's set and the pending one once the final block at `height` is in, as
    `ChainTip.advance` makes them: the newest set carried at or below it is pending unless a
    block up to `height` handed it over; the chain's set is then the one before it."""
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
    """A block above `carrier_height`, up to `height`, hands the chain over to `update`: the
    first of the round right after its parent's (`ChainTip.is_handover`)."""
    parent = _block_at(store, channel, carrier_height)
    for child_height in range(carrier_height + 1, height + 1):
        child = _block_at(store, channel, child_height)
        if (
            child.header.round == parent.header.round + 1
            or child.header.validators_hash == update.hash
        ):
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
