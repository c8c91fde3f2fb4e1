"""Events the consensus state machine consumes and actions it asks its shell to perform."""

from __future__ import annotations

from dataclasses import dataclass

from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

# ---------------------------------------------------------------- events (facts)


@dataclass(frozen=True)
class TxsReceived:
    """Transactions that passed the shell's checks; `gossip` when they came from a client here
    (acknowledged to it: pooled even past the pool's limits, and gossiped); else `relayer`, the
    peer that relayed them when it is known (see mempool.writer_of)."""

    txs: tuple[Transaction, ...]
    gossip: bool = False
    relayer: str | None = None


@dataclass(frozen=True)
class TxsUnpaid:
    """Pooled transactions relayed by other peers whose senders cannot pay for them (their
    balance, asked after they were pooled): they leave the pool."""

    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ProposalReceived:
    block: Block


@dataclass(frozen=True)
class VoteReceived:
    vote: Vote


@dataclass(frozen=True)
class CertificateReceived:
    certificate: QuorumCertificate


@dataclass(frozen=True)
class ComplaintReceived:
    complaint: Complaint


@dataclass(frozen=True)
class BlockFetched:
    """A not-yet-final block another peer served by hash."""

    block: Block


@dataclass(frozen=True)
class BlocksSynced:
    """Consecutive final blocks with their certificates, fetched by height, and the proof
    (a certified child in the next round) that the last of them is final, when the server had it."""

    blocks: tuple[tuple[Block, QuorumCertificate], ...]
    proof: tuple[Block, QuorumCertificate] | None = None


@dataclass(frozen=True)
class BlockExecuted:
    """The SCORE executed the final block at `height` (results recorded)."""

    height: int
    state_root: bytes
    results_hash: bytes


@dataclass(frozen=True)
class TimeoutFired:
    kind: str  # "round" or "propose"
    round: int


@dataclass(frozen=True)
class ValidatorsChanged:
    """A newer RadioStation-signed validator set is known."""

    validators: ValidatorSet


Event = (
    TxsReceived
    | TxsUnpaid
    | ProposalReceived
    | VoteReceived
    | CertificateReceived
    | ComplaintReceived
    | BlockFetched
    | BlocksSynced
    | BlockExecuted
    | TimeoutFired
    | ValidatorsChanged
)

# ---------------------------------------------------------------- actions (requests)


@dataclass(frozen=True)
class BroadcastProposal:
    block: Block


@dataclass(frozen=True)
class BroadcastCertificate:
    certificate: QuorumCertificate


@dataclass(frozen=True)
class BroadcastComplaint:
    complaint: Complaint


@dataclass(frozen=True)
class SendCertificate:
    """Help a validator that lags behind (it complained about a round already certified)."""

    to: str
    certificate: QuorumCertificate


@dataclass(frozen=True)
class SendVote:
    to: str
    vote: Vote


@dataclass(frozen=True)
class GossipTxs:
    """Send transactions a client gave this peer to every other validator."""

    txs: tuple[Transaction, ...]


@dataclass(frozen=True)
class PersistSafety:
    """Make the voting record durable (synced) before any later action runs; with `voted`, the
    block just voted for is kept too (as pending), whoever the vote goes to: its certificate may
    become the highest one while no final block holds it, and after every node restarted only
    these copies would let the next leader extend it."""

    highest_vote_round: int
    high_qc: QuorumCertificate | None
    voted: Block | None = None


@dataclass(frozen=True)
class CommitBlock:
    """Write a final block; `proof` (a certified child one round later) comes with the newest."""

    block: Block
    certificate: QuorumCertificate
    proof: tuple[Block, QuorumCertificate] | None = None


@dataclass(frozen=True)
class ScheduleTimeout:
    delay: float
    kind: str
    round: int


@dataclass(frozen=True)
class RequestSync:
    """The final chain is behind `height`: fetch final blocks from peers."""

    height: int


@dataclass(frozen=True)
class FetchBlock:
    """A not-yet-final block is missing: ask peers for it by hash. `vouched`: a certificate of
    it checked (a name under a forged one, which any member can send without end, is asked for
    only when no vouched one waits)."""

    block_hash: bytes
    vouched: bool = True


@dataclass(frozen=True)
class Rejected:
    """An input was refused; the shell logs it (and may drop a peer that served it). A block's
    refusal names the block (its hash), so that the shell can tell when it becomes final anyway."""

    reason: str
    block_hash: bytes = b""


@dataclass(frozen=True)
class SyncRefused(Rejected):
    """A block of a synced range was refused: the peer that served the range is avoided (a
    refusal of something else handled in the same event, such as a parked proposal the synced
    blocks released, is a plain Rejected and says nothing of that peer)."""


Action = (
    BroadcastProposal
    | BroadcastCertificate
    | BroadcastComplaint
    | SendCertificate
    | SendVote
    | GossipTxs
    | PersistSafety
    | CommitBlock
    | ScheduleTimeout
    | RequestSync
    | FetchBlock
    | Rejected
)
