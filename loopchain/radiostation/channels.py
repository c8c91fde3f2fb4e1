"""Channel configuration of the RadioStation, read from channel_manage_data.json.

The file maps a channel name to `{"score_package": str, "peers": [{"peer_target": "host:port"}]}`.
When it does not exist the RadioStation runs one open channel (LOOPCHAIN_DEFAULT_CHANNEL).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHANNEL_KEYS = {"score_package", "peers"}
_PEER_KEYS = {"peer_target"}


class ChannelDataError(ValueError):
    """channel_manage_data.json is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class ChannelSpec:
    """One channel: its SCORE package and the peer targets allowed in it (None: any peer)."""

    name: str
    score_package: str
    peer_targets: frozenset[str] | None

    def admits(self, target: str, channel_auth: bool) -> bool:
        """True when a peer at `target` belongs to this channel."""
        if not channel_auth or self.peer_targets is None:
            return True
        return target in self.peer_targets


def is_target(text: str) -> bool:
    """True when `text` looks like host:port with a port in 1..65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _parse_peers(path: Path, name: str, raw: Any) -> frozenset[str]:
    where = f"{path}: channel {name!r}"
    if not isinstance(raw, list):
        raise ChannelDataError(f"{where}: 'peers' must be a list of {{'peer_target': 'host:port'}}")
    targets: set[str] = set()
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
        targets.add(target)
    return frozenset(targets)


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
    return ChannelSpec(name, package, _parse_peers(path, name, raw.get("peers", [])))


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
