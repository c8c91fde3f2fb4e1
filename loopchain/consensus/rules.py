"""Leader election, round succession and the voting safety rules of LFT."""

from __future__ import annotations

from dataclasses import dataclass

from loopchain.types.validators import Voters
from loopchain.types.vote import QuorumCertificate, TimeoutCertificate

# rounds each leader leads in a row, at least: it makes a block final alone (the block, the one
# certifying it, and the one certifying that)
MIN_TURN = 3


def turn_for(limit: int) -> int:
    """The rounds each leader leads in a row for LEADER_BLOCK_CREATION_LIMIT `limit`: MIN_TURN at
    least. A block is final once the two rounds after its own are certified, so with turns of one
    or two rounds it takes three or two leaders in a row that are up: validators holding less
    than a third of unequal weights (or groups), down at every other place of the rotation,
    stopped finality for good (review: weights 3,1,3,1,3,1, those of weight 1 down). A turn that
    depended on the set's weights split the validators around a set change for good, those that
    counted a timeout certificate's round in the old set's turns against those that counted it
    in the new set's (two reviews): every set has this one turn."""
    return max(limit, MIN_TURN)


def leader_of(validators: Voters, round_: int, blocks_per_leader: int) -> str:
    """The proposer of `round_`: validators take turns, each for `blocks_per_leader` rounds."""
    return validators.leader_at(round_ // blocks_per_leader)


def round_after_timeout(round_: int, blocks_per_leader: int) -> int:
    """The round that follows a failed `round_`: the first round of the next leader's turn."""
    return (round_ // blocks_per_leader + 1) * blocks_per_leader


@dataclass
class SafetyRules:
    """What a validator has signed; persisted before any vote or complaint leaves the node.

    `highest_vote_round` is the highest round it voted or complained in; `high_qc` the highest
    certificate it has voted on top of (its lock).
    """

    highest_vote_round: int = -1
    high_qc: QuorumCertificate | None = None

    @property
    def high_qc_round(self) -> int:
        return self.high_qc.round if self.high_qc is not None else -1

    def safe_to_vote(
        self, block_round: int, qc_round: int, tc: TimeoutCertificate | None, per_leader: int
    ) -> bool:
        """Vote once per round, only for a block that extends the newest certificate it may.

        After a timeout certificate the block must also extend a certificate at least as high as
        this validator's own lock. The certificate's round can be older than rounds certified
        since (a timeout moves on to the next leader's turn, past the rounds between): complaints
        of round k, made before their signers voted in round k + 1 for a block that made round k's
        block final, must not let a later leader extend round k - 1's certificate. The lock is
        what keeps that safe: a quorum that made a block final holds more than a third of the
        weight of any other quorum, and each of its honest voters is locked on it. The highest
        certificate a timeout certificate's complaints claim is not asked for: a claim is a
        round alone, and a byzantine member that signed one no certificate backs into a timeout
        certificate had every next leader's block refused, round after round (review)."""
        if block_round <= max(self.highest_vote_round, qc_round):
            return False
        if block_round == qc_round + 1:
            return True
        return (
            tc is not None
            and block_round == round_after_timeout(tc.round, per_leader)
            and qc_round >= self.high_qc_round
        )

    def safe_to_complain(self, round_: int) -> bool:
        """Complain at most about rounds not older than the last one voted in."""
        return round_ >= self.highest_vote_round

    def record_vote(self, round_: int, qc: QuorumCertificate | None) -> None:
        self.highest_vote_round = max(self.highest_vote_round, round_)
        if qc is not None and qc.round > self.high_qc_round:
            self.high_qc = qc

    def observe_qc(self, qc: QuorumCertificate) -> None:
        """A verified certificate may raise the lock (it never lowers it)."""
        if qc.round > self.high_qc_round:
            self.high_qc = qc
