"""The consensus state machine of one channel: `handle(event, now) -> list[Action]`.

This is the first, leader-fixed stage of LFT: the leader of a height (the first validator of the
set that votes on it, at round 0) proposes a signed block that carries the certificate of its
parent; validators verify it and send a signed vote to the leader, persisting the vote before it is
sent; a quorum of votes forms a certificate, which finalises the block. The leader broadcasts the
certificate at once and piggybacks it in its next block.

Safety argument (for this stage, with one leader per height and round): a validator signs at most
one block per (height, round) and persists that fact before the vote leaves, so even across restarts
it never votes for two blocks at one (height, round). Two certificates for different blocks at the
same (height, round) would need two quorums, which intersect in more than 1/3 of the weight, hence
in an honest validator that voted twice — impossible. Every certificate is checked against the
validator set that the chain itself fixes for that height (RadioStation-signed updates carried in
blocks), so all honest peers count votes against the same set. Round changes (complaints) and the
locking rule that keeps them safe come with the next stage; until then the round stays 0 and a
restarted leader re-sends the very proposal it persisted, so it never proposes two blocks either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loopchain.blockchain.chain import (
    ChainTip,
    Limits,
    check_certificate,
    check_extends,
    check_proposal_bounds,
)
from loopchain.blockchain.mempool import PoolFullError, TxPool
from loopchain.consensus import messages as m
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate, Vote

MAX_PENDING_PROPOSALS = 8


@dataclass(frozen=True)
class ConsensusConfig:
    """Consensus timing and limits (from configuration)."""

    interval: float  # INTERVAL_BLOCKGENERATION
    vote_timeout: float  # BLOCK_VOTE_TIMEOUT: the leader re-sends its proposal after this
    limits: Limits


def leader_of(validators: ValidatorSet, height: int, round_: int) -> str:
    """The peer that proposes at (height, round) under `validators`."""
    return validators.leader_at(round_)


class ChannelConsensus:
    """Consensus of one channel as a deterministic state machine."""

    def __init__(
        self,
        *,
        config: ConsensusConfig,
        signer: Signer,
        issuer: str,
        tip: ChainTip,
        tip_certificate: QuorumCertificate | None,
        pool: TxPool,
        is_committed: Callable[[bytes], bool],
        last_vote: tuple[int, int, bytes] | None = None,
        own_proposal: Block | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.issuer = issuer  # address of the RadioStation that signs validator sets
        self.tip = tip
        self.tip_certificate = tip_certificate
        self.pool = pool
        self.is_committed = is_committed
        self.last_vote = last_vote
        self.latest_validators: ValidatorSet | None = tip.next_validators
        self.proposal: Block | None = None
        self.votes: dict[str, Vote] = {}
        self.pending: dict[bytes, Block] = {}
        self.propose_timer_armed = False
        self.last_commit_time = float("-inf")
        self.made_block_count = 0
        if own_proposal is not None and own_proposal.height == tip.height + 1:
            self.proposal = own_proposal

    # ------------------------------------------------------------ queries

    @property
    def voting_set(self) -> ValidatorSet | None:
        """The validator set that votes at tip + 1 (the newest known one before genesis)."""
        return self.tip.next_validators or self.latest_validators

    @property
    def leader(self) -> str | None:
        """The peer expected to propose the next block."""
        voting = self.voting_set
        return leader_of(voting, self.tip.height + 1, 0) if voting else None

    @property
    def is_leader(self) -> bool:
        return self.leader == self.signer.address

    # ------------------------------------------------------------ entry points

    def start(self, now: float) -> list[m.Action]:
        """Resume after (re)start: re-send a persisted own proposal, or propose if due."""
        if self.proposal is not None:
            return self._announce(self.proposal, now)
        return self._maybe_propose(now)

    def handle(self, event: m.Event, now: float) -> list[m.Action]:
        """Apply one event and return the actions the shell must carry out, in order."""
        match event:
            case m.TxsReceived(txs):
                return self._on_txs(txs, now)
            case m.ProposalReceived(block):
                return self._on_proposal(block, now)
            case m.VoteReceived(vote):
                return self._on_vote(vote, now)
            case m.CertificateReceived(certificate):
                return self._on_certificate(certificate, now)
            case m.FinalBlockReceived(block, certificate):
                return self._on_final_block(block, certificate, now)
            case m.TimeoutFired(kind, height):
                return self._on_timeout(kind, height, now)
            case m.ValidatorsChanged(validators):
                return self._on_validators(validators, now)
        raise TypeError(f"unknown event {event!r}")

    # ------------------------------------------------------------ transactions and proposing

    def _on_txs(self, txs: tuple[Transaction, ...], now: float) -> list[m.Action]:
        added: list[Transaction] = []
        for tx in txs:
            try:
                if not self.is_committed(tx.hash) and self.pool.add(tx):
                    added.append(tx)
            except PoolFullError:
                break
        if not added:
            return []
        if self.is_leader:
            return self._maybe_propose(now)
        leader = self.leader
        return [m.ForwardTxs(leader, tuple(added))] if leader else []

    def _needs_update(self) -> bool:
        latest, current = self.latest_validators, self.tip.next_validators
        return latest is not None and (current is None or latest.version > current.version)

    def _maybe_propose(self, now: float) -> list[m.Action]:
        if not self.is_leader or self.proposal is not None or self.propose_timer_armed:
            return []
        if not self.pool:
            return []
        wait = self.last_commit_time + self.config.interval - now
        if wait > 0:
            self.propose_timer_armed = True
            return [m.ScheduleTimeout(wait, "propose", self.tip.height + 1)]
        return self._propose(now)

    def _propose(self, now: float) -> list[m.Action]:
        # 1. choose the validator sets: the current one votes, a newer RadioStation set rides along
        update = self.latest_validators if self._needs_update() else None
        voting = update if self.tip.height < 0 else self.tip.next_validators
        assert voting is not None
        limits = self.config.limits
        # 2. build and sign the block from the oldest pooled transactions
        block = Block.create(
            channel=self.tip.channel,
            height=self.tip.height + 1,
            round_=0,
            prev_hash=self.tip.block_hash,
            prev_qc=self.tip_certificate,
            transactions=self.pool.take(limits.max_block_txs, limits.max_block_bytes),
            timestamp=max(int(now * 1_000_000), self.tip.timestamp + 1),
            leader=self.signer,
            next_leader=voting.leader_at(0),
            validators_hash=voting.hash,
            validator_update=update,
        )
        self.proposal = block
        self.votes = {}
        # 3. persist it, then announce it with the leader's own vote
        return [m.PersistProposal(block), *self._announce(block, now)]

    def _announce(self, block: Block, now: float) -> list[m.Action]:
        vote = Vote.create(
            block.header.channel, block.height, block.header.round, block.hash, self.signer
        )
        actions: list[m.Action] = [
            m.PersistVote(vote.height, vote.round, vote.block_hash),
            m.BroadcastProposal(block),
            m.ScheduleTimeout(self.config.vote_timeout, "vote", block.height),
        ]
        self.last_vote = (vote.height, vote.round, vote.block_hash)
        return actions + self._count_vote(vote, now)

    # ------------------------------------------------------------ voting

    def _on_proposal(self, block: Block, now: float) -> list[m.Action]:
        actions: list[m.Action] = []
        if block.height == self.tip.height + 2:
            actions += self._finalize_parent_from(block, now)
        if block.height <= self.tip.height:
            return actions
        if block.height > self.tip.height + 1:
            return [*actions, m.RequestSync(block.height - 1)]
        if self.proposal is not None and block.hash == self.proposal.hash:
            return actions
        problem = self._check_proposal(block, now)
        if problem:
            return [*actions, m.Rejected(f"proposal {block.height}: {problem}")]
        if len(self.pending) < MAX_PENDING_PROPOSALS:
            self.pending[block.hash] = block
        return actions + self._vote_for(block)

    def _finalize_parent_from(self, block: Block, now: float) -> list[m.Action]:
        qc = block.header.prev_qc
        parent = self.pending.get(qc.block_hash) if qc else None
        if qc is None or parent is None:
            return []
        return self._on_certificate(qc, now)

    def _check_proposal(self, block: Block, now: float) -> str | None:
        problem = check_extends(self.tip, block, self.issuer, self.config.limits.ratio)
        if problem:
            return problem
        voting = self.tip.voting_set_for(block)
        assert voting is not None
        expected = leader_of(voting, block.height, block.header.round)
        if block.header.leader != expected:
            return f"proposed by {block.header.leader}, but the leader is {expected}"
        if block.header.round != 0:
            return "round changes are not enabled yet"
        problem = check_proposal_bounds(self.tip, block, self.config.limits, int(now * 1_000_000))
        if problem:
            return problem
        for tx in block.transactions:
            if self.is_committed(tx.hash):
                return f"transaction {tx.hash_hex} is already in the chain"
        return None

    def _vote_for(self, block: Block) -> list[m.Action]:
        voting = self.tip.voting_set_for(block)
        if voting is None or self.signer.address not in voting:
            return []  # not a validator here: follow the chain, never vote
        key = (block.height, block.header.round)
        if self.last_vote is not None:
            voted_key = self.last_vote[:2]
            if voted_key == key and self.last_vote[2] != block.hash:
                return [
                    m.Rejected(f"already voted for another block at height {key[0]} round {key[1]}")
                ]
            if voted_key > key:
                return [m.Rejected(f"stale proposal for height {key[0]} round {key[1]}")]
        vote = Vote.create(
            block.header.channel, block.height, block.header.round, block.hash, self.signer
        )
        self.last_vote = (vote.height, vote.round, vote.block_hash)
        return [
            m.PersistVote(vote.height, vote.round, vote.block_hash),
            m.SendVote(block.header.leader, vote),
        ]

    def _on_vote(self, vote: Vote, now: float) -> list[m.Action]:
        proposal = self.proposal
        if proposal is None or (vote.height, vote.round, vote.block_hash) != (
            proposal.height,
            proposal.header.round,
            proposal.hash,
        ):
            return []  # a late or foreign vote: nothing to count it towards
        if vote.channel != self.tip.channel or not vote.verify_signature():
            return [m.Rejected(f"vote from {vote.voter} has a bad signature")]
        voting = self.tip.voting_set_for(proposal)
        if voting is None or vote.voter not in voting:
            return [m.Rejected(f"vote from {vote.voter}, who is not a validator")]
        return self._count_vote(vote, now)

    def _count_vote(self, vote: Vote, now: float) -> list[m.Action]:
        proposal = self.proposal
        assert proposal is not None
        self.votes[vote.voter] = vote
        voting = self.tip.voting_set_for(proposal)
        assert voting is not None
        if not voting.has_quorum(self.votes, self.config.limits.ratio):
            return []
        certificate = QuorumCertificate.from_votes(list(self.votes.values()))
        actions = self._commit(proposal, certificate, now)
        return [*actions, m.BroadcastCertificate(certificate), *self._maybe_propose(now)]

    # ------------------------------------------------------------ finality

    def _on_certificate(self, qc: QuorumCertificate, now: float) -> list[m.Action]:
        if qc.height <= self.tip.height or qc.channel != self.tip.channel:
            return []
        block = self.pending.get(qc.block_hash) if qc.height == self.tip.height + 1 else None
        if block is None:
            return [m.RequestSync(qc.height)]
        problem = check_certificate(self.tip, block, qc, self.config.limits.ratio)
        if problem:
            return [m.Rejected(f"certificate {qc.height}: {problem}")]
        return [*self._commit(block, qc, now), *self._maybe_propose(now)]

    def _on_final_block(self, block: Block, qc: QuorumCertificate, now: float) -> list[m.Action]:
        if block.height <= self.tip.height:
            return []
        problem = check_extends(self.tip, block, self.issuer, self.config.limits.ratio)
        problem = problem or check_certificate(self.tip, block, qc, self.config.limits.ratio)
        if problem:
            return [m.Rejected(f"synced block {block.height}: {problem}")]
        return [*self._commit(block, qc, now), *self._maybe_propose(now)]

    def _commit(self, block: Block, qc: QuorumCertificate, now: float) -> list[m.Action]:
        self.tip = self.tip.advance(block)
        self.tip_certificate = qc
        self.pool.remove(tx.hash for tx in block.transactions)
        self.pending.clear()
        if self.proposal is not None and self.proposal.height <= block.height:
            self.proposal = None
            self.votes = {}
        if block.header.leader == self.signer.address:
            self.made_block_count += 1
        self.last_commit_time = now
        if self.latest_validators is None or (
            self.tip.next_validators is not None
            and self.tip.next_validators.version > self.latest_validators.version
        ):
            self.latest_validators = self.tip.next_validators
        return [m.CommitBlock(block, qc)]

    # ------------------------------------------------------------ timers and membership

    def _on_timeout(self, kind: str, height: int, now: float) -> list[m.Action]:
        if kind == "propose":
            self.propose_timer_armed = False
            return self._maybe_propose(now) if height == self.tip.height + 1 else []
        if kind == "vote" and self.proposal is not None and self.proposal.height == height:
            return [
                m.BroadcastProposal(self.proposal),
                m.ScheduleTimeout(self.config.vote_timeout, "vote", height),
            ]
        return []

    def _on_validators(self, validators: ValidatorSet, now: float) -> list[m.Action]:
        if validators.channel != self.tip.channel or not validators.verify_issuer(self.issuer):
            return [m.Rejected("validator set is not signed by the RadioStation")]
        latest = self.latest_validators
        if latest is not None and validators.version <= latest.version:
            return []
        self.latest_validators = validators
        return self._maybe_propose(now)
