"""Blocks: a header whose hash covers everything that matters, the transactions, the leader's signature.

The header covers version, channel, height, round, the previous block's hash and quorum certificate
(the piggybacked commit), the transactions' merkle root, the state root and results hash of the last
executed block, the timestamp, the leader and the next leader, the hash of the validators that vote
on this block (`validators_hash`) and `next_validators_hash`: the same again, or the hash of the
RadioStation-signed validator set the block carries. Both sets vote from then on, and the first
block of the round right after its parent's hands the chain over to the carried set
(`loopchain.blockchain.chain.ChainTip`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer, recover_address
from loopchain.types.hashing import EMPTY_ROOT, merkle_root, sha3_256
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from loopchain.types.vote import QuorumCertificate, TimeoutCertificate

BLOCK_VERSION = 1

_HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": int,
    "channel": str,
    "height": int,
    "round": int,
    "prev_hash": str,
    "tx_root": str,
    "state_root": str,
    "results_hash": str,
    "timestamp": int,
    "leader": str,
    "next_leader": str,
    "validators_hash": str,
    "next_validators_hash": str,
    "state_height": int,
}
_HEADER_KNOWN = frozenset(_HEADER_FIELDS) | {"prev_qc", "prev_tc"}
_BLOCK_KNOWN = frozenset({"header", "transactions", "validator_update", "signature"})


@dataclass(frozen=True)
class BlockHeader:
    """The hashed part of a block."""

    channel: str
    height: int
    round: int
    prev_hash: bytes  # b"" for the genesis block
    prev_qc: QuorumCertificate | None
    tx_root: bytes
    state_root: bytes
    results_hash: bytes
    timestamp: int  # microseconds since the epoch, chosen by the leader
    leader: str
    next_leader: str
    validators_hash: bytes
    next_validators_hash: bytes
    prev_tc: TimeoutCertificate | None = None  # why this round follows a round that failed
    state_height: int = -1  # the executed block whose state root and results hash this carries
    version: int = BLOCK_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "channel": self.channel,
            "height": self.height,
            "round": self.round,
            "prev_hash": self.prev_hash.hex(),
            "prev_qc": self.prev_qc.to_json() if self.prev_qc else None,
            "tx_root": self.tx_root.hex(),
            "state_root": self.state_root.hex(),
            "results_hash": self.results_hash.hex(),
            "timestamp": self.timestamp,
            "leader": self.leader,
            "next_leader": self.next_leader,
            "validators_hash": self.validators_hash.hex(),
            "next_validators_hash": self.next_validators_hash.hex(),
            "prev_tc": self.prev_tc.to_json() if self.prev_tc else None,
            "state_height": self.state_height,
        }

    @functools.cached_property
    def hash(self) -> bytes:
        """Computed once: a header is immutable and its hash is asked for at every step."""
        return sha3_256(b"loopchain.block." + canonical.encode(self.to_json()))

    @classmethod
    def from_json(cls, value: Any) -> BlockHeader:
        obj = canonical.check_fields(value, _HEADER_FIELDS, _HEADER_KNOWN)
        qc = obj.get("prev_qc")
        tc = obj.get("prev_tc")
        prev_hash = obj["prev_hash"]
        return cls(
            version=obj["version"],
            channel=obj["channel"],
            height=obj["height"],
            round=obj["round"],
            prev_hash=canonical.hex_to_bytes(prev_hash, "prev_hash", 32) if prev_hash else b"",
            prev_qc=QuorumCertificate.from_json(qc) if qc is not None else None,
            tx_root=canonical.hex_to_bytes(obj["tx_root"], "tx_root", 32),
            state_root=canonical.hex_to_bytes(obj["state_root"], "state_root", 32),
            results_hash=canonical.hex_to_bytes(obj["results_hash"], "results_hash", 32),
            timestamp=obj["timestamp"],
            leader=obj["leader"],
            next_leader=obj["next_leader"],
            validators_hash=canonical.hex_to_bytes(obj["validators_hash"], "validators_hash", 32),
            next_validators_hash=canonical.hex_to_bytes(
                obj["next_validators_hash"], "next_validators_hash", 32
            ),
            prev_tc=TimeoutCertificate.from_json(tc) if tc is not None else None,
            state_height=obj["state_height"],
        )


# a transaction this peer holds, by its signature (see Block.decode)
Pooled = Callable[[bytes], Transaction | None]


def _pooled_copy(value: Any, pooled: Pooled) -> Transaction | None:
    """The transaction `pooled` holds whose canonical bytes are those of `value`, if any. Only
    identical bytes count: a leader that alters a transaction it relays gets it decoded afresh
    (a different hash, so its block's tx_root no longer matches)."""
    signature = value.get("signature") if isinstance(value, dict) else None
    if not isinstance(signature, str) or len(signature) != 130:
        return None
    try:
        candidate = pooled(bytes.fromhex(signature))
        if candidate is None or canonical.encode_within_limits(value) != candidate.encode():
            return None
    except ValueError:  # not hex, or not canonical JSON (EncodingError): decoded afresh
        return None
    return candidate


def transactions_root(transactions: tuple[Transaction, ...] | list[Transaction]) -> bytes:
    """Merkle root of the transactions' hashes."""
    return merkle_root([tx.hash for tx in transactions])


@dataclass(frozen=True)
class Block:
    """A header, its transactions, an optional validator-set change and the leader's signature."""

    header: BlockHeader
    transactions: tuple[Transaction, ...]
    validator_update: ValidatorSet | None
    signature: bytes

    @classmethod
    def create(
        cls,
        *,
        channel: str,
        height: int,
        round_: int,
        prev_hash: bytes,
        prev_qc: QuorumCertificate | None,
        transactions: list[Transaction],
        timestamp: int,
        leader: Signer,
        next_leader: str,
        validators_hash: bytes,
        validator_update: ValidatorSet | None = None,
        state_root: bytes = EMPTY_ROOT,
        results_hash: bytes = EMPTY_ROOT,
        prev_tc: TimeoutCertificate | None = None,
        state_height: int = -1,
    ) -> Block:
        """Build and sign a block as its leader."""
        header = BlockHeader(
            channel=channel,
            height=height,
            round=round_,
            prev_hash=prev_hash,
            prev_qc=prev_qc,
            tx_root=transactions_root(transactions),
            state_root=state_root,
            results_hash=results_hash,
            timestamp=timestamp,
            leader=leader.address,
            next_leader=next_leader,
            validators_hash=validators_hash,
            next_validators_hash=validator_update.hash if validator_update else validators_hash,
            prev_tc=prev_tc,
            state_height=state_height,
        )
        return cls(header, tuple(transactions), validator_update, leader.sign(header.hash))

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def check_integrity(self) -> str | None:
        """None when the block is internally consistent and signed by its leader, else why not."""
        header = self.header
        if header.version != BLOCK_VERSION:
            return f"unsupported block version {header.version}"
        # one recovery before the transactions' many: a block of another signer costs one
        problem = self.signature_problem()
        if problem:
            return problem
        if not self.body_named:
            return "transactions do not match tx_root"
        if len({tx.hash for tx in self.transactions}) != len(self.transactions):
            return "block lists a transaction twice"
        for tx in self.transactions:
            if not tx.belongs_to(header.channel):
                return f"transaction {tx.hash_hex} belongs to channel {tx.channel}"
            if not tx.verify_signature():
                return f"transaction {tx.hash_hex} has a bad signature"
        if self.validator_update is not None:
            if self.validator_update.hash != header.next_validators_hash:
                return "validator update does not match next_validators_hash"
            if self.validator_update.channel != header.channel:
                return "validator update is for another channel"
        elif header.height > 0 and header.next_validators_hash != header.validators_hash:
            return "validator set changes without an update"
        return None

    @functools.cached_property
    def body_named(self) -> bool:
        """Whether the transactions are those the header's tx_root names (a block's hash names
        its header only: its body can be altered on its way). Computed once a block: a fetch, a
        voter's check and the integrity check each asked for it."""
        return transactions_root(self.transactions) == self.header.tx_root

    def signature_problem(self) -> str | None:
        """None when the block is signed by its leader (its header hash), else why not
        (recovered once: an integrity check and a consensus check of one block share it)."""
        return self._signature_problem

    @functools.cached_property
    def _signature_problem(self) -> str | None:
        try:
            if recover_address(self.header.hash, self.signature) != self.header.leader:
                return "block is not signed by its leader"
        except ValueError:
            return "block signature is malformed"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header.to_json(),
            "transactions": [tx.to_json() for tx in self.transactions],
            "validator_update": self.validator_update.to_json() if self.validator_update else None,
            "signature": self.signature.hex(),
        }

    def encode(self) -> bytes:
        """Canonical bytes, made once, from the transactions' own bytes (the same bytes as
        encoding `to_json()`: canonical JSON of an object is its sorted members' encodings)."""
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        update = self.validator_update
        return b"".join(
            (
                self._head,
                b",".join(tx.encode() for tx in self.transactions),
                b'],"validator_update":',
                canonical.encode(update.to_json()) if update is not None else b"null",
                b"}",
            )
        )

    @functools.cached_property
    def _head(self) -> bytes:
        """The bytes of `encode()` before its first transaction's."""
        return b"".join(
            (
                b'{"header":',
                canonical.encode(self.header.to_json()),
                b',"signature":"',
                self.signature.hex().encode(),
                b'","transactions":[',
            )
        )

    def transaction_spans(self) -> list[tuple[int, int]] | None:
        """Where each transaction's bytes are in `encode()`, as (offset, length) in order, so that
        a store can serve one transaction from the block's bytes without parsing the rest; None
        when the bytes are not laid out as `encode()` lays them out (never for a canonical
        block)."""
        raw, head = self.encode(), self._head
        if not raw.startswith(head):
            return None
        spans, offset = [], len(head)
        for tx in self.transactions:
            length = len(tx.encode())
            spans.append((offset, length))
            offset += length + 1
        end = offset - 1 if self.transactions else offset
        return spans if raw[end : end + 2] == b"]," else None

    @classmethod
    def from_json(
        cls,
        value: Any,
        *,
        checked: bool = False,
        trusted: bool = False,
        tx_hashes: list[bytes] | None = None,
        pooled: Pooled | None = None,
    ) -> Block:
        """From its JSON form (`checked`: parsed from canonical bytes; `trusted` and `tx_hashes`:
        see `decode_trusted`; `pooled`: see `decode`)."""
        obj = canonical.check_fields(
            value, {"header": dict, "transactions": list, "signature": str}, _BLOCK_KNOWN
        )
        update = obj.get("validator_update")
        txs = obj["transactions"]
        known: list[bytes | None] = [None] * len(txs) if tx_hashes is None else [*tx_hashes]
        if len(known) != len(txs):
            raise EncodingError(f"{len(known)} transaction hashes for {len(txs)} transactions")

        def transaction(item: Any, tx_hash: bytes | None) -> Transaction:
            if pooled is not None and (held := _pooled_copy(item, pooled)) is not None:
                return held
            return Transaction.from_json(item, checked=checked, trusted=trusted, known_hash=tx_hash)

        return cls(
            header=BlockHeader.from_json(obj["header"]),
            transactions=tuple(map(transaction, txs, known)),
            validator_update=ValidatorSet.from_json(update) if update is not None else None,
            signature=canonical.hex_to_bytes(obj["signature"], "signature", 65),
        )

    @classmethod
    def decode(cls, raw: bytes, pooled: Pooled | None = None) -> Block:
        """Parse canonical bytes; raises EncodingError on malformed input. `pooled` finds a
        transaction this peer already holds by its signature: one whose canonical bytes are
        those in the block is taken as it is, its hash and signature checked when it came."""
        try:
            return cls._decoded(raw, canonical.decode(raw, limits=False), pooled)
        except (TypeError, KeyError) as exc:
            raise EncodingError(f"malformed block: {exc}") from None

    @classmethod
    def _decoded(cls, raw: bytes, value: Any, pooled: Pooled | None) -> Block:
        # the limits are checked for each transaction (as it is made), and here for the rest
        if isinstance(value, dict):
            for key, part in value.items():
                if key != "transactions":
                    canonical.check_value(part)
        block = cls.from_json(value, checked=True, pooled=pooled)
        block.__dict__["_encoded"] = raw
        return block

    @classmethod
    def decode_proposal(cls, raw: bytes, max_txs: int, pooled: Pooled | None = None) -> Block:
        """`decode` of a proposal from another peer, refused (EncodingError) before any of its
        transactions is made when it holds more than `max_txs` or its header is not signed by
        the leader it names: a member's forgery of 10,000 tiny transactions under a garbage
        signature held the event loop ~100 ms a message to make them (review)."""
        try:
            value = canonical.decode(raw, limits=False)
            obj = canonical.check_fields(
                value, {"header": dict, "transactions": list, "signature": str}, _BLOCK_KNOWN
            )
            if len(obj["transactions"]) > max_txs:
                raise EncodingError(
                    f"proposal holds {len(obj['transactions'])} transactions, limit {max_txs}"
                )
            header = BlockHeader.from_json(obj["header"])
            signature = canonical.hex_to_bytes(obj["signature"], "signature", 65)
            try:
                signed = recover_address(header.hash, signature) == header.leader
            except ValueError:
                signed = False
            if not signed:
                raise EncodingError("proposal is not signed by the leader it names")
            block = cls._decoded(raw, value, pooled)  # parsed once
        except (TypeError, KeyError) as exc:
            raise EncodingError(f"malformed block: {exc}") from None
        block.__dict__["_signature_problem"] = None  # recovered above
        return block

    @classmethod
    def decode_trusted(cls, raw: bytes, tx_hashes: bytes = b"") -> Block:
        """A block its own peer already decoded and checked, handed to the SCORE or the REST
        proxy: parsed without the canonical re-check or remaking each transaction's bytes, and,
        given the transactions' hashes (32 bytes each, in order), without hashing them again
        (about half the work of `decode`). The SCORE and the proxy trust their peer for these
        bytes; the shape is still checked, and malformed input raises EncodingError."""
        if len(tx_hashes) % 32:
            raise EncodingError(f"transaction hashes of {len(tx_hashes)} bytes, not 32 each")
        hashes = None
        if tx_hashes:
            hashes = [tx_hashes[i : i + 32] for i in range(0, len(tx_hashes), 32)]
        try:
            value = canonical.decode_trusted(raw)
            block = cls.from_json(value, trusted=True, tx_hashes=hashes)
        except (TypeError, KeyError) as exc:
            raise EncodingError(f"malformed block: {exc}") from None
        block.__dict__["_encoded"] = raw
        return block
