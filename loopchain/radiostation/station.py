"""The state one RadioStation shares between its gRPC and REST faces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loopchain.configure import DEFAULTS, Config, ConfigError, shown
from loopchain.p2p.grpc_util import Tls
from loopchain.radiostation.metrics import StationMetrics
from loopchain.radiostation.registry import PeerView, Registry
from loopchain.types import canonical
from loopchain.types.crypto import Signer
from loopchain.types.validators import Group, Validator, ValidatorSet

# Keys the RadioStation reads once at start (listeners, storage and file paths, TLS, logging, size
# limits of its servers) and ENABLE_CHANNEL_AUTH, which decides who may join: a runtime change would
# not take effect, or would silently revert at the next restart. They are set in the files and env.
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
    "REST_MAX_BODY_BYTES",
}
STARTUP_ONLY = frozenset(
    key
    for key in DEFAULTS
    if key in _STARTUP_ONLY_NAMES or key.startswith(_STARTUP_ONLY_PREFIXES) or key.endswith("_PATH")
)


class UnknownChannel(LookupError):
    """A channel the RadioStation does not manage."""


class Station:
    """Effective configuration, peer registry and signing key of one RadioStation."""

    def __init__(
        self, config: Config, registry: Registry, signer: Signer, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self.registry = registry
        self.signer = signer
        self.clock = clock
        self._sets: dict[str, ValidatorSet] = {}
        self.tls: Tls | None = None  # mutual TLS material when GRPC_SSL_TYPE is 2
        self.metrics = StationMetrics(
            lambda: {channel: self.view(channel) for channel in self.registry.channels},
            process=True,
        )

    @property
    def config(self) -> Config:
        """The effective configuration (an operator may change it over REST)."""
        return self._config

    def set_config(self, name: str, value: Any) -> Config:
        """Set one configuration key at runtime; ConfigError when the key is fixed at startup
        (STARTUP_ONLY) or the value is not acceptable (the type and range rules of every layer,
        and only true or false for a flag)."""
        if name in STARTUP_ONLY:
            raise ConfigError(
                f"{name} is read once at start and cannot be changed at runtime; "
                "set it in the configuration file (-o) or the environment and restart"
            )
        if isinstance(DEFAULTS.get(name), bool) and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {type(value).__name__}")
        config = self._config.replace(**{name: value})
        if name == "LOOPCHAIN_DEFAULT_CHANNEL" and config[name] not in self.registry.channels:
            raise ConfigError(f"LOOPCHAIN_DEFAULT_CHANNEL must name a channel, got {shown(value)}")
        self._config = config
        return config

    def resolve_channel(self, name: str | None) -> str:
        """The channel `name` (the default channel when empty); UnknownChannel otherwise."""
        channel = name or self._config.LOOPCHAIN_DEFAULT_CHANNEL
        if channel not in self.registry.channels:
            raise UnknownChannel(f"unknown channel {shown(channel)}")
        return channel

    def validator_set(self, channel: str) -> ValidatorSet:
        """The channel's current validator set, signed by this RadioStation."""
        version = self.registry.version(channel)
        cached = self._sets.get(channel)
        if cached is not None and cached.version == version:
            return cached
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
        unsigned = ValidatorSet(
            channel,
            version,
            members,
            groups=groups,
            auditors=auditors,
            score_package=spec.score_package,
            score_settings=settings.decode(),
            genesis=spec.genesis.encoded() if spec.genesis is not None else "",
            genesis_by_first=not listed,
        )
        signed = unsigned.signed_by(self.signer)
        self._sets[channel] = signed
        return signed

    def view(self, channel: str) -> list[PeerView]:
        """Members of `channel` with their current status."""
        return self.registry.view(channel, self.clock(), self._config.HEARTBEAT_TIMEOUT)

    def leader(self, channel: str) -> PeerView | None:
        """The current leader of `channel`, if any."""
        return self.registry.leader(channel, self.clock(), self._config.HEARTBEAT_TIMEOUT)
