"""The state one RadioStation shares between its gRPC and REST faces."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loopchain.configure import DEFAULTS, Config, ConfigError, shown
from loopchain.p2p.grpc_util import Tls
from loopchain.radiostation.alike import SettingsWatch
from loopchain.radiostation.channels import ChannelSpec, check_networks
from loopchain.radiostation.metrics import StationMetrics
from loopchain.radiostation.registry import PeerView, Registry
from loopchain.types import canonical, package_name
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisData
from loopchain.types.package_name import is_package_name
from loopchain.types.peer import Settings
from loopchain.types.validators import Group, Validator, ValidatorSet

# Keys the RadioStation reads once at start (listeners, storage and file paths, TLS, logging, the
# limits and deadlines its servers are made with) and ENABLE_CHANNEL_AUTH, which decides who may
# join: a runtime change would not take effect, or would silently revert at the next restart. They
# are set in the files and env.
_STARTUP_ONLY_PREFIXES = (
    "PORT_",
    "IP_",
    "GRPC_SSL_",
    "MONITOR_LOG",
    "RADIOSTATION_",
    "LOG_FILE_ROTATE_",
)
_STARTUP_ONLY_NAMES = {
    "ENABLE_CHANNEL_AUTH",
    "ENABLE_REST_SSL",
    "GRPC_MAX_MESSAGE_BYTES",
    "LOOPCHAIN_HOST",
    "LOOPCHAIN_LOG_LEVEL",
    "LOG_OUTPUT_TYPE",
    "MEMORY_GIVE_BACK_MB",
    "REST_KEEPALIVE_TIMEOUT",
    "REST_MAX_BODY_BYTES",
    "REST_MAX_CONNECTIONS",
    "REST_MAX_RECEIVING_MB",
    "REST_MAX_SENDING_MB",
    "REST_SEND_TIMEOUT",
}
STARTUP_ONLY = frozenset(
    key
    for key in DEFAULTS
    if key in _STARTUP_ONLY_NAMES or key.startswith(_STARTUP_ONLY_PREFIXES) or key.endswith("_PATH")
)

# Keys the RadioStation reads as it works, each time it needs them: the only ones an operator
# sets at runtime. Every other key is a peer's (the RadioStation reads none of them): POST /conf
# answered 200 to MAX_BLOCK_TX_NUM, say, which changed nothing anywhere (operator review).
RUNTIME = frozenset(
    {
        "DEFAULT_SCORE_PACKAGE",
        "GRPC_TIMEOUT",
        "HEARTBEAT_INTERVAL",
        "HEARTBEAT_TIMEOUT",
        "ICON_NID",
        "LOOPCHAIN_DEFAULT_CHANNEL",
        "MAX_TIMESTAMP_SKEW",
        "REST_BODY_TIMEOUT",
    }
)


log = logging.getLogger(__name__)


class SettingRefused(ConfigError):
    """A runtime setting refused; `field` is the part of the request that is wrong ("name": the
    key, "value": its value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_station_settings(config: Config) -> None:
    """Refuse values the RadioStation cannot serve, beyond every layer's type and range rules:
    DEFAULT_SCORE_PACKAGE is the package of a channel that names none (the one channel when there
    is no channel file, a channel an operator adds without one), so it must be a name a peer
    loads a package by."""
    package = config.DEFAULT_SCORE_PACKAGE
    if not is_package_name(package):
        raise ConfigError(f"DEFAULT_SCORE_PACKAGE {shown(package)} must be {package_name.RULE}")


class UnknownChannel(LookupError):
    """A channel the RadioStation does not manage."""


class Station:
    """Effective configuration, peer registry and signing key of one RadioStation."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        signer: Signer,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self.registry = registry
        self.signer = signer
        self.clock = clock  # timestamps: heartbeats' and what it shows
        self.monotonic = monotonic  # how long ago: whether a peer is still connected
        # channel -> (what its set was made of, the set signed): see validator_set
        self._sets: dict[str, tuple[tuple[Any, ...], ValidatorSet]] = {}
        self.tls: Tls | None = None  # mutual TLS material when GRPC_SSL_TYPE is 2
        # the channel file's bytes as read at start or last written (None: there was none); its
        # writes refuse to overwrite other bytes (channel_admin). Unknown until set: not checked
        self.channel_file: bytes | None = None
        self.channel_file_known = False
        self._alike = SettingsWatch(monotonic)
        self.metrics = StationMetrics(
            lambda: {channel: self.view(channel) for channel in self.registry.channels},
            process=True,
        )
        # (channel, peer) -> the set it was warned of holding (version, hash), and when
        self._ahead_warned: dict[tuple[str, str], tuple[tuple[int, bytes], float]] = {}
        self._ahead_lines: dict[str, tuple[float, int]] = {}  # channel -> (minute began, lines)
        self._take_pinned_genesis()
        # every save of the registry gives a set of other content its own version, now too
        registry.adopt_contents(self._content)

    def _content(self, channel: str) -> str:
        """The digest of the set `channel` makes now, whatever its version."""
        return _content(self._unsigned_set(channel, 0))

    @property
    def config(self) -> Config:
        """The effective configuration (an operator may change it over REST)."""
        return self._config

    def set_config(self, name: str, value: Any) -> Config:
        """Set one configuration key at runtime; SettingRefused when the key is unknown, fixed
        at startup (STARTUP_ONLY), the value is not acceptable (the type and range rules of
        every layer, only true or false for a flag, and check_station_settings) or the key is
        not one the RadioStation reads (RUNTIME); the configuration is then unchanged."""
        if name not in DEFAULTS:
            raise SettingRefused("name", f"unknown configuration key {shown(name)}")
        if name in STARTUP_ONLY:
            raise SettingRefused(
                "name",
                f"{name} is read once at start and cannot be changed at runtime; "
                "set it in the configuration file (-o) or the environment and restart",
            )
        if isinstance(DEFAULTS[name], bool) and not isinstance(value, bool):
            raise SettingRefused(
                "value", f"{name} must be true or false, got {type(value).__name__}"
            )
        try:
            config = self._config.replace(**{name: value})
            check_station_settings(config)
        except ConfigError as exc:
            raise SettingRefused("value", str(exc)) from None
        if name not in RUNTIME:  # (after the value's checks: a wrong value is said first)
            raise SettingRefused(
                "name",
                f"{name} is not a RadioStation setting (it reads it nowhere): set it in each "
                "peer's configuration; the RadioStation sets " + ", ".join(sorted(RUNTIME)),
            )
        if name == "LOOPCHAIN_DEFAULT_CHANNEL" and config[name] not in self.registry.channels:
            raise SettingRefused(
                "value", f"LOOPCHAIN_DEFAULT_CHANNEL must name a channel, got {shown(value)}"
            )
        self._config = config
        return config

    def resolve_channel(self, name: str | None) -> str:
        """The channel `name` (the default channel when empty); UnknownChannel otherwise."""
        channel = name or self._config.LOOPCHAIN_DEFAULT_CHANNEL
        if channel not in self.registry.channels:
            raise UnknownChannel(f"unknown channel {shown(channel)}")
        return channel

    def _take_pinned_genesis(self) -> None:
        """Give each channel the genesis data its peers were given (Registry.pin_genesis) in
        place of its file's, saying so when they differ (the file edited while this RadioStation
        was down): what it serves, shows (GET /api/v1/channel/data), writes back at a change and
        checks a new channel's nid against is the chain's. A registry of an earlier version holds
        no pin: the content it saved as served (which covers the genesis) pins the file's
        genesis when it is the one served. ChannelDataError when the genesis taken gives two
        channels one nid."""
        channels = self.registry.channels
        for name, spec in list(channels.items()):
            pinned = self.registry.pinned_genesis(name)
            if pinned is None:
                served = self.registry.served(name)
                if served and served == self._content(name) and self.registry.members(name):
                    self.registry.pin_genesis(name, spec.genesis_text)
                continue
            if pinned == spec.genesis_text:
                continue
            log.warning(
                "channel %s: the channel file's genesis_data differs from the one this "
                "RadioStation gave the channel's peers (%s), which their chains' genesis block "
                "holds: it serves that one still. Put it back in the file to silence this; a new "
                "genesis needs a new channel (another name). %s",
                name,
                genesis_differences(pinned, spec.genesis_text),
                UNPIN,
            )
            genesis = GenesisData.decode(pinned) if pinned else None
            channels[name] = dataclasses.replace(spec, genesis=genesis)
        self.check_given_networks(channels)

    def check_given_networks(self, specs: Mapping[str, ChannelSpec]) -> None:
        """ChannelDataError when a channel of `specs` whose peers were given no genesis yet would
        share a nid with another (channels.check_networks), each channel whose peers were given
        one counted with its nid, those removed from the file too: the channel refused is one
        whose genesis the file can still change. Two given the same nid (by an earlier version,
        which checked neither) are warned of: their chains exist, refusing parts nothing."""
        given = self.registry.pinned_channels()
        fixed: list[ChannelSpec] = []
        holder: dict[int, str] = {}  # nid -> the first channel given it
        for name, text in given.items():
            genesis = GenesisData.decode(text) if text else None
            nid = genesis.nid if genesis is not None else None
            if nid is not None and nid in holder:
                log.warning(
                    "channels %s and %s were given one nid, %#x (their chains hold it): a v3 "
                    "transaction signed for one is valid in the other, replayed. Retire one",
                    holder[nid],
                    name,
                    nid,
                )
                continue
            if nid is not None:
                holder[nid] = name
            spec = specs.get(name) or ChannelSpec(name, "", None)
            fixed.append(dataclasses.replace(spec, genesis=genesis))
        check_networks(
            Path(self._config.CHANNEL_MANAGE_DATA_PATH),
            [*fixed, *(spec for name, spec in specs.items() if name not in given)],
            int(str(self._config.ICON_NID), 16),
            warn=False,
            given=given,
        )

    def held_nids(self) -> set[int | None]:
        """The nid of each channel, as its peers were given it (its pinned genesis) or else as
        the file states it, those removed from the file but given one too; None for a channel
        that states none (it takes the peers' ICON_NID)."""
        pinned = self.registry.pinned_channels()
        nids: set[int | None] = set()
        for name in {*self.registry.channels, *pinned}:
            text = pinned.get(name)
            genesis = (
                (GenesisData.decode(text) if text else None)
                if text is not None
                else self.registry.channels[name].genesis
            )
            nids.add(genesis.nid if genesis is not None else None)
        return nids

    def judge_held_set(
        self, channel: str, peer_id: str, held: int, held_hash: bytes, version: int
    ) -> None:
        """Warn (once a peer and set held) when a peer's heartbeat says it holds a newer
        validator set than this RadioStation's `version`, or one of that version with other
        content (`held_hash`) than the one this RadioStation served under it: its registry is
        older than the one that issued that set (restored from an older copy, or a standby
        behind), so what it changes is served under versions the peers hold and ignore; the
        operator was told "unlisted (channel version 5)" and the validator kept voting
        (operator review). A peer's word changes nothing here: it is said, for the operator to
        restore the newest registry.json. A member's word is unsigned: each peer is said of once
        a minute at most, and a channel's lines are AHEAD_WARNS_A_MINUTE a minute at most, so
        that one member neither floods the log nor silences the others (review)."""
        if len(held_hash) != HASH_BYTES:
            held_hash = b""  # (none, from an older peer; or not a hash: a forged beat's)
        served = self._served_hash(channel, version) if held == version and held_hash else None
        if held > version:
            what, said = f"above this RadioStation's {version}", (held, b"")
        elif served is not None and held_hash != served:
            what, said = "with other content than this RadioStation's", (held, held_hash)
        else:
            return
        now = self.monotonic()
        warned = self._ahead_warned.get((channel, peer_id))
        if warned is not None:
            (was, at) = warned
            if was[0] > held or was == said or now - at < AHEAD_WARN_EVERY_S:
                return
        began, lines = self._ahead_lines.get(channel, (-math.inf, 0))
        if now - began >= AHEAD_WARN_EVERY_S:
            began, lines = now, 0
        if lines >= AHEAD_WARNS_A_MINUTE:
            return
        self._ahead_lines[channel] = (began, lines + 1)
        if len(self._ahead_warned) >= MAX_AHEAD_WARNED:
            self._ahead_warned.clear()
        self._ahead_warned[(channel, peer_id)] = (said, now)
        log.warning(
            "channel %s: peer %s holds validator set version %d, %s: its registry is older than "
            "the one that issued that set (restored from an older copy, or a standby behind?). "
            "The peers ignore the versions it serves until one is above %d, so its changes are "
            "not taken: restore its newest registry.json (or bring the standby's copy up to date)",
            channel,
            peer_id,
            held,
            what,
            held,
        )

    def _served_hash(self, channel: str, version: int) -> bytes | None:
        """The hash of the set this RadioStation last served for `channel` when it was of
        `version` (None when it served none since its start, or one of another version): not
        made here, which could write the registry (validator_set)."""
        cached = self._sets.get(channel)
        if cached is None or cached[1].version != version:
            return None
        return cached[1].hash

    def served_set(self, channel: str) -> ValidatorSet:
        """The set a peer is given for `channel` (`validator_set`), its genesis data pinned
        first when the channel has members (one of them founds block 0 with it, or checks the
        chain's): from then on it is the channel's whatever its entry states. Not for a channel
        without members: an anonymous GetPeerList fixed a new channel's genesis, typos too."""
        served = self.validator_set(channel)
        if self.registry.members(channel):
            self.registry.pin_genesis(channel, served.genesis)
        return served

    def validator_set(self, channel: str) -> ValidatorSet:
        """The channel's current validator set, signed by this RadioStation. Made again only
        when what makes it changed (its version, the channel's entry, channel auth, a member's
        record): each GetPeerList, any caller's, made it to compare, 3.4 ms of the event loop
        with 256 members (their keys checked, the set hashed; review)."""
        version = self.registry.version(channel)
        inputs = (
            version,
            self.registry.channels[channel],
            self.registry.channel_auth,
            tuple(self.registry.members(channel)),
        )
        cached = self._sets.get(channel)
        if cached is not None and cached[0] == inputs:
            return cached[1]
        unsigned = self._unsigned_set(channel, version)
        if cached is not None and cached[1].version == version and cached[1].hash == unsigned.hash:
            self._sets[channel] = (inputs, cached[1])
            return cached[1]
        # (the registry gave it its version when it saved what changed it: this writes only
        # when something else did, such as a setting it reads)
        named = [v.peer_id for v in unsigned.validators] + list(unsigned.auditors)
        version = self.registry.serve(channel, _content(unsigned), named)
        signed = dataclasses.replace(unsigned, version=version).signed_by(self.signer)
        self._sets[channel] = (inputs, signed)
        return signed

    def _unsigned_set(self, channel: str, version: int) -> ValidatorSet:
        """The channel's set as the registry and channel file make it now, under `version`."""
        spec = self.registry.channels[channel]
        registered = {r.peer_id: r for r in self.registry.members(channel)}
        listed = self.registry.channel_auth and spec.members is not None
        if listed:
            # listed mode: the listed validators, registered or not, in the file's order. Every
            # version of the set has the same committee, so a peer that registers first cannot
            # certify a genesis alone while the others certify another with the full set.
            members = tuple(
                Validator(
                    m.peer_id,
                    m.weight,
                    m.group_id,
                    registered[m.peer_id].public_key if m.peer_id in registered else b"",
                )
                for m in spec.members or ()
                if m.role == "validator"
            )
        else:
            members = tuple(
                Validator(
                    r.peer_id,
                    spec.weight(r.peer_id, r.target),
                    spec.group_of(r.peer_id, r.target),
                    r.public_key,
                )
                for r in registered.values()
                if spec.is_validator(r.peer_id, r.target)
            )
        used = {m.group_id for m in members if m.group_id}
        groups = tuple(Group(g, w) for g, w in spec.groups.items() if g in used)
        auditors = tuple(
            r.peer_id
            for r in self.registry.members(channel)
            if not spec.is_validator(r.peer_id, r.target)
        )
        settings = canonical.encode(dict(spec.score_settings)) if spec.score_settings else b""
        return ValidatorSet(
            channel,
            version,
            members,
            groups=groups,
            auditors=auditors,
            score_package=spec.score_package,
            score_settings=settings.decode(),
            genesis=spec.genesis_text,
            genesis_by_first=not listed,
        )

    def is_party(self, channel: str, peer_id: str) -> bool:
        """Whether `peer_id` is a party of `channel`: a member, listed in its entry, named by
        its current set, or by a set served before (a validator removed votes until the chain
        hands over, and follows the sets meanwhile: node._follow_sets)."""
        if peer_id in {r.peer_id for r in self.registry.members(channel)}:
            return True
        if any(m.peer_id == peer_id for m in self.registry.channels[channel].members or ()):
            return True  # listed, not registered yet
        current = self.validator_set(channel)
        return (
            peer_id in current
            or peer_id in current.auditors
            or self.registry.was_party(channel, peer_id)
        )

    def view(self, channel: str) -> list[PeerView]:
        """Members of `channel` with their current status."""
        return self.registry.view(channel, self.monotonic(), self._config.HEARTBEAT_TIMEOUT)

    def settings_differ(self, channel: str, peer_id: str, own: Settings) -> str | None:
        """How the settings `peer_id` said in its heartbeat differ from those the channel's other
        connected members said ("" when alike; None when none said theirs: nothing compared, as
        after this RadioStation's start). SCORE_STEP_LIMIT and LEADER_BLOCK_CREATION_LIMIT are
        not compared for a channel whose genesis_data states its own (score_step_limit,
        leader_block_creation_limit), which every peer takes."""
        others = self.registry.settings_of_others(
            channel, peer_id, self.monotonic(), self._config.HEARTBEAT_TIMEOUT
        )
        if not others:
            return None
        genesis = self.registry.channels[channel].genesis
        stated = (
            {}
            if genesis is None
            else {
                "SCORE_STEP_LIMIT": genesis.score_step_limit,
                "LEADER_BLOCK_CREATION_LIMIT": genesis.leader_block_creation_limit,
            }
        )
        skip = tuple(key for key, value in stated.items() if value is not None)
        pairs = self.registry.member_pairs() + 16
        return self._alike.judge(channel, peer_id, own, others, skip, pairs)

    def leader(self, channel: str) -> PeerView | None:
        """The current leader of `channel`, if any."""
        voters = {v.peer_id for v in self.validator_set(channel).validators}
        return self.registry.leader(
            channel, self.monotonic(), self._config.HEARTBEAT_TIMEOUT, voters
        )


# how to correct a genesis fixed wrongly: a RadioStation of an earlier version served a file's
# edit after the chain existed, and fixed it at the upgrade (review)
UNPIN = (
    "If the one given is not the chain's (an earlier version served an edit), stop the "
    'RadioStation, remove the channel\'s "genesis" from its registry.json and start it again '
    "with the chain's in the file: it fixes the file's when it next gives a peer the set"
)


AHEAD_WARN_EVERY_S = 60.0  # a peer's "holds a newer set" said at most this often
AHEAD_WARNS_A_MINUTE = 4  # lines of it a channel gets a minute at most (each of another peer)
HASH_BYTES = 32  # a validator set's hash (a heartbeat's set_hash of another length is ignored)
MAX_AHEAD_WARNED = 4096  # (channel, peer) pairs remembered for it


def genesis_differences(pinned: str, stated: str) -> str:
    """How the genesis data `stated` differs from `pinned` (both encoded), field by field."""
    if not stated:
        return "none is stated now"
    if not pinned:
        return "none was given"
    given, now = GenesisData.decode(pinned).to_json(), GenesisData.decode(stated).to_json()
    fields = sorted(key for key in given.keys() | now.keys() if given.get(key) != now.get(key))
    return "they differ in " + ", ".join(fields)


def _content(unsigned: ValidatorSet) -> str:
    """The digest of a set's content, whatever its version."""
    return dataclasses.replace(unsigned, version=0).hash.hex()
