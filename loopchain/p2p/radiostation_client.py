"""The peer's client of the RadioStation: register, fetch peer lists, heartbeat."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from loopchain.configure import Config
from loopchain.p2p.grpc_util import Tls, open_channel
from loopchain.p2p.server_certs import ServerCheck, ServerRefused
from loopchain.p2p.transport import TransportError
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.safe_text import bounded, one_line
from loopchain.sources import is_target
from loopchain.types import canonical, channel_name
from loopchain.types.canonical import EncodingError
from loopchain.types.channel_name import MAX_CHANNELS, is_channel_name
from loopchain.types.codes import ResponseCode
from loopchain.types.crypto import Signer, address_of
from loopchain.types.peer import PeerInfo, connect_digest, heartbeat_digest, settings_digest
from loopchain.types.validators import MAX_SET_PEERS, ValidatorSet

Reply = TypeVar("Reply")
T = TypeVar("T")

log = logging.getLogger(__name__)

# A RadioStation answers RESOURCE_EXHAUSTED when it holds its bound of calls at once (MAX_CALLS
# of loopchain/radiostation/main.py): it is up and its registry is the newest, so the call is
# made there again, BUSY_TRIES times at most, after BUSY_BACKOFF_S (jittered, twice as long
# before each next try), all within the call's deadline (GRPC_TIMEOUT), before the next
# RadioStation is tried. Every other code (UNAVAILABLE, DEADLINE_EXCEEDED, ...) makes it
# unreachable at once.
BUSY_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})
# statuses that are the RadioStation's answer, not a failure to reach it: not tried at a standby,
# and said (a peer list refused to a peer no party of the channel was taken for the station down,
# the standby asked in its place, and the refusal logged at DEBUG only: review)
REFUSING_CODES = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND})
# ... unless gRPC says a message was over a size bound (either side's): no retry changes that
_TOO_LARGE = "larger than max"
BUSY_TRIES = 3
MAX_SETTINGS_DIFFER = 1_000  # characters of the RadioStation's word on this peer's settings shown
BUSY_BACKOFF_S = 0.05


@dataclass(frozen=True)
class HeartbeatNews:
    """What a heartbeat says besides liveness, each advisory (an older RadioStation ignores it):
    the `settings` the peer runs with (encode_settings, signed apart) and the newest validator
    set it holds, by its version and hash (0 and empty: none, or another RadioStation's)."""

    settings: bytes = b""
    set_version: int = 0
    set_hash: bytes = b""


NO_NEWS = HeartbeatNews()


class RadioStationRefused(RuntimeError):
    """The RadioStation answered with an error code (`code`, a ResponseCode value)."""

    def __init__(self, message: str, code: int = ResponseCode.FAIL) -> None:
        super().__init__(message)
        self.code = int(code)

    @property
    def unknown_peer(self) -> bool:
        """Whether the RadioStation does not know this peer (in the asked channel)."""
        return self.code == ResponseCode.PEER_UNKNOWN


class RadioStationUnreachable(TransportError):
    """The RadioStation did not answer (down, late, or refusing the connection)."""


class RadioStationBusy(RadioStationUnreachable):
    """The RadioStation is up but answered busy (RESOURCE_EXHAUSTED) each time it was tried; a
    RadioStationUnreachable, as no answer came, to be logged as busy rather than as down."""


@dataclass(frozen=True)
class ChannelGrant:
    """A channel the RadioStation gives this peer."""

    channel: str
    score_package: str
    validators: ValidatorSet
    score_settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    order: int
    radiostation_address: str
    channels: tuple[ChannelGrant, ...]


def _grant(info: pb.ChannelInfo) -> ChannelGrant:
    settings = canonical.parse(info.score_settings_json) if info.score_settings_json else {}
    if not isinstance(settings, dict):
        raise EncodingError("score_settings must be a JSON object")
    if not is_channel_name(info.channel):  # it names a directory of this peer
        raise EncodingError(f"channel name {info.channel[:80]!r} must be {channel_name.RULE}")
    return ChannelGrant(
        info.channel, info.score_package, ValidatorSet.decode(info.validator_set), settings
    )


def _listed_peers(target: str, channel: str, entries: Sequence[pb.PeerEntry]) -> list[PeerInfo]:
    """The peers of a channel's list from RadioStation `target`: an entry is a link opened and
    kept (a list of 300,000 took 430 MB for its first 3,000, review), dialed at its target (one
    naming a scheme, "unix:/path", had this peer dial a local socket). RadioStationRefused for
    more than a validator set lists (MAX_SET_PEERS); an entry not host:port, or a peer id listed
    again, is left out (warned about)."""
    if len(entries) > MAX_SET_PEERS:
        raise RadioStationRefused(
            f"RadioStation {target} sent a malformed peer list of {channel}: {len(entries)} "
            f"peers, more than a validator set lists ({MAX_SET_PEERS})"
        )
    peers: dict[str, PeerInfo] = {}
    left_out: list[str] = []
    for p in entries:
        if p.peer_id in peers or not is_target(p.target):
            why = "listed twice" if p.peer_id in peers else "not host:port"
            left_out.append(f"peer {p.peer_id[:80]!r} at {p.target[:80]!r} ({why})")
            continue
        peers[p.peer_id] = PeerInfo(p.peer_id, p.target, p.order, p.group_id)
    if left_out:  # one line a list (a line an entry: 999 for one list, review)
        more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
        log.warning(
            "RadioStation %s lists %s of %s: left out%s", target, left_out[0], channel, more
        )
    return list(peers.values())


class RadioStationClient:
    """gRPC client of one RadioStation with a deadline on every call."""

    def __init__(self, target: str, config: Config, tls: Tls | None = None) -> None:
        self.target = target
        self.timeout = float(config.GRPC_TIMEOUT)
        name = str(config.GRPC_SSL_SERVER_NAME_RADIOSTATION)
        self._channel = open_channel(target, config, tls, name)
        self._stub = pb_grpc.RadioStationStub(self._channel)
        # its certificate checked against the revocation lists too (gRPC checks the CA and the
        # name only): a RadioStation whose certificate was revoked was still taken, its grants
        # and member lists, and its key as the issuer at a peer's next start (review)
        self._server_check = (
            ServerCheck(tls, target, name, self.timeout, named=True)
            if tls is not None and tls.handshake is not None and name
            else None
        )
        # seconds its clock is ahead of this process's, as its last heartbeat answer told
        self.clock_offset: float | None = None
        self.revocations_digest = b""  # of the CRL it serves, as its last heartbeat answer told
        # how this peer's settings differ from the channel's other peers', as the last heartbeat
        # answer told ("": alike; None: not said, as a RadioStation of an earlier version)
        self.settings_differ: str | None = None
        # why the validator set of the last peer list could not be read (None: it could)
        self.unreadable_set: str | None = None

    async def connect(self, signer: Signer, my_target: str, group_id: str = "") -> Registration:
        """Register this peer (signed) and return its order and channels."""
        request = pb.ConnectPeerRequest(
            peer_id=signer.address,
            target=my_target,
            group_id=group_id,
            public_key=signer.public_key,
            signature=signer.sign(connect_digest(signer.address, my_target, group_id)),
        )
        reply = await self._call(self._stub.ConnectPeer, request)
        if reply.code == ResponseCode.TIMEOUT:  # it could not reach us yet: try again later
            raise RadioStationUnreachable(reply.message)
        if reply.code != 0:
            raise RadioStationRefused(
                f"RadioStation {self.target} refused this peer: {reply.message}", reply.code
            )

        try:
            if len(reply.channels) > MAX_CHANNELS:  # each would open a channel here
                raise EncodingError(f"{len(reply.channels)} channels, more than {MAX_CHANNELS}")
            grants = tuple(_grant(c) for c in reply.channels)
        except EncodingError as exc:
            raise RadioStationRefused(
                f"RadioStation {self.target} sent a malformed channel grant: {exc}"
            ) from None
        try:
            issuer = address_of(reply.radiostation_public_key)
        except Exception as exc:  # coincurve refuses a malformed key with several error types
            raise RadioStationRefused(
                f"RadioStation {self.target} sent a malformed registration: its public key "
                f"({len(reply.radiostation_public_key)} bytes) is not a secp256k1 key: {exc}"
            ) from None
        return Registration(reply.order, issuer, grants)

    async def peer_list(self, channel: str) -> tuple[list[PeerInfo], ValidatorSet | None]:
        """The channel's registered peers and its current signed validator set."""
        reply = await self._call(self._stub.GetPeerList, pb.ChannelRequest(channel=channel))
        peers = _listed_peers(self.target, channel, reply.peers)
        self.unreadable_set = None
        try:
            validators = ValidatorSet.decode(reply.validator_set) if reply.validator_set else None
        except EncodingError as exc:  # the peers are taken all the same
            validators = None
            self.unreadable_set = one_line(
                bounded(
                    f"RadioStation {self.target} sent a validator set of channel {channel} that "
                    f"this peer cannot read ({exc}): one of a newer version may state what this "
                    "version does not know (upgrade this peer)",
                    MAX_SETTINGS_DIFFER,
                )
            )
        return peers, validators

    async def heartbeat(
        self,
        signer: Signer,
        channel: str,
        peer_type: int,
        height: int,
        said: HeartbeatNews = NO_NEWS,
    ) -> int:
        """Report liveness (signed, timestamped) and what else the peer `said`; returns the
        channel's peer-list version."""
        now_us = time.time_ns() // 1000
        sent = time.monotonic()
        digest = heartbeat_digest(signer.address, channel, peer_type, height, now_us)
        request = pb.HeartbeatRequest(
            peer_id=signer.address,
            channel=channel,
            peer_type=peer_type,
            block_height=height,
            timestamp_us=now_us,
            signature=signer.sign(digest),
            set_version=said.set_version,
            set_hash=said.set_hash,
        )
        if said.settings:
            request.settings = said.settings
            request.settings_signature = signer.sign(settings_digest(digest, said.settings))
        self.settings_differ = None
        try:
            reply = await self._call(self._stub.Heartbeat, request)
        except Exception:
            # its word on this clock is as old as its last answer: none while it is silent (a
            # channel refusing clients on that word refused them for good once the clock was
            # set right while it was down; review)
            self.clock_offset = None
            raise
        if reply.timestamp_us:  # its clock as it answered, against this one's halfway through
            halfway_us = now_us + (time.monotonic() - sent) * 500_000
            self.clock_offset = (reply.timestamp_us - halfway_us) / 1_000_000
        self.revocations_digest = bytes(reply.revocations_digest[:64])  # refused or not
        if reply.HasField("settings_differ"):
            self.settings_differ = one_line(bounded(reply.settings_differ, MAX_SETTINGS_DIFFER))
        if reply.code != 0:
            raise RadioStationRefused(
                f"RadioStation {self.target} refused the heartbeat: {reply.message}", reply.code
            )
        return int(reply.peer_list_version)

    async def revocations(self) -> bytes:
        """The CRL this RadioStation serves (PEM; b"" for none)."""
        reply = await self._call(self._stub.GetRevocations, pb.ChannelRequest())
        return bytes(reply.crl_pem)

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        """`method(request)`, made again while this RadioStation answers busy (BUSY_CODES): at
        most BUSY_TRIES times, after a jittered backoff, all within one GRPC_TIMEOUT."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if self._server_check is not None:
            try:
                await self._server_check.admit()
            except ServerRefused as exc:
                raise RadioStationUnreachable(f"RadioStation {self.target}: {exc}") from None
        pause = BUSY_BACKOFF_S
        tries = 0
        while True:
            tries += 1
            try:
                return await method(request, timeout=deadline - loop.time())
            except grpc.aio.AioRpcError as exc:
                if exc.code() in REFUSING_CODES:  # an answer (a peer no party of the channel)
                    words = f"{exc.code().name}: {exc.details()}"
                    raise RadioStationRefused(
                        f"RadioStation {self.target} refused: {words}"
                    ) from None
                if exc.code() not in BUSY_CODES or _TOO_LARGE in (exc.details() or ""):
                    raise RadioStationUnreachable(exc.code().name) from None
                busy = f"busy ({exc.code().name}, {tries} tries): {exc.details()}"
            wait = pause * random.uniform(0.5, 1.0)
            if tries >= BUSY_TRIES or loop.time() + wait >= deadline:
                raise RadioStationBusy(busy)
            await asyncio.sleep(wait)
            pause *= 2

    async def close(self) -> None:
        await self._channel.close()


class RadioStations:
    """The RadioStation and its standbys (`-r ip:port,ip:port`), used like one client: each call
    goes to the one that answered last and, when it is unreachable, to the others in turn; the
    first that answers is used from then on. A refusal is an answer: it is not tried elsewhere,
    and the one that refused is used from then on too. One that is busy is tried again first
    (RadioStationClient._call) and only then left for the next; when none answers, the error is
    RadioStationBusy if one of them was busy, naming each one and why."""

    def __init__(self, targets: Sequence[str], config: Config, tls: Tls | None = None) -> None:
        if not targets:
            raise ValueError("no RadioStation target")
        self._clients = [RadioStationClient(target, config, tls) for target in targets]
        self._current = 0

    @property
    def target(self) -> str:
        return self._clients[self._current].target

    @property
    def clock_offset(self) -> float | None:
        """Seconds the RadioStation in use is ahead of this clock (None: not told yet)."""
        return self._clients[self._current].clock_offset

    @property
    def settings_differ(self) -> str | None:
        """How this peer's settings differ from the channel's other peers', as the last heartbeat
        answer of the RadioStation in use said ("": alike; None: not said)."""
        return self._clients[self._current].settings_differ

    @property
    def unreadable_set(self) -> str | None:
        """Why the validator set of the last peer list of the RadioStation in use could not be
        read (None: it could)."""
        return self._clients[self._current].unreadable_set

    @property
    def revocations_digest(self) -> bytes:
        """The digest of the CRL the RadioStation in use serves (b"": none, or not told yet)."""
        return self._clients[self._current].revocations_digest

    async def revocations(self) -> bytes:
        return await self._first_answer(lambda c: c.revocations())

    async def _first_answer(self, call: Callable[[RadioStationClient], Awaitable[T]]) -> T:
        failures: list[str] = []
        busy = False
        count = len(self._clients)
        for step in range(count):
            index = (self._current + step) % count
            client = self._clients[index]
            try:
                answer = await call(client)
            except RadioStationUnreachable as exc:
                failures.append(f"{client.target}: {exc}")
                busy = busy or isinstance(exc, RadioStationBusy)
                continue
            except RadioStationRefused:
                self._answered(index, failures)
                raise
            self._answered(index, failures)
            return answer
        raise (RadioStationBusy if busy else RadioStationUnreachable)("; ".join(failures))

    def _answered(self, index: int, failures: list[str]) -> None:
        if index != self._current:
            log.warning(
                "RadioStation %s answers in place of %s", self._clients[index].target, failures[0]
            )
            self._current = index

    async def connect(self, signer: Signer, my_target: str, group_id: str = "") -> Registration:
        return await self._first_answer(lambda c: c.connect(signer, my_target, group_id))

    async def peer_list(self, channel: str) -> tuple[list[PeerInfo], ValidatorSet | None]:
        return await self._first_answer(lambda c: c.peer_list(channel))

    async def heartbeat(
        self,
        signer: Signer,
        channel: str,
        peer_type: int,
        height: int,
        said: HeartbeatNews = NO_NEWS,
    ) -> int:
        return await self._first_answer(
            lambda c: c.heartbeat(signer, channel, peer_type, height, said)
        )

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
