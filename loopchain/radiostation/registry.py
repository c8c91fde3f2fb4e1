"""The RadioStation's peer directory: registered peers, channel membership and heartbeats.

Registrations and per-channel membership versions are persisted as JSON with an atomic write
(tmp file, fsync, os.replace), so orders and versions survive a restart. Heartbeats live in memory.
Time is passed in by the caller; nothing here reads a clock.

A version once served is never served again for other content (a peer ignores a version it
holds already, so it would keep the old content for good). Every change is saved before it is
served: when its save fails, the change is undone in memory and the error raised, so what peers
are served is always saved, and a restart never goes back below it. A channel change saves the
registry (with the new version) before its channel file is written, so the file never holds a
change newer than the saved version: a restart that reads a change whose version was lost serves
it under a version never served before (membership changes bump it again at open).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopchain.configure import shown
from loopchain.durable import sweep_leftovers, write_atomic
from loopchain.radiostation.channels import MAX_CHANNEL_PEERS, ChannelSpec
from loopchain.types.genesis import GenesisData
from loopchain.types.peer import Settings

FORMAT = 1
STATUS_UNKNOWN = 0
STATUS_CONNECTED = 1
STATUS_DISCONNECTED = 2
PEER_TYPE_LEADER = 1

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """The stored registry cannot be read; the message names the file."""


class UnknownPeer(LookupError):
    """A peer id the directory does not know (or not in the asked channel)."""


class NotAdmitted(LookupError):
    """With channel auth on, the peer's id is listed in no channel; or the registry, or every
    channel the peer would join, is full."""


# peers a RadioStation registers (in open mode anyone who proves a key at a target it serves
# joins: without a bound, one host could register keys until the registry, its saves and every
# channel's validator set grew without end); the operator removes peers to make room
MAX_PEERS = 1_000
# peers a channel's served sets named that are remembered as its parties (the newest)
MAX_PARTIES_KEPT = 1_024


@dataclass(frozen=True)
class PeerRecord:
    """A registered peer."""

    peer_id: str
    target: str
    group_id: str
    order: int
    public_key: bytes


@dataclass(frozen=True)
class Heartbeat:
    """The last heartbeat of a peer in one channel: when by the clock (shown) and by the
    monotonic clock (`seen`: its freshness, whatever steps the clock makes)."""

    time: float
    peer_type: int
    block_height: int
    seen: float
    settings: Settings | None = None  # what the peer said it runs with (ALIKE_SETTINGS)


@dataclass(frozen=True)
class PeerView:
    """A member of a channel with its liveness as seen at one moment."""

    record: PeerRecord
    status: int
    peer_type: int
    status_update_time: float
    block_height: int


@dataclass
class _Membership:
    version: int
    members: list[str]
    # the content (Station.validator_set: the set's hash with version 0) served under `version`,
    # "" before any: a set of other content (weights, roles, SCORE, a peer moved) takes the next
    served: str = ""
    # peers named by the sets served (validators and auditors), oldest first: a party removed
    # still reads the channel's peer list over TLS (it votes until the chain hands over)
    parties: list[str] = field(default_factory=list)
    # the genesis data (GenesisData.encoded, "" for none stated) of the first set given to a peer:
    # a peer founds or checks the chain's block 0 with it, so it is the channel's for good. None
    # until then (and in a file of an earlier version)
    genesis: str | None = None


class Registry:
    """Peers, channel membership (versioned) and heartbeats of one RadioStation."""

    def __init__(
        self,
        channels: Mapping[str, ChannelSpec],
        channel_auth: bool,
        path: Path | None = None,
        max_peers: int = MAX_PEERS,
        max_channel_peers: int = MAX_CHANNEL_PEERS,
    ) -> None:
        self.channels = dict(channels)
        self.max_peers = max_peers
        self.max_channel_peers = max_channel_peers
        self.channel_auth = channel_auth
        self.path = path
        self._peers: dict[str, PeerRecord] = {}
        self._membership: dict[str, _Membership] = {}
        # the digest of the set a channel makes now (the station's, see `adopt_contents`)
        self._content_of: Callable[[str], str] | None = None
        self._left_out: dict[str, int] = {}  # per channel: admitted peers that are not members
        self._beats: dict[tuple[str, str], Heartbeat] = {}
        self._dirty = False

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    # -- persistence

    @classmethod
    def open(cls, path: Path, channels: Mapping[str, ChannelSpec], channel_auth: bool) -> Registry:
        """Load the registry at `path` (empty when absent) and bring membership up to date;
        temporary files of saves killed midway are swept from its folder first."""
        sweep_leftovers(path.parent)
        registry = cls(channels, channel_auth, path)
        if path.exists():
            registry._restore(_read_json(path))
        if registry._refresh():
            registry.save()
        return registry

    def _restore(self, data: Any) -> None:
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"expected an object with format {FORMAT}")
            for raw in data["peers"]:
                record = PeerRecord(
                    str(raw["peer_id"]),
                    str(raw["target"]),
                    str(raw["group_id"]),
                    int(raw["order"]),
                    bytes.fromhex(raw["public_key"]),
                )
                self._peers[record.peer_id] = record
            for name, raw in data["channels"].items():
                # a file of an earlier version names no parties: every registered peer is taken
                # for one (a validator unlisted before the upgrade still votes until the
                # handover, and was refused the sets it follows meanwhile: review)
                parties = raw.get("parties", list(self._peers))
                genesis = raw.get("genesis")
                if genesis is not None and not isinstance(genesis, str):
                    raise ValueError(f"channel {name!r}: genesis must be a string")
                if genesis:  # (checked: it is served as it is)
                    GenesisData.decode(genesis)
                self._membership[name] = _Membership(
                    int(raw["version"]),
                    list(raw["members"]),
                    str(raw.get("served", "")),
                    [str(p) for p in parties][-MAX_PARTIES_KEPT:],
                    genesis,
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"registry file {self.path} is corrupt: {exc!r}") from None

    def to_json(self) -> dict[str, Any]:
        """The persisted form of the registry."""
        peers = sorted(self._peers.values(), key=lambda r: r.order)
        return {
            "format": FORMAT,
            "peers": [
                {
                    "peer_id": r.peer_id,
                    "target": r.target,
                    "group_id": r.group_id,
                    "order": r.order,
                    "public_key": r.public_key.hex(),
                }
                for r in peers
            ],
            "channels": {
                name: {
                    "version": m.version,
                    "members": m.members,
                    "served": m.served,
                    "parties": m.parties,
                    **({} if m.genesis is None else {"genesis": m.genesis}),
                }
                for name, m in sorted(self._membership.items())
            },
        }

    def save(self) -> None:
        """Write the registry atomically (no-op without a path); OSError naming it when it fails.
        Each channel whose set now has other content than its version's takes the next version
        first (`adopt_contents`): what a save changes is served under a version of its own."""
        self._stamp()
        if self.path is None:
            return
        data = json.dumps(self.to_json(), indent=1, sort_keys=True).encode()
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot save the registry {self.path}: {exc.strerror or exc}"
            ) from None
        self._dirty = False

    @contextlib.contextmanager
    def _saved_or_undone(self) -> Iterator[None]:
        """Make a change (and save it) inside; when it raises, the registry in memory is as it
        was before: peers are only ever served what is saved."""
        channels, peers, beats = dict(self.channels), dict(self._peers), dict(self._beats)
        membership = {
            n: _Membership(m.version, list(m.members), m.served, list(m.parties), m.genesis)
            for n, m in self._membership.items()
        }
        auth, dirty = self.channel_auth, self._dirty
        try:
            yield
        except BaseException:
            self.channels.clear()
            self.channels.update(channels)  # in place: others may hold this mapping
            self._peers, self._beats, self._membership = peers, beats, membership
            self.channel_auth, self._dirty = auth, dirty
            raise

    def flush(self) -> None:
        """Save when anything changed since the last save."""
        if self._dirty:
            self.save()

    # -- membership

    def _admitted(self, spec: ChannelSpec) -> list[str]:
        """Every registered peer `spec` admits, in registration order."""
        peers = sorted(self._peers.values(), key=lambda r: r.order)
        return [r.peer_id for r in peers if spec.admits(r.peer_id, r.target, self.channel_auth)]

    def _refresh(self) -> set[str]:
        """Recompute every channel's members (the first `max_channel_peers` peers it admits, in
        registration order: an open channel admits every registered peer, more than can all be
        linked); bump the version of each that changed."""
        changed: set[str] = set()
        for name, spec in self.channels.items():
            admitted = self._admitted(spec)
            members = admitted[: self.max_channel_peers]
            self._warn_left_out(name, len(admitted) - len(members))
            current = self._membership.get(name)
            if current is None:
                self._membership[name] = _Membership(1 if members else 0, members)
                changed.add(name)
            elif current.members != members:
                current.members = members
                current.version += 1
                current.served = ""  # a new version: nothing served under it yet
                changed.add(name)
        if changed:
            self._dirty = True
        return changed

    def _warn_left_out(self, name: str, count: int) -> None:
        """Say when a channel admits more peers than it takes (a registry of an earlier version,
        channel auth turned off): once for each new count, not at every refresh."""
        if count == self._left_out.get(name, 0):
            return
        self._left_out[name] = count
        if count > 0:
            log.warning(
                "channel %r admits %d registered peers, more than a channel takes "
                "(MAX_CHANNEL_PEERS %d: each member links to every other): the %d registered "
                "last stay registered but are not members; the operator removes peers with "
                "DELETE /api/v1/peer",
                name,
                self.max_channel_peers + count,
                self.max_channel_peers,
                count,
            )

    def set_channel_auth(self, channel_auth: bool) -> set[str]:
        """Switch channel auth and recompute membership; returns the changed channels."""
        with self._saved_or_undone():
            self.channel_auth = channel_auth
            changed = self._refresh()
            self.flush()
        return changed

    def register(self, peer_id: str, target: str, group_id: str, public_key: bytes) -> PeerRecord:
        """Add a peer (next order; NotAdmitted past `max_peers`) or update a known one's target
        and group; persists changes."""
        self.check_admitted(peer_id, target)
        known = self._peers.get(peer_id)
        order = (
            known.order if known else max((r.order for r in self._peers.values()), default=0) + 1
        )
        record = PeerRecord(peer_id, target, group_id, order, public_key)
        if record != known:  # a failed save undoes it: a retry saves it again
            with self._saved_or_undone():
                self._peers[peer_id] = record
                self._dirty = True
                self._refresh()
                self.save()
        return record

    def check_admitted(self, peer_id: str, target: str) -> None:
        """NotAdmitted when `register` would refuse `peer_id` at `target` now: with channel auth,
        an id no channel lists; a new peer, when there is no room for it (`_check_room`)."""
        if self.channel_auth and not any(
            spec.admits(peer_id, target, True) for spec in self.channels.values()
        ):
            raise NotAdmitted(f"peer {peer_id} is not listed in any channel")
        if peer_id not in self._peers:
            self._check_room(peer_id, target)

    def changes(self, peer_id: str, target: str, group_id: str) -> bool:
        """Whether registering the known peer `peer_id` at `target` in `group_id` changes its
        record (False for a peer not registered)."""
        known = self._peers.get(peer_id)
        return known is not None and (known.target, known.group_id) != (target, group_id)

    def _check_room(self, peer_id: str, target: str) -> None:
        """NotAdmitted when the registry is full, or when every channel that would admit the new
        peer has as many members as a channel takes: registered, it could join none of them."""
        if len(self._peers) >= self.max_peers:
            raise NotAdmitted(
                f"this RadioStation registers at most {self.max_peers} peers and holds that many; "
                "the operator removes one with DELETE /api/v1/peer"
            )
        joins = [
            name
            for name, spec in self.channels.items()
            if spec.admits(peer_id, target, self.channel_auth)
        ]

        def full(name: str) -> bool:
            membership = self._membership.get(name)  # none before the first refresh
            return membership is not None and len(membership.members) >= self.max_channel_peers

        if joins and all(full(n) for n in joins):
            names = ", ".join(map(repr, joins))
            which = f"channel {names} has" if len(joins) == 1 else f"channels {names} each have"
            raise NotAdmitted(
                f"{which} {self.max_channel_peers} members, as many as a channel takes "
                "(MAX_CHANNEL_PEERS: each member links to every other); the operator removes "
                "one with DELETE /api/v1/peer"
            )

    def set_channel(self, spec: ChannelSpec, publish: Callable[[], None] | None = None) -> int:
        """Add channel `spec` or replace the one of its name, recompute membership, save, then
        `publish` it (write the channel file); the channel's version, which grows when a known
        channel changes (its weights, roles or SCORE may differ even when its members do not).
        When the save or `publish` fails, nothing changed in memory and the error is raised."""
        with self._saved_or_undone():
            known = spec.name in self.channels
            self.channels[spec.name] = spec
            changed = self._refresh()
            if known and spec.name not in changed:
                self._membership[spec.name].version += 1
                self._membership[spec.name].served = ""
            self.save()
            if publish is not None:
                publish()
        return self.version(spec.name)

    def peer(self, peer_id: str) -> PeerRecord:
        """The record of `peer_id`; UnknownPeer when not registered."""
        try:
            return self._peers[peer_id]
        except KeyError:
            raise UnknownPeer(f"peer {shown(peer_id)} is not registered") from None

    def channels_of(self, peer_id: str) -> list[str]:
        """Names of the channels `peer_id` is a member of, in configuration order."""
        return [n for n in self.channels if peer_id in self._membership[n].members]

    def members(self, channel: str) -> list[PeerRecord]:
        """Members of `channel` in registration order."""
        return [self._peers[p] for p in self._membership[channel].members]

    def member_pairs(self) -> int:
        """The channels' members counted over every channel (a peer in two counts twice)."""
        return sum(len(m.members) for m in self._membership.values())

    def version(self, channel: str) -> int:
        """The membership version of `channel` (grows whenever its members change)."""
        return self._membership[channel].version

    def adopt_contents(self, content_of: Callable[[str], str]) -> None:
        """From now on, `content_of(channel)` (the digest of the set the channel makes now) is
        checked at every save, and now: a channel whose content is not the one served under its
        version takes the next version, saved (a file edited while the station was down)."""
        self._content_of = content_of
        if any(
            m.served != content_of(n) for n, m in self._membership.items() if n in self.channels
        ):
            with self._saved_or_undone():
                self.save()

    def _stamp(self) -> None:
        if self._content_of is None:
            return
        for name, membership in self._membership.items():
            if name not in self.channels:
                continue
            content = self._content_of(name)
            if membership.served == content:
                continue
            if membership.served:
                membership.version += 1
            membership.served = content

    def serve(self, channel: str, content: str, parties: Iterable[str] = ()) -> int:
        """The version under which the set of `content` (a digest) is served: the current one,
        or, when another content was served under it, the next, saved before it is served. A
        version once served is never served again for other content: the set's weights, roles
        and SCORE come from the channel file, and in open mode by a peer's target, none of which
        changed the version (a peer holding a version drops the same version again, and peers
        restarted after an edit certified other content under it than those that were not).
        `parties`, the peers the set names, are remembered as the channel's (`was_party`)."""
        membership = self._membership[channel]
        known = set(membership.parties)
        new = [p for p in dict.fromkeys(parties) if p not in known]
        if membership.served == content and not new:
            return membership.version
        with self._saved_or_undone():
            if membership.served != content:  # (a save may have stamped it: `_stamp`)
                if membership.served:
                    membership.version += 1
                membership.served = content
            membership.parties += new
            del membership.parties[:-MAX_PARTIES_KEPT]
            self.save()
        return membership.version

    def served(self, channel: str) -> str:
        """The content (a digest) last served for `channel` ("" before any)."""
        membership = self._membership.get(channel)
        return "" if membership is None else membership.served

    def pinned_genesis(self, channel: str) -> str | None:
        """The genesis data `channel` gave its peers (`pin_genesis`), whatever its entry in the
        channel file states now; None when no peer was given any yet (a channel removed from the
        file keeps its pin: its peers keep its chain)."""
        membership = self._membership.get(channel)
        return None if membership is None else membership.genesis

    def pinned_channels(self) -> dict[str, str]:
        """Each channel whose peers were given a genesis (those removed from the file too), with
        it (`pinned_genesis`)."""
        return {n: m.genesis for n, m in self._membership.items() if m.genesis is not None}

    def pin_genesis(self, channel: str, genesis: str) -> None:
        """Fix `genesis` (encoded, "" for none) as the channel's, saved, before a peer is given
        a set carrying it (a no-op once pinned): a peer founds block 0 with it, or checks the
        chain's against it, so the channel's genesis never changes after that (an edited
        genesis_data was served to peers starting from an empty store, who followed it until
        they held block 0: another nid, another step limit, another leader turn)."""
        membership = self._membership[channel]
        if membership.genesis is not None:
            return
        with self._saved_or_undone():
            membership.genesis = genesis
            self.save()

    def was_party(self, channel: str, peer_id: str) -> bool:
        """Whether a set served for `channel` named `peer_id` (the newest MAX_PARTIES_KEPT)."""
        return peer_id in self._membership[channel].parties

    def remove(self, peer_id: str) -> set[str]:
        """Forget a registered peer (record, heartbeats, memberships) and persist; returns the
        channels it left, whose versions grew. UnknownPeer when it is not registered."""
        self.peer(peer_id)
        with self._saved_or_undone():
            del self._peers[peer_id]
            for key in [k for k in self._beats if k[1] == peer_id]:
                del self._beats[key]
            self._dirty = True
            changed = self._refresh()
            self.save()
        return changed

    # -- heartbeats

    def heartbeat(
        self,
        peer_id: str,
        channel: str,
        peer_type: int,
        block_height: int,
        now: float,
        seen: float | None = None,
        settings: Settings | None = None,
    ) -> int:
        """Record a heartbeat of a member at `now` (the clock) and `seen` (the monotonic clock;
        `now` when not given), with the settings it said; returns the channel's version."""
        self.peer(peer_id)
        if peer_id not in self._membership[channel].members:
            raise UnknownPeer(f"peer {shown(peer_id)} is not a member of channel {shown(channel)}")
        beat = Heartbeat(now, peer_type, block_height, now if seen is None else seen, settings)
        self._beats[(channel, peer_id)] = beat
        return self.version(channel)

    def settings_of_others(
        self, channel: str, peer_id: str, now: float, timeout: float
    ) -> list[Settings]:
        """The settings the other members of `channel` connected at `now` (heartbeats `seen`
        within `timeout`) said."""
        members = self._membership[channel].members
        beats = (self._beats.get((channel, m)) for m in members if m != peer_id)
        return [
            beat.settings
            for beat in beats
            if beat is not None and beat.settings is not None and now - beat.seen <= timeout
        ]

    def forget_heartbeats(self, peer_id: str) -> None:
        """Forget every heartbeat of a peer: it is listed as connected in none of its channels
        until it sends another that is taken."""
        for key in [k for k in self._beats if k[1] == peer_id]:
            del self._beats[key]

    def view(self, channel: str, now: float, timeout: float) -> list[PeerView]:
        """Every member of `channel` with its status at `now` (on the clock its heartbeats'
        `seen` was given on)."""
        return [self._view_of(channel, r, now, timeout) for r in self.members(channel)]

    def _view_of(self, channel: str, record: PeerRecord, now: float, timeout: float) -> PeerView:
        beat = self._beats.get((channel, record.peer_id))
        if beat is None:
            return PeerView(record, STATUS_UNKNOWN, 0, 0.0, -1)
        fresh = now - beat.seen <= timeout
        status = STATUS_CONNECTED if fresh else STATUS_DISCONNECTED
        return PeerView(record, status, beat.peer_type, beat.time, beat.block_height)

    def leader(
        self, channel: str, now: float, timeout: float, voters: Container[str]
    ) -> PeerView | None:
        """The member of `voters` (the channel's validators: an auditor that said it leads was
        shown as the leader, review) that most recently reported itself leader and is still
        connected."""
        claims = [
            v
            for v in self.view(channel, now, timeout)
            if v.status == STATUS_CONNECTED
            and v.peer_type == PEER_TYPE_LEADER
            and v.record.peer_id in voters
        ]
        return max(claims, key=lambda v: v.status_update_time, default=None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"registry file {path} cannot be read: {exc}") from None
