"""The view of a channel's final chain that validation needs, and the checks that use it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from fractions import Fraction

from loopchain.types.block import BLOCK_VERSION, Block
from loopchain.types.hashing import EMPTY_ROOT
from loopchain.types.validators import JointSet, ValidatorSet, Voters
from loopchain.types.vote import QuorumCertificate


@dataclass(frozen=True)
class ChainTip:
    """A block of a channel (the last final one, or one above it) and the validator sets around it.

    A block may carry a new validator set when none is pending. From it on the set is pending:
    every block is voted by the chain's set and the pending one together (`JointSet`, a quorum
    of each), none carries another set, and the first block of the round right after its parent's
    (the handover) hands the chain over to the pending set. The handover's certificate holds a
    quorum of the old set locked on its parent's certificate, so that parent is final under the
    old set (two-chain rule); every certificate from the carrier's children on holds a quorum of
    the new set. (The consensus module's docstring gives the safety argument.) Peers of earlier
    versions let the new set alone vote on the carrier's child; such blocks still sync, and no
    peer of this version votes for one, but a change made while some peers run an earlier
    version can fork as those did: upgrade every peer first.
    """

    channel: str
    height: int = -1  # -1: no block yet
    block_hash: bytes = b""
    round: int = -1
    timestamp: int = 0
    state_height: int = -1  # the executed height whose roots the tip block carries
    validators: Voters | None = None  # who certified the block (both sets while one is pending)
    next_validators: ValidatorSet | None = None  # the chain's set after the block
    pending: ValidatorSet | None = None  # a set carried at or below the block, not handed over

    def advance(self, block: Block) -> ChainTip:
        """The point after `block`, a child of this one (already checked to extend it)."""
        handover = self.is_handover(block)
        if block.height == 0:
            pending = None
        elif self.pending is not None and not handover:
            pending = self.pending
        else:
            pending = block.validator_update
        return replace(
            self,
            height=block.height,
            block_hash=block.hash,
            round=block.header.round,
            timestamp=block.header.timestamp,
            state_height=block.header.state_height,
            validators=self.voting_set_for(block),
            next_validators=(
                block.validator_update
                if block.height == 0
                else self.pending
                if handover
                else self.next_validators
            ),
            pending=pending,
        )

    @functools.cached_property
    def child_voters(self) -> Voters | None:
        """Who votes on a block extending this one: the chain's set, and the pending set with it."""
        current = self.next_validators
        if current is None or self.pending is None:
            return current
        return JointSet(current, self.pending)

    def voting_set_for(self, block: Block) -> Voters | None:
        """Who votes on `block`, a child of this one: for the genesis block (on no block yet),
        the set it carries; a block claiming height 0 anywhere else has no voters (its set is
        anyone's: a commit proof claiming it proved a withheld block final, review)."""
        if block.height == 0:
            return block.validator_update if self.height == -1 else None
        if self.is_legacy_handover(block):
            return self.pending
        return self.child_voters

    def is_handover(self, block: Block) -> bool:
        """`block`, a child of this one, hands the chain over to the pending set."""
        return self.pending is not None and hands_over(self.round, self.pending, block)

    def is_legacy_handover(self, block: Block) -> bool:
        """`block` names the set its parent carries as its only voters: how chains of earlier
        versions handed over (synced as final; no voter accepts it as a proposal)."""
        return self.pending is not None and block.header.validators_hash == self.pending.hash


def hands_over(parent_round: int, pending: ValidatorSet, block: Block) -> bool:
    """`block`, the child of a block of `parent_round` while `pending` is pending, hands the
    chain over to it: of the very next round, or voted by `pending` alone (earlier versions)."""
    return block.header.round == parent_round + 1 or block.header.validators_hash == pending.hash


# a block's bytes besides its transactions' (header, certificates, validator set), as bounds allow
BLOCK_HEADROOM_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Block limits and acceptance bounds from configuration."""

    max_block_txs: int
    max_block_bytes: int  # of the transactions' encodings together
    max_skew_us: int
    ratio: Fraction

    @property
    def block_bytes_bound(self) -> int:
        """What a block of the most transactions' bytes may take, encoded, with its headroom."""
        return self.max_block_bytes + BLOCK_HEADROOM_BYTES


def check_extends(tip: ChainTip, block: Block, issuer: str, ratio: Fraction) -> str | None:
    """None when `block` is a well-formed successor of `tip`; else the reason it is not."""
    if block.height == 0 and block.transactions:
        return "the genesis block carries no transactions"
    return check_header(tip, block, issuer, ratio) or block.check_integrity()


def check_header(tip: ChainTip, block: Block, issuer: str, ratio: Fraction) -> str | None:
    """What `check_extends` decides without the transactions: the header, its leader's signature,
    the validator set and the parent's certificates, at a few recoveries. Checked first, so that
    a block that fails them costs none of its transactions' signatures (a member can serve a
    block of a quarter million transactions it signed itself: seconds of recoveries)."""
    header = block.header
    if header.channel != tip.channel:
        return f"block is for channel {header.channel}, not {tip.channel}"
    if header.height != tip.height + 1:
        return f"block height {header.height} does not follow tip {tip.height}"
    if header.prev_hash != tip.block_hash:
        return "block does not extend the tip (prev_hash differs)"
    if header.version != BLOCK_VERSION:
        return f"unsupported block version {header.version}"
    problem = block.signature_problem()
    if problem:
        return problem
    if header.state_height < tip.state_height or header.state_height > tip.height:
        return f"block carries the state of height {header.state_height}, out of order"
    if header.state_height < 0 and (header.state_root, header.results_hash) != (
        EMPTY_ROOT,
        EMPTY_ROOT,
    ):
        return "a block before any execution must carry empty roots"
    return (
        _check_validators(tip, block, issuer)
        or _check_genesis_proposer(block)
        or _check_prev_qc(tip, block, ratio)
    )


def _check_genesis_proposer(block: Block) -> str | None:
    """In an open channel only the first validator of the genesis block's set proposes it."""
    voting = block.validator_update if block.height == 0 else None
    first = voting.founder() if voting is not None else None
    if first is not None and block.header.leader != first:
        return f"the genesis block of an open channel is proposed by its first peer {first}"
    return None


def _check_validators(tip: ChainTip, block: Block, issuer: str) -> str | None:
    update = block.validator_update
    if update is not None:
        if not update.verify_issuer(issuer):
            return "validator update is not signed by the RadioStation"
        if tip.pending is not None and not tip.is_legacy_handover(block):
            # (earlier versions' handover carried their next step at once: it syncs)
            return "validator update while another set is being handed over"
        if tip.next_validators is not None and update.version <= tip.next_validators.version:
            return "validator update is not newer than the current set"
        if (
            not update.validators
            and tip.next_validators is not None
            and tip.next_validators.validators
        ):
            return "validator update names no validator: the chain could not go on after it"
    voting = tip.voting_set_for(block)
    if voting is None:
        return "the first block must carry the validator set"
    if block.header.validators_hash != voting.hash:
        return "block names a validator set other than the current one"
    return None


def _check_prev_qc(tip: ChainTip, block: Block, ratio: Fraction) -> str | None:
    qc = block.header.prev_qc
    if block.height == 0:
        return None if qc is None else "the first block cannot carry a certificate"
    if qc is None:
        return "block lacks the certificate of its parent"
    if qc.height != tip.height or qc.block_hash != tip.block_hash or qc.round != tip.round:
        return "block's parent certificate is for another block"
    if block.header.round <= qc.round:
        return "block round does not advance past its parent's"
    assert tip.validators is not None
    problem = qc.verify(tip.validators, ratio)
    tc = block.header.prev_tc
    if problem is None and tc is not None:
        voting = tip.voting_set_for(block)
        assert voting is not None
        if tc.round >= block.header.round:
            return "block's timeout certificate is not for an earlier round"
        problem = tc.verify(voting, ratio)
    return problem


def check_proposal_bounds(tip: ChainTip, block: Block, limits: Limits, now_us: int) -> str | None:
    """Size and timestamp bounds a voter checks before voting."""
    problem = check_size(block, limits) or check_proposal_time(tip, block, limits, now_us)
    if problem:
        return problem
    if tip.is_legacy_handover(block):
        return "a validator set change is voted by the old set and the new one together"
    return None


def check_size(block: Block, limits: Limits) -> str | None:
    """The size bounds of `check_proposal_bounds` (its transactions' number and bytes)."""
    if len(block.transactions) > limits.max_block_txs:
        return f"block holds {len(block.transactions)} transactions, limit {limits.max_block_txs}"
    if sum(len(tx.encode()) for tx in block.transactions) > limits.max_block_bytes:
        return "block is larger than MAX_BLOCK_KBYTES"
    return None


OFF_THIS_CLOCK = "block timestamp is too far from this peer's clock"


def check_proposal_time(tip: ChainTip, block: Block, limits: Limits, now_us: int) -> str | None:
    """The timestamp bounds of `check_proposal_bounds`: what the header alone decides (a block
    whose body was altered on its way keeps its header, and its leader's signature of it)."""
    if block.header.timestamp <= tip.timestamp:
        return "block timestamp does not advance"
    off_us = block.header.timestamp - now_us
    if abs(off_us) > limits.max_skew_us:
        way = "ahead of" if off_us > 0 else "behind"
        return (
            f"{OFF_THIS_CLOCK} ({abs(off_us) / 1e6:.0f} s {way} it; MAX_TIMESTAMP_SKEW "
            f"{limits.max_skew_us / 1e6:g} s): the leader's clock or this one is off"
        )
    return None


def check_certificate(
    tip: ChainTip, block: Block, qc: QuorumCertificate, ratio: Fraction
) -> str | None:
    """None when `qc` finalises `block` at tip + 1 under the voting set."""
    if qc.block_hash != block.hash or qc.height != block.height:
        return "certificate is for another block"
    if qc.round != block.header.round:
        return "certificate is for another round"
    voting = tip.voting_set_for(block)
    if voting is None:
        return "no validator set for this height"
    return qc.verify(voting, ratio)
