"""The RadioStation gRPC service: peer registration, peer lists and heartbeats."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import NamedTuple

import grpc

from loopchain.configure import RefusalLog, shown
from loopchain.p2p.grpc_util import call_source, caller_certificate, refuse
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.admission import AdmissionError, verify_connect
from loopchain.radiostation.clock_watch import ClockWatch
from loopchain.radiostation.probe import ProbeSlots, TargetUnverified, verify_target
from loopchain.radiostation.registry import NotAdmitted, PeerView, UnknownPeer
from loopchain.radiostation.station import Station, UnknownChannel
from loopchain.radiostation.throttle import CHANGE_BURST, CHANGE_INTERVAL_S, ChangeThrottle
from loopchain.types import canonical
from loopchain.types.codes import ResponseCode
from loopchain.types.crypto import recover_address
from loopchain.types.hashing import sha3_256
from loopchain.types.peer import Settings, decode_settings, heartbeat_digest, settings_digest

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)  # what callers send that is refused: logged rate-limited
# a registration refused because MAX_PROBES target checks are in flight: what gRPC answers a call
# past a server's bound, so a peer's client tries again shortly (and then a standby)
PROBES_BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED
CLOCK_OFF = "the heartbeat's timestamp is {:.0f} s off this clock"
BEAT_SWEEP_MIN = 1024  # heartbeats remembered before the first sweep of the old ones


class _BeatRefusal(NamedTuple):
    """Why a heartbeat is refused; `by_clock`: its timestamp is off this clock (ClockWatch logs
    those, by how many peers do it)."""

    code: ResponseCode
    message: str
    by_clock: bool = False


def peer_entry(view: PeerView) -> pb.PeerEntry:
    """A registry view as a PeerEntry message."""
    record = view.record
    return pb.PeerEntry(
        peer_id=record.peer_id,
        target=record.target,
        group_id=record.group_id,
        order=record.order,
        public_key=record.public_key,
        status=view.status,
        peer_type=view.peer_type,
        status_update_time=view.status_update_time,
    )


def digest_of(request: pb.HeartbeatRequest) -> bytes:
    """What the peer signed in `request` (heartbeat_digest of its fields)."""
    return heartbeat_digest(
        request.peer_id,
        request.channel,  # as sent: "" names the default channel
        request.peer_type,
        request.block_height,
        request.timestamp_us,
    )


class RadioStationService(pb_grpc.RadioStationServicer):
    """Serves the RadioStation gRPC interface over a Station."""

    def __init__(self, station: Station) -> None:
        self.station = station
        # (peer, channel) -> timestamp of the last heartbeat taken: one entry per member
        self._last_beat: dict[tuple[str, str], int] = {}
        self._sweep_beats_at = BEAT_SWEEP_MIN  # its size at which the old ones are forgotten
        self._probes = ProbeSlots()  # target checks in flight
        self._changes = ChangeThrottle()  # how often a registered peer changes its record
        self._clocks = ClockWatch()  # heartbeats refused for their time
        self._digested: tuple[bytes, bytes] = (b"", b"")  # (the CRL served, its digest)

    def _certificate_problem(self, context: grpc.aio.ServicerContext) -> tuple[str | None, str]:
        """Over mutual TLS: why the caller's certificate is refused (against the CA, its validity
        and the revocation lists, read again when they change), None when it is not; and the peer
        id it binds ("" when refused, or without TLS)."""
        tls = self.station.tls
        pem = caller_certificate(context) if tls is not None else None
        if tls is None or pem is None:
            return None, ""
        from loopchain.types import certificates  # cryptography: only a RadioStation with TLS

        try:
            ca = certificates.certificate_from_pem(tls.ca_pem)
            bound, _ = certificates.checked_peer(pem, ca, datetime.now(UTC), tls.revoked)
        except certificates.CertificateError as exc:
            return f"certificate refused: {exc}", ""
        return None, bound

    def _tls_identity_problem(self, peer_id: str, context: grpc.aio.ServicerContext) -> str | None:
        """Over mutual TLS the caller's certificate must be valid and bind the registering peer id."""
        problem, bound = self._certificate_problem(context)
        if problem is not None or not bound:
            return problem
        if bound != peer_id:
            return f"the TLS certificate belongs to {bound}, not to {peer_id}"
        return None

    def _count_refusal(self, method: str, code: int) -> None:
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = "other"
        self.station.metrics.refused_call(method, name)

    async def ConnectPeer(
        self, request: pb.ConnectPeerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectPeerReply | None:
        """Register a peer that proves it holds its id's key, and give it its channels (None:
        answered RESOURCE_EXHAUSTED through `context`, as MAX_PROBES target checks are made)."""
        reply = await self._connect_peer(request, context)
        if reply is None:  # answered busy through the context: no probe slot was free
            self.station.metrics.refused_call("ConnectPeer", PROBES_BUSY.name)
            return reply
        if reply.code:
            self._count_refusal("ConnectPeer", reply.code)
        return reply

    async def _connect_peer(
        self, request: pb.ConnectPeerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectPeerReply | None:
        # 1. the peer id is the key's address and the request is signed by that key
        try:
            key = verify_connect(
                request.peer_id,
                request.target,
                request.group_id,
                request.public_key,
                request.signature,
            )
        except AdmissionError as exc:
            REFUSALS.refused("refused registration of %s: %s", shown(request.peer_id), exc)
            return pb.ConnectPeerReply(code=int(ResponseCode.FAIL), message=str(exc))
        problem = self._tls_identity_problem(request.peer_id, context)
        if problem:
            REFUSALS.refused("refused registration of %r: %s", request.peer_id, problem)
            return pb.ConnectPeerReply(code=int(ResponseCode.FAIL), message=problem)
        # 2. the registry would take it (listed mode: an id a channel lists; room for a new
        #    peer), asked before the probe: an id refused anyway never has this station dial the
        #    target it names, nor hold a call while it does
        registry = self.station.registry
        try:
            registry.check_admitted(request.peer_id, request.target)
        except NotAdmitted as exc:
            REFUSALS.refused("refused registration of %s: %s", request.peer_id, exc)
            return pb.ConnectPeerReply(code=int(ResponseCode.PEER_UNKNOWN), message=str(exc))
        # a change of a registered peer's record past its allowance (ChangeThrottle) is refused
        # here, before a probe; the change is taken only once the probe passed (step 4)
        if registry.changes(request.peer_id, request.target, request.group_id):
            wait = self._changes.wait(request.peer_id, self.station.monotonic())
            if wait:
                return self._change_refused(request.peer_id, wait)
        # 3. its key answers at its target (a fresh challenge, so a replayed request proves
        #    nothing); a registered peer's request that changes nothing is answered from the
        #    registry (a captured one sent in a loop held the peer's probe slot, its own
        #    registrations refused busy, and had this station dial it hundreds of times a second)
        unchanged = request.peer_id in registry and not registry.changes(
            request.peer_id, request.target, request.group_id
        )
        if self.station.config.RADIOSTATION_CHECK_TARGETS and not unchanged:
            source = call_source(context)
            busy = self._probes.refusal(request.peer_id, source)
            if busy is not None:
                REFUSALS.refused("refused registration of %s: %s", request.peer_id, busy)
                return refuse(context, PROBES_BUSY, busy)
            refusal = await self._probe(request, source)
            if refusal is not None:
                return refusal
        # 4. add or update the peer (checked again: the registry may have changed meanwhile); a
        #    change takes one of the peer's changes now, so that a try refused busy, or whose
        #    target did not answer (a replayed request's), costs the peer none
        new = request.peer_id not in registry
        changes = registry.changes(request.peer_id, request.target, request.group_id)
        if changes and (wait := self._changes.take(request.peer_id, self.station.monotonic())):
            return self._change_refused(request.peer_id, wait)
        try:
            record = registry.register(request.peer_id, request.target, request.group_id, key)
        except NotAdmitted as exc:
            REFUSALS.refused("refused registration of %s: %s", request.peer_id, exc)
            return pb.ConnectPeerReply(code=int(ResponseCode.PEER_UNKNOWN), message=str(exc))
        except OSError as exc:  # not saved, so not made: the peer tries again later
            log.error("registration of %s not made: %s", request.peer_id, exc)
            return pb.ConnectPeerReply(code=int(ResponseCode.TIMEOUT), message=str(exc))
        # 5. answer with its order, our key and every channel it belongs to
        channels = [self._channel_info(name) for name in registry.channels_of(record.peer_id)]
        log.log(
            logging.INFO if new or changes else logging.DEBUG,  # a repeat: its peer's retries
            "peer %s registered: order %d, target %s, channels %s",
            record.peer_id,
            record.order,
            record.target,
            [c.channel for c in channels],
        )
        return pb.ConnectPeerReply(
            code=0,
            order=record.order,
            channels=channels,
            radiostation_public_key=self.station.signer.public_key,
        )

    def _change_refused(self, peer_id: str, wait: float) -> pb.ConnectPeerReply:
        """The refusal of a change of a registered peer's record past its allowance (each change
        is a synced write of the registry): TIMEOUT, which a peer takes as "try again later",
        saying in how many seconds (`wait`) its next change is taken."""
        message = (
            f"peer {peer_id} changes its registration (target or group) more often than taken "
            f"({CHANGE_BURST} changes at once, then one every {CHANGE_INTERVAL_S:g} s): its "
            f"next change is taken in {wait:.1f} s"
        )
        REFUSALS.refused("refused registration of %s: %s", peer_id, message)
        return pb.ConnectPeerReply(code=int(ResponseCode.TIMEOUT), message=message)

    async def _probe(
        self, request: pb.ConnectPeerRequest, source: str
    ) -> pb.ConnectPeerReply | None:
        """Verify the request's target, holding a probe slot (ProbeSlots); the refusal, or None
        when the target proved the key."""
        self._probes.take(request.peer_id, source)
        try:
            await verify_target(
                request.peer_id, request.target, self.station.config, self.station.tls
            )
        except TargetUnverified as exc:
            REFUSALS.refused("refused registration of %s: %s", request.peer_id, exc.message)
            code = ResponseCode.TIMEOUT if exc.retry else ResponseCode.FAIL
            return pb.ConnectPeerReply(code=int(code), message=exc.message)
        finally:
            self._probes.give_back(request.peer_id, source)
        return None

    def _channel_info(self, channel: str) -> pb.ChannelInfo:
        spec = self.station.registry.channels[channel]
        settings = canonical.encode(dict(spec.score_settings)) if spec.score_settings else b""
        return pb.ChannelInfo(
            channel=channel,
            score_package=spec.score_package,
            validator_set=self.station.served_set(channel).encode(),
            score_settings_json=settings.decode(),
        )

    async def GetPeerList(
        self, request: pb.ChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PeerListReply:
        """Every member of a channel with its status, and the channel's validator set (refused
        to a caller whose certificate is refused: a revoked member learns nothing more; and over
        mutual TLS to a peer that is no party of the channel, `Station.is_party`: a review had
        any certified peer read every channel's members, keys and SCORE settings)."""
        problem, bound = self._certificate_problem(context)
        if problem is not None:
            REFUSALS.refused("refused a peer list: %s", problem)
            self.station.metrics.refused_call("GetPeerList", grpc.StatusCode.PERMISSION_DENIED.name)
            return refuse(context, grpc.StatusCode.PERMISSION_DENIED, problem)
        try:
            channel = self.station.resolve_channel(request.channel)
        except UnknownChannel as exc:
            self.station.metrics.refused_call("GetPeerList", grpc.StatusCode.NOT_FOUND.name)
            return refuse(context, grpc.StatusCode.NOT_FOUND, str(exc))
        if bound and not self.station.is_party(channel, bound):
            stranger = f"peer {shown(bound)} is not a party of channel {shown(channel)}"
            REFUSALS.refused("refused a peer list: %s", stranger)
            self.station.metrics.refused_call("GetPeerList", grpc.StatusCode.PERMISSION_DENIED.name)
            return refuse(context, grpc.StatusCode.PERMISSION_DENIED, stranger)
        return pb.PeerListReply(
            channel=channel,
            peers=[peer_entry(v) for v in self.station.view(channel)],
            validator_set=self.station.served_set(channel).encode(),
        )

    def _heartbeat_problem(
        self, request: pb.HeartbeatRequest, channel: str, digest: bytes
    ) -> _BeatRefusal | None:
        """Why a heartbeat (of `digest`, heartbeat_digest) is not the named peer's own, fresh
        one (None when it is)."""
        try:
            self.station.registry.peer(request.peer_id)
        except UnknownPeer as exc:
            return _BeatRefusal(ResponseCode.PEER_UNKNOWN, str(exc))
        try:
            signer = recover_address(digest, request.signature)
        except ValueError:
            signer = ""
        if signer != request.peer_id:
            return _BeatRefusal(
                ResponseCode.FAIL, f"the heartbeat is not signed by the key of {request.peer_id}"
            )
        offset = request.timestamp_us / 1e6 - self.station.clock()
        if abs(offset) > float(self.station.config.MAX_TIMESTAMP_SKEW):
            registered = len(self.station.registry)
            self._clocks.refused(request.peer_id, offset, self.station.monotonic(), registered)
            return _BeatRefusal(ResponseCode.FAIL, CLOCK_OFF.format(abs(offset)), by_clock=True)
        key = (request.peer_id, channel)
        if request.timestamp_us <= self._last_beat.get(key, -1):
            return _BeatRefusal(
                ResponseCode.FAIL, "the heartbeat is replayed (its timestamp is not the latest)"
            )
        self._last_beat[key] = request.timestamp_us
        if len(self._last_beat) > self._sweep_beats_at:
            self._forget_old_beats()
        return None

    def _settings_said(self, request: pb.HeartbeatRequest, digest: bytes) -> Settings | None:
        """The settings a heartbeat (taken: its own signature over `digest` checked) carries,
        when the peer signed them too (None: none, or not signed by the peer: not looked at)."""
        settings = decode_settings(request.settings)
        if settings is None:  # (looked at before the signature's recovery, which costs more)
            return None
        try:
            signer = recover_address(
                settings_digest(digest, request.settings), request.settings_signature
            )
        except ValueError:
            signer = ""
        if signer != request.peer_id:
            REFUSALS.refused(
                "the settings in a heartbeat of %s are not signed by its key", request.peer_id
            )
            return None
        return settings

    def _forget_old_beats(self) -> None:
        """Forget the heartbeats older than MAX_TIMESTAMP_SKEW: one sent again is refused as
        off this clock, so the replay check needs only the recent ones. The table kept an entry
        for every peer and channel ever heard, removed peers' too (review)."""
        window = float(self.station.config.MAX_TIMESTAMP_SKEW)
        oldest_us = int((self.station.clock() - window) * 1e6)
        self._last_beat = {k: ts for k, ts in self._last_beat.items() if ts >= oldest_us}
        self._sweep_beats_at = max(BEAT_SWEEP_MIN, 2 * len(self._last_beat))

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        """Record that a peer is alive in a channel; reply with the channel's version."""
        reply = self._heartbeat(request, context)
        if reply.code:
            self._count_refusal("Heartbeat", reply.code)
        # its clock, refused or not: a peer tells from it how far off its own clock is
        reply.timestamp_us = int(self.station.clock() * 1_000_000)
        # refused or not: revocations are not bound to a clock (a RadioStation whose clock is
        # off refuses every heartbeat)
        reply.revocations_digest = self._crl_digest()
        return reply

    def _crl(self) -> bytes:
        """The CRL of this RadioStation's revocation lists (its TLS folder's ca.crl.pem, or the
        file GRPC_SSL_REVOKED_PATH names), as read again when it changed; b"" for none."""
        tls = self.station.tls
        if tls is None or tls.revocations is None:
            return b""
        tls.revocations.current()
        return tls.revocations.crl_pem

    def _crl_digest(self) -> bytes:
        crl = self._crl()
        if crl is not self._digested[0]:
            self._digested = (crl, sha3_256(crl) if crl else b"")
        return self._digested[1]

    async def GetRevocations(
        self, request: pb.ChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevocationsReply:
        """The CRL peers install (each checks that its CA signed it, and that it is newer than
        its own): revoking a certificate takes one copy of the CA's CRL into this RadioStation's
        TLS folder, not one into every node's."""
        problem, _ = self._certificate_problem(context)
        if problem is not None:
            REFUSALS.refused("refused the revocations: %s", problem)
            self.station.metrics.refused_call(
                "GetRevocations", grpc.StatusCode.PERMISSION_DENIED.name
            )
            return refuse(context, grpc.StatusCode.PERMISSION_DENIED, problem)
        return pb.RevocationsReply(crl_pem=self._crl())

    def _heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        try:
            channel = self.station.resolve_channel(request.channel)
        except UnknownChannel as exc:
            return pb.HeartbeatReply(code=int(ResponseCode.NOT_FOUND), message=str(exc))
        digest = digest_of(request)
        problem = self._heartbeat_problem(request, channel, digest)
        if problem is not None:
            if not problem.by_clock:  # those are ClockWatch's to tell
                REFUSALS.refused(
                    "refused a heartbeat for %r: %s", request.peer_id[:50], problem.message
                )
            return pb.HeartbeatReply(code=int(problem.code), message=problem.message)
        # the peer's own heartbeat (its key signed it just now) over a certificate refused, or
        # another peer's: the peer is listed as connected no more (a revoked member kept its
        # status, and its place in every member's list, through its heartbeats)
        refusal = self._tls_identity_problem(request.peer_id, context)
        if refusal is not None:
            REFUSALS.refused("refused a heartbeat of %s: %s", request.peer_id, refusal)
            self.station.registry.forget_heartbeats(request.peer_id)
            return pb.HeartbeatReply(code=int(ResponseCode.FAIL), message=refusal)
        settings = self._settings_said(request, digest)
        try:
            version = self.station.registry.heartbeat(
                request.peer_id,
                channel,
                request.peer_type,
                request.block_height,
                self.station.clock(),
                self.station.monotonic(),
                settings,
            )
        except UnknownPeer as exc:
            return pb.HeartbeatReply(code=int(ResponseCode.PEER_UNKNOWN), message=str(exc))
        reply = pb.HeartbeatReply(code=0, peer_list_version=version)
        self.station.judge_held_set(
            channel, request.peer_id, request.set_version, request.set_hash, version
        )
        differ = (
            None
            if settings is None
            else self.station.settings_differ(channel, request.peer_id, settings)
        )
        if differ is not None:  # compared: alike ("") or not
            reply.settings_differ = differ
        return reply
