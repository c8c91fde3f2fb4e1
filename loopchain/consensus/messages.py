"""Events the consensus state machine consumes and actions it asks its shell to perform."""

from __future__ import annotations

from dataclasses import dataclass

from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate, Vote

# ---------------------------------------------------------------- events (facts)


@dataclass(frozen=True)
class TxsReceived:
    """Transactions that passed the shell's checks (signature, not yet committed)."""

    txs: tuple[Transaction, ...]


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
class FinalBlockReceived:
    """A block with its certificate fetched by sync."""

    block: Block
    certificate: QuorumCertificate


@dataclass(frozen=True)
class TimeoutFired:
    kind: str
    height: int


@dataclass(frozen=True)
class ValidatorsChanged:
    """A newer RadioStation-signed validator set is known."""

    validators: ValidatorSet


Event = (
    TxsReceived
    | ProposalReceived
    | VoteReceived
    | CertificateReceived
    | FinalBlockReceived
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
class SendVote:
    to: str
    vote: Vote


@dataclass(frozen=True)
class ForwardTxs:
    """Relay transactions to the peer that can put them in a block."""

    to: str
    txs: tuple[Transaction, ...]


@dataclass(frozen=True)
class PersistVote:
    """Make the vote durable (synced) before any later action runs."""

    height: int
    round: int
    block_hash: bytes


@dataclass(frozen=True)
class PersistProposal:
    """Keep the leader's own proposal durable so a restart re-sends the same block."""

    block: Block


@dataclass(frozen=True)
class CommitBlock:
    block: Block
    certificate: QuorumCertificate


@dataclass(frozen=True)
class ScheduleTimeout:
    delay: float
    kind: str
    height: int


@dataclass(frozen=True)
class RequestSync:
    """The chain is behind `height`: fetch final blocks from peers."""

    height: int


@dataclass(frozen=True)
class Rejected:
    """An input was refused; the shell logs it (and may drop a peer that served it)."""

    reason: str


Action = (
    BroadcastProposal
    | BroadcastCertificate
    | SendVote
    | ForwardTxs
    | PersistVote
    | PersistProposal
    | CommitBlock
    | ScheduleTimeout
    | RequestSync
    | Rejected
)
