"""Validator sets and the quorum arithmetic (the only place it lives).

A channel's validator set is an ordered list of validators with weights, issued and signed by the
RadioStation; blocks carry its hash. A set of voters has a quorum when their weight is more than
max(2/3, VOTING_RATIO) of the total. Any two quorums therefore intersect in more than 1/3 of the
weight, so with byzantine weight below 1/3 they share an honest validator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer, recover_address
from loopchain.types.hashing import sha3_256

MIN_RATIO = Fraction(2, 3)


@dataclass(frozen=True)
class Validator:
    """One voting unit of a channel."""

    peer_id: str
    weight: int = 1


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered, versioned validator set of one channel, signed by its issuer (the RadioStation)."""

    channel: str
    version: int
    validators: tuple[Validator, ...]
    issuer: str = ""
    signature: bytes = b""

    def __post_init__(self) -> None:
        ids = [v.peer_id for v in self.validators]
        if len(set(ids)) != len(ids):
            raise EncodingError("a validator set lists a peer twice")
        if any(v.weight <= 0 for v in self.validators):
            raise EncodingError("validator weights must be positive")

    def body(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "version": self.version,
            "validators": [{"peer_id": v.peer_id, "weight": v.weight} for v in self.validators],
        }

    @property
    def hash(self) -> bytes:
        """Hash of the set's contents (not of its signature)."""
        return sha3_256(b"loopchain.validators." + canonical.encode(self.body()))

    def signed_by(self, issuer: Signer) -> ValidatorSet:
        return ValidatorSet(
            self.channel, self.version, self.validators, issuer.address, issuer.sign(self.hash)
        )

    def verify_issuer(self, issuer_address: str) -> bool:
        """True when the set is signed by `issuer_address`."""
        if self.issuer != issuer_address:
            return False
        try:
            return recover_address(self.hash, self.signature) == issuer_address
        except ValueError:
            return False

    # -- quorum arithmetic

    @property
    def total_weight(self) -> int:
        return sum(v.weight for v in self.validators)

    def weight_of(self, peer_ids: Iterable[str]) -> int:
        """Total weight of the distinct validators among `peer_ids` (others count 0)."""
        weights = {v.peer_id: v.weight for v in self.validators}
        return sum(weights.get(p, 0) for p in set(peer_ids))

    def has_quorum(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> bool:
        """True when the distinct validators among `peer_ids` hold more than `ratio` of the weight."""
        return Fraction(self.weight_of(peer_ids)) > max(ratio, MIN_RATIO) * self.total_weight

    def __contains__(self, peer_id: object) -> bool:
        return any(v.peer_id == peer_id for v in self.validators)

    @property
    def peer_ids(self) -> list[str]:
        return [v.peer_id for v in self.validators]

    def leader_at(self, index: int) -> str:
        """The validator at position `index` modulo the set size."""
        return self.validators[index % len(self.validators)].peer_id

    # -- encoding

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "issuer": self.issuer, "signature": self.signature.hex()}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> ValidatorSet:
        obj = canonical.check_fields(
            value,
            {"channel": str, "version": int, "validators": list, "issuer": str, "signature": str},
        )
        validators = tuple(
            Validator(v["peer_id"], v["weight"])
            for v in (
                canonical.check_fields(v, {"peer_id": str, "weight": int})
                for v in obj["validators"]
            )
        )
        signature = (
            canonical.hex_to_bytes(obj["signature"], "signature", 65) if obj["signature"] else b""
        )
        return cls(obj["channel"], obj["version"], validators, obj["issuer"], signature)

    @classmethod
    def decode(cls, raw: bytes) -> ValidatorSet:
        return cls.from_json(canonical.decode(raw))


def ratio_from_config(voting_ratio: float) -> Fraction:
    """The quorum ratio from VOTING_RATIO; refuses one below 2/3 (unsafe) or at/above 1 (no quorum)."""
    ratio = Fraction(str(voting_ratio))
    if ratio < MIN_RATIO:
        raise ValueError(f"VOTING_RATIO {voting_ratio} is below 2/3; BFT safety needs at least 2/3")
    if ratio >= 1:
        raise ValueError(f"VOTING_RATIO {voting_ratio} must be below 1")
    return ratio
