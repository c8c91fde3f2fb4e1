"""A deterministic in-process network of consensus state machines driven by a manual clock."""

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
from loopchain.consensus.state import ChannelConsensus, ConsensusConfig
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Validator, ValidatorSet
from loopchain.types.vote import QuorumCertificate

CHANNEL = "sim"


@dataclass
class Node:
    """One simulated peer: its state machine and what it has finalised."""

    signer: Signer
    state: ChannelConsensus
    chain: list[tuple[Block, QuorumCertificate]] = field(default_factory=list)
    committed: set[bytes] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    up: bool = True


class Network:
    """Seeded simulation: message delay in [min_delay, max_delay], optional loss."""

    def __init__(
        self, n: int, seed: int = 0, *, loss: float = 0.0, max_delay: float = 0.05
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.loss = loss
        self.max_delay = max_delay
        self.issuer = Signer(bytes([0x11] * 32))
        signers = [Signer(bytes([i + 1] * 32)) for i in range(n)]
        self.validators = ValidatorSet(
            CHANNEL, 1, tuple(Validator(s.address) for s in signers)
        ).signed_by(self.issuer)
        self.nodes: dict[str, Node] = {}
        for signer in signers:
            self.nodes[signer.address] = self._make_node(signer)
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()

    def _make_node(self, signer: Signer) -> Node:
        config = ConsensusConfig(
            interval=0.1,
            vote_timeout=1.0,
            limits=Limits(
                max_block_txs=50,
                max_block_bytes=1 << 20,
                max_skew_us=30_000_000,
                ratio=Fraction(2, 3),
            ),
        )
        node_ref: dict[str, Node] = {}
        state = ChannelConsensus(
            config=config,
            signer=signer,
            issuer=self.issuer.address,
            tip=ChainTip(CHANNEL),
            tip_certificate=None,
            pool=TxPool(10_000),
            is_committed=lambda h: h in node_ref["node"].committed,
        )
        node = Node(signer, state)
        node_ref["node"] = node
        return node

    def schedule(self, delay: float, target: str, event: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), target, event))

    def deliver(self, target: str, event: Any) -> None:
        if self.rng.random() < self.loss:
            return
        self.schedule(self.rng.uniform(0.001, self.max_delay), target, event)

    def start(self) -> None:
        for address in self.nodes:
            self.schedule(0.0, address, m.ValidatorsChanged(self.validators))

    def submit(self, address: str, count: int) -> list[Transaction]:
        node = self.nodes[address]
        txs = [
            Transaction.create_v1(
                CHANNEL, {"n": self.rng.randrange(1 << 30)}, int(self.now * 1e6) + i, node.signer
            )
            for i in range(count)
        ]
        self.schedule(0.0, address, m.TxsReceived(tuple(txs)))
        return txs

    def run_until(self, deadline: float) -> None:
        while self._queue and self._queue[0][0] <= deadline:
            at, _, target, event = heapq.heappop(self._queue)
            self.now = at
            node = self.nodes[target]
            if not node.up:
                continue
            self._execute(node, node.state.handle(event, self.now))
        self.now = max(self.now, deadline)

    def _execute(self, node: Node, actions: list[m.Action]) -> None:
        me = node.signer.address
        for action in actions:
            match action:
                case m.BroadcastProposal(block):
                    self._broadcast(me, m.ProposalReceived(block))
                case m.BroadcastCertificate(qc):
                    self._broadcast(me, m.CertificateReceived(qc))
                case m.SendVote(to, vote):
                    self.deliver(to, m.VoteReceived(vote))
                case m.ForwardTxs(to, txs):
                    self.deliver(to, m.TxsReceived(txs))
                case m.CommitBlock(block, qc):
                    assert block.height == len(node.chain), "commit out of order"
                    node.chain.append((block, qc))
                    node.committed.update(tx.hash for tx in block.transactions)
                case m.ScheduleTimeout(delay, kind, height):
                    self.schedule(delay, me, m.TimeoutFired(kind, height))
                case m.RequestSync(height):
                    self._sync(node)
                case m.Rejected(reason):
                    node.rejected.append(reason)
                case m.PersistVote() | m.PersistProposal():
                    pass

    def _broadcast(self, sender: str, event: Any) -> None:
        for address in self.nodes:
            if address != sender:
                self.deliver(address, event)

    def _sync(self, node: Node) -> None:
        best = max(self.nodes.values(), key=lambda n: len(n.chain))
        for block, qc in best.chain[len(node.chain) :]:
            self.schedule(0.01, node.signer.address, m.FinalBlockReceived(block, qc))

    def check_agreement(self) -> None:
        """No two nodes finalised different blocks at one height."""
        chains = [n.chain for n in self.nodes.values()]
        for height in range(max(len(c) for c in chains)):
            hashes = {c[height][0].hash for c in chains if len(c) > height}
            assert len(hashes) == 1, f"fork at height {height}"
