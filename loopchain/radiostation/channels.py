"""Channel configuration of the RadioStation, read from channel_manage_data.json.

The file maps a channel name to `{"score_package": str, "peers": [{"peer_id": "hx...",
"peer_target": "host:port", "weight": int, "group_id": str, "role": "validator" | "auditor"}],
"groups": {"<group_id>": {"weight": int}}}`, at most MAX_CHANNEL_PEERS (256) entries in `peers`;
`weight` (default 1, at most MAX_WEIGHT) and `group_id` (default none, at most MAX_GROUP_ID_CHARS
characters) shape the channel's validator set: peers of one group vote as one unit of the group's
weight. `score_package` is '<org>/<package>' (loopchain.types.package_name),
DEFAULT_SCORE_PACKAGE when left out. Auditors receive and verify every block of the channel but
never vote, propose or take transactions.

`score_settings` (an object) is laid over the SCORE package's package.json for this channel, for
example `{"token": {"owner": "hx..."}}` names the peer that owns sample/token's supply.

`genesis_data` (an object, `loopchain.types.genesis`) names the accounts funded with the native coin
at genesis: `{"accounts": [{"name": str, "address": "hx...", "balance": "0x..."}], "message": str}`,
balances in loop (10**-18 ICX), and may state the channel's network id for ICON v3 transactions
(`"nid": "0x5"`; without it, each peer's ICON_NID) and its SCORE step limit
(`"score_step_limit": "0x4c4b40"`; without it, each peer's SCORE_STEP_LIMIT) and its leader turn
(`"leader_block_creation_limit": "0x14"`; without it, each peer's LEADER_BLOCK_CREATION_LIMIT),
each fixed by the genesis block. Its canonical JSON
goes into every validator set of the channel. Two channels stating one nid are refused: a v3 transaction names no channel.

A peer is known by its id (the address of its key). With ENABLE_CHANNEL_AUTH (listed mode) a peer
joins a channel only when an entry lists its `peer_id`; a target alone is not an identity, so every
entry needs one. In open mode an entry may name only `peer_target`, to give the peer registered
there a weight, group or role. When the file does not exist the RadioStation runs one open channel
(LOOPCHAIN_DEFAULT_CHANNEL).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopchain.configure import shown
from loopchain.durable import sweep_leftovers
from loopchain.safe_text import json_place
from loopchain.sources import is_target
from loopchain.types import canonical, channel_name, package_name
from loopchain.types.canonical import EncodingError
from loopchain.types.channel_name import is_channel_name
from loopchain.types.genesis import GenesisData
from loopchain.types.package_name import is_package_name

log = logging.getLogger(__name__)

_CHANNEL_KEYS = {"score_package", "score_settings", "genesis_data", "peers", "groups"}
# A weight goes into every validator set the RadioStation signs and peers decode (canonical JSON
# holds integers of at most 80 digits; a weight of 10**90 made every GetPeerList of its channel
# fail with a traceback): weights are 1 .. 2**31 - 1, like every integer of the configuration.
MAX_WEIGHT = 2**31 - 1
# A group id goes into the validator set too, and a registering peer's is at most 256 characters.
MAX_GROUP_ID_CHARS = 256
# Entries of a channel's `peers` list. Each validator of a channel holds a link to every other,
# two streams on a connection to its port, and a peer takes 512 link streams
# (p2p/peer_service.py MAX_INBOUND_STREAMS) and 512 connections a port (p2p/grpc_util.py
# SERVER_MAX_CONNECTIONS, shared with REST proxies, the RadioStation's probes and clients): 256
# peers link each one to 255 others with 510 streams and half its connections; more could never
# all be linked. The RadioStation registers at most 1,000 peers (registry.py MAX_PEERS) and makes
# at most this many members of a channel, an open one too (registry.py Registry._refresh).
MAX_CHANNEL_PEERS = 256
MAX_SCORE_SETTINGS_BYTES = 16 * 1024
_FIXED_PACKAGE_FIELDS = ("id", "version", "main")
_PEER_KEYS = {"peer_id", "peer_target", "weight", "group_id", "role"}
_PEER_FIELDS = ", ".join(sorted(_PEER_KEYS))
_CHANNEL_FIELDS = ", ".join(sorted(_CHANNEL_KEYS))
_PEER_ID = re.compile(r"hx[0-9a-f]{40}")
ROLES = ("validator", "auditor")


Place = tuple[str | int, ...]  # keys and indexes from the top of the channel data


class ChannelDataError(ValueError):
    """Channel data (channel_manage_data.json, or the data an operator's change makes) that is
    malformed: `place` says where (a channel's name, then the keys and indexes inside its entry;
    empty: the data as a whole) and `reason` what is wrong there; the message names the file."""

    def __init__(self, path: Path, place: Place, reason: str) -> None:
        self.path = path
        self.place = place
        self.reason = reason
        super().__init__(f"{path}: {describe_place(place)}{reason}")


def describe_place(place: Place) -> str:
    """`place` as a message about the channel file opens: "channel 'c': peers[3].weight: "."""
    if not place:
        return ""
    inside = f"{json_place(place[1:])}: " if place[1:] else ""
    return f"channel {shown(place[0])}: {inside}"


@dataclass(frozen=True)
class _At:
    """A place in the channel data of `path` that checks refuse values at."""

    path: Path
    place: Place

    def __truediv__(self, part: str | int) -> _At:
        return _At(self.path, (*self.place, part))

    def refused(self, reason: str) -> ChannelDataError:
        return ChannelDataError(self.path, self.place, reason)


@dataclass(frozen=True)
class MemberSpec:
    """One entry of a channel's `peers` list."""

    peer_id: str = ""  # empty: the entry names only a target (open mode)
    target: str = ""  # empty: the peer may register from any target
    weight: int = 1
    group_id: str = ""
    role: str = "validator"


@dataclass(frozen=True)
class ChannelSpec:
    """One channel: its SCORE package and its listed peers (None: any peer, open mode)."""

    name: str
    score_package: str
    members: tuple[MemberSpec, ...] | None
    groups: Mapping[str, int] = field(default_factory=dict)  # group id -> weight
    score_settings: Mapping[str, Any] = field(default_factory=dict)  # over its package.json
    genesis: GenesisData | None = None  # the accounts funded at genesis, when stated

    @property
    def genesis_text(self) -> str:
        """The stated genesis data as a validator set carries it ("" when none is stated)."""
        return self.genesis.encoded() if self.genesis is not None else ""

    def entry(self, peer_id: str, target: str) -> MemberSpec | None:
        """The entry naming `peer_id`, else one naming only `target`, else None. Looked up, not
        searched: it is asked for every registered peer of every channel at each registration
        (a review measured 0.7 s a registration with 64 channels listing 256 peers each)."""
        named, by_target = self._entries
        found = named.get(peer_id) if peer_id else None
        return found if found is not None else by_target.get(target)

    @functools.cached_property
    def _entries(self) -> tuple[dict[str, MemberSpec], dict[str, MemberSpec]]:
        """The first entry naming each peer id; the first naming only each target."""
        named: dict[str, MemberSpec] = {}
        by_target: dict[str, MemberSpec] = {}
        for member in self.members or ():
            if member.peer_id:
                named.setdefault(member.peer_id, member)
            else:
                by_target.setdefault(member.target, member)
        return named, by_target

    def admits(self, peer_id: str, target: str, channel_auth: bool) -> bool:
        """True when the peer `peer_id` registered at `target` belongs to this channel."""
        if not channel_auth or self.members is None:
            return True
        member = self.entry(peer_id, target)
        return member is not None and member.peer_id == peer_id

    def is_validator(self, peer_id: str, target: str) -> bool:
        """True unless the channel names the peer an auditor."""
        member = self.entry(peer_id, target)
        return member is None or member.role == "validator"

    def weight(self, peer_id: str, target: str) -> int:
        member = self.entry(peer_id, target)
        return member.weight if member is not None else 1

    def group_of(self, peer_id: str, target: str) -> str:
        member = self.entry(peer_id, target)
        return member.group_id if member is not None else ""

    def unlisted(self) -> list[int]:
        """Indexes of entries without a peer id (refused in listed mode)."""
        return [i for i, m in enumerate(self.members or ()) if not m.peer_id]


def _weight(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WEIGHT


def _group_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_GROUP_ID_CHARS


def _parse_member(at: _At, entry: Any) -> MemberSpec:
    if not isinstance(entry, dict):
        raise at.refused("must be an object")
    unknown = sorted(set(entry) - _PEER_KEYS)
    if unknown:
        raise at.refused(f"has unknown keys {shown(unknown, 120)}; an entry takes {_PEER_FIELDS}")
    peer_id = entry.get("peer_id", "")
    if not isinstance(peer_id, str) or (peer_id and not _PEER_ID.fullmatch(peer_id)):
        raise (at / "peer_id").refused("must be 'hx' and 40 lowercase hex digits")
    target = entry.get("peer_target", "")
    if not isinstance(target, str) or (target and not is_target(target)):
        raise (at / "peer_target").refused(f"must be 'host:port', got {shown(target)}")
    if not peer_id and not target:
        raise at.refused("needs a peer_id (or, in open mode, a peer_target)")
    weight = entry.get("weight", 1)
    if not _weight(weight):
        raise (at / "weight").refused(f"must be an integer from 1 to {MAX_WEIGHT}")
    group = entry.get("group_id", "")
    if not _group_id(group):
        raise (at / "group_id").refused(
            f"must be a string of at most {MAX_GROUP_ID_CHARS} characters"
        )
    role = entry.get("role", "validator")
    if role not in ROLES:
        raise (at / "role").refused(f"must be one of {list(ROLES)}")
    return MemberSpec(peer_id, target, weight, group, role)


def _parse_peers(at: _At, raw: Any) -> tuple[MemberSpec, ...]:
    if not isinstance(raw, list):
        raise at.refused("must be a list of {'peer_id': 'hx...'}")
    if len(raw) > MAX_CHANNEL_PEERS:
        raise at.refused(
            f"lists {len(raw)} entries; a channel lists at most {MAX_CHANNEL_PEERS} "
            "(MAX_CHANNEL_PEERS)"
        )
    members = tuple(_parse_member(at / i, entry) for i, entry in enumerate(raw))
    first: dict[tuple[str, str], int] = {}
    for index, member in enumerate(members):
        kind, value = (
            ("peer_id", member.peer_id) if member.peer_id else ("peer_target", member.target)
        )
        if (kind, value) in first:
            raise (at / index / kind).refused(
                f"{shown(value)} is listed twice (peers[{first[kind, value]}] and peers[{index}]; "
                "an entry is known by its peer_id, or without one by its peer_target)"
            )
        first[kind, value] = index
    return members


def _parse_groups(at: _At, raw: Any, peers: tuple[MemberSpec, ...]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise at.refused("must map group ids to {'weight': int}")
    groups: dict[str, int] = {}
    for group_id, spec in raw.items():
        if not _group_id(group_id):
            raise (at / group_id).refused(
                f"a group id is longer than {MAX_GROUP_ID_CHARS} characters"
            )
        if not isinstance(spec, dict) or set(spec) - {"weight"}:
            raise (at / group_id).refused("must be {'weight': int}")
        weight = spec.get("weight", 1)
        if not _weight(weight):
            raise (at / group_id / "weight").refused(f"must be an integer from 1 to {MAX_WEIGHT}")
        groups[group_id] = weight
    named = {member.peer_id for member in peers if member.peer_id}
    for group_id in groups:
        if group_id in named:  # a voting unit's name: its weight would count for both
            raise (at / group_id).refused("a group id must not be a listed peer's id")
    for index, member in enumerate(peers):
        if member.group_id and member.group_id not in groups:
            where = _At(at.path, (*at.place[:-1], "peers", index, "group_id"))
            raise where.refused(f"names group {shown(member.group_id)}, missing from 'groups'")
    return groups


def _parse_channel(path: Path, name: Any, raw: Any, default_package: str) -> ChannelSpec:
    if not is_channel_name(name):
        raise ChannelDataError(path, (), f"channel name {shown(name)} must be {channel_name.RULE}")
    at = _At(path, (name,))
    if not isinstance(raw, dict):
        raise at.refused("must map to an object")
    unknown = sorted(set(raw) - _CHANNEL_KEYS)
    if unknown:
        raise at.refused(
            f"has unknown keys {shown(unknown, 120)}; a channel takes {_CHANNEL_FIELDS}"
        )
    package = raw.get("score_package", default_package)
    if not is_package_name(package):
        raise (at / "score_package").refused(f"{shown(package)} must be {package_name.RULE}")
    peers = _parse_peers(at / "peers", raw.get("peers", []))
    groups = _parse_groups(at / "groups", raw.get("groups", {}), peers)
    settings = _parse_settings(at / "score_settings", raw.get("score_settings", {}))
    genesis = (
        _parse_genesis(at / "genesis_data", raw["genesis_data"]) if "genesis_data" in raw else None
    )
    return ChannelSpec(name, package, peers, groups, settings, genesis)


def _parse_genesis(at: _At, raw: Any) -> GenesisData:
    """`genesis_data`: the accounts funded at genesis."""
    try:
        return GenesisData.from_json(raw)
    except EncodingError as exc:
        raise at.refused(str(exc)) from None


def _parse_settings(at: _At, raw: Any) -> dict[str, Any]:
    """`score_settings`: a JSON object laid over the SCORE's package.json (e.g. its owner)."""
    if not isinstance(raw, dict):
        raise at.refused("must be a JSON object")
    fixed = sorted(set(raw) & set(_FIXED_PACKAGE_FIELDS))
    if fixed:
        raise (at / fixed[0]).refused(f"is the package's own: score_settings may not set {fixed}")
    try:
        size = len(canonical.encode(raw))
    except EncodingError as exc:
        raise at.refused(str(exc)) from None
    if size > MAX_SCORE_SETTINGS_BYTES:
        raise at.refused(f"is larger than {MAX_SCORE_SETTINGS_BYTES} bytes")
    return raw


def member_to_json(member: MemberSpec) -> dict[str, Any]:
    """A `peers` entry as channel_manage_data.json holds it (defaults left out)."""
    entry: dict[str, Any] = {}
    if member.peer_id:
        entry["peer_id"] = member.peer_id
    if member.target:
        entry["peer_target"] = member.target
    if member.weight != 1:
        entry["weight"] = member.weight
    if member.group_id:
        entry["group_id"] = member.group_id
    if member.role != "validator":
        entry["role"] = member.role
    return entry


def channel_to_json(spec: ChannelSpec) -> dict[str, Any]:
    """A channel as channel_manage_data.json holds it: parse_channels reads it back to `spec`."""
    entry: dict[str, Any] = {"score_package": spec.score_package}
    entry["peers"] = [member_to_json(m) for m in spec.members or ()]  # [] in open mode: any peer
    if spec.groups:
        entry["groups"] = {group: {"weight": weight} for group, weight in spec.groups.items()}
    if spec.score_settings:
        entry["score_settings"] = dict(spec.score_settings)
    if spec.genesis is not None:
        entry["genesis_data"] = spec.genesis.to_json()
    return entry


def parse_channels(
    path: Path,
    data: Any,
    default_package: str,
    default_nid: int | None = None,
    *,
    warn: bool = True,
) -> dict[str, ChannelSpec]:
    """Channel specs from the decoded JSON of `path`; ChannelDataError names what is wrong.
    `default_nid`: the ICON_NID the channels stating no nid take (this node's, as their peers'
    should be); `warn`: of channels that share it (check_networks: at start, not at each
    change, which said it again each time)."""
    if not isinstance(data, dict):
        raise ChannelDataError(path, (), "must hold a JSON object mapping channel names to objects")
    if not data:
        raise ChannelDataError(path, (), "defines no channel")
    specs = [_parse_channel(path, name, raw, default_package) for name, raw in data.items()]
    check_networks(path, specs, default_nid, warn=warn)
    return {spec.name: spec for spec in specs}


def check_networks(
    path: Path,
    specs: list[ChannelSpec],
    default_nid: int | None,
    warn: bool = True,
    given: Container[str] = (),
) -> None:
    """Refuse two channels stating one network id (genesis_data.nid): a v3 transaction names
    its network and no channel, so one signed for either would be valid in the other, replayed
    (review). Channels that state none take each peer's ICON_NID (`default_nid`, as this node
    has it), and so share it, with one another and with one stating it: a warning says so, and
    how to part them (unless not `warn`). A channel's nid is fixed by its genesis block: a nid
    stated later is not taken (the RadioStation takes the genesis it gave, Station); those of
    `given` are said so."""
    named: dict[int, str] = {}
    unnamed = []
    for spec in specs:
        nid = spec.genesis.nid if spec.genesis is not None else None
        if nid is None:
            unnamed.append(spec.name)
        elif nid in named:
            raise ChannelDataError(
                path,
                (spec.name, "genesis_data", "nid"),
                f"{nid:#x} is channel {named[nid]!r}'s too"
                + (
                    " (the nid its peers were given, fixed: the RadioStation's registry.json)"
                    if named[nid] in given
                    else ""
                )
                + ": a v3 transaction signed for one would be valid in the other; give each "
                "channel a network id of its own",
            )
        else:
            named[nid] = spec.name
    if not warn:
        return
    if len(unnamed) > 1:
        log.warning(
            "channels %s state no genesis_data nid and share the peers' ICON_NID: a v3 "
            "transaction signed for one is valid in the others, replayed; give each its own",
            ", ".join(unnamed),
        )
    if unnamed and default_nid in named:
        log.warning(
            "channel %s states nid %#x, the ICON_NID that channels %s (stating none) take: a v3 "
            "transaction signed for one is valid in the others, replayed; give each its own",
            named[default_nid],
            default_nid,
            ", ".join(unnamed),
        )


def load_channels(
    path: Path, default_channel: str, default_package: str, default_nid: int | None = None
) -> dict[str, ChannelSpec]:
    """Read the channel file, or one open default channel when the file does not exist
    (temporary files of writes of it killed midway are swept from its folder first)."""
    sweep_leftovers(path.absolute().parent)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.info(
            "%s not found: one channel %s with SCORE %s, open to every peer",
            path,
            default_channel,
            default_package,
        )
        return {default_channel: ChannelSpec(default_channel, default_package, None)}
    except (OSError, UnicodeDecodeError) as exc:
        raise ChannelDataError(path, (), f"cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ChannelDataError(path, (), f"is not valid JSON: {exc}") from None
    return parse_channels(path, data, default_package, default_nid)
