"""Validator sets and the quorum arithmetic (the only place it lives).

A channel's validator set is an ordered list of validators, issued and signed by the RadioStation;
blocks carry its hash. It also states the rest of the channel's configuration at its version — the
auditors (peers that follow the channel without voting), the SCORE package, the channel's SCORE
settings and its genesis accounts (`loopchain.types.genesis`) — so the genesis block, which carries
the first set, records the whole configuration. Voting units are the validators outside any group,
each with its weight, and the groups, each with the weight configured for the group. A group's
vote counts when its members holding more than the ratio of the group's member weight voted alike.
A set of voters has a quorum when the units that voted hold more than max(2/3, VOTING_RATIO) of the
total unit weight. Any two quorums therefore share units holding more than 1/3 of the weight, so
with byzantine units below 1/3 of the weight they share an honest unit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer, address_of, recover_address
from loopchain.types.genesis import GenesisData
from loopchain.types.hashing import sha3_256

MIN_RATIO = Fraction(2, 3)
TWO_THIRDS_SPELLED = 0.67  # a VOTING_RATIO up to this is 2/3 (see ratio_from_config)
# Peers a set lists (validators and auditors together; its groups are at most as many): what a
# RadioStation registers at most (radiostation/registry.py MAX_PEERS; a channel lists at most 256
# since 2026-12-03, channels.py MAX_CHANNEL_PEERS, but an open channel's sets of earlier versions
# named every registered peer, and chains holding them must still be read). A set is decoded from
# a RadioStation's answers and from blocks: one of 60,000 validators held the event loop a second
# (review).
MAX_SET_PEERS = 1_000

# The fields a set may carry (see `body`): blocks keep a set as received, so a field nothing reads
# would be bytes stored and served under a hash that does not cover them.
_SET_KNOWN = frozenset(
    {
        "channel",
        "version",
        "validators",
        "groups",
        "auditors",
        "score_package",
        "score_settings",
        "genesis",
        "genesis_by_first",
        "issuer",
        "signature",
    }
)
_VALIDATOR_KNOWN = frozenset({"peer_id", "weight", "group_id", "public_key"})
_GROUP_KNOWN = frozenset({"group_id", "weight"})


@dataclass(frozen=True)
class Validator:
    """A peer that votes: alone as a unit of `weight`, or inside the group `group_id`."""

    peer_id: str
    weight: int = 1
    group_id: str = ""
    public_key: bytes = b""  # compressed secp256k1 key, when the issuer states it


@dataclass(frozen=True)
class Group:
    """Peers that vote as one unit of `weight`."""

    group_id: str
    weight: int = 1


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered, versioned validator set of one channel, signed by its issuer (the RadioStation)."""

    channel: str
    version: int
    validators: tuple[Validator, ...]
    issuer: str = ""
    signature: bytes = b""
    groups: tuple[Group, ...] = ()
    auditors: tuple[str, ...] = ()  # peer ids that follow the channel without voting
    score_package: str = ""  # the channel's SCORE package ("" when not stated)
    score_settings: str = ""  # canonical JSON of the channel's score_settings ("" for none)
    genesis: str = ""  # canonical JSON of the channel's GenesisData ("" for none)
    # open mode: the set grows as peers register, so a first peer alone is a quorum of its set;
    # only the set's first validator (the first registered) may then propose the genesis block,
    # and the others sync it instead of certifying another with a larger set
    genesis_by_first: bool = False

    def __post_init__(self) -> None:
        ids = [v.peer_id for v in self.validators]
        if len(set(ids)) != len(ids):
            raise EncodingError("a validator set lists a peer twice")
        if any(v.weight <= 0 for v in self.validators) or any(g.weight <= 0 for g in self.groups):
            raise EncodingError("validator and group weights must be positive")
        names = [g.group_id for g in self.groups]
        if len(set(names)) != len(names) or "" in names:
            raise EncodingError("group ids must be unique and non-empty")
        if set(names) & set(ids):  # units are named by both: the group's weight went to both
            raise EncodingError("a group id must not be a validator's peer id")
        used = {v.group_id for v in self.validators if v.group_id}
        if used != set(names):
            raise EncodingError("every group needs members and every member's group must be listed")
        if len(set(self.auditors)) != len(self.auditors) or set(self.auditors) & set(ids):
            raise EncodingError("auditors must be unique and not validators")
        for v in self.validators:
            if v.public_key and _address_or_none(v.public_key) != v.peer_id:
                raise EncodingError(f"the public key stated for {v.peer_id} is not its key")
        if self.genesis:
            try:
                GenesisData.decode(self.genesis)
            except EncodingError as exc:
                raise EncodingError(f"genesis: {exc}") from None

    def body(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "version": self.version,
            "validators": [
                {
                    "peer_id": v.peer_id,
                    "weight": v.weight,
                    "group_id": v.group_id,
                    **({"public_key": v.public_key.hex()} if v.public_key else {}),
                }
                for v in self.validators
            ],
            "groups": [{"group_id": g.group_id, "weight": g.weight} for g in self.groups],
            # the configuration beyond the voters, only when stated (older sets hash as before)
            **({"auditors": list(self.auditors)} if self.auditors else {}),
            **({"score_package": self.score_package} if self.score_package else {}),
            **({"score_settings": self.score_settings} if self.score_settings else {}),
            **({"genesis": self.genesis} if self.genesis else {}),
            **({"genesis_by_first": True} if self.genesis_by_first else {}),
        }

    def genesis_data(self) -> GenesisData | None:
        """The channel's genesis accounts, or None when the set states none."""
        return GenesisData.decode(self.genesis) if self.genesis else None

    @functools.cached_property
    def hash(self) -> bytes:
        """Hash of the set's contents (not of its signature); made once per object (every field
        is immutable), as blocks, votes and proposals name the set by it several times each."""
        return sha3_256(b"loopchain.validators." + canonical.encode(self.body()))

    def signed_by(self, issuer: Signer) -> ValidatorSet:
        return dataclasses.replace(self, issuer=issuer.address, signature=issuer.sign(self.hash))

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
        """Weight of all voting units (ungrouped validators and groups)."""
        solo = sum(v.weight for v in self.validators if not v.group_id)
        return solo + sum(g.weight for g in self.groups)

    def voting_units(
        self,
        peer_ids: Iterable[str],
        ratio: Fraction = MIN_RATIO,
        *,
        group_share: Fraction | None = None,
    ) -> set[str]:
        """Units that voted among `peer_ids`: ungrouped validators by peer id, groups by group id
        (a group counts when its voters hold more than the ratio of its member weight, or more
        than `group_share` of it when given)."""
        voted = set(peer_ids)
        share = group_share if group_share is not None else _at_least_min(ratio)
        units = {v.peer_id for v in self.validators if not v.group_id and v.peer_id in voted}
        for group in self.groups:
            members = [v for v in self.validators if v.group_id == group.group_id]
            agreed = sum(v.weight for v in members if v.peer_id in voted)
            if _more_than(agreed, share, sum(v.weight for v in members)):
                units.add(group.group_id)
        return units

    def units_weight(self, units: Iterable[str]) -> int:
        """Total weight of the named units."""
        weights = {v.peer_id: v.weight for v in self.validators if not v.group_id}
        weights.update({g.group_id: g.weight for g in self.groups})
        return sum(weights.get(unit, 0) for unit in set(units))

    def voting_weight(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> int:
        """Weight of the units that voted among `peer_ids` (non-validators count nothing)."""
        return self.units_weight(self.voting_units(peer_ids, ratio))

    def has_quorum(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> bool:
        """True when the units that voted hold more than `ratio` (at least 2/3) of the weight."""
        return _more_than(
            self.voting_weight(peer_ids, ratio), _at_least_min(ratio), self.total_weight
        )

    def exceeds_third(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> bool:
        """True when the units among `peer_ids` hold more than a third of the weight: then some
        honest unit is among them. A group counts here when more than a third of its member
        weight is among them (in a group that votes honestly that includes an honest member);
        counting it only at its voting share would let a group split across two rounds block
        both, a deadlock the seeded simulation found."""
        units = self.voting_units(peer_ids, ratio, group_share=Fraction(1, 3))
        return 3 * self.units_weight(units) > self.total_weight

    def __contains__(self, peer_id: object) -> bool:
        return any(v.peer_id == peer_id for v in self.validators)

    @property
    def peer_ids(self) -> list[str]:
        return [v.peer_id for v in self.validators]

    def founder(self) -> str | None:
        """The peer that alone may propose an open channel's genesis block: the set's first
        validator when `genesis_by_first`, otherwise none (the round's leader proposes it)."""
        if not self.genesis_by_first or not self.validators:
            return None
        return self.validators[0].peer_id

    def leader_at(self, index: int) -> str:
        """The validator at position `index` modulo the set size."""
        if not self.validators:
            raise ValueError(f"the validator set of {self.channel} is empty")
        return self.validators[index % len(self.validators)].peer_id

    # -- encoding

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "issuer": self.issuer, "signature": self.signature.hex()}

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        # made once per object (every field is immutable): the RadioStation sends a channel's
        # set with every peer list, and blocks carry it
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> ValidatorSet:
        obj = canonical.check_fields(
            value,
            {"channel": str, "version": int, "validators": list, "issuer": str, "signature": str},
            _SET_KNOWN,
        )
        raw_groups, auditors = obj.get("groups", []), obj.get("auditors", [])
        if not isinstance(raw_groups, list):
            raise EncodingError("field 'groups' must be a list")
        if not isinstance(auditors, list) or not all(isinstance(a, str) for a in auditors):
            raise EncodingError("field 'auditors' must be a list of peer ids")
        listed = len(obj["validators"]) + len(auditors)
        if listed > MAX_SET_PEERS or len(raw_groups) > MAX_SET_PEERS:
            raise EncodingError(
                f"a validator set lists at most {MAX_SET_PEERS} peers and groups (MAX_SET_PEERS): "
                f"this one {listed} peers, {len(raw_groups)} groups"
            )
        validators = tuple(_validator(v) for v in obj["validators"])
        groups = tuple(
            Group(g["group_id"], g["weight"])
            for g in (
                canonical.check_fields(g, {"group_id": str, "weight": int}, _GROUP_KNOWN)
                for g in raw_groups
            )
        )
        signature = (
            canonical.hex_to_bytes(obj["signature"], "signature", 65) if obj["signature"] else b""
        )
        package, settings = obj.get("score_package", ""), obj.get("score_settings", "")
        if not isinstance(package, str) or not isinstance(settings, str):
            raise EncodingError("fields 'score_package' and 'score_settings' must be strings")
        genesis = obj.get("genesis", "")
        if not isinstance(genesis, str):
            raise EncodingError("field 'genesis' must be a string (canonical JSON)")
        genesis_by_first = obj.get("genesis_by_first", False)
        if not isinstance(genesis_by_first, bool):
            raise EncodingError("field 'genesis_by_first' must be true or false")
        try:
            return cls(
                obj["channel"],
                obj["version"],
                validators,
                obj["issuer"],
                signature,
                groups,
                tuple(auditors),
                package,
                settings,
                genesis,
                genesis_by_first,
            )
        except ValueError as exc:  # well-formed, but breaks a rule of validator sets
            raise EncodingError(f"invalid validator set: {exc}") from None

    @classmethod
    def decode(cls, raw: bytes) -> ValidatorSet:
        return cls.from_json(canonical.decode(raw))


@dataclass(frozen=True)
class JointSet:
    """The voters of a block while a new validator set is pending (`ChainTip`): from the block
    carrying it until the one that hands the chain over. A quorum needs a quorum of each (`old`
    the chain's set, `new` the pending one), so every certificate binds the old set's honest
    members and the new set's at once."""

    old: ValidatorSet
    new: ValidatorSet

    @property
    def channel(self) -> str:
        return self.old.channel

    @functools.cached_property
    def hash(self) -> bytes:
        """What a jointly voted block names as its validators (`validators_hash`)."""
        return sha3_256(b"loopchain.joint-validators." + self.old.hash + self.new.hash)

    @functools.cached_property
    def validators(self) -> tuple[Validator, ...]:
        """The members of both sets, the old set's first."""
        old_ids = set(self.old.peer_ids)
        return self.old.validators + tuple(
            v for v in self.new.validators if v.peer_id not in old_ids
        )

    @property
    def peer_ids(self) -> list[str]:
        return [v.peer_id for v in self.validators]

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.old or peer_id in self.new

    def has_quorum(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> bool:
        voters = set(peer_ids)
        return self.old.has_quorum(voters, ratio) and self.new.has_quorum(voters, ratio)

    def exceeds_third(self, peer_ids: Iterable[str], ratio: Fraction = MIN_RATIO) -> bool:
        """More than a third of either set: some honest validator is among them."""
        voters = set(peer_ids)
        return self.old.exceeds_third(voters, ratio) or self.new.exceeds_third(voters, ratio)

    def founder(self) -> str | None:
        return None  # a genesis block is never voted jointly

    def leader_at(self, index: int) -> str:
        """The old set leads while a set is pending: the chain has been running on its members."""
        return self.old.leader_at(index)


# who votes on a block: one set, or two while a new one is pending
Voters = ValidatorSet | JointSet


def _address_or_none(public_key: bytes) -> str | None:
    try:
        return address_of(public_key)
    except Exception:  # coincurve refuses a malformed key with several error types
        return None


def _validator(value: Any) -> Validator:
    v = canonical.check_fields(
        value, {"peer_id": str, "weight": int, "group_id": str}, _VALIDATOR_KNOWN
    )
    key = v.get("public_key", "")
    if not isinstance(key, str):
        raise EncodingError("field 'public_key' must be hex")
    public_key = canonical.hex_to_bytes(key, "public_key", 33) if key else b""
    return Validator(v["peer_id"], v["weight"], v["group_id"], public_key)


def _at_least_min(ratio: Fraction) -> Fraction:
    """`ratio`, raised to 2/3 when below it (integer arithmetic: Fraction comparison is slow, and
    quorum checks run for every vote and certificate)."""
    if 3 * ratio.numerator < 2 * ratio.denominator:
        return MIN_RATIO
    return ratio


def _more_than(part: int, share: Fraction, whole: int) -> bool:
    """part > share * whole, exactly, in integers."""
    return part * share.denominator > share.numerator * whole


def ratio_from_config(voting_ratio: float) -> Fraction:
    """The quorum ratio from VOTING_RATIO; refuses one below 2/3 (unsafe) or at/above 1 (no quorum).
    Up to TWO_THIRDS_SPELLED it is 2/3: loopchain's default 0.67 is its two-decimal spelling of
    2/3, and read as 67/100 it asked more than the classic 2f+1 (68 votes of 100 validators), and
    a channel whose weight up was between the two (34/33/33, one of the 33 down) halted (review)."""
    if voting_ratio < 2 / 3 - 1e-9:
        raise ValueError(f"VOTING_RATIO {voting_ratio} is below 2/3; BFT safety needs at least 2/3")
    if voting_ratio >= 1:
        raise ValueError(f"VOTING_RATIO {voting_ratio} must be below 1")
    if voting_ratio <= TWO_THIRDS_SPELLED:
        return MIN_RATIO
    return Fraction(str(voting_ratio))
