"""LFT, the consensus of one channel, as a deterministic state machine: `handle(event, now)`.

Protocol (a two-chain BFT in the family of DiemBFT v4 / Jolteon and ICON's LFT2):

* Rounds. Every block has a round; rounds only grow. The leader of round r is the validator at
  position r // turn of the set (spinning; a turn is `blocks_per_leader` rounds, which a peer sets
  to LEADER_BLOCK_CREATION_LIMIT and 3 at least: `rules.turn_for`; the channel's genesis data may
  state it for every peer, leader_block_creation_limit: `ChannelConsensus.turn`). A validator
  enters round r + 1 on a certificate for round r, or enters the first round of the next leader's
  turn on a timeout certificate for round r.
* Propose. The leader of round r extends the block of the highest certificate it knows (`high_qc`),
  which it carries in the header (the piggybacked commit), plus the timeout certificate of the
  previous round when that round failed. It proposes only when there is work: pooled transactions, a
  not-yet-final block holding transactions (an empty block finalises the one before it). The first
  block, height 0, is the genesis block, proposed when the first transactions wait (at once when
  the channel's genesis funds accounts, which must exist before anyone can pay a fee): it carries
  the channel's validator set of that moment (with its auditors, SCORE package, settings and
  genesis accounts) and no transaction, so the first transactions are in block 1, whose
  certificate makes it final. A set the RadioStation issued after the chain's is work too: an empty
  block carries it. In an open channel (`genesis_by_first`: the set grows as peers register, and a
  first peer alone is a quorum of its own set) only the set's first validator proposes the genesis
  block, in every round; the others sync it instead of certifying another, and their complaints
  ask it for one when only they hold transactions.
* Vote. A validator votes for a valid block of its current round only if the round is above every
  round it voted or complained in, and the block either extends a certificate of the previous round
  or follows a timeout certificate and extends a certificate at least as high as any its signers
  reported and as its own lock (the highest certificate it knows). The vote (and the highest
  certificate) is persisted before it is sent to the next round's leader, which forms the
  certificate and broadcasts it.
* Execute. Final blocks are executed by the channel's SCORE in order, outside this machine; a block
  carries the state root and results hash of the newest block its leader has executed
  (`state_height`), and a validator votes only when those roots equal its own for that height —
  waiting for its own execution to catch up first when it is behind.
* Finalise (two-chain rule). When block B' of round k + 1 that extends block B of round k is
  certified, B and all its ancestors are final: written to the store in order with their
  certificates, their transactions removed from every pool.
* Complain. A validator with work that sees no certificate in its round within the round timeout
  signs a complaint carrying its highest certificate, and broadcasts it. Complaints from more than a
  third of the weight make a validator join; a quorum forms a timeout certificate. A complaint
  counts only once the certificate it carries checks (its block fetched first when unseen): the
  leader after a timeout must extend a certificate as high as any its complaints report, so a
  claimed round that no quorum certified would stall every later round. A round can be both
  certified and timed out: complaints about a round a validator left still count while their
  timeout certificate would move it further on. A validator that left a round by a timeout
  certificate it formed sends that certificate's complaints again on each timeout until it knows
  a certificate that takes peers as far, so peers that missed some of them, or went on by the
  round's certificate, reach it too. The timeout doubles after each failed round, up to the
  configured maximum, and resets on progress. A validator syncing far behind complains at once
  about the rounds it hears of that it leads or whose votes go to it (`_give_up`): it could
  neither vote nor lead in them, and its complaint tells the others not to wait for it. A
  validator that refuses the proposal of its round, signed by the round's leader, complains at
  once too (`_refuse_proposal`): a leader proposes once a round, so it could vote for no other.

Safety argument. Suppose B (round k) is final because B' (round k + 1, parent B) is certified.
Quorums intersect in more than a third of the weight, so more than a third of the weight is honest
validators that voted for B', and each recorded the certificate of B (round k) as its `high_qc`
before voting. (1) A certified block in round k + 1 is B' itself: honest validators vote once per
round. (2) For any later round r > k + 1, a block certified in r either extends a certificate of
round r - 1 or follows a timeout certificate of an earlier round. By induction every certificate
of a round in (k, r) is for a descendant of B. A block certified in r after a timeout holds the
vote of an honest validator that voted for B' (quorums intersect); it voted in r after k + 1, its
lock was then at least B's certificate, and it votes after a timeout only for a block that extends
a certificate at least as high as its lock, hence B or a descendant. (The timeout certificate's
reported rounds alone do not protect B: a timeout moves on to the next leader's turn, past the
rounds certified meanwhile, so its complaints can be of round k, made before the votes for B'.)
So every block certified after round k extends B, and no two honest peers finalise different
blocks at one height. Validator sets come from RadioStation-signed updates carried in the chain
itself, so every peer verifies a certificate against the same set. Changes (`ChainTip`): a block
may carry a new set N only when none is pending; from it on N is pending, and every block is voted
jointly (a quorum of the chain's set T and a quorum of N) and carries no set, until the first
block of the round right after its parent's (the handover), after which N alone votes. So every
certificate holds a quorum of the set its parent runs on and of the set after it. Let final blocks
B1 and B2 conflict, A their last common ancestor, and U the set pending at A, or A's own set when
none is. Up to its first handover (its second when U was pending), every certificate on either
branch above A holds a quorum of U. Such a handover's parent P lies above A and is final under U
(P and the handover both hold quorums of U, in consecutive rounds), so by the argument above, for
U, the other branch's final blocks would extend P: neither branch has one below its final block.
The argument above, for U, then gives B1 = B2. (The seeded simulation forked when the new set
alone voted on the carrier's child: replacing 3 of 4 validators at once with one crash as the only
fault, and two sets on rival branches with message delays alone; and when a later child of the
carrier put the chain back on the old set while the handover's certificate reached only the new
members. tests/sim/test_set_changes.py.) Liveness: once the network is
stable and more than two thirds of the weight is up, timeouts grow until an honest leader's round
lasts long enough to certify two consecutive blocks (with turns of 3 rounds or more one leader up
makes a block final alone; with shorter ones it takes leaders in a row, which validators of less
than a third of unequal weights can deny: `rules.turn_for`). A validator whose lock is above the highest
certificate a leader knows refuses that leader's block after a timeout; the lock reaches the others
through its complaints and the certificates it sends laggards, or, at the latest, when its own turn
comes (it then extends it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from loopchain.blockchain.chain import (
    ChainTip,
    Limits,
    check_certificate,
    check_extends,
    check_header,
    check_proposal_bounds,
    check_proposal_time,
    check_size,
)
from loopchain.blockchain.mempool import (
    PoolFullError,
    TxPool,
    TxRefused,
    block_window_us,
    writer_of,
)
from loopchain.consensus import messages as m
from loopchain.consensus.rules import SafetyRules, leader_of, round_after_timeout, turn_for
from loopchain.consensus.tree import TREE_BUDGET_BLOCKS, BlockTree, TreeNode
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.hashing import EMPTY_ROOT
from loopchain.types.transaction import V1, Transaction
from loopchain.types.validators import ValidatorSet, Voters
from loopchain.types.vote import Complaint, QuorumCertificate, TimeoutCertificate, Vote

MAX_WAITING = 16  # proposals and certificates parked while their block is fetched
MAX_COMPLAINT_ROUNDS = 4  # rounds in which one validator's complaints count at once
WAITING_BUDGET_BLOCKS = 16  # and the parked blocks' bytes, in blocks of the largest size
MAX_VOTES_REMEMBERED = 4096  # (round, voter) pairs kept to spot a validator voting twice
MAX_FETCH_DEPTH = 32  # farther behind than this, sync final blocks instead of fetching
EXECUTION_LAG_GIVE_UP = 8  # blocks its execution lags the chain's by when a leader gives up
MAX_EARLY_VOTES = 1024  # votes held for blocks whose proposal has not come yet
EARLY_VOTES_PER_VOTER = 4  # and of one validator
MAX_TALLIES = 16  # vote tallies of blocks not certified yet, open at once
TALLIES_PER_VOTER = 4  # of them holding one validator's vote
# A round's timer is at least ROUND_PACE_FACTOR times the slowest of the last ROUND_PACE_KEPT
# certified rounds of a leader (timed from when the timer was armed): on links with long round
# trips (peers in other data centres) rounds take longer than TIMEOUT_FOR_LEADER_COMPLAIN allows
# for, and the timer follows them there instead of complaining about honest leaders
ROUND_PACE_FACTOR = 2.0
ROUND_PACE_KEPT = 8


@dataclass(frozen=True)
class ConsensusConfig:
    """Consensus timing and limits (from configuration)."""

    interval: float  # INTERVAL_BLOCKGENERATION: least time between two proposals of a leader
    round_timeout: float  # TIMEOUT_FOR_LEADER_COMPLAIN
    max_round_timeout: float  # MAX_TIMEOUT_FOR_LEADER_COMPLAIN
    blocks_per_leader: int  # LEADER_BLOCK_CREATION_LIMIT
    limits: Limits


class ChannelConsensus:
    """LFT consensus of one channel as a deterministic state machine."""

    def __init__(
        self,
        *,
        config: ConsensusConfig,
        signer: Signer,
        issuer: str,
        tip: ChainTip,
        tip_certificate: QuorumCertificate | None,
        pool: TxPool,
        is_committed: Callable[[bytes, int], bool],
        network_id: Callable[[], int | None] | None = None,
        safety: SafetyRules | None = None,
        roots_at: Callable[[int], tuple[bytes, bytes] | None] = lambda height: None,
        executed_height: int = -1,
        stated_turn: Callable[[], int | None] | None = None,
    ) -> None:
        self.config = config
        # the leader turn the channel's genesis states (leader_block_creation_limit), None when
        # it states none: see `turn`
        self.stated_turn = stated_turn
        self.signer = signer
        self.issuer = issuer  # address of the RadioStation that signs validator sets
        self.tree = BlockTree(tip, TREE_BUDGET_BLOCKS * config.limits.block_bytes_bound)
        self.tip_certificate = tip_certificate
        self.pool = pool
        self.is_committed = is_committed
        # the ICON network id the channel's genesis states, which its blocks' v3 transactions
        # must name (None, or None from it: not checked here)
        self.network_id = network_id
        # the transactions of the blocks made final by the event being handled: the shell saves
        # those blocks once `handle` returns, so `is_committed` does not know them yet (a
        # proposal whose certificate makes its grandparent final is checked in the same event)
        self.finalising: set[bytes] = set()
        self.safety = safety or SafetyRules()
        if tip_certificate is not None:
            self.safety.observe_qc(tip_certificate)
        self.latest_validators: ValidatorSet | None = tip.pending or tip.next_validators
        self.round = max(self.safety.high_qc_round + 1, self.safety.highest_vote_round, 0)
        self.last_tc: TimeoutCertificate | None = None
        self.tc_complaints: tuple[Complaint, ...] = ()  # behind last_tc, when formed here
        self.votes: dict[tuple[int, bytes], dict[str, Vote]] = {}
        # block hash -> votes that came before its proposal (a vote can outrun the proposal it
        # names; a quorum of both sets while one is pending is nearly every validator)
        self.early_votes: dict[bytes, list[Vote]] = {}
        self.early_vote_count = 0
        self.voted_for: dict[tuple[int, str], bytes] = {}  # (round, voter) -> block it voted for
        # round -> voter -> complaint; a voter's complaints count in MAX_COMPLAINT_ROUNDS at most
        self.complaints: dict[int, dict[str, Complaint]] = {}
        self.rejoined: set[int] = set()  # past rounds this node complained about again
        self.waiting: dict[bytes, list[m.Event]] = {}
        self.waiting_bytes = 0  # of the blocks parked in `waiting`
        self.max_waiting_bytes = WAITING_BUDGET_BLOCKS * config.limits.block_bytes_bound
        self.proposed_round = -1
        self.last_proposal_time = float("-inf")
        # the height of the highest certificate that checks of a block this node lacked (heard
        # from the others: they are that far, whatever a peer's answer claims)
        self.certified_ahead = -1
        self.timer_round = -1
        self.paced_round = -1  # the round whose timer was first armed at `timer_armed_at`
        self.timer_armed_at = 0.0
        self.failed_rounds = 0
        # leader -> how long its last certified rounds took here (see ROUND_PACE_FACTOR)
        self.round_paces: dict[str, deque[float]] = {}
        self.propose_timer_round = -1
        self.made_block_count = 0
        self.complaint_count = 0
        self.view_changes = 0  # rounds entered without a certified block (complaints, timeouts)
        self.roots_at = roots_at  # (state root, results hash) after an executed height
        self.executed_height = executed_height
        # blocks to vote for once this node has executed their state height: (that height, the
        # block's hash); the block stays in the tree only (its byte budget bounds it)
        self.awaiting_execution: list[tuple[int, bytes]] = []
        self.genesis_requested = False  # open channel: a validator complained waiting for genesis

    # ------------------------------------------------------------ queries

    @property
    def turn(self) -> int:
        """The rounds each leader leads in a row: the one the channel's genesis states, else this
        peer's (blocks_per_leader, LEADER_BLOCK_CREATION_LIMIT), as `rules.turn_for` takes it.
        A peer set to another turn than the others proposes out of its turn and refuses theirs;
        stated in the genesis, every peer counts the one turn whatever its own setting."""
        stated = self.stated_turn() if self.stated_turn is not None else None
        return turn_for(stated) if stated is not None else self.config.blocks_per_leader

    @property
    def tip(self) -> ChainTip:
        """The last final block."""
        return self.tree.root

    @property
    def high_qc(self) -> QuorumCertificate | None:
        return self.safety.high_qc

    def _high_point(self) -> ChainTip | None:
        """Chain facts after the block of the highest certificate (the block to extend)."""
        qc = self.safety.high_qc
        if qc is None or qc.round <= self.tip.round:
            return self.tip
        return self.tree.point(qc.block_hash)

    @property
    def voting_set(self) -> Voters | None:
        """Who votes on the next block on top of the highest certificate."""
        point = self._high_point() or self.tip
        return point.child_voters or self.latest_validators

    def leader_of_round(self, round_: int) -> str | None:
        voting = self.voting_set
        if voting is None or not voting.validators:
            return None
        # an open channel's founder leads its genesis rounds
        return self._founder_of(voting) or leader_of(voting, round_, self.turn)

    def round_leaders(self, round_: int) -> set[str]:
        """The other validators `round_` needs: its leader, and the next round's, which its votes
        go to (it certifies the block)."""
        leaders = {self.leader_of_round(round_), self.leader_of_round(round_ + 1)}
        return {leader for leader in leaders if leader is not None} - {self.signer.address}

    @property
    def far_behind(self) -> bool:
        """Whether the others' certificates name a block more than MAX_FETCH_DEPTH above this
        node's final tip: it syncs final blocks rather than fetching proposals."""
        return self.certified_ahead > self.tip.height + MAX_FETCH_DEPTH

    def gave_up(self, validator: str, round_: int) -> bool:
        """`validator` complained about `round_` or the next: it votes, leads and certifies in
        neither (a validator syncing far behind gives them up so, `_give_up`)."""
        return any(validator in self.complaints.get(r, ()) for r in (round_, round_ + 1))

    @property
    def is_auditor(self) -> bool:
        """This peer follows the channel without voting: neither the chain's current validator set
        nor the newest one the RadioStation issued names it (a newcomer is named by the latter)."""
        me = self.signer.address
        voting, latest = self.voting_set, self.latest_validators
        return voting is not None and me not in voting and (latest is None or me not in latest)

    @property
    def leader(self) -> str | None:
        """The proposer of the current round."""
        return self.leader_of_round(self.round)

    @property
    def is_leader(self) -> bool:
        return self.leader == self.signer.address

    def has_work(self) -> bool:
        """Transactions wait, or a not-yet-final block holds some, or the genesis block of a
        channel that funds accounts is not final yet, or the RadioStation issued a validator set
        newer than the chain's (a peer that joined an open channel after its first peer founded it
        votes only once the chain takes the set naming it): rounds must make progress."""
        if self.pool or self.tree.has_pending_transactions():
            return True
        latest, chain_set = self.latest_validators, self.tip.next_validators
        if latest is None:
            return False
        if self.tip.height < 0:
            return bool(latest.genesis) or self.genesis_requested
        return chain_set is not None and latest.version > chain_set.version

    # ------------------------------------------------------------ entry points

    def start(self, now: float) -> list[m.Action]:
        """Resume after (re)start."""
        return self._fetch_lock() + self._on_progress(now)

    def vote_again(self, block_hash: bytes, now: float) -> list[m.Action]:
        """After a restart: the vote this node cast for `block_hash` (a voted-for block its store
        kept, back in the tree; the caller names only a block its safety record says it voted
        for, never one it complained about) sent again to the next round's leader, when it was
        in the round of its safety record. The certificate those votes made was
        held in memory only (each node's record keeps the one it had when it voted): a whole
        network started again had none, so no leader could propose on it, and the first load
        waited a round's timeout and complaints (review: 64 clients, each answered one 503). The
        same vote again, the same round and block: no new vote, and nothing the safety rules
        refuse."""
        node = self.tree.get(block_hash)
        if node is None or node.block.header.round != self.safety.highest_vote_round:
            return []
        voting, next_set = node.point.validators, node.point.next_validators
        if voting is None or next_set is None or self.signer.address not in voting:
            return []
        block = node.block
        vote = Vote.create(
            block.header.channel, block.height, block.header.round, block.hash, self.signer
        )
        to = leader_of(next_set, block.header.round + 1, self.turn)
        if to == self.signer.address:
            return self._on_vote(vote, now)
        return [m.SendVote(to, vote)]

    def _fetch_lock(self) -> list[m.Action]:
        """Ask for the block of this node's highest certificate when it is not in the tree (after a
        restart the tree holds only the blocks this node voted for): until it comes, the voters,
        leaders and complaints this node reckons with are those after the final tip, which while a
        set is pending are not the chain's."""
        qc = self.safety.high_qc
        if qc is None or self._high_point() is not None:
            return []
        return [m.FetchBlock(qc.block_hash)]

    def handle(self, event: m.Event, now: float) -> list[m.Action]:
        """Apply one event and return the actions the shell must carry out, in order."""
        self.finalising.clear()  # the last event's final blocks are saved: is_committed knows
        return self._handle(event, now)

    def _handle(self, event: m.Event, now: float) -> list[m.Action]:
        """`handle`, within an event (a parked one it releases: what the event made final so
        far is not saved yet)."""
        match event:
            case m.TxsReceived(txs, gossip, relayer):
                return self._on_txs(txs, gossip, relayer, now)
            case m.TxsUnpaid(hashes):
                self.pool.remove(hashes)
                return []
            case m.ProposalReceived(block):
                return self._on_proposal(block, now)
            case m.VoteReceived(vote):
                return self._on_vote(vote, now)
            case m.CertificateReceived(qc):
                return self._on_qc(qc, now)
            case m.ComplaintReceived(complaint):
                return self._on_complaint(complaint, now)
            case m.BlockFetched(block):
                return self._on_fetched(block, now)
            case m.BlocksSynced(blocks, proof):
                return self._on_synced(blocks, proof, now)
            case m.BlockExecuted(height, _state_root, _results_hash):
                return self._on_executed(height, now)
            case m.TimeoutFired(kind, round_):
                return self._on_timeout(kind, round_, now)
            case m.ValidatorsChanged(validators):
                return self._on_validators(validators, now)
        raise TypeError(f"unknown event {event!r}")

    # ------------------------------------------------------------ transactions

    def _on_txs(
        self, txs: tuple[Transaction, ...], gossip: bool, relayer: str | None, now: float
    ) -> list[m.Action]:
        if self.is_auditor and not gossip:
            # auditors keep no pool of the others' transactions: they never propose. A client's
            # here were acknowledged while this peer was a validator (the chain left it while the
            # intake log was written, or they come back from that log at start): they are pooled,
            # gossiped and sent again at each failed round, until a block holds them
            return []
        self.pool.expire(now)
        added: list[Transaction] = []
        if gossip:
            relayer = self.signer.address
        for tx in txs:
            writer = writer_of(tx, relayer)
            try:  # a client's here were acknowledged: taken even past the pool's limits
                if not self._final(tx) and self.pool.add(
                    tx, now, beyond_limits=gossip, writer=writer
                ):
                    added.append(tx)
            except TxRefused:
                continue  # too large for any block, or outside the timestamp window
            except PoolFullError:
                continue  # relayed, past the pool's or its writer's share: its own peer holds it
        if not added:
            return []
        actions: list[m.Action] = [m.GossipTxs(tuple(added))] if gossip else []
        return actions + self._on_progress(now)

    # ------------------------------------------------------------ proposing

    def _maybe_propose(self, now: float) -> list[m.Action]:
        self.pool.expire(now)
        if not self.is_leader or self.proposed_round >= self.round or not self.has_work():
            return []
        if self.round <= self.safety.highest_vote_round:
            return []  # already voted (maybe for an own proposal before a restart) in this round
        parent = self._high_point()
        if parent is None:
            return [m.FetchBlock(self.safety.high_qc.block_hash)] if self.safety.high_qc else []
        tc = self._justifying_tc(parent)
        if self.round != parent.round + 1 and tc is None:
            return []
        if self.executed_height < parent.state_height:
            # its own execution is behind the chain's: propose once it catches up, or, that far
            # behind (a validator that has just synced a long chain executes for minutes), give
            # up the round at once rather than have the others wait out its timer
            if parent.state_height - self.executed_height > EXECUTION_LAG_GIVE_UP:
                return self._give_up(self.round)
            return []
        # a clock set back since the last proposal counts the interval from now: it must not
        # hold this one until it passes that proposal's time again (each round it led timed out)
        self.last_proposal_time = min(self.last_proposal_time, now)
        wait = self.last_proposal_time + self.config.interval - now
        if wait > 0 and self._has_new_transactions(parent):
            if self.propose_timer_round == self.round:
                return []
            self.propose_timer_round = self.round
            return [m.ScheduleTimeout(wait, "propose", self.round)]
        return self._propose(parent, tc, now)

    def _founder_of(self, voting: Voters | None) -> str | None:
        """The founder leading this open channel's genesis rounds, of the set `voting` (None
        once there is a genesis, or in a listed channel)."""
        point = self._high_point() or self.tip
        return voting.founder() if voting is not None and point.height < 0 else None

    def _founds(self, voting: ValidatorSet) -> bool:
        """This peer is the first validator of `voting`, the one to propose an open genesis."""
        return voting.founder() == self.signer.address

    def _has_new_transactions(self, parent: ChainTip) -> bool:
        """Pooled transactions that the next block would carry. Without any, the proposal only
        finalises the blocks before it: it goes out at once instead of waiting for the interval
        that lets transactions gather."""
        in_flight = self.tree.tx_hashes_on_path(parent.block_hash)
        return any(tx_hash not in in_flight for tx_hash in self.pool.hashes())

    def still_to_gossip(self, txs: list[Transaction]) -> list[Transaction]:
        """Of `txs` queued for gossip, those the others may still lack: pooled here and in no
        certified block (a quorum holds a certified block's transactions, and a member that
        missed it fetches the block with them). A leader's proposal often carries what its own
        clients sent before the gossip batch of it leaves."""
        qc = self.safety.high_qc
        certified = self.tree.tx_hashes_on_path(qc.block_hash) if qc is not None else set()
        pool = self.pool
        return [tx for tx in txs if tx.hash in pool and tx.hash not in certified]

    def expired_for_good(self, tx_hash: bytes) -> bool | None:
        """Whether a transaction that left the pool with its timestamp can no longer be final
        (None: it did not leave so, as far as the pool remembers). It can once the final chain
        holds a block stamped past its window and no block of the tree holds it: a block holds
        no transaction stamped further from its own timestamp (_out_of_window), and a block to
        come is stamped later than the final tip. Before, one a certified block held was said
        expired and made final after."""
        stamp, limit = self.pool.expired_stamp(tx_hash), self.block_window_us()
        if stamp is None or limit is None:
            return None
        return self.tree.transaction(tx_hash) is None and self.tip.timestamp > stamp + limit

    def known_transaction(self, tx_hash: bytes) -> Transaction | None:
        """The transaction `tx_hash` as this peer holds it, pooled or in a block not yet final
        (its signature checked when it came), or None."""
        pooled = self.pool.get(tx_hash)
        return pooled if pooled is not None else self.tree.transaction(tx_hash)

    def backlog(self, now: float, writer: str | None = None) -> tuple[int, float]:
        """Pooled transactions (`writer`'s only, when given) that no proposed block holds yet:
        how many, and how long the oldest of them has waited (the queueing delay that admission
        control watches: a peer watches its own, which blocks take their turn of)."""
        proposed, pool = self.tree.tx_hashes(), self.pool
        if writer is None:
            count = len(pool) - sum(1 for tx_hash in proposed if tx_hash in pool)
        else:
            in_blocks = sum(1 for tx_hash in proposed if pool.writer(tx_hash) == writer)
            count = pool.count_of(writer) - in_blocks
        if count > 0:  # the oldest pooled are the proposed ones: the walk stops soon after them
            for tx_hash in pool.hashes(writer):
                if tx_hash not in proposed:
                    return count, max(0.0, now - pool.arrival(tx_hash))
        return 0, 0.0

    def _justifying_tc(self, parent: ChainTip) -> TimeoutCertificate | None:
        tc = self.last_tc
        if tc is None or parent.round + 1 == self.round:
            return None
        if round_after_timeout(tc.round, self.turn) != self.round:
            return None
        return tc

    def _propose(
        self, parent: ChainTip, tc: TimeoutCertificate | None, now: float
    ) -> list[m.Action]:
        # 1. the validator sets: the parent's voters vote (both sets while one is pending); the
        #    RadioStation's newest set rides along when newer than the chain's and none is pending
        latest = self.latest_validators
        voting: Voters | None
        if parent.next_validators is None or parent.height < 0:  # genesis: the newest, as issued
            current = parent.next_validators
            update = (
                latest if latest and (current is None or latest.version > current.version) else None
            )
            voting = update
        else:
            current = parent.next_validators
            fresh = latest is not None and latest.version > current.version
            update = latest if fresh and parent.pending is None else None
            voting = parent.child_voters
        if voting is None:
            return []
        founder = voting.founder() if parent.height < 0 else None
        if founder is not None and founder != self.signer.address:
            return []  # an open channel's first peer founds it; this one syncs its genesis
        # 2. the oldest pooled transactions that no not-yet-final ancestor holds (none in the
        #    genesis block: it records the channel's configuration, the validator set, only)
        limits = self.config.limits
        in_flight = self.tree.tx_hashes_on_path(parent.block_hash)
        txs = (
            self.pool.take(limits.max_block_txs, limits.max_block_bytes, exclude=in_flight)
            if parent.height >= 0
            else []
        )
        timestamp = max(int(now * 1_000_000), parent.timestamp + 1)
        if not math.isinf(self.pool.window):  # as voters judge it (_out_of_window)
            limit = int(self.pool.window * 1_000_000)
            txs = [tx for tx in txs if abs(tx.timestamp - timestamp) <= limit]
        roots = self.roots_at(self.executed_height) if self.executed_height >= 0 else None
        state_root, results_hash = roots or (EMPTY_ROOT, EMPTY_ROOT)
        block = Block.create(
            channel=parent.channel,
            height=parent.height + 1,
            round_=self.round,
            prev_hash=parent.block_hash,
            prev_qc=self.safety.high_qc if parent.height >= 0 else None,
            transactions=txs,
            timestamp=timestamp,
            leader=self.signer,
            next_leader=self._next_leader(parent, voting, self.round),
            validators_hash=voting.hash,
            validator_update=update,
            prev_tc=tc,
            state_height=self.executed_height if roots else -1,
            state_root=state_root,
            results_hash=results_hash,
        )
        self.proposed_round = self.round
        self.last_proposal_time = now
        # 3. announce it, and handle it like any validator would (it votes for its own block)
        return [m.BroadcastProposal(block), *self._on_proposal(block, now)]

    def _next_leader(self, parent: ChainTip, voting: Voters, round_: int) -> str:
        """Who a block on `parent` in `round_`, voted by `voting`, names as the next leader: the
        leader of the round after it, in the set whose turns lead the block after it (the pending
        set after a handover, the chain's set otherwise: it leads while a set is pending too)."""
        if parent.height < 0 or parent.next_validators is None:
            leading = voting  # the genesis block's set
        elif parent.pending is not None and round_ == parent.round + 1:
            leading = parent.pending  # the handover
        else:
            leading = parent.next_validators
        return leader_of(leading, round_ + 1, self.turn)

    # ------------------------------------------------------------ receiving blocks

    def _on_proposal(self, block: Block, now: float) -> list[m.Action]:
        round_before = self.round
        actions = self._accept_certificates(block, now)
        node = None
        if block.height > self.tip.height:
            node, more = self._insert(block, m.ProposalReceived(block), now, proposal=True)
            actions += more
        if node is None:  # an old or refused block whose certificates may still move this node
            return actions + (self._on_progress(now) if self.round != round_before else [])
        return actions + self._maybe_vote(node, now) + self._on_progress(now)

    def _accept_certificates(self, block: Block, now: float) -> list[m.Action]:
        """The parent certificate and timeout certificate a block carries move this node on."""
        actions: list[m.Action] = []
        qc = block.header.prev_qc
        if qc is not None and qc.round > self.tip.round:
            actions += self._on_qc(qc, now, progress=False)
        tc = block.header.prev_tc
        if tc is not None:
            actions += self._on_tc(tc, now)
        return actions

    def _insert(
        self, block: Block, retry: m.Event, now: float, *, proposal: bool
    ) -> tuple[TreeNode | None, list[m.Action]]:
        """Validate `block` against its parent and add it to the tree (`proposal`: to be voted
        on, so within the bounds a voter checks too; a fetched one was certified, or is held
        until a proposal of it comes)."""
        existing = self.tree.get(block.hash)
        parent = self.tree.point(block.header.prev_hash)
        if existing is not None:
            if proposal and not existing.proposal_checked and parent is not None:
                # the block as this node holds it, checked whole when it came (this copy's body
                # may have been altered on its way: its header hash is the same), now with every
                # check a proposal has (_check_block): a byzantine leader that had it fetched
                # first (a forged certificate naming it) had a transaction stamped outside the
                # window voted for and made final (review)
                held = existing.block
                problem = (
                    self._check_bounds(held, parent, now)
                    or self._foreign(held)
                    or self._out_of_window(held)
                    or self._wrong_next_leader(held, parent)
                )
                if problem:
                    if self._by_its_leader(held, parent):
                        return None, self._refuse_proposal(held, problem, now)
                    return None, [self._refused(held, problem)]
                existing.proposal_checked = True
            return existing, []
        if parent is None:
            # a proposal by nobody's or forged, parked, would push out what a lagging node waits
            # for; one by a leader of a set this node has not seen yet still has its parent asked
            # for (this node is behind)
            if proposal and not self._may_vote(block.header.leader):
                missing, height = block.header.prev_hash, block.height
                if height > self.tip.height + MAX_FETCH_DEPTH:
                    return None, [m.RequestSync(height)]
                return None, [m.FetchBlock(missing, vouched=False)]
            if proposal and (problem := block.signature_problem()) is not None:
                return None, [self._refused(block, problem)]
            return None, self._park(block.header.prev_hash, retry, block.height)
        problem = self._check_block(block, parent, now, proposal)
        if problem:
            # what its leader decided, once it is known to be its leader's (the cheaper check)
            if proposal and self._by_its_leader(block, parent):
                blame = self._leaders_problem(block, parent, now)
                if blame:
                    return None, self._refuse_proposal(block, blame, now)
            return None, [self._refused(block, problem)]
        while not self.tree.has_room(block):
            if not self.tree.evict_stale_leaf(self.round, keep=block.header.prev_hash):
                return None, [m.Rejected("too many blocks awaiting finality; block dropped")]
        node = self.tree.add(block, parent)
        node.proposal_checked = proposal
        if block.header.prev_qc is not None:
            parent_node = self.tree.get(block.header.prev_hash)
            if parent_node is not None:
                self.tree.certify(block.header.prev_qc)
        return node, self._release(block.hash, now) + self._release_votes(block.hash, now)

    @staticmethod
    def _refused(block: Block, problem: str) -> m.Rejected:
        return m.Rejected(f"block {block.height} round {block.header.round}: {problem}", block.hash)

    def _by_its_leader(self, block: Block, parent: ChainTip) -> bool:
        """Whether `block` is of this node's round and signed by that round's leader, as this
        node reckons it (anyone can make a block naming the leader: such a block is nobody's
        proposal). The cheap checks first: the signature costs a recovery."""
        return (
            block.header.round == self.round
            and block.header.leader == self.leader_of_round(block.header.round)
            and self._wrong_leader(block, parent) is None
            and block.signature_problem() is None
        )

    def _leaders_problem(self, block: Block, parent: ChainTip, now: float) -> str | None:
        """Of what a voter refuses in a block not checked whole, what its leader's signature
        decides (a body can be altered on its way; its signed header cannot): the header's
        timestamp and next leader, and, when the transactions match the header's tx_root (which
        fixes their hashes, so their number), their count, one listed twice and one already in
        the chain. Not their signatures, nor so their size: a transaction's hash leaves its
        signature out."""
        signed = check_proposal_time(
            parent, block, self.config.limits, int(now * 1_000_000)
        ) or self._wrong_next_leader(block, parent)
        if signed or not block.body_named:
            return signed
        count, limit = len(block.transactions), self.config.limits.max_block_txs
        if count > limit:
            return f"block holds {count} transactions, limit {limit}"
        if len({tx.hash for tx in block.transactions}) != count:
            return "block lists a transaction twice"
        return self._foreign(block) or self._out_of_window(block) or self._replayed(block, parent)

    def _out_of_window(self, block: Block) -> str | None:
        """Why `block` holds a transaction stamped further from the block's own timestamp than
        TX_TIMESTAMP_WINDOW (None when it holds none): every pool refuses such a one, and a
        peer tells its client that one it dropped so will not be final ("send it again"); a
        leader (byzantine, or with its clock behind) still had it voted, and the one sent again
        executed too (review)."""
        limit = self.block_window_us()
        if limit is None:
            return None
        stamp = block.header.timestamp
        for tx in block.transactions:
            off = tx.timestamp - stamp
            if abs(off) > limit:
                return (
                    f"it holds transaction {tx.hash_hex} stamped {abs(off) / 1_000_000:.0f} s "
                    f"{'after' if off > 0 else 'before'} the block (TX_TIMESTAMP_WINDOW "
                    f"{self.pool.window:g} s, MAX_TIMESTAMP_SKEW and a pool sweep's period more)"
                )
        return None

    def block_window_us(self) -> int | None:
        """How far from a block's timestamp a transaction in it may be stamped (None: any): the
        pool's window and the slack of a leader that filled its block from its own pool (its
        clock off by up to the skew voters allow, its pool swept once a period: a leader of the
        previous version left those to the sweep) — and of one whose window is a little larger
        (each peer has its own TX_TIMESTAMP_WINDOW: keep it alike in a channel)."""
        return block_window_us(self.pool.window, self.config.limits.max_skew_us)

    def _foreign(self, block: Block) -> str | None:
        """Why `block` holds a v3 transaction of another network (one signed for another
        channel, replayed by its leader), None when it holds none."""
        nid = self.network_id() if self.network_id is not None else None
        if nid is None:
            return None
        for tx in block.transactions:
            problem = tx.network_problem(nid)
            if problem is not None:
                return f"transaction {tx.hash_hex} {problem}"
        return None

    def _replayed(self, block: Block, parent: ChainTip) -> str | None:
        in_flight = self.tree.tx_hashes_on_path(parent.block_hash)
        for tx in block.transactions:
            if tx.hash in in_flight or self._final(tx):
                return f"transaction {tx.hash_hex} is already in the chain"
        return None

    def _final(self, tx: Transaction) -> bool:
        return tx.hash in self.finalising or self.is_committed(tx.hash, tx.timestamp)

    def is_final(self, tx: Transaction) -> bool:
        """The transaction is in a final block (an index read, as `_final`)."""
        return self._final(tx)

    def _refuse_proposal(
        self, block: Block, problem: str, now: float, *, held: bool = False
    ) -> list[m.Action]:
        """Refuse a proposal that its round's leader signed, for what its leader decided (its
        header and the transactions the header fixes, `_leaders_problem`, or the whole block as
        checked when it came). One of this round is the only block this validator could vote
        for in the round (a leader proposes once a round): refusing it, the validator complains
        at once, as it would once the round timed out. When the others refuse it too (a leader
        whose clock is far off, whose state differs, or whose blocks break the bounds) their
        complaints move the round at once; when only this validator does (its own clock far
        off) and the votes of the round go to it, it gave the round up, and the others hasten
        the round. A block this node `held` (in its tree) it may still certify from the others'
        votes when it leads the next round: then it waits. A complaint only promises not to
        vote in its round, which this validator would not. An open channel's genesis waits for
        the round's timer: its founder leads every round until it is final, so at once it
        proposed again at once and the rounds ran without pause, ~80 a second, while its clock
        was off (clock review); a listed channel's next turn has another leader."""
        refused = self._refused(block, problem)
        if (
            block.header.round != self.round
            or self.complaints.get(self.round, {}).get(self.signer.address) is not None
            or (held and self.leader_of_round(self.round + 1) == self.signer.address)
            or (block.height == 0 and self._founder_of(self.voting_set) == block.header.leader)
        ):
            return [refused]
        complaint = self._complain(now)
        if complaint:
            refused = m.Rejected(
                f"{refused.reason}; complaining about the round at once", refused.block_hash
            )
        return [refused, *complaint]

    def _check_bounds(self, block: Block, parent: ChainTip, now: float) -> str | None:
        return check_proposal_bounds(parent, block, self.config.limits, int(now * 1_000_000))

    def would_check(self, block: Block) -> bool:
        """Whether handling `block` now would check its transactions' signatures: it is above
        the final tip, new to the tree, its parent is in it, and its header passes
        (`header_problem`: its size, its round's leader, signed by that leader). Only such a
        block's signatures are worth recovering beforehand (a peer does, a slice of its event
        loop at a time): a proposal naming the leader under another's signature, holding
        thousands of transactions its sender signed, cost their recoveries each time it was sent
        (review), and was refused for its own signature only after."""
        if block.height <= self.tip.height or self.tree.get(block.hash) is not None:
            return False
        if self.tree.point(block.header.prev_hash) is None:
            return False
        return self.header_problem([(block, None)]) is None

    def header_problem(
        self, blocks: Sequence[tuple[Block, QuorumCertificate | None]]
    ) -> str | None:
        """What the headers of `blocks` decide, before their transactions' signatures are worth
        recovering: each block's leader and signature, parent and certificates (and, for a synced
        final block, the certificate that comes with it). `blocks` extend one another; None too
        when the first one's parent is not held here yet (it waits, and is checked whole when
        its parent comes). A block fetched by its hash or synced from a member is that member's
        choice: one of many transactions it signed itself, under a forged certificate, cost
        their recoveries on the event loop before the certificate was looked at."""
        if not blocks:
            return None
        first, synced = blocks[0][0], blocks[0][1] is not None
        # a synced range extends the final tip; a fetched block, any block this node holds
        point = self.tip if synced else self.tree.point(first.header.prev_hash)
        limits = self.config.limits
        for block, qc in blocks:
            # a fetched block (not final yet) past this peer's limits is one it would not have
            # voted for: its many signatures are not worth recovering (it syncs, once final)
            problem = check_size(block, limits) if qc is None else None
            if problem is None:
                if point is None or block.height <= self.tip.height:
                    return None  # its parent is not held here yet, or it is final already
                leader = self._wrong_leader(block, point) if qc is None else None
                problem = leader or check_header(point, block, self.issuer, limits.ratio)
                if qc is not None:
                    problem = problem or check_certificate(point, block, qc, limits.ratio)
            if problem:
                return f"block {block.height} round {block.header.round}: {problem}"
            assert point is not None
            point = point.advance(block)
        return None

    def _wrong_leader(self, block: Block, parent: ChainTip) -> str | None:
        voting = parent.voting_set_for(block)
        if voting is not None and voting.validators:  # else check_extends names what is wrong
            expected = (voting.founder() if block.height == 0 else None) or leader_of(
                voting, block.header.round, self.turn
            )
            if block.header.leader != expected:
                return (
                    f"proposed by {block.header.leader}, but the leader is {expected} (leaders "
                    f"take turns of {self.turn} rounds here: LEADER_BLOCK_CREATION_LIMIT, the same "
                    "on every peer, or leader_block_creation_limit in the channel's genesis_data)"
                )
        return None

    def _wrong_next_leader(self, block: Block, parent: ChainTip) -> str | None:
        """What is wrong with the next leader `block` names (its REST shapes show it to clients;
        consensus never reads it, so a leader could name anyone there)."""
        voting = parent.voting_set_for(block)
        if voting is None or not voting.validators:
            return None  # check_extends names what is wrong
        expected = self._next_leader(parent, voting, block.header.round)
        if block.header.next_leader != expected:
            return f"it names {block.header.next_leader!r} as the next leader, which is {expected}"
        return None

    def _check_block(
        self, block: Block, parent: ChainTip, now: float, proposal: bool
    ) -> str | None:
        # the cheap checks first: no signature is recovered for a block of the wrong proposer
        problem = self._wrong_leader(block, parent)
        if problem is None and proposal:  # (a vote's choice: blocks others certified are followed)
            problem = (
                self._check_bounds(block, parent, now)
                or self._foreign(block)
                or self._out_of_window(block)
            )
        problem = problem or check_extends(parent, block, self.issuer, self.config.limits.ratio)
        if problem is None and proposal:  # once signed by its leader: then the leader named it
            problem = self._wrong_next_leader(block, parent)
        return problem or self._replayed(block, parent)

    def _give_up(self, round_: int) -> list[m.Action]:
        """Far behind (syncing, or executing the blocks it synced), this validator can neither vote
        nor lead in the rounds the others are in. Of `round_` (the round after a certificate of
        theirs that checks, or the one it cannot propose in) and the next, it complains at once
        about those it leads or whose votes go to it, so that they need not wait a round timeout
        for it: they complain as soon about a round whose leader, or next leader, gave it
        up. A complaint only promises not to vote in its round, which it could not anyway; the
        highest certificate it carries is older than theirs, so it binds no leader."""
        voting, me = self.voting_set, self.signer.address
        if voting is None or me not in voting:
            return []
        actions: list[m.Action] = []
        for r in (round_, round_ + 1):
            if r <= self.safety.highest_vote_round:
                continue  # voted, complained or gave up there already
            if me not in (self.leader_of_round(r), self.leader_of_round(r + 1)):
                continue
            self.safety.highest_vote_round = r
            complaint = Complaint.create(self.tip.channel, r, self.safety.high_qc, self.signer)
            actions += [
                m.PersistSafety(self.safety.highest_vote_round, self.safety.high_qc),
                m.BroadcastComplaint(complaint),
            ]
        return actions

    def _park(self, missing: bytes, event: m.Event, height: int) -> list[m.Action]:
        """Keep `event` until block `missing` arrives; ask for it (or sync when far behind) when
        a certificate in `event` vouches for it."""
        vouching = self._vouching(missing, event)
        if vouching is not None:
            self.certified_ahead = max(self.certified_ahead, vouching.height)
        if height > self.tip.height + MAX_FETCH_DEPTH:
            # Rounds are given up only on a certificate that checks, of a block that far above
            # the tip, and only those after its round: the event's own height and round are its
            # sender's word, and a forged certificate, or a real old one under a made-up round,
            # let any member take this validator's turns (up to a round of its choosing, for
            # good: the vote record keeps it) from it.
            far = vouching is not None and vouching.height > self.tip.height + MAX_FETCH_DEPTH
            give_up = self._give_up(vouching.round + 1) if vouching is not None and far else []
            return [m.RequestSync(height), *give_up]
        fetch: list[m.Action] = [m.FetchBlock(missing, vouching is not None)]
        if len(self.waiting.get(missing, ())) >= MAX_WAITING:
            return fetch  # enough wait for that block: none gives way for this
        size = _parked_bytes([event])
        # forget the oldest waits rather than this one: their blocks may never come (a byzantine
        # validator can name blocks that do not exist; a block may turn final through sync), and
        # a full map must not keep this node from fetching the blocks it needs now
        while self.waiting and (
            (missing not in self.waiting and len(self.waiting) >= MAX_WAITING)
            or self.waiting_bytes + size > self.max_waiting_bytes
        ):
            oldest = next(iter(self.waiting))
            self.waiting_bytes -= _parked_bytes(self.waiting.pop(oldest))
        self.waiting.setdefault(missing, []).append(event)
        self.waiting_bytes += size
        return fetch

    def _vouching(self, missing: bytes, event: m.Event) -> QuorumCertificate | None:
        """The certificate `event` carries for block `missing` when it is of a block above the
        final tip and checks, under the sets that vote there as far as this node can tell (the
        chain's, with or after a pending one). Names of blocks that do not exist, which any
        member may send without end under forged certificates (or under real ones of final
        blocks), each held this node's single fetch loop for a deadline when the member stalled
        its own answer, and kept the block this node needed from being fetched (a review found
        it): those are asked for only when no vouched name waits. (A genuine certificate of a
        block past a set change this node has not seen does not check here: its block is asked
        for as before, behind the vouched ones.)"""
        qc = _certificate_for(event, missing)
        tip = self.tip
        if qc is None or qc.height <= tip.height or qc.round <= tip.round:
            return None
        # before the first block, the set the RadioStation gave (none: nothing vouches; a forged
        # certificate muted a validator of a channel before its genesis)
        sets: list[Voters] = [v for v in (tip.child_voters, tip.pending) if v is not None]
        if not sets and self.latest_validators is not None:
            sets = [self.latest_validators]
        ratio = self.config.limits.ratio
        return qc if any(qc.verify(voters, ratio) is None for voters in sets) else None

    def _release(self, block_hash: bytes, now: float) -> list[m.Action]:
        actions: list[m.Action] = []
        released = self.waiting.pop(block_hash, [])
        self.waiting_bytes -= _parked_bytes(released)
        for event in released:
            actions += self._handle(event, now)
        return actions

    def _on_fetched(self, block: Block, now: float) -> list[m.Action]:
        if block.height <= self.tip.height:
            return []
        actions = self._accept_certificates(block, now)
        _node, more = self._insert(block, m.BlockFetched(block), now, proposal=False)
        return actions + more + self._on_progress(now)

    # ------------------------------------------------------------ voting

    def _maybe_vote(self, node: TreeNode, now: float) -> list[m.Action]:
        block = node.block
        voting = node.point.validators
        if voting is None or self.signer.address not in voting:
            return []  # not a validator of this block: follow the chain, never vote
        if block.header.round != self.round:
            return []
        qc = block.header.prev_qc
        qc_round = qc.round if qc is not None else -1
        tc = block.header.prev_tc
        if tc is not None and tc.verify(voting, self.config.limits.ratio) is not None:
            invalid = "carries an invalid timeout certificate"
            return self._refuse_proposal(block, invalid, now, held=True)
        if not self.safety.safe_to_vote(block.header.round, qc_round, tc, self.turn):
            return []
        if block.header.state_height > self.executed_height:
            if len(self.awaiting_execution) < MAX_WAITING:
                self.awaiting_execution.append((block.header.state_height, block.hash))
            return []  # vote once this node has executed that height too
        problem = self._check_roots(block)
        if problem:
            if self.roots_at(block.header.state_height) is None:
                return [self._refused(block, problem)]  # this node's own gap, not the leader's
            return self._refuse_proposal(block, problem, now, held=True)
        # 1. record and persist the vote, 2. send it to the next round's leader
        self.safety.record_vote(block.header.round, qc)
        vote = Vote.create(
            block.header.channel, block.height, block.header.round, block.hash, self.signer
        )
        next_set = node.point.next_validators
        assert next_set is not None
        to = leader_of(next_set, block.header.round + 1, self.turn)
        actions: list[m.Action] = [
            m.PersistSafety(self.safety.highest_vote_round, self.safety.high_qc, block)
        ]
        if to == self.signer.address:  # its own vote: counted here, never sent
            return actions + self._on_vote(vote, now)
        return [*actions, m.SendVote(to, vote)]

    def _check_roots(self, block: Block) -> str | None:
        height = block.header.state_height
        if height < 0:
            return None
        mine = self.roots_at(height)
        if mine is None:
            return f"cannot check the state of height {height}: no record of it here"
        if mine != (block.header.state_root, block.header.results_hash):
            return f"state root or results hash of height {height} differs from this peer's"
        return None

    def _on_executed(self, height: int, now: float) -> list[m.Action]:
        self.executed_height = max(self.executed_height, height)
        self.pool.note_executed(self.executed_height)
        ready = [h for state_height, h in self.awaiting_execution if state_height <= height]
        self.awaiting_execution = [w for w in self.awaiting_execution if w[0] > height]
        actions: list[m.Action] = []
        for block_hash in ready:
            node = self.tree.get(block_hash)
            if node is not None:  # not evicted meanwhile
                actions += self._maybe_vote(node, now)
        return actions + self._on_progress(now)

    def _on_vote(self, vote: Vote, now: float) -> list[m.Action]:
        if vote.round < self.tip.round or vote.channel != self.tip.channel:
            return []
        node = self.tree.get(vote.block_hash)
        if node is None:
            return self._hold_early(vote)  # the proposal may still come
        if node.certificate is not None and node.certificate.round == vote.round:
            return []
        if (vote.height, vote.round) != (node.block.height, node.block.header.round):
            return [m.Rejected(f"vote from {vote.voter} does not match the block it names")]
        voting = node.point.validators
        assert voting is not None
        if vote.voter not in voting:
            return [m.Rejected(f"vote from {vote.voter}, who is not a validator")]
        if not vote.verify_signature():
            return [m.Rejected(f"vote from {vote.voter} has a bad signature")]
        if equivocation := self._note_vote(vote):
            return [equivocation]
        key = (vote.round, vote.block_hash)
        if key not in self.votes and not self._room_for_tally(vote):
            return []
        tally = self.votes.setdefault(key, {})
        tally[vote.voter] = vote
        if not voting.has_quorum(tally, self.config.limits.ratio):
            return []
        qc = QuorumCertificate.from_votes(list(tally.values()))
        del self.votes[key]
        actions = self._on_qc(qc, now)
        if any(_carries(action, qc) for action in actions):
            return actions  # the proposal made at once brings the certificate to every member
        return [m.BroadcastCertificate(qc), *actions]

    def _room_for_tally(self, vote: Vote) -> bool:
        """Make room for the tally `vote` opens, or say there is none. Tallies of rounds below the
        final tip's are dropped (no vote for them counts any more). A validator's vote is in at
        most TALLIES_PER_VOTER tallies, and past MAX_TALLIES in all, the tally farthest from this
        node's round gives way; neither gives way to a farther one. Before, the tally of the
        lowest round gave way: a byzantine validator voting for blocks of its own far rounds
        pushed out the tally of the round being certified, each time a vote came, and its leader
        never formed a certificate."""
        for key in [key for key in self.votes if key[0] < self.tip.round]:
            del self.votes[key]
        mine = [key for key, tally in self.votes.items() if vote.voter in tally]
        if len(mine) >= TALLIES_PER_VOTER:
            farthest = max(mine, key=lambda key: self._distance(key[0]))
            if self._distance(vote.round) >= self._distance(farthest[0]):
                return False
            del self.votes[farthest][vote.voter]
            if not self.votes[farthest]:
                del self.votes[farthest]
        if len(self.votes) >= MAX_TALLIES:
            farthest = max(self.votes, key=lambda key: self._distance(key[0]))
            if self._distance(vote.round) >= self._distance(farthest[0]):
                return False
            del self.votes[farthest]
        return True

    def _hold_early(self, vote: Vote) -> list[m.Action]:
        """Keep a vote for a block not seen here until the block comes, when it is of a round this
        node may still certify, by a validator of a set it knows (`_may_vote`), and signed by it:
        neither outsiders nor forged signatures take room. One a round per validator (a second is
        an equivocation), and at most EARLY_VOTES_PER_VOTER per validator, its oldest going
        first: a byzantine validator naming blocks that never come pushes out only its own.
        Past MAX_EARLY_VOTES in all, the oldest go first."""
        if vote.round + 1 < self.round or not self._may_vote(vote.voter):
            return []
        # a good signature is remembered: checking it again when the block comes costs nothing
        if not vote.verify_signature():
            return [m.Rejected(f"vote from {vote.voter} has a bad signature")]
        if equivocation := self._note_vote(vote):
            return [equivocation]
        if vote in self.early_votes.get(vote.block_hash, ()):
            return []
        mine = [h for h, votes in self.early_votes.items() for v in votes if v.voter == vote.voter]
        if len(mine) >= EARLY_VOTES_PER_VOTER:
            self._drop_early(mine[0], vote.voter)
        self.early_votes.setdefault(vote.block_hash, []).append(vote)
        self.early_vote_count += 1
        while self.early_vote_count > MAX_EARLY_VOTES:
            oldest = next(iter(self.early_votes))
            self.early_vote_count -= len(self.early_votes.pop(oldest))
        return []

    def _may_vote(self, voter: str) -> bool:
        """`voter` is a validator of a set this node knows: the newest issued, or one the blocks
        above the final tip run on or carry (a validator of a set pending on a block here votes
        on its children before this node hears of the set otherwise)."""
        known = [self.voting_set, self.latest_validators, self.tip.child_voters]
        known += [node.point.child_voters for node in self.tree.nodes.values()]
        return any(voters is not None and voter in voters for voters in known)

    def _drop_early(self, block_hash: bytes, voter: str) -> None:
        held = [v for v in self.early_votes[block_hash] if v.voter != voter]
        self.early_vote_count -= len(self.early_votes[block_hash]) - len(held)
        if held:
            self.early_votes[block_hash] = held
        else:
            del self.early_votes[block_hash]

    def _release_votes(self, block_hash: bytes, now: float) -> list[m.Action]:
        held = self.early_votes.pop(block_hash, [])
        self.early_vote_count -= len(held)
        actions: list[m.Action] = []
        for vote in held:
            actions += self._on_vote(vote, now)
        return actions

    def _note_vote(self, vote: Vote) -> m.Rejected | None:
        """Remember which block a validator voted for in a round; a second, different vote in
        the same round (it signed both) is refused and named."""
        first = self.voted_for.setdefault((vote.round, vote.voter), vote.block_hash)
        if len(self.voted_for) > MAX_VOTES_REMEMBERED:
            self.voted_for = {k: v for k, v in self.voted_for.items() if k[0] >= self.tip.round}
            if len(self.voted_for) > MAX_VOTES_REMEMBERED:
                self.voted_for = {(vote.round, vote.voter): first}
        if first == vote.block_hash:
            return None
        return m.Rejected(
            f"validator {vote.voter} signed two different votes in round {vote.round}: for "
            f"block {first.hex()[:16]} and for block {vote.block_hash.hex()[:16]}"
        )

    # ------------------------------------------------------------ certificates and finality

    def _on_qc(self, qc: QuorumCertificate, now: float, *, progress: bool = True) -> list[m.Action]:
        if qc.channel != self.tip.channel or qc.round <= self.tip.round:
            return []
        node = self.tree.get(qc.block_hash)
        if node is None:
            return self._park(qc.block_hash, m.CertificateReceived(qc), qc.height)
        if node.certificate is None:
            problem = check_certificate(
                self.tree.parent_point(node) or self.tip, node.block, qc, self.config.limits.ratio
            )
            if problem:
                return [m.Rejected(f"certificate {qc.height}/{qc.round}: {problem}")]
            node.certificate = qc
        self.safety.observe_qc(node.certificate)
        actions = self._commit_by_two_chain(node)
        paced = node.block.header.round == self.round == self.paced_round
        leader = self._pace_of(node) if paced else None
        if leader is not None:
            self._note_pace(leader, now - self.timer_armed_at)
        if node.block.header.round + 1 > self.round:
            self._enter_round(node.block.header.round + 1, progressed=True)
        # without `progress` the caller proposes after it, if at all (a proposal or complaint
        # that brought the certificate may be refused): the new round's timer is armed here
        return actions + (self._on_progress(now) if progress else self._arm_timer(now))

    def _commit_by_two_chain(self, node: TreeNode) -> list[m.Action]:
        """Finalise the parent of a certified block when their rounds are consecutive."""
        parent_hash = node.block.header.prev_hash
        parent = self.tree.get(parent_hash)
        if parent is None or parent.block.header.round + 1 != node.block.header.round:
            return []
        assert node.certificate is not None
        return self._commit(parent, proof=(node.block, node.certificate))

    def _commit(self, target: TreeNode, proof: tuple[Block, QuorumCertificate]) -> list[m.Action]:
        path = self.tree.path_to(target.block.hash)
        actions: list[m.Action] = []
        for index, node in enumerate(path):
            qc = node.certificate
            assert qc is not None, "an ancestor of a certified block is certified"
            last = index == len(path) - 1
            actions.append(m.CommitBlock(node.block, qc, proof if last else None))
            self._finalise(node.block)
            if node.block.header.leader == self.signer.address:
                self.made_block_count += 1
            self.tip_certificate = qc
            self._adopt_validators(node.point)
        if path:
            self.tree.advance_root(path[-1].point)
            self.failed_rounds = 0
        return actions

    def _finalise(self, block: Block) -> None:
        hashes = [tx.hash for tx in block.transactions]
        self.finalising.update(hashes)
        self.pool.remove(hashes)
        if block.height > self.executed_height:
            self.pool.note_final(block.height, block.transactions)

    def _adopt_validators(self, point: ChainTip) -> None:
        """The newest set the final chain names (its own, or the one pending on it) is at least
        the newest known: the RadioStation's may lag after a restart."""
        latest, final = self.latest_validators, point.pending or point.next_validators
        if final is not None and (latest is None or final.version > latest.version):
            self.latest_validators = final

    def _on_synced(
        self,
        blocks: tuple[tuple[Block, QuorumCertificate], ...],
        proof: tuple[Block, QuorumCertificate] | None,
        now: float,
    ) -> list[m.Action]:
        """Final blocks from a peer: each must extend the last and be certified; the newest ones
        are accepted only as far as a certified child in the next round proves them final."""
        point, checked = self.tip, []
        for block, qc in blocks:
            if block.height <= point.height:
                continue
            problem = check_extends(point, block, self.issuer, self.config.limits.ratio)
            problem = problem or check_certificate(point, block, qc, self.config.limits.ratio)
            if problem:
                return [m.SyncRefused(f"synced block {block.height}: {problem}")]
            checked.append((block, qc, point))
            point = point.advance(block)
        final = _proven_final_count(checked, proof, point, self.issuer, self.config.limits.ratio)
        actions: list[m.Action] = []
        for index, (block, qc, parent) in enumerate(checked[:final]):
            last_proof = None
            if index == final - 1:  # the newest final block keeps the child that proves it
                last_proof = proof if final == len(checked) else checked[final][:2]
            actions.append(m.CommitBlock(block, qc, last_proof))
            self._finalise(block)
            self.tip_certificate = qc
            self.safety.observe_qc(qc)
            new_root = parent.advance(block)
            self._adopt_validators(new_root)
            self.tree.advance_root(new_root)
        if final and self.tip.round + 1 > self.round:
            self._enter_round(self.tip.round + 1, progressed=True)
        return actions + self._on_progress(now)

    # ------------------------------------------------------------ complaints and rounds

    def _on_timeout(self, kind: str, round_: int, now: float) -> list[m.Action]:
        if kind == "propose":
            self.propose_timer_round = -1
            return self._maybe_propose(now) if round_ == self.round else []
        if kind != "round" or round_ != self.round:
            return []
        self.timer_round = -1
        if not self.has_work():
            return []
        self.failed_rounds += 1
        return (
            self._fetch_lock()
            + self._regossip()
            + self._complain(now)
            + self._remind_laggards()
            + self._arm_timer(now)
        )

    def _remind_laggards(self) -> list[m.Action]:
        """Send again the complaints behind the timeout certificate that moved this node on,
        as long as no certificate it knows takes a peer as far (a laggard that complains gets
        that one): peers that missed some of them are still in that round, or in the one after it
        when it was certified too, and those ahead, if no more than a third, cannot draw them on."""
        tc = self.last_tc
        if tc is None or tc.round >= self.round:
            return []
        if self.safety.high_qc_round + 1 >= round_after_timeout(tc.round, self.turn):
            return []  # the certificate takes a laggard as far as the timeout did
        return [m.BroadcastComplaint(complaint) for complaint in self.tc_complaints]

    def _regossip(self) -> list[m.Action]:
        """Send the oldest pooled transactions again: a leader that missed them can propose.
        Only those in certified blocks are left out: a block of this node's tree that nobody
        certified may be one nobody else ever got (its proposal lost, or this node's own before
        a restart), and its transactions would then reach no other leader. Another writer's v3
        ones are not sent (they would be its share's at the others as this peer's, mempool.
        writer_of: a review had a writer's flood sent to one peer fill that peer's share
        everywhere after a failed round); its own peer sends them, or this one proposes them."""
        limits = self.config.limits
        qc = self.safety.high_qc
        certified = self.tree.tx_hashes_on_path(qc.block_hash) if qc is not None else set()
        txs = self.pool.take(limits.max_block_txs, limits.max_block_bytes, exclude=certified)
        me, pool = self.signer.address, self.pool
        txs = [tx for tx in txs if tx.version == V1 or pool.writer(tx.hash) == me]
        return [m.GossipTxs(tuple(txs))] if txs else []

    def _complain(self, now: float) -> list[m.Action]:
        if not self.safety.safe_to_complain(self.round):
            return []
        voting = self.voting_set
        if voting is None or self.signer.address not in voting:
            return []
        mine = self.complaints.get(self.round, {}).get(self.signer.address)
        if mine is None:
            self.safety.highest_vote_round = max(self.safety.highest_vote_round, self.round)
            mine = Complaint.create(self.tip.channel, self.round, self.safety.high_qc, self.signer)
            self.complaint_count += 1
        actions: list[m.Action] = [
            m.PersistSafety(self.safety.highest_vote_round, self.safety.high_qc),
            m.BroadcastComplaint(mine),
        ]
        return actions + self._count_complaint(mine, now)

    def _on_complaint(self, complaint: Complaint, now: float) -> list[m.Action]:
        if complaint.channel != self.tip.channel:
            return []
        actions = self._on_complaint_in_channel(complaint, now)
        if self._founding_asked(complaint):
            # an open channel's founder without transactions of its own: a validator waits for a
            # genesis (it holds transactions this node may never see: gossip happens at intake)
            self.genesis_requested = True
            actions += self._on_progress(now)
        return actions

    def _founding_asked(self, complaint: Complaint) -> bool:
        latest = self.latest_validators
        return (
            self.tip.height < 0
            and not self.genesis_requested
            and latest is not None
            and self._founds(latest)
            and complaint.voter in latest
            and complaint.verify_signature()
        )

    def _on_complaint_in_channel(self, complaint: Complaint, now: float) -> list[m.Action]:
        counts = self._moves_on(complaint.round)
        high = self.safety.high_qc
        helps = high is not None and self._lags(complaint, high)
        if not counts and not helps:
            return self._rejoin(complaint)
        voting = self.voting_set
        if voting is None or complaint.voter not in voting:
            reason = f"complaint from {complaint.voter}, who is not a validator"
            return [m.Rejected(reason)] if counts else []
        if not complaint.verify_signature():
            reason = f"complaint from {complaint.voter} has a bad signature"
            return [m.Rejected(reason)] if counts else []
        # a complainer behind this node's certificate gets it
        actions: list[m.Action] = (
            [m.SendCertificate(complaint.voter, high)] if high and helps else []
        )
        if not counts:
            return actions
        qc = complaint.high_qc
        if qc is not None and qc.round > self.safety.high_qc_round:
            if self.tree.get(qc.block_hash) is None:  # count it once the block and its QC check
                parked = self._park(qc.block_hash, m.ComplaintReceived(complaint), qc.height)
                return actions + parked
            actions += self._on_qc(qc, now, progress=False)
        if complaint.high_qc_round > self.safety.high_qc_round:
            # its certificate did not check: a timeout certificate counting the claim would make
            # the next leader extend a certificate of that round, which nobody can
            return [
                *actions,
                m.Rejected(
                    f"complaint from {complaint.voter} claims a certificate of round "
                    f"{complaint.high_qc_round} that does not check"
                ),
            ]
        return actions + self._count_complaint(complaint, now)

    def _rejoin(self, complaint: Complaint) -> list[m.Action]:
        """A validator still complains about a round this node has left, and no certificate here
        moves it on: this node complains about that round too, once, with its highest
        certificate. It never votes in that round again, so the complaint says only what is
        true. The complaints behind the timeout that moved this node on are resent when it formed
        them (`_remind_laggards`), but not kept across a restart: when a laggard's quorum needed
        this node's own (a group counts only when nearly all its members complain) and that one
        was lost, the laggards waited for good (a seed of a set-change fuzz stalled so)."""
        round_, oldest = complaint.round, max(self.tip.round + 1, self.round - MAX_COMPLAINT_ROUNDS)
        if not oldest <= round_ < self.round or round_ in self.rejoined:
            return []
        voting = self.voting_set
        if voting is None or complaint.voter not in voting or self.signer.address not in voting:
            return []
        if not complaint.verify_signature():  # (a forged one would cost a synced write and a
            return []  # complaint to every peer, from anyone who can reach this one)
        self.rejoined = {r for r in self.rejoined if r >= oldest} | {round_}
        # saved before it leaves, as every complaint is: a node restarted after a kill -9 picks
        # its round from the saved record, and without it could vote in the round complained of
        self.safety.highest_vote_round = max(self.safety.highest_vote_round, round_)
        mine = Complaint.create(self.tip.channel, round_, self.safety.high_qc, self.signer)
        return [
            m.PersistSafety(self.safety.highest_vote_round, self.safety.high_qc),
            m.BroadcastComplaint(mine),
        ]

    def _lags(self, complaint: Complaint, qc: QuorumCertificate) -> bool:
        """The complaint is about a round this node has left by `qc`, which its signer lacks."""
        return (
            complaint.round < self.round
            and complaint.round <= qc.round
            and complaint.high_qc_round < qc.round
        )

    def _count_complaint(self, complaint: Complaint, now: float) -> list[m.Action]:
        round_ = complaint.round
        if not self._moves_on(round_):
            return []
        voter = complaint.voter
        if voter not in self.complaints.get(round_, ()):
            held = [r for r, tally in self.complaints.items() if voter in tally]
            if len(held) >= MAX_COMPLAINT_ROUNDS:
                # a validator's complaints count in the few rounds nearest this node's: a
                # byzantine one may sign complaints about any number of rounds, near or far, and
                # only its own give way to them, never the tallies others need
                farthest = max(held, key=self._distance)
                if self._distance(round_) >= self._distance(farthest):
                    return []
                del self.complaints[farthest][voter]
                if not self.complaints[farthest]:
                    del self.complaints[farthest]
        tally = self.complaints.setdefault(round_, {})
        tally[voter] = complaint
        voting = self.voting_set
        assert voting is not None
        actions: list[m.Action] = []
        if (
            round_ >= self.round
            and self.signer.address not in tally
            and voting.exceeds_third(tally, self.config.limits.ratio)
        ):
            # more than a third complains: some honest validator timed out, so join it
            self._enter_round(round_, progressed=False)
            actions += self._complain(now)
            tally = self.complaints.get(round_, tally)
        if voting.has_quorum(tally, self.config.limits.ratio):
            # only the complaints of the set's members: a tally begun under an older set (the
            # RadioStation's before the genesis block, or before a block that changed the set
            # was certified) may hold a complaint of a validator since removed, and a timeout
            # certificate that counts it does not verify, again at every complaint after it
            counted = tuple(c for voter, c in tally.items() if voter in voting)
            tc = TimeoutCertificate.from_complaints(list(counted))
            actions += self._on_tc(tc, now)
            if self.last_tc is tc:
                self.tc_complaints = counted
            actions += self._on_progress(now)
        return actions

    def _on_tc(self, tc: TimeoutCertificate, now: float) -> list[m.Action]:
        next_round = round_after_timeout(tc.round, self.turn)
        held = self.last_tc
        if next_round <= self.round and held is not None and not _better_tc(tc, held):
            return []
        voting = self.voting_set
        if voting is None:
            return []
        problem = tc.verify(voting, self.config.limits.ratio)
        if problem:
            return [m.Rejected(f"timeout certificate {tc.round}: {problem}")]
        if held is None or _better_tc(tc, held):
            self.last_tc = tc
            self.tc_complaints = ()  # the caller sets them when it formed `tc` here
        if next_round > self.round:
            self._enter_round(next_round, progressed=False)
        return []

    def _enter_round(self, round_: int, *, progressed: bool) -> None:
        if round_ <= self.round:
            return
        self.round = round_
        if progressed:
            self.failed_rounds = 0
        else:
            self.view_changes += 1
        self.timer_round = -1
        for old in [r for r in self.complaints if not self._moves_on(r)]:
            del self.complaints[old]
        for block_hash in [h for h, held in self.early_votes.items() if held[0].round + 1 < round_]:
            self.early_vote_count -= len(self.early_votes.pop(block_hash))

    def _distance(self, round_: int) -> tuple[int, bool]:
        """How far `round_` is from this node's round; of two as far, a past one is farther."""
        return abs(round_ - self.round), round_ < self.round

    def _moves_on(self, round_: int) -> bool:
        """A timeout certificate of `round_` would move this node to a later round. A round can be
        both certified and timed out: peers that saw the certificate first are in the round after
        it, the others in the next leader's turn; complaints about it still count for the former,
        or neither side could ever reach a quorum again."""
        return round_after_timeout(round_, self.turn) > self.round

    def _arm_timer(self, now: float) -> list[m.Action]:
        if self.timer_round == self.round or not self.has_work():
            return []
        self.timer_round = self.round
        if self.paced_round != self.round:  # armed again after a timeout: timed from the first
            self.paced_round, self.timer_armed_at = self.round, now
        timeout = min(
            self.paced_timeout() * (2 ** min(self.failed_rounds, 16)),
            self.config.max_round_timeout,
        )
        return [m.ScheduleTimeout(timeout, "round", self.round)]

    def _note_pace(self, leader: str, took: float) -> None:
        """A round of `leader` was certified `took` seconds after its timer was armed here."""
        voting = self.voting_set
        if voting is None or leader not in voting:
            return
        for gone in [v for v in self.round_paces if v not in voting]:  # bounded by the set
            del self.round_paces[gone]
        self.round_paces.setdefault(leader, deque(maxlen=ROUND_PACE_KEPT)).append(max(took, 0.0))

    def _timed_alone(self, round_: int) -> bool:
        """Whether `round_` tells of its leader alone: its leader leads the next round too, so
        that it makes the round's certificate (from the votes sent to it) as well as its block.
        The round before a turn depends on two leaders (the next one makes its certificate): one
        validator sending late dragged out its own rounds and that one, two leaders' rounds.
        With one block a leader every round is such a round: they are all counted then."""
        if self.turn <= 1:
            return True
        return self.leader_of_round(round_ + 1) == self.leader_of_round(round_)

    def _pace_of(self, node: TreeNode) -> str | None:
        """The leader a certified round `node` tells the pace of (see `_timed_alone`): None when
        it does not tell of its leader alone, or the set leading now did not make it (a set
        changed: its leader was not the round's by this set's turns)."""
        leader, round_ = node.block.header.leader, node.block.header.round
        if leader != self.leader_of_round(round_) or not self._timed_alone(round_):
            return None
        return leader

    def _paced_by(self, voting: Voters, slowest: list[str]) -> bool:
        """Whether faulty validators cannot all be among the `slowest` leaders, so that their
        slowest round is honestly slow: more than a third of the weight when only rounds a leader
        makes alone are timed (f+1 of 3f+1 alike), else a quorum (each faulty validator drags
        two leaders' rounds: 2f+1)."""
        ratio = self.config.limits.ratio
        if self.turn > 1:
            return voting.exceeds_third(slowest, ratio)
        return voting.has_quorum(slowest, ratio)

    def paced_timeout(self) -> float:
        """A round's timeout before failures double it: TIMEOUT_FOR_LEADER_COMPLAIN, or, where
        certified rounds take longer, ROUND_PACE_FACTOR times the slowest recent round of the
        slowest leader that faulty validators cannot outnumber (`_paced_by`: the (f+1)-th slowest
        of equal weights, f: the validators that may be faulty; counting the rounds a leader
        makes alone, `_timed_alone`); at most
        MAX_TIMEOUT_FOR_LEADER_COMPLAIN. (The (2f+1)-th slowest of all rounds, as before, paced
        only once three leaders' turns of four were seen: ~60 rounds, most of the complaints
        between far peers came before.)"""
        paced = ROUND_PACE_FACTOR * self.round_pace()
        return min(max(self.config.round_timeout, paced), self.config.max_round_timeout)

    def round_pace(self) -> float:
        """How long certified rounds take here: the slowest recent round of the slowest leader
        faulty validators cannot outnumber (see paced_timeout); 0.0 until enough leaders' rounds
        were seen."""
        voting = self.voting_set
        if voting is None:
            return 0.0
        paces = sorted(
            (
                (max(paces), leader)
                for leader, paces in self.round_paces.items()
                if leader in voting
            ),
            reverse=True,
        )
        slowest: list[str] = []
        for pace, leader in paces:
            slowest.append(leader)
            if self._paced_by(voting, slowest):
                return pace
        return 0.0

    def _on_progress(self, now: float) -> list[m.Action]:
        """After any change: propose if it is this node's turn, and keep the round timer armed."""
        return self._maybe_propose(now) + self._arm_timer(now)

    def _on_validators(self, validators: ValidatorSet, now: float) -> list[m.Action]:
        latest = self.latest_validators
        if latest is not None and validators.version <= latest.version:
            return []  # known, or older (each refresh of the peer list sends it again)
        if validators.channel != self.tip.channel or not validators.verify_issuer(self.issuer):
            return [m.Rejected("validator set is not signed by the RadioStation")]
        if not validators.validators and latest is not None and latest.validators:
            # handed over to, it would have no leader and no quorum for good: no later set
            # could be handed over to either (a review emptied a channel at its RadioStation)
            return [
                m.Rejected(
                    f"validator set version {validators.version} names no validator; "
                    f"keeping version {latest.version} until one that names some"
                )
            ]
        self.latest_validators = validators
        return self._on_progress(now)


def _better_tc(tc: TimeoutCertificate, held: TimeoutCertificate) -> bool:
    """`tc` justifies a proposal better than `held`: a later round, or the same round with a
    lower highest claim (a certificate that a member signed a claim into it cannot back makes
    every proposal extending the real highest certificate refused; one formed of complaints
    whose certificates checked here replaces it)."""
    return tc.round > held.round or (
        tc.round == held.round and tc.max_high_qc_round < held.max_high_qc_round
    )


def _proven_final_count(
    checked: list[tuple[Block, QuorumCertificate, ChainTip]],
    proof: tuple[Block, QuorumCertificate] | None,
    last_point: ChainTip,
    issuer: str,
    ratio: Fraction,
) -> int:
    """How many of the checked blocks are proven final by a certified child one round later
    (the proof's child checked as any synced block: a child that claimed height 0, under a set
    of its server's own key, proved a block final that the honest peers had orphaned, review)."""
    final = 0
    for index in range(len(checked) - 1):
        block, child = checked[index][0], checked[index + 1][0]
        if child.header.round == block.header.round + 1:
            final = index + 1
    if checked and proof is not None:
        child, child_qc = proof
        last = checked[-1][0]
        if (  # its certificate before its transactions' signatures (a forged one costs none)
            child.header.round == last.header.round + 1
            and check_header(last_point, child, issuer, ratio) is None
            and check_certificate(last_point, child, child_qc, ratio) is None
            and check_extends(last_point, child, issuer, ratio) is None
        ):
            final = len(checked)
    return final


def _carries(action: m.Action, qc: QuorumCertificate) -> bool:
    """`action` broadcasts a proposal whose parent certificate certifies what `qc` does."""
    if not isinstance(action, m.BroadcastProposal):
        return False
    carried = action.block.header.prev_qc
    return carried is not None and (carried.block_hash, carried.round) == (qc.block_hash, qc.round)


def _certificate_for(event: m.Event, block_hash: bytes) -> QuorumCertificate | None:
    """The certificate of block `block_hash` that `event` carries, if any."""
    match event:
        case m.ProposalReceived(block) | m.BlockFetched(block):
            qc = block.header.prev_qc
        case m.CertificateReceived(qc):
            pass
        case m.ComplaintReceived(complaint):
            qc = complaint.high_qc
        case _:
            qc = None
    return qc if qc is not None and qc.block_hash == block_hash else None


def _parked_bytes(events: list[m.Event]) -> int:
    """The bytes of the blocks and certificates parked `events` carry: a certificate (alone or a
    complaint's) can be a member's forgery of 5,000 signatures under a block name that never
    comes, and 256 such held 310 MB where only blocks were counted (review)."""
    size = 0
    for event in events:
        match event:
            case m.ProposalReceived(block) | m.BlockFetched(block):
                size += len(block.encode())
            case m.CertificateReceived(qc) | m.ComplaintReceived(Complaint(high_qc=qc)):
                size += len(qc.encode()) if qc is not None else 0
    return size
