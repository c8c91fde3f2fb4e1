"""Votes and quorum certificates.

A vote is a validator's signature over (channel, height, round, block hash), domain-separated from
every other signed object, so it cannot be replayed on another channel, height or round. A quorum
certificate is a set of such signatures for one block from validators holding a quorum of weight.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import SIGNATURES, Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.validators import MIN_RATIO, Voters

# The fields each object may carry. Blocks and commit proofs are kept as received, so a field
# nothing reads would be bytes stored and served under a hash that does not cover them.
_VOTE_KNOWN = frozenset({"channel", "height", "round", "block_hash", "voter", "signature"})
_QC_KNOWN = frozenset({"channel", "height", "round", "block_hash", "signatures"})
_COMPLAINT_KNOWN = frozenset({"channel", "round", "high_qc", "voter", "signature"})
_TC_KNOWN = frozenset({"channel", "round", "entries"})


def vote_digest(channel: str, height: int, round_: int, block_hash: bytes) -> bytes:
    """What a validator signs when it votes."""
    body = {"channel": channel, "height": height, "round": round_, "block_hash": block_hash.hex()}
    return sha3_256(b"loopchain.vote." + canonical.encode(body))


@dataclass(frozen=True)
class Vote:
    """One validator's signed vote for a block."""

    channel: str
    height: int
    round: int
    block_hash: bytes
    voter: str
    signature: bytes

    @classmethod
    def create(
        cls, channel: str, height: int, round_: int, block_hash: bytes, signer: Signer
    ) -> Vote:
        digest = vote_digest(channel, height, round_, block_hash)
        signature = signer.sign(digest)
        SIGNATURES.remember(digest, signature, signer.address)
        return cls(channel, height, round_, block_hash, signer.address, signature)

    @property
    def digest(self) -> bytes:
        return vote_digest(self.channel, self.height, self.round, self.block_hash)

    def verify_signature(self) -> bool:
        """True when the signature was made by `voter`."""
        return SIGNATURES.check(self.digest, self.signature, self.voter)

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash.hex(),
            "voter": self.voter,
            "signature": self.signature.hex(),
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> Vote:
        obj = canonical.check_fields(
            value,
            {
                "channel": str,
                "height": int,
                "round": int,
                "block_hash": str,
                "voter": str,
                "signature": str,
            },
            _VOTE_KNOWN,
        )
        return cls(
            obj["channel"],
            obj["height"],
            obj["round"],
            canonical.hex_to_bytes(obj["block_hash"], "block_hash", 32),
            obj["voter"],
            canonical.hex_to_bytes(obj["signature"], "signature", 65),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Vote:
        return cls.from_json(canonical.decode(raw))


@dataclass(frozen=True)
class QuorumCertificate:
    """Signatures of a quorum of validators for one block at one height and round."""

    channel: str
    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (voter, signature), sorted by voter

    @classmethod
    def from_votes(cls, votes: list[Vote]) -> QuorumCertificate:
        if not votes:
            raise EncodingError("a certificate needs at least one vote")
        first = votes[0]
        key = (first.channel, first.height, first.round, first.block_hash)
        if any((v.channel, v.height, v.round, v.block_hash) != key for v in votes):
            raise EncodingError("a certificate's votes must all be for one block")
        unique = {v.voter: v.signature for v in votes}
        return cls(*key, tuple(sorted(unique.items())))

    @property
    def voters(self) -> list[str]:
        return [voter for voter, _ in self.signatures]

    def verify(self, validators: Voters, ratio: Fraction = MIN_RATIO) -> str | None:
        """None when valid for `validators`; otherwise the reason it is not."""
        if self.channel != validators.channel:
            return f"certificate is for channel {self.channel}, not {validators.channel}"
        digest = vote_digest(self.channel, self.height, self.round, self.block_hash)
        for voter, signature in self.signatures:
            if voter not in validators:
                return f"certificate counts {voter}, who is not a validator"
            try:
                if not SIGNATURES.recovers_to(digest, signature, voter):
                    return f"certificate signature of {voter} does not verify"
            except ValueError:
                return f"certificate signature of {voter} is malformed"
        if not validators.has_quorum(self.voters, ratio):
            return "certificate does not hold a quorum of validator weight"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash.hex(),
            "signatures": [[voter, sig.hex()] for voter, sig in self.signatures],
        }

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:  # once per object: a block's certificate is stored and sent often
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> QuorumCertificate:
        obj = canonical.check_fields(
            value,
            {"channel": str, "height": int, "round": int, "block_hash": str, "signatures": list},
            _QC_KNOWN,
        )
        pairs = []
        for item in obj["signatures"]:
            if not (
                isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
            ):
                raise EncodingError("certificate signatures must be [voter, hex] pairs")
            pairs.append((item[0], canonical.hex_to_bytes(item[1], "signature", 65)))
        if [p[0] for p in pairs] != sorted({p[0] for p in pairs}):
            raise EncodingError("certificate voters must be unique and sorted")
        return cls(
            obj["channel"],
            obj["height"],
            obj["round"],
            canonical.hex_to_bytes(obj["block_hash"], "block_hash", 32),
            tuple(pairs),
        )

    @classmethod
    def decode(cls, raw: bytes) -> QuorumCertificate:
        return cls.from_json(canonical.decode(raw))


def complaint_digest(channel: str, round_: int, high_qc_round: int) -> bytes:
    """What a validator signs when it complains that round `round_` made no progress."""
    body = {"channel": channel, "round": round_, "high_qc_round": high_qc_round}
    return sha3_256(b"loopchain.complaint." + canonical.encode(body))


@dataclass(frozen=True)
class Complaint:
    """A validator's signed round-change request, carrying its highest certificate."""

    channel: str
    round: int
    high_qc: QuorumCertificate | None
    voter: str
    signature: bytes

    @property
    def high_qc_round(self) -> int:
        return self.high_qc.round if self.high_qc is not None else -1

    @classmethod
    def create(
        cls, channel: str, round_: int, high_qc: QuorumCertificate | None, signer: Signer
    ) -> Complaint:
        qc_round = high_qc.round if high_qc is not None else -1
        digest = complaint_digest(channel, round_, qc_round)
        signature = signer.sign(digest)
        SIGNATURES.remember(digest, signature, signer.address)
        return cls(channel, round_, high_qc, signer.address, signature)

    def verify_signature(self) -> bool:
        digest = complaint_digest(self.channel, self.round, self.high_qc_round)
        return SIGNATURES.check(digest, self.signature, self.voter)

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "round": self.round,
            "high_qc": self.high_qc.to_json() if self.high_qc is not None else None,
            "voter": self.voter,
            "signature": self.signature.hex(),
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> Complaint:
        obj = canonical.check_fields(
            value, {"channel": str, "round": int, "voter": str, "signature": str}, _COMPLAINT_KNOWN
        )
        qc = obj.get("high_qc")
        return cls(
            obj["channel"],
            obj["round"],
            QuorumCertificate.from_json(qc) if qc is not None else None,
            obj["voter"],
            canonical.hex_to_bytes(obj["signature"], "signature", 65),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Complaint:
        return cls.from_json(canonical.decode(raw))


@dataclass(frozen=True)
class TimeoutCertificate:
    """Complaints of a quorum for one round: (voter, their high-QC round, signature), by voter."""

    channel: str
    round: int
    entries: tuple[tuple[str, int, bytes], ...]

    @classmethod
    def from_complaints(cls, complaints: list[Complaint]) -> TimeoutCertificate:
        if not complaints:
            raise EncodingError("a timeout certificate needs at least one complaint")
        first = complaints[0]
        if any((c.channel, c.round) != (first.channel, first.round) for c in complaints):
            raise EncodingError("a timeout certificate's complaints must be for one round")
        unique = {c.voter: (c.high_qc_round, c.signature) for c in complaints}
        entries = tuple((v, r, s) for v, (r, s) in sorted(unique.items()))
        return cls(first.channel, first.round, entries)

    @property
    def voters(self) -> list[str]:
        return [entry[0] for entry in self.entries]

    @property
    def max_high_qc_round(self) -> int:
        return max(entry[1] for entry in self.entries)

    def verify(self, validators: Voters, ratio: Fraction = MIN_RATIO) -> str | None:
        """None when valid for `validators`; otherwise the reason it is not."""
        if self.channel != validators.channel:
            return f"timeout certificate is for channel {self.channel}"
        for voter, qc_round, signature in self.entries:
            if voter not in validators:
                return f"timeout certificate counts {voter}, who is not a validator"
            if not -1 <= qc_round < self.round:  # a certificate of a round before the complaint
                return f"complaint of {voter} claims a certificate of round {qc_round}"
            digest = complaint_digest(self.channel, self.round, qc_round)
            try:
                if not SIGNATURES.recovers_to(digest, signature, voter):
                    return f"complaint signature of {voter} does not verify"
            except ValueError:
                return f"complaint signature of {voter} is malformed"
        if not validators.has_quorum(self.voters, ratio):
            return "timeout certificate does not hold a quorum of validator weight"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "round": self.round,
            "entries": [[v, r, s.hex()] for v, r, s in self.entries],
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> TimeoutCertificate:
        obj = canonical.check_fields(
            value, {"channel": str, "round": int, "entries": list}, _TC_KNOWN
        )
        entries = []
        for item in obj["entries"]:
            if not (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and isinstance(item[2], str)
            ):
                raise EncodingError("timeout certificate entries must be [voter, round, hex]")
            entries.append((item[0], item[1], canonical.hex_to_bytes(item[2], "signature", 65)))
        if [e[0] for e in entries] != sorted({e[0] for e in entries}) or not entries:
            raise EncodingError("timeout certificate voters must be unique, sorted and non-empty")
        return cls(obj["channel"], obj["round"], tuple(entries))

    @classmethod
    def decode(cls, raw: bytes) -> TimeoutCertificate:
        return cls.from_json(canonical.decode(raw))
