"""The operator's changes to the channel data: add a channel, add or remove a channel's peer entry.

Each change is made on the whole channel data as channel_manage_data.json holds it, checked by the
same parser that reads the file at start (parse_channels), and by the listed-mode rule (every entry
names a peer_id); the registry saves it with the channel's new version, then it is written to
CHANNEL_MANAGE_DATA_PATH (a synced temporary file renamed over it), and only then served. When
either write fails, nothing changed in the running RadioStation and the operator is told so: the
file and the running RadioStation never disagree, the next start reads what the operator set, and
a version once served is never served again for other content (registry.py).

Peers learn a change of a channel they are in at their next heartbeat (its version grows); a new
channel reaches a peer when it registers (at its next start).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopchain.configure import shown
from loopchain.durable import write_atomic
from loopchain.radiostation.channels import (
    MAX_CHANNEL_PEERS,
    ChannelDataError,
    ChannelSpec,
    Place,
    channel_to_json,
    describe_place,
    parse_channels,
)
from loopchain.radiostation.station import Station, UnknownChannel, genesis_differences
from loopchain.safe_text import json_place
from loopchain.types import channel_name
from loopchain.types.channel_name import MAX_CHANNELS, is_channel_name
from loopchain.types.genesis import MAX_NID


class ChannelChangeError(ValueError):
    """A change the channel data cannot take: `place` is where in the request's body (keys and
    indexes; empty: the body as a whole), `reason` what is wrong there."""

    def __init__(self, place: Place, reason: str) -> None:
        self.place = place
        self.reason = reason
        super().__init__(f"{json_place(place)}: {reason}" if place else reason)


class ChannelFileChanged(RuntimeError):
    """channel_manage_data.json holds other bytes than the RadioStation read or last wrote."""


def read_channel_file(path: Path) -> bytes | None:
    """The channel file's bytes (None when there is none); OSError when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class ChannelExists(ChannelChangeError):
    """A channel of that name is already managed."""


class NoSuchEntry(LookupError):
    """The channel lists no peer of that id (or target)."""


# Where a place in the channel data is in the request's body (None: not in it).
InBody = Callable[[Place], Place | None]


def channel_data(station: Station) -> dict[str, dict[str, Any]]:
    """Every channel as channel_manage_data.json holds it."""
    return {name: channel_to_json(spec) for name, spec in station.registry.channels.items()}


def _data_path(station: Station) -> Path:
    return Path(station.config.CHANNEL_MANAGE_DATA_PATH)


def _refused(place: Place, reason: str, in_body: InBody) -> ChannelChangeError:
    """The refusal of the data's `place`, named where the request's body has it (else where the
    channel data has it: a value the change did not send)."""
    inside = in_body(place)
    if inside is not None:
        return ChannelChangeError(inside, reason)
    return ChannelChangeError(
        (), f"the channel data would be refused: {describe_place(place)}{reason}"
    )


def _check_all(
    station: Station, data: dict[str, Any], name: str, in_body: InBody
) -> dict[str, ChannelSpec]:
    """Every channel of `data` checked as at start, and channel `name` by the listed-mode rule."""
    try:
        config = station.config
        specs = parse_channels(
            _data_path(station),
            data,
            str(config.DEFAULT_SCORE_PACKAGE),
            int(str(config.ICON_NID), 16),
            warn=False,
        )
    except ChannelDataError as exc:
        raise _refused(exc.place, exc.reason, in_body) from None
    try:  # the nids of the channels whose peers were given a genesis are theirs for good
        station.check_given_networks(specs)
    except ChannelDataError as exc:
        raise _refused(exc.place, exc.reason, in_body) from None
    before = station.registry.channels.get(name)
    pinned = station.registry.pinned_genesis(name)
    if before is None and pinned is not None and specs[name].genesis_text != pinned:
        # a channel of this name was served before: its peers keep its chain, whose genesis
        # block holds the genesis data they were given
        raise _refused(
            (name, "genesis_data"),
            f"channel {name!r} existed before and its peers were given other genesis data "
            f"({genesis_differences(pinned, specs[name].genesis_text)}), with which they found "
            "or check its genesis block: state that one (the RadioStation's registry.json keeps "
            "it as the channel's 'genesis'), or name a new channel",
            in_body,
        )
    listed = station.registry.channel_auth  # (in open mode the set is the registered peers')
    if listed and _has_validators(before) and not _has_validators(specs[name]):
        raise ChannelChangeError(
            (),
            f"channel {name!r} would list no validator: its chain could hand over to no set "
            "after that, and would stop for good; list another validator first",
        )
    unlisted = specs[name].unlisted() if station.registry.channel_auth else []
    if unlisted:
        raise _refused(
            (name, "peers", unlisted[0], "peer_id"),
            "with ENABLE_CHANNEL_AUTH every peer entry needs a peer_id (a target alone is not an "
            "identity)",
            in_body,
        )
    return specs


def _own_nid(station: Station, name: str, entry: dict[str, Any]) -> int | None:
    """The nid given to channel `name`, added with the JSON `entry` that states none, written
    into its genesis_data (None: it states one, or states genesis_data that is no JSON object,
    refused as such; a channel of that name existed, whose genesis its peers were given; or
    the peers' ICON_NID it would take is no other channel's). A channel stating no nid takes
    the peers' ICON_NID; another that takes or states that one too would accept a v3
    transaction signed for it, replayed (review: `gtool add-channel` made one sharing the first
    localnet channel's, warned at each later change). The nid given is the lowest one above the
    peers' ICON_NID that no channel states or was given."""
    genesis = entry.get("genesis_data")
    if "genesis_data" in entry and not isinstance(genesis, dict):
        return None
    if isinstance(genesis, dict) and "nid" in genesis:
        return None
    if station.registry.pinned_genesis(name) is not None:
        return None  # (re-added: its peers hold the genesis they were given)
    default = int(str(station.config.ICON_NID), 16)
    nids = station.held_nids()
    if None not in nids and default not in nids:
        return None
    free = next((n for n in range(default + 1, MAX_NID + 1) if n not in nids), None)
    if free is None:  # (every nid above ICON_NID taken: far past MAX_CHANNELS)
        raise ChannelChangeError(
            ("genesis_data", "nid"), "is not stated, and no free network id is left to give it"
        )
    entry["genesis_data"] = {**(genesis or {"accounts": []}), "nid": hex(free)}
    return free


def _has_validators(spec: ChannelSpec | None) -> bool:
    """Whether `spec` lists a validator."""
    return spec is not None and any(m.role == "validator" for m in spec.members or ())


def _commit(
    station: Station, data: dict[str, Any], name: str, in_body: InBody
) -> tuple[ChannelSpec, int]:
    """Check `data`, save channel `name`'s new version, write `data` in the form GET
    /api/v1/channel/data serves, then apply it; its spec and version."""
    specs = _check_all(station, data, name, in_body)
    written = {channel: channel_to_json(spec) for channel, spec in specs.items()}
    text = json.dumps(written, indent=1, ensure_ascii=False) + "\n"

    def publish() -> None:
        path, written = _data_path(station), text.encode("utf-8")
        try:
            if station.channel_file_known and read_channel_file(path) != station.channel_file:
                # an edit by hand, which this RadioStation does not serve: it was overwritten
                # by the next change through the API, and lost (operator review)
                raise ChannelFileChanged(
                    f"{path} was changed on disk since this RadioStation read it (it serves "
                    "what it read at start, and takes a file edited by hand at its next start): "
                    "restart it to take the file, or put the file back as it was; nothing "
                    "was changed"
                )
            write_atomic(path, written)
        except OSError as exc:
            raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
        station.channel_file, station.channel_file_known = written, True

    return specs[name], station.registry.set_channel(specs[name], publish)


def add_channel(station: Station, body: dict[str, Any]) -> tuple[ChannelSpec, int, int | None]:
    """Add the channel `body["channel"]` with the other fields of `body` as its entry; its spec,
    its version and the nid it was given (_own_nid: None when it kept what it stated)."""
    name = body.get("channel")
    if not is_channel_name(name):
        raise ChannelChangeError(("channel",), f"must be {channel_name.RULE}")
    if name in station.registry.channels:
        raise ChannelExists((), f"channel {name!r} exists already")
    if len(station.registry.channels) >= MAX_CHANNELS:
        raise ChannelChangeError((), f"at most {MAX_CHANNELS} channels")
    data = channel_data(station)
    data[name] = {k: v for k, v in body.items() if k != "channel"}
    given = _own_nid(station, name, data[name])
    spec, version = _commit(
        station, data, name, lambda place: place[1:] if place[:1] == (name,) else None
    )
    return spec, version, given


def _entries(station: Station, channel: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if channel not in station.registry.channels:
        raise UnknownChannel(f"unknown channel {shown(channel)}")
    data = channel_data(station)
    return data, data[channel].setdefault("peers", [])


def add_member(station: Station, body: dict[str, Any]) -> tuple[ChannelSpec, int]:
    """Add the peer entry `body` (peer_id, peer_target, weight, group_id, role) to the channel
    `body["channel"]`."""
    channel = body.get("channel")
    if not isinstance(channel, str) or not channel:
        raise ChannelChangeError(("channel",), "must name a channel")
    try:
        data, peers = _entries(station, channel)
    except UnknownChannel as exc:
        raise UnknownChannel(f"channel: {exc}") from None
    if len(peers) >= MAX_CHANNEL_PEERS:
        raise ChannelChangeError(
            ("channel",),
            f"channel {channel!r} lists {len(peers)} peers, as many as a channel may list "
            "(MAX_CHANNEL_PEERS); unlist one first",
        )
    entry = (channel, "peers", len(peers))
    peers.append({k: v for k, v in body.items() if k != "channel"})
    return _commit(station, data, channel, lambda place: place[3:] if place[:3] == entry else None)


def remove_member(
    station: Station, channel: str, peer_id: str, target: str
) -> tuple[ChannelSpec, int]:
    """Remove the entry of `peer_id` (or, without one, the entry naming only `target`)."""
    data, peers = _entries(station, channel)
    kept = [
        entry
        for entry in peers
        if not (
            (peer_id and entry.get("peer_id") == peer_id)
            or (not peer_id and not entry.get("peer_id") and entry.get("peer_target") == target)
        )
    ]
    if len(kept) == len(peers):
        raise NoSuchEntry(f"channel {shown(channel)} lists no peer {shown(peer_id or target)}")
    data[channel]["peers"] = kept
    return _commit(station, data, channel, lambda place: None)  # a query, no body
