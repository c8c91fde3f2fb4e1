"""Channel configuration of the RadioStation, read from channel_manage_data.json.

The file maps a channel name to `{"score_package": str, "peers": [{"peer_target": "host:port",
"weight": int, "group_id": str, "role": "validator" | "auditor"}], "groups": {"<group_id>":
{"weight": int}}}`; `weight` (default 1) and `group_id` (default none) shape the channel's validator
set: peers of one group vote as one unit of the group's weight. Auditors receive and verify every
block of the channel but never vote, propose or take transactions. When the file does not exist the RadioStation runs one open channel
(LOOPCHAIN_DEFAULT_CHANNEL).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHANNEL_KEYS = {"score_package", "peers", "groups"}
_PEER_KEYS = {"peer_target", "weight", "group_id", "role"}
ROLES = ("validator", "auditor")


class ChannelDataError(ValueError):
    """channel_manage_data.json is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class ChannelSpec:
    """One channel: its SCORE package and the peer targets allowed in it (None: any peer)."""

    name: str
    score_package: str
    peer_targets: frozenset[str] | None
    peer_weights: Mapping[str, int] = field(default_factory=dict)  # target -> weight
    peer_groups: Mapping[str, str] = field(default_factory=dict)  # target -> group id
    groups: Mapping[str, int] = field(default_factory=dict)  # group id -> weight
    auditors: frozenset[str] = frozenset()  # targets that follow the channel without voting

    def is_validator(self, target: str) -> bool:
        """True unless the channel names `target` an auditor."""
        return target not in self.auditors

    def admits(self, target: str, channel_auth: bool) -> bool:
        """True when a peer at `target` belongs to this channel."""
        if not channel_auth or self.peer_targets is None:
            return True
        return target in self.peer_targets


def is_target(text: str) -> bool:
    """True when `text` looks like host:port with a port in 1..65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


@dataclass
class _Peers:
    targets: set[str] = field(default_factory=set)
    weights: dict[str, int] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    auditors: set[str] = field(default_factory=set)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_peers(path: Path, name: str, raw: Any) -> _Peers:
    where = f"{path}: channel {name!r}"
    if not isinstance(raw, list):
        raise ChannelDataError(f"{where}: 'peers' must be a list of {{'peer_target': 'host:port'}}")
    peers = _Peers()
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ChannelDataError(f"{where}: peers[{index}] must be an object")
        unknown = sorted(set(entry) - _PEER_KEYS)
        if unknown:
            raise ChannelDataError(f"{where}: peers[{index}] has unknown keys {unknown}")
        target = entry.get("peer_target")
        if not isinstance(target, str) or not is_target(target):
            raise ChannelDataError(
                f"{where}: peers[{index}].peer_target must be 'host:port', got {target!r}"
            )
        peers.targets.add(target)
        weight = entry.get("weight", 1)
        if not _positive_int(weight):
            raise ChannelDataError(f"{where}: peers[{index}].weight must be a positive integer")
        peers.weights[target] = weight
        group = entry.get("group_id", "")
        if not isinstance(group, str):
            raise ChannelDataError(f"{where}: peers[{index}].group_id must be a string")
        if group:
            peers.groups[target] = group
        role = entry.get("role", "validator")
        if role not in ROLES:
            raise ChannelDataError(f"{where}: peers[{index}].role must be one of {list(ROLES)}")
        if role == "auditor":
            peers.auditors.add(target)
    return peers


def _parse_groups(path: Path, name: str, raw: Any, peers: _Peers) -> dict[str, int]:
    where = f"{path}: channel {name!r}"
    if not isinstance(raw, dict):
        raise ChannelDataError(f"{where}: 'groups' must map group ids to {{'weight': int}}")
    groups: dict[str, int] = {}
    for group_id, spec in raw.items():
        if not isinstance(spec, dict) or set(spec) - {"weight"}:
            raise ChannelDataError(f"{where}: groups[{group_id!r}] must be {{'weight': int}}")
        weight = spec.get("weight", 1)
        if not _positive_int(weight):
            raise ChannelDataError(
                f"{where}: groups[{group_id!r}].weight must be a positive integer"
            )
        groups[group_id] = weight
    unknown = sorted(set(peers.groups.values()) - set(groups))
    if unknown:
        raise ChannelDataError(f"{where}: peers name groups {unknown} missing from 'groups'")
    return groups


def _parse_channel(path: Path, name: Any, raw: Any, default_package: str) -> ChannelSpec:
    if not isinstance(name, str) or not name.strip():
        raise ChannelDataError(f"{path}: channel names must be non-empty strings, got {name!r}")
    if not isinstance(raw, dict):
        raise ChannelDataError(f"{path}: channel {name!r} must map to an object")
    unknown = sorted(set(raw) - _CHANNEL_KEYS)
    if unknown:
        raise ChannelDataError(f"{path}: channel {name!r} has unknown keys {unknown}")
    package = raw.get("score_package", default_package)
    if not isinstance(package, str) or not package:
        raise ChannelDataError(
            f"{path}: channel {name!r}: score_package must be a non-empty string"
        )
    peers = _parse_peers(path, name, raw.get("peers", []))
    groups = _parse_groups(path, name, raw.get("groups", {}), peers)
    return ChannelSpec(
        name,
        package,
        frozenset(peers.targets),
        peers.weights,
        peers.groups,
        groups,
        frozenset(peers.auditors),
    )


def parse_channels(path: Path, data: Any, default_package: str) -> dict[str, ChannelSpec]:
    """Channel specs from the decoded JSON of `path`; ChannelDataError names what is wrong."""
    if not isinstance(data, dict):
        raise ChannelDataError(f"{path}: must hold a JSON object mapping channel names to objects")
    if not data:
        raise ChannelDataError(f"{path}: defines no channel")
    specs = [_parse_channel(path, name, raw, default_package) for name, raw in data.items()]
    return {spec.name: spec for spec in specs}


def load_channels(path: Path, default_channel: str, default_package: str) -> dict[str, ChannelSpec]:
    """Read the channel file, or one open default channel when the file does not exist."""
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
        raise ChannelDataError(f"{path}: cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelDataError(f"{path}: is not valid JSON: {exc}") from None
    return parse_channels(path, data, default_package)
