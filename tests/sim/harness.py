"""A seeded, deterministic network of LFT state machines driven by a manual clock.

Faults: message delay, loss, duplication and reordering; partitions; crash and restart (the state
is rebuilt from what the node persisted: its final chain and its voting record); byzantine nodes,
at least one kind for each consensus message:

* proposals: "equivocate" (two blocks for one round), "invalid" (a forged transaction), "bad-roots"
  (a state root nobody computed), "replay" (a transaction of the block its certificate makes
  final, again);
* votes: "double-vote" (a second vote in the round), "forge" (votes and complaints in honest names,
  replays of old ones);
* complaints: "complain-flood" (its own valid complaints about rounds that are fine, the current
  one, many just ahead and many far ahead, and re-labelled copies), "complain-inflate"
  (complaints whose highest certificate is forged, claiming a far higher round than any
  certified); both propose nothing in their own turns, so that the rounds after those need a
  timeout certificate;
* certificates: "cert-forge" (too few voters, one voter counted many times, a voter outside the set,
  signatures that are not the voters', a block that does not exist), "cert-replay" (real
  certificates sent again: old ones, and their signatures claiming a later round or another block).
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from loopchain.blockchain.chain import ChainTip, Limits
from loopchain.blockchain.mempool import TxPool
from loopchain.consensus import messages as m
from loopchain.consensus.rules import SafetyRules
from loopchain.consensus.state import MAX_WAITING, ChannelConsensus, ConsensusConfig
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Group, Validator, ValidatorSet
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

CHANNEL = "sim"
NETWORK_ID = 0x3  # the ICON network id of the channel (its v3 transactions name it)
BLOCKS_PER_LEADER = 3
FAR_ROUNDS = 1000  # how far ahead of the real rounds the byzantine complaints reach
FLOOD_ROUNDS = MAX_WAITING + 1  # new far-ahead rounds a complaint flooder names each time

# byzantine kinds, by the message they abuse (see the module docstring)
BYZANTINE_BY_MESSAGE = {
    "proposal": ("equivocate", "invalid", "bad-roots", "replay"),
    "vote": ("double-vote", "forge"),
    "complaint": ("complain-flood", "complain-inflate"),
    "certificate": ("cert-forge", "cert-replay"),
}
BYZANTINE = tuple(kind for kinds in BYZANTINE_BY_MESSAGE.values() for kind in kinds)
SILENT_LEADERS = BYZANTINE_BY_MESSAGE["complaint"]  # they propose nothing in their turns


@dataclass
class Disk:
    """What a node persisted: survives its crash."""

    chain: list[tuple[Block, QuorumCertificate]] = field(default_factory=list)
    proof: tuple[Block, QuorumCertificate] | None = None
    safety: tuple[int, QuorumCertificate | None] = (-1, None)
    roots: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    # the vote cast in the record's round, as the block store keeps it (BlockStore.last_vote)
    last_vote: tuple[int, Block] | None = None


@dataclass
class Node:
    """One simulated peer."""

    signer: Signer
    disk: Disk
    state: ChannelConsensus
    byzantine: str = ""  # "" (honest) or one of BYZANTINE
    up: bool = True
    committed: set[bytes] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    waited_out: int = 0  # rounds it complained about when their timer fired
    # what it signed, over its restarts (an honest node never votes twice in a round, nor in
    # one it complained in first): round -> block voted for, rounds complained in first
    votes_signed: dict[int, bytes] = field(default_factory=dict)
    complained_first: set[int] = field(default_factory=set)

    @property
    def address(self) -> str:
        return self.signer.address

    @property
    def chain(self) -> list[tuple[Block, QuorumCertificate]]:
        return self.disk.chain


def _config(blocks_per_leader: int) -> ConsensusConfig:
    return ConsensusConfig(
        interval=0.05,
        round_timeout=1.0,
        max_round_timeout=8.0,
        blocks_per_leader=blocks_per_leader,
        limits=Limits(
            max_block_txs=50, max_block_bytes=1 << 20, max_skew_us=60_000_000, ratio=Fraction(2, 3)
        ),
    )


class Network:
    """N validators over a simulated network; `run_until` advances the manual clock."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        *,
        weights: list[int] | None = None,
        groups: dict[int, str] | None = None,
        group_weights: dict[str, int] | None = None,
        loss: float = 0.0,
        duplicate: float = 0.0,
        max_delay: float = 0.05,
        byzantine: dict[int, str] | None = None,
        blocks_per_leader: int = BLOCKS_PER_LEADER,
    ) -> None:
        self.rng = random.Random(seed)
        self.blocks_per_leader = blocks_per_leader
        self.now = 0.0
        self.loss = loss
        self.duplicate = duplicate
        self.max_delay = max_delay
        self.partition: list[set[str]] | None = None
        self.issuer = Signer(bytes([0x7F] * 32))
        signers = [Signer((seed * 1000 + i + 1).to_bytes(32, "big")) for i in range(n)]
        weights = weights or [1] * n
        groups = groups or {}
        members = tuple(
            Validator(s.address, w, groups.get(i, ""))
            for i, (s, w) in enumerate(zip(signers, weights, strict=True))
        )
        units = tuple(
            Group(g, (group_weights or {}).get(g, 1)) for g in sorted(set(groups.values()))
        )
        self.validators = ValidatorSet(CHANNEL, 1, members, groups=units).signed_by(self.issuer)
        self.nodes: dict[str, Node] = {}
        for index, signer in enumerate(signers):
            node = Node(signer, Disk(), self._fresh_state(signer, Disk()))
            node.byzantine = (byzantine or {}).get(index, "")
            node.state = self._fresh_state(signer, node.disk)
            self.nodes[signer.address] = node
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.seen_votes: list[Vote] = []
        self.seen_complaints: list[Complaint] = []
        self.seen_certificates: list[QuorumCertificate] = []
        self.flooded_rounds = 0  # far rounds the complaint flooders used so far
        self.submitted: list[Transaction] = []

    # ------------------------------------------------------------ node lifecycle

    def _fresh_state(self, signer: Signer, disk: Disk) -> ChannelConsensus:
        tip, qc = ChainTip(CHANNEL), None
        for block, certificate in disk.chain:
            tip, qc = tip.advance(block), certificate
        committed = {tx.hash for block, _ in disk.chain for tx in block.transactions}
        state = ChannelConsensus(
            config=_config(self.blocks_per_leader),
            signer=signer,
            issuer=self.issuer.address,
            tip=tip,
            tip_certificate=qc,
            pool=TxPool(10_000),
            is_committed=lambda h, _stamped: h in committed,
            network_id=lambda: NETWORK_ID,
            safety=SafetyRules(*disk.safety),
            roots_at=disk.roots.get,
            executed_height=max(disk.roots, default=-1),
        )
        state.committed_view = committed  # type: ignore[attr-defined]
        return state

    def crash(self, address: str) -> None:
        self.nodes[address].up = False

    def restart(self, address: str) -> None:
        """Rebuild the node's state from its disk (its pool and unfinished blocks are lost)."""
        node = self.nodes[address]
        node.state = self._fresh_state(node.signer, node.disk)
        node.committed = {tx.hash for block, _ in node.chain for tx in block.transactions}
        node.up = True
        self.schedule(0.0, address, m.ValidatorsChanged(self.validators))
        self.schedule(0.0, address, "start")

    def issue(self, validators: ValidatorSet, max_delay: float) -> None:
        """The RadioStation issues a new validator set: each peer hears of it within `max_delay`."""
        self.validators = validators
        for address in self.nodes:
            self.schedule(
                self.rng.uniform(0.0, max_delay), address, m.ValidatorsChanged(validators)
            )

    def sync_auditors(self) -> None:
        """Peers outside the validator set catch up as their shell does when their chain stands
        still: they sync final blocks (they never complain, so no validator helps them)."""
        for node in self.nodes.values():
            if node.up and node.state.is_auditor:
                self._sync(node)

    def honest(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.byzantine]

    # ------------------------------------------------------------ network

    def schedule(self, delay: float, target: str, event: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), target, event))

    def _connected(self, a: str, b: str) -> bool:
        if self.partition is None:
            return True
        return any(a in side and b in side for side in self.partition)

    def deliver(self, sender: str, target: str, event: Any) -> None:
        if not self._connected(sender, target) or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self.schedule(self.rng.uniform(0.001, self.max_delay), target, event)

    def start(self) -> None:
        for address in self.nodes:
            self.schedule(0.0, address, m.ValidatorsChanged(self.validators))

    def submit(self, address: str, count: int) -> list[Transaction]:
        node = self.nodes[address]
        txs = [
            Transaction.create_v1(
                CHANNEL, {"n": self.rng.randrange(1 << 40)}, int(self.now * 1e6) + i, node.signer
            )
            for i in range(count)
        ]
        self.submitted.extend(txs)
        self.schedule(0.0, address, m.TxsReceived(tuple(txs), gossip=True))
        return txs

    def apply(self, node: Node, event: Any) -> list[m.Action]:
        """Hand `event` to `node` now and carry out its actions, as a peer's shell does (what
        they make final is saved before the next event)."""
        actions = node.state.handle(event, self.now)
        self._execute(node, actions)
        return actions

    def run_until(self, deadline: float) -> None:
        while self._queue and self._queue[0][0] <= deadline:
            at, _, target, event = heapq.heappop(self._queue)
            self.now = at
            node = self.nodes[target]
            if not node.up:
                continue
            if event == "start":
                actions = node.state.start(self.now)
                last = node.disk.last_vote  # sent again, as ChannelService.run does
                if last is not None:
                    actions += node.state.handle(m.BlockFetched(last[1]), self.now)
                    actions += node.state.vote_again(last[1].hash, self.now)
            else:
                actions = node.state.handle(event, self.now)
                if isinstance(event, m.TimeoutFired) and any(
                    isinstance(a, m.BroadcastComplaint) for a in actions
                ):
                    node.waited_out += 1
            self._execute(node, actions)
        self.now = max(self.now, deadline)

    # ------------------------------------------------------------ actions

    def _execute(self, node: Node, actions: list[m.Action]) -> None:
        me = node.address
        for action in actions:
            match action:
                case m.BroadcastProposal(block):
                    if node.byzantine in SILENT_LEADERS:
                        continue  # its turns fail: the rounds after them need complaints
                    if node.byzantine == "invalid":
                        self._broadcast(me, m.ProposalReceived(self._invalid_twin(node, block)))
                        continue
                    if node.byzantine == "bad-roots" and block.header.state_height >= 0:
                        self._broadcast(me, m.ProposalReceived(self._bad_roots_twin(node, block)))
                        continue
                    if node.byzantine == "replay" and node.chain and node.chain[-1][0].transactions:
                        self._broadcast(me, m.ProposalReceived(self._replay_twin(node, block)))
                        continue
                    self._broadcast(me, m.ProposalReceived(block))
                    if node.byzantine == "equivocate":
                        self._equivocate(node, block)
                case m.BroadcastCertificate(qc):
                    self.seen_certificates.append(qc)
                    self._broadcast(me, m.CertificateReceived(qc))
                case m.BroadcastComplaint(complaint):
                    if complaint.round not in node.votes_signed:
                        node.complained_first.add(complaint.round)
                    if node.byzantine == "complain-inflate":  # the inflated one instead
                        self._inflated_complaints(node, complaint.round)
                        continue
                    self.seen_complaints.append(complaint)
                    self._broadcast(me, m.ComplaintReceived(complaint))
                    if node.byzantine == "complain-flood":
                        self._complain_flood(node, complaint.round)
                case m.SendCertificate(to, qc):
                    self.deliver(me, to, m.CertificateReceived(qc))
                case m.SendVote(to, vote):
                    if not node.byzantine:
                        voted = node.votes_signed.setdefault(vote.round, vote.block_hash)
                        assert voted == vote.block_hash, f"{me} voted twice in round {vote.round}"
                        assert vote.round not in node.complained_first, (
                            f"{me} voted in round {vote.round}, which it complained in first"
                        )
                    self.seen_votes.append(vote)
                    self.deliver(me, to, m.VoteReceived(vote))
                    self._misbehave_on_vote(node, vote)
                case m.GossipTxs(txs):
                    self._broadcast(me, m.TxsReceived(txs))
                case m.PersistSafety(round_, qc, voted):
                    node.disk.safety = (round_, qc)
                    if voted is not None:
                        node.disk.last_vote = (round_, voted)
                    elif node.disk.last_vote is not None and node.disk.last_vote[0] != round_:
                        node.disk.last_vote = None
                case m.CommitBlock(block, qc, proof):
                    assert block.height == len(node.chain), "commit out of order"
                    hashes = {tx.hash for tx in block.transactions}
                    assert not hashes & node.committed, (
                        f"a transaction final twice ({block.height})"
                    )
                    node.chain.append((block, qc))
                    node.committed.update(hashes)
                    node.state.committed_view.update(tx.hash for tx in block.transactions)  # type: ignore[attr-defined]
                    if proof is not None:
                        node.disk.proof = proof
                    self._execute_later(node, block)
                case m.ScheduleTimeout(delay, kind, round_):
                    self.schedule(delay, me, m.TimeoutFired(kind, round_))
                case m.RequestSync():
                    self._sync(node)
                case m.FetchBlock(block_hash):
                    self._fetch(node, block_hash)
                case m.Rejected(reason):
                    node.rejected.append(reason)

    def _execute_later(self, node: Node, block: Block) -> None:
        """The SCORE executes the final block a little later; every honest node gets the same roots."""
        state_root = sha3_256(b"state" + block.hash)
        results_hash = sha3_256(b"results" + block.hash)
        node.disk.roots[block.height] = (state_root, results_hash)
        delay = self.rng.uniform(0.001, 0.05)
        self.schedule(delay, node.address, m.BlockExecuted(block.height, state_root, results_hash))

    def _broadcast(self, sender: str, event: Any) -> None:
        for address in self.nodes:
            if address != sender:
                self.deliver(sender, address, event)

    def _sync(self, node: Node) -> None:
        peers = [
            n for n in self.nodes.values() if n.up and self._connected(node.address, n.address)
        ]
        best = max(peers, key=lambda n: len(n.chain))
        start = len(node.chain)
        blocks = tuple(best.chain[start : start + 20])
        if blocks:
            proof = best.disk.proof if start + len(blocks) == len(best.chain) else None
            self.schedule(0.01, node.address, m.BlocksSynced(blocks, proof))

    def _fetch(self, node: Node, block_hash: bytes) -> None:
        for other in self.nodes.values():
            if other is node or not other.up or not self._connected(node.address, other.address):
                continue
            found = other.state.tree.get(block_hash)
            block = (
                found.block
                if found
                else next((b for b, _ in other.chain if b.hash == block_hash), None)
            )
            if block is not None:
                self.schedule(
                    self.rng.uniform(0.001, self.max_delay), node.address, m.BlockFetched(block)
                )
                return

    # ------------------------------------------------------------ byzantine doubles

    @staticmethod
    def _twin(
        node: Node,
        block: Block,
        transactions: list[Transaction],
        state_root: bytes | None = None,
    ) -> Block:
        """A block like `block` (same round, parent and certificates) with other contents, signed
        by the same (byzantine) leader."""
        header = block.header
        return Block.create(
            channel=CHANNEL,
            height=header.height,
            round_=header.round,
            prev_hash=header.prev_hash,
            prev_qc=header.prev_qc,
            transactions=transactions,
            timestamp=header.timestamp,
            leader=node.signer,
            next_leader=header.next_leader,
            validators_hash=header.validators_hash,
            validator_update=block.validator_update,
            prev_tc=header.prev_tc,
            state_height=header.state_height,
            state_root=header.state_root if state_root is None else state_root,
            results_hash=header.results_hash,
        )

    def _equivocate(self, node: Node, block: Block) -> None:
        """Send half the peers a different valid block for the same round."""
        twin_tx = Transaction.create_v1(
            CHANNEL, {"twin": block.height}, 1 + block.height, node.signer
        )
        twin = self._twin(node, block, [twin_tx])
        others = [a for a in self.nodes if a != node.address]
        for address in others[: len(others) // 2]:
            self.deliver(node.address, address, m.ProposalReceived(twin))

    def _invalid_twin(self, node: Node, block: Block) -> Block:
        """The block with one transaction whose signature is forged (its leader signs it anyway)."""
        victim = self.rng.choice(self.honest())
        good = Transaction.create_v1(
            CHANNEL, {"steal": block.height}, 7 + block.height, victim.signer
        )
        forged = Transaction.from_json(
            {**good.to_json(), "body": {**good.body, "data": {"steal": "all"}}}
        )
        return self._twin(node, block, [*block.transactions, forged])

    def _bad_roots_twin(self, node: Node, block: Block) -> Block:
        """The block claiming a state root nobody else computed."""
        return self._twin(node, block, list(block.transactions), sha3_256(b"forged state"))

    def _replay_twin(self, node: Node, block: Block) -> Block:
        """The block with a transaction of the newest final block again: the block this
        proposal's certificate made final, when it did (committed in the same event)."""
        again = node.chain[-1][0].transactions[0]
        return self._twin(node, block, [*block.transactions, again])

    def _misbehave_on_vote(self, node: Node, vote: Vote) -> None:
        """What a byzantine node sends besides its vote (once a round: it votes once)."""
        match node.byzantine:
            case "double-vote":
                self._double_vote(node, vote)
            case "forge":
                self._forge(node, vote)
            case "complain-flood":
                self._complain_flood(node, vote.round)
            case "complain-inflate":
                self._inflated_complaints(node, vote.round)
            case "cert-forge":
                self._forge_certificates(node, vote)
            case "cert-replay":
                self._replay_certificates(node, vote)

    def _double_vote(self, node: Node, vote: Vote) -> None:
        other = Vote.create(CHANNEL, vote.height, vote.round, bytes(32), node.signer)
        self._broadcast(node.address, m.VoteReceived(other))

    def _forge(self, node: Node, vote: Vote) -> None:
        """Votes and complaints in honest nodes' names, and replays of old ones."""
        victim = self.rng.choice(self.honest())
        forged = Vote(
            vote.channel, vote.height, vote.round, vote.block_hash, victim.address, vote.signature
        )
        self._broadcast(node.address, m.VoteReceived(forged))
        bad_complaint = Complaint(CHANNEL, vote.round + 1, None, victim.address, vote.signature)
        self._broadcast(node.address, m.ComplaintReceived(bad_complaint))
        if self.seen_votes:
            self._broadcast(node.address, m.VoteReceived(self.rng.choice(self.seen_votes)))
        if self.seen_complaints:
            self._broadcast(
                node.address, m.ComplaintReceived(self.rng.choice(self.seen_complaints))
            )

    def _complain_flood(self, node: Node, round_: int) -> None:
        """Complaints about rounds that are fine, validly signed by the byzantine node itself: the
        round it is in, the next one, as many rounds just ahead of those as a peer keeps tallies
        for, and each time as many new far-ahead rounds; and copies of its complaint re-labelled
        to other rounds."""
        qc = node.state.safety.high_qc
        start = round_ + FAR_ROUNDS + self.flooded_rounds
        self.flooded_rounds += FLOOD_ROUNDS
        near = range(round_ + 2, round_ + 2 + FLOOD_ROUNDS)
        rounds = [round_, round_ + 1, *near, *range(start, start + FLOOD_ROUNDS)]
        for target in rounds:
            complaint = Complaint.create(CHANNEL, target, qc, node.signer)
            self._broadcast(node.address, m.ComplaintReceived(complaint))
        signed = Complaint.create(CHANNEL, round_, qc, node.signer)
        for other in (round_ - 1, round_ + 1, round_ + self.blocks_per_leader):
            relabelled = Complaint(CHANNEL, other, qc, node.address, signed.signature)
            self._broadcast(node.address, m.ComplaintReceived(relabelled))

    def forged_certificate(
        self, node: Node, height: int, round_: int, block_hash: bytes
    ) -> QuorumCertificate:
        """A certificate of a quorum of voters for any block and round: only the byzantine node's
        own signature in it is real."""
        own = Vote.create(CHANNEL, height, round_, block_hash, node.signer)
        others = [(v.peer_id, bytes([0x1B]) * 65) for v in self.validators.validators]
        signatures = dict(others) | {node.address: own.signature}
        return QuorumCertificate(
            CHANNEL, height, round_, block_hash, tuple(sorted(signatures.items()))
        )

    def _inflated_complaints(self, node: Node, round_: int) -> None:
        """Complaints (validly signed) that carry a forged highest certificate claiming a round far
        above any certified one: a timeout certificate counting one would ask the next leader to
        extend a certificate that does not exist. Half name a block nobody has, half re-label the
        byzantine node's real highest certificate."""
        real = node.state.safety.high_qc
        claimed = round_ + FAR_ROUNDS
        if real is not None and self.rng.random() < 0.5:
            forged = QuorumCertificate(
                CHANNEL, real.height, claimed, real.block_hash, real.signatures
            )
        else:
            height = real.height + 1 if real is not None else 0
            forged = self.forged_certificate(node, height, claimed, sha3_256(b"ghost %d" % round_))
        for target in range(round_, round_ + 2 * self.blocks_per_leader):  # and the next turns'
            complaint = Complaint.create(CHANNEL, target, forged, node.signer)
            self._broadcast(node.address, m.ComplaintReceived(complaint))

    def _forge_certificates(self, node: Node, vote: Vote) -> None:
        """Certificates for the block it just voted for that no quorum signed: its own vote with
        fewer others than a quorum (real votes it saw), its own vote counted many times, a voter
        outside the validator set, honest voters with signatures that are not theirs; and a
        certificate for a block that does not exist."""
        key = (vote.height, vote.round, vote.block_hash)
        seen = {v.voter: v for v in self.seen_votes if (v.height, v.round, v.block_hash) == key}
        few = [vote]
        for other in seen.values():
            if other.voter != node.address and not self.validators.has_quorum(
                [v.voter for v in [*few, other]]
            ):
                few.append(other)
        outsider = Signer(sha3_256(b"outsider" + node.signer.address.encode()))
        outside = Vote.create(CHANNEL, *key, outsider)
        duplicated = tuple([(node.address, vote.signature)] * len(self.validators.validators))
        stolen = tuple(sorted((v.peer_id, vote.signature) for v in self.validators.validators))
        forged = [
            QuorumCertificate.from_votes(few),
            QuorumCertificate(CHANNEL, *key, duplicated),
            QuorumCertificate.from_votes([*few, outside]),
            QuorumCertificate(CHANNEL, *key, stolen),
            self.forged_certificate(
                node, vote.height + 1, vote.round + 1, sha3_256(b"ghost" + vote.block_hash)
            ),
        ]
        for qc in forged:
            self._broadcast(node.address, m.CertificateReceived(qc))

    def _replay_certificates(self, node: Node, vote: Vote) -> None:
        """Real certificates sent again: an old one as it was, the newest one re-labelled to a
        later round (of the same block, and of the block it just voted for) and to another block."""
        if not self.seen_certificates:
            return
        old = self.rng.choice(self.seen_certificates)
        newest = self.seen_certificates[-1]
        sigs = newest.signatures
        replays = [
            old,
            QuorumCertificate(CHANNEL, newest.height, newest.round + 1, newest.block_hash, sigs),
            QuorumCertificate(CHANNEL, vote.height, vote.round + 1, vote.block_hash, sigs),
            QuorumCertificate(CHANNEL, vote.height, vote.round, vote.block_hash, sigs),
        ]
        for qc in replays:
            self._broadcast(node.address, m.CertificateReceived(qc))

    # ------------------------------------------------------------ invariants

    def check_safety(self) -> None:
        """No two honest nodes finalised different blocks at one height (prefix property)."""
        chains = [n.chain for n in self.honest()]
        longest = max(chains, key=len)
        for chain in chains:
            for height, (block, _) in enumerate(chain):
                assert block.hash == longest[height][0].hash, f"fork at height {height}"

    def check_reminders(self) -> None:
        """The complaints an honest node would send again are those of the timeout certificate it
        holds (before, one taken from a proposal left those of an older one in place)."""
        for node in self.honest():
            state = node.state
            tc = state.last_tc
            rounds = {complaint.round for complaint in state.tc_complaints}
            assert not rounds or (tc is not None and rounds == {tc.round}), "stale reminders"

    def committed_everywhere(self, txs: list[Transaction]) -> bool:
        wanted = {tx.hash for tx in txs}
        return all(wanted <= n.committed for n in self.honest() if n.up)

    def heal(self) -> None:
        self.partition = None


def genesis_block(proposer: Node, validators: ValidatorSet, timestamp: int) -> Block:
    """A genesis block (round 0) of `validators` proposed by `proposer`; two timestamps make two
    rival blocks."""
    return Block.create(
        channel=CHANNEL,
        height=0,
        round_=0,
        prev_hash=b"",
        prev_qc=None,
        transactions=[],
        timestamp=timestamp,
        leader=proposer.signer,
        next_leader=proposer.address,
        validators_hash=validators.hash,
        validator_update=validators,
    )
