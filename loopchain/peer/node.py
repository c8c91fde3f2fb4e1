"""The peer process: identity, gRPC server, RadioStation registration and its channels."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loopchain import monitor_log
from loopchain.blockchain.block_store import BlockStore, BlockStoreError, StoreDamaged
from loopchain.blockchain.mempool import block_window_us
from loopchain.blockchain.restore import restore_tip
from loopchain.configure import Config, config_from_values
from loopchain.consensus import messages as m
from loopchain.consensus.rules import turn_for
from loopchain.durable import sweep_leftovers, write_atomic
from loopchain.lifecycle import keep_memory_private
from loopchain.p2p import grpc_util
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.peer_client import GrpcTransport
from loopchain.p2p.radiostation_client import (
    ChannelGrant,
    HeartbeatNews,
    RadioStationBusy,
    RadioStationRefused,
    RadioStations,
    RadioStationUnreachable,
    Registration,
)
from loopchain.p2p.server import PeerServer, start_peer_server, start_worker_server
from loopchain.p2p.worker_link import WorkerLink, WorkerRefusal
from loopchain.peer.channel_service import ChannelService, ChannelSettings, with_storage_advice
from loopchain.peer.children import RestProxy
from loopchain.peer.metrics import PeerMetrics, merged_exposition
from loopchain.peer.stores import RELEASE_WAIT, open_released
from loopchain.peer.workers import ChannelWorker
from loopchain.scoreservice.owned_dir import OwnedDir
from loopchain.scoreservice.supervisor import MAX_SOCKET_PATH_BYTES
from loopchain.storage.abc import KeyValueStore, StorageCorrupt, StorageError
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.crypto import (
    KeyFile,
    KeyProtection,
    Signer,
    address_of,
    is_der,
    open_key_file,
)
from loopchain.types.hashing import sha3_256
from loopchain.types.passwords import KEY_PASSWORD_ENV
from loopchain.types.peer import PeerInfo, encode_settings, identify_digest
from loopchain.types.validators import ValidatorSet

log = logging.getLogger(__name__)

OWN_SOCKET_DIR_PREFIX = "loopchain-peer-"  # the folder of the socket of the peer's own proxy
MEMBERS_RETRY_S = 0.2  # the least time between two member-list requests a channel asks for
CLOCK_WARN_S = 300.0  # a clock off the RadioStation's is warned about again this often
SETTINGS_CHANGED_WARN_S = 60.0  # settings said to differ otherwise are warned of at most this often
MAX_REGISTER_AGAIN_WAIT_S = 300.0  # registering again, refused, waits twice as long, up to this

REGISTRATION_CACHE = "radiostation_registration"
# what a channel worker registered again with, in its channel's folder: its peer, which holds the
# registration cache, takes it in (_take_worker_registrations)
WORKER_REGISTRATION = "registration_again.json"


@dataclass(frozen=True)
class PeerOptions:
    """Command-line choices of `peer.py`."""

    port: int
    radiostation_targets: tuple[str, ...]
    private_key_path: str | None
    config_path: str | None
    debug: bool
    score_package: str | None = None  # -c: run this package instead of the channel's
    key_password: str | None = None  # encrypts a new key file, opens an encrypted one
    worker: WorkerSpec | None = None  # set in a channel worker: the one channel it runs
    public_key_path: str | None = None  # --public: must hold the private key's public key
    # the TLS key's password (LOOPCHAIN_TLS_KEY_PASSWORD, taken out of the environment at
    # start): handed to its workers and REST proxy on their stdin, never in their environment
    tls_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WorkerSpec:
    """What a channel worker runs: its peer's grant of the channel, where it serves, and its
    peer's key."""

    grant: ChannelGrant
    issuer: str  # the RadioStation's address that granted it
    socket_path: str
    signer: Signer = field(repr=False, compare=False)


def worker_spec_json(
    options: PeerOptions, grant: ChannelGrant, issuer: str, config: Config, signer: Signer
) -> dict[str, Any]:
    """What the peer hands a channel worker on its stdin (its socket is added by the worker's
    supervisor): with the peer's configuration and key as the peer runs with them, so that a
    worker started again runs as its peer does, whatever became of the configuration and key
    files since the peer started (an edit for the next start, a typo in it, a key moved away).
    The key goes nowhere else: not in the arguments, the environment or the log."""
    return {
        "port": options.port,
        "radiostation_targets": list(options.radiostation_targets),
        "debug": options.debug,
        "score_package": options.score_package,
        "config": dict(config),
        "signer_key": signer.secret_bytes().hex(),
        "tls_password": options.tls_password,
        "grant": _grant_json(grant),
        "issuer": issuer,
    }


def worker_options(spec: dict[str, Any]) -> PeerOptions:
    """The options of a channel worker from what its peer handed it (worker_spec_json)."""
    worker = WorkerSpec(
        _grant_from_json(spec["grant"]),
        str(spec["issuer"]),
        str(spec["socket"]),
        Signer(bytes.fromhex(spec["signer_key"])),
    )
    return PeerOptions(
        int(spec["port"]),
        tuple(spec["radiostation_targets"]),
        None,
        None,
        bool(spec["debug"]),
        spec["score_package"],
        None,
        worker,
        tls_password=_optional_text(spec.get("tls_password")),
    )


def _optional_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("the TLS password its peer sent is not text")
    return value


def worker_config(spec: dict[str, Any]) -> Config:
    """The configuration of a channel worker: its peer's (worker_spec_json), without the REST
    proxy its peer runs."""
    if not isinstance(spec["config"], dict):
        raise TypeError("the configuration its peer sent is not a JSON object")
    return config_from_values(
        {**spec["config"], "RUN_REST_PROXY": False}, "the configuration its peer sent"
    )


CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: those it may run on, fewer when its cgroup's CPU quota
    (a container's --cpus) allows less time than that."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs' worth of time a cgroup quota allows (cgroup v2 cpu.max, or v1's CFS quota and
    period), None when there is none or it cannot be read."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            quota, _, period = v2.read_text().strip().partition(" ")
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1") or not period:
            return None
        return max(int(quota), 1) / max(int(period), 1)
    except (OSError, ValueError):
        return None


def _check_public_key(path: Path, signer: Signer, key_path: Path) -> None:
    """SystemExit unless `path` holds the public key of `signer` (PEM SubjectPublicKeyInfo, as
    tools/create_sign_pki.py writes it; DER, as loopchain's wrote public.der; or hex)."""
    from loopchain.types.certificates import CertificateError, signing_public_key_from_pem

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"--public {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in raw:
            public = signing_public_key_from_pem(raw)
        elif is_der(raw):  # DER SubjectPublicKeyInfo
            public = signing_public_key_from_pem(raw, der=True)
        else:
            public = bytes.fromhex(raw.decode("ascii").strip().removeprefix("0x"))
        address = address_of(public)
    except (CertificateError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise SystemExit(f"--public {path} holds no secp256k1 public key: {exc}") from None
    if address != signer.address:
        raise SystemExit(
            f"--public {path} is not the public key of the private key {key_path} "
            f"(whose peer id is {signer.address})"
        )


def peer_key_path(config: Config, port: int, private_key_path: str | None) -> Path:
    """The peer's key file: --private, or peer_key in the peer's storage directory."""
    if private_key_path:
        return Path(private_key_path)
    return Path(config.DEFAULT_STORAGE_PATH) / f"peer_{port}" / "peer_key"


class PeerNode:
    """A peer with one ChannelService per channel the RadioStation grants it."""

    def __init__(self, config: Config, options: PeerOptions) -> None:
        self.config = config
        self.options = options
        self.port = options.port
        self.root = Path(config.DEFAULT_STORAGE_PATH) / f"peer_{options.port}"
        self.target = f"{config.LOOPCHAIN_HOST}:{options.port}"
        self.channels: dict[str, ChannelService] = {}  # served in this process
        self._sets_refused: dict[str, str] = {}  # channel -> the peer list refusal said last
        # when a RadioStation last answered (loop time; before any, the first heartbeat it did
        # not), and whether its silence since was said
        self._answered_at: float | None = None
        self._unanswered_told = False
        self._unreadable_sets: dict[str, str] = {}  # channel -> why its set was unreadable, said
        self.workers: dict[str, ChannelWorker] = {}  # served by a worker process each
        self.transport: GrpcTransport | None = None
        self.stores: list[KeyValueStore] = []
        self.signer: Signer | None = None
        self.node_store: KeyValueStore | None = None
        self._cache_refused = False  # the node store refused a write (see _write_cache)
        self.tls: grpc_util.Tls | None = None
        self._revocations_seen = b""  # digest of the RadioStation's CRL last fetched or held
        # why the peer stopped on its own (its storage failed, a worker crashed too often), and
        # what to do about it: what it says as it ends
        self.failure: str | None = None
        # channels stopped for good on this peer (storage failed, a worker crashed too often),
        # and why: the others go on; the peer stops once none is left
        self.stopped_channels: dict[str, str] = {}
        self._channel_tasks: dict[str, asyncio.Task[None]] = {}  # of the channels served here
        self.rest_proxy: RestProxy | None = None
        # the folder of the socket this peer serves its own REST proxy on (see _own_socket)
        self._own_dir: OwnedDir | None = None
        self._stop: asyncio.Event | None = None
        # set by a channel that has no address for one of its validators: the heartbeat loop asks
        # the RadioStation for the member list at once (at most every MEMBERS_RETRY_S)
        self._members_wanted = asyncio.Event()
        self._members_retry = MEMBERS_RETRY_S  # doubles while the wanted member stays missing
        self.registration: Registration | None = None  # the one its channels were opened with
        # registering again with a RadioStation that does not know this peer (_register_again):
        # when it was last tried (loop time) and how long until the next try (HEARTBEAT_INTERVAL,
        # twice as long after each failure), the RadioStation it was tried with while it has not
        # worked yet, and the served channels the RadioStation's last answer did not grant
        self._registered_again_at = -math.inf
        self._register_again_wait = float(self.config.HEARTBEAT_INTERVAL)
        self._unknown_to: str | None = None
        self._ungranted: set[str] = set()
        # started on the cached registration as the RadioStation did not take one (down, busy,
        # our target not reached yet, a change refused for now): it may list this peer at an
        # old target or group, so the heartbeat loop registers again until one is made
        self._registration_pending = False
        self._busy_logged_at = -math.inf  # a busy RadioStation is warned about once an interval
        self.clock_off: str | None = None  # how this peer's clock is off (_judge_clock)
        self._clock_warned = -math.inf
        self._drift_warned = -math.inf  # when a clock off by more than half the skew was warned of
        # the settings every peer of a channel must share, as each heartbeat says them, and per
        # channel what the RadioStation last said of them and when it was warned of
        limit = int(config.LEADER_BLOCK_CREATION_LIMIT)  # as taken: 1 and 2 lead as 3 do
        self._settings = encode_settings({**config, "LEADER_BLOCK_CREATION_LIMIT": turn_for(limit)})
        self._settings_told: dict[str, tuple[str, float]] = {}
        self.metrics = PeerMetrics(
            lambda: {name: service.gauges for name, service in self.channels.items()},
            process=True,
            worker_restarts=lambda: {name: w.restarts for name, w in self.workers.items()},
            proxy_restarts=lambda: self.rest_proxy.restarts if self.rest_proxy else 0,
        )

    # ------------------------------------------------------------ backend for the servicer

    def identify(self, challenge: bytes) -> tuple[str, bytes]:
        """This peer's id and its signature of the RadioStation's challenge."""
        assert self.signer is not None
        return self.signer.address, self.signer.sign(identify_digest(challenge))

    def channel(self, name: str) -> ChannelService:
        name = name or self.config.LOOPCHAIN_DEFAULT_CHANNEL
        service = self.channels.get(name)
        if service is None:
            # starting (not registered, or the channel not open yet): not now, rather than
            # "not served", which clients of a peer restarting far from its RadioStation heard
            # for seconds (review)
            if self.registration is None:
                raise RequestError(
                    ErrorKind.UNAVAILABLE,
                    "this peer is starting: it serves its channels once the RadioStation has "
                    "registered it",
                )
            if any(grant.channel == name for grant in self.registration.channels):
                raise RequestError(ErrorKind.UNAVAILABLE, f"channel {name} is opening on this peer")
            raise RequestError(ErrorKind.NOT_FOUND, f"channel {name!r} is not served by this peer")
        stopped = self.stopped_channels.get(name)
        if stopped is not None:
            raise RequestError(
                ErrorKind.UNAVAILABLE, f"channel {name} stopped on this peer: {stopped}"
            )
        return service

    def worker_link(self, name: str) -> WorkerLink | None:
        """The link to the worker process serving channel `name`, None when there is none."""
        worker = self.workers.get(name or self.config.LOOPCHAIN_DEFAULT_CHANNEL)
        return worker.link if worker is not None else None

    def rpc_error(self, method: str, code: str) -> None:
        self.metrics.rpc_error(method, code)

    async def exposition(self) -> bytes:
        """This process's metrics, with those of its channel workers (merged_exposition)."""
        own = self.metrics.exposition()
        if not self.workers:
            return own
        texts: dict[str, bytes] = {}
        for name, worker in self.workers.items():
            try:
                texts[name] = await worker.link.exposition()
            except WorkerRefusal as exc:
                log.debug("no metrics from the worker of channel %s: %s", name, exc.message)
        return merged_exposition(own, texts)

    # ------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event, opened: Callable[[], None] = lambda: None) -> None:
        """Start everything, serve until `stop` is set, then shut down gracefully; `opened` is
        called once its channels are open (or their workers started)."""
        self._stop = stop
        worker = self.options.worker
        # 1. claim this peer's store (fails at once if another process holds it) and identity
        #    (a channel worker keeps its channel's member list in a store of its own, and waits
        #    for it while the worker of a peer that ended still holds it: peer.stores)
        if worker is not None:
            node_dir = self.root / worker.grant.channel / "node"
            self.node_store = await open_released(node_dir)
        else:
            self.node_store = _open_node_cache(self.root / "node")
        self.stores.append(self.node_store)
        if worker is not None:
            self.signer = worker.signer  # its peer's, not the key file's (worker_spec_json)
        else:
            key_path = peer_key_path(self.config, self.port, self.options.private_key_path)
            key = open_key_file(key_path, self.options.key_password)
            _warn_about_key(key, self.options.key_password is not None)
            if key.created and not self.options.private_key_path:
                _warn_about_other_keys(key, Path(self.config.DEFAULT_STORAGE_PATH))
            if self.options.public_key_path:
                _check_public_key(Path(self.options.public_key_path), key.signer, key_path)
            self.signer = key.signer
        log.info("peer id %s, target %s", self.signer.address, self.target)
        if worker is None:
            _warn_about_target(str(self.config.IP_LOCAL), str(self.config.LOOPCHAIN_HOST))
        limit = int(self.config.LEADER_BLOCK_CREATION_LIMIT)
        if turn_for(limit) != limit and worker is None:
            log.info(
                "LEADER_BLOCK_CREATION_LIMIT %d is taken as %d: with shorter turns validators of "
                "less than a third of unequal weights could stop blocks from becoming final",
                limit,
                turn_for(limit),
            )
        # 2. serve gRPC (fails at once if the port is taken)
        # (a channel worker reads the same files: its peer says what they need)
        self.tls = grpc_util.load_tls(
            self.config, self.root / "tls", self.options.tls_password, notices=worker is None
        )
        self.transport = GrpcTransport(self.config, self.tls)
        server = await self._start_server(worker)
        rest_task: asyncio.Task[None] | None = None
        try:
            # 3. the REST proxy (stateless: it asks this peer per request) starts now, so that its
            #    start-up overlaps registration and the channels' opening; kept running after
            if self.config.RUN_REST_PROXY and worker is None:
                self.rest_proxy = self._rest_proxy()
                rest_task = asyncio.create_task(self.rest_proxy.run(), name="rest-proxy")
            async with asyncio.TaskGroup() as group:
                if self.tls is not None and worker is None:  # from now: a peer may wait days
                    # for its RadioStation (review: the watch began once registered)
                    group.create_task(
                        grpc_util.watch_certificates(self.tls, stop), name="certificates"
                    )
                rs = RadioStations(self.options.radiostation_targets, self.config, self.tls)
                registration: Registration | None
                if worker is not None:
                    registration = Registration(0, worker.issuer, (worker.grant,))
                else:
                    registration = await self._register(rs, stop)
                if registration is None:
                    return
                self.registration = registration
                server.serving_channels(len(registration.channels))
                if worker is None:
                    self._warn_about_plaintext(len(registration.channels))
                in_workers = worker is None and self._in_workers(len(registration.channels))
                for grant in registration.channels:
                    if in_workers:
                        self._start_worker(grant, registration.radiostation_address, group)
                    else:
                        await self._open_channel(grant, registration.radiostation_address, group)
                opened()
                group.create_task(self._heartbeat_loop(rs, stop), name="heartbeat")
                await stop.wait()
                raise _Stop()
        except* _Stop:
            pass
        finally:
            await self._shutdown(server, rest_task)

    def _warn_about_plaintext(self, channels: int) -> None:
        """Channels keep their data to their parties over mutual TLS only: without it a caller
        names no identity, and any that reaches the gRPC port reads each channel served (and
        relays client-signed transactions into it). Said when that port is off the loopback
        and serves more than one channel (a review: README said it without the condition)."""
        host = str(self.config.IP_LOCAL)
        if self.tls is not None or channels < 2 or _is_loopback(host):
            return
        log.warning(
            "serving %d channels without TLS (GRPC_SSL_TYPE 0) on %s: whoever reaches port %d "
            "reads every one of them; set GRPC_SSL_TYPE 2 to keep each channel to its parties",
            channels,
            host,
            self.port,
        )

    async def _start_server(self, worker: WorkerSpec | None) -> PeerServer:
        assert self.signer is not None
        if worker is not None:
            return await start_worker_server(
                self, self.signer.address, self.config, worker.socket_path, self.tls, self.metrics
            )
        try:
            return await start_peer_server(
                self,
                self.signer.address,
                self.config,
                self.port,
                self.tls,
                self,
                self.worker_link,
                self._own_socket(),
            )
        except BaseException:
            if self._own_dir is not None:
                self._own_dir.close()
            raise

    def _own_socket(self) -> str | None:
        """The unix socket this peer serves the REST proxy it starts on (in a private folder;
        one left by a peer killed -9 is swept by the next), so that what other callers hold of
        its port's connections and calls never keeps its proxy out; None without a proxy, or
        when the temp directory's path is too long for a socket (the proxy uses the port)."""
        if not self.config.RUN_REST_PROXY:
            return None
        self._own_dir = OwnedDir(OWN_SOCKET_DIR_PREFIX)
        path = self._own_dir.open() / "peer.sock"
        if len(os.fsencode(str(path))) > MAX_SOCKET_PATH_BYTES:
            log.warning(
                "socket path %s is too long: the REST proxy reaches this peer by its port", path
            )
            self._own_dir.close()
            self._own_dir = None
            return None
        return str(path)

    def _in_workers(self, channels: int, cores: int | None = None) -> bool:
        """Whether the channels run in worker processes (CHANNEL_WORKERS): "auto" runs them so
        when there are two or more and this process may use a core per channel and one more
        (for the peer, its REST proxy and the SCOREs); with fewer the workers would only take
        turns on the same cores, at the cost of a process each and a hop per call."""
        mode = self.config.CHANNEL_WORKERS
        if mode != "auto":
            return bool(mode == "always")
        return channels >= 2 and (usable_cores() if cores is None else cores) > channels

    def _start_worker(self, grant: ChannelGrant, issuer: str, group: asyncio.TaskGroup) -> None:
        if not self.workers and not keep_memory_private():  # its workers' SCOREs are its own too
            log.warning("could not make this process non-dumpable: SCOREs may read its memory")
        assert self.signer is not None
        spec = worker_spec_json(self.options, grant, issuer, self.config, self.signer)
        worker = ChannelWorker(
            grant.channel,
            spec,
            self.config,
            functools.partial(self._channel_stopped, grant.channel),
        )
        self.workers[grant.channel] = worker
        group.create_task(worker.run(), name=f"worker:{grant.channel}")

    async def _register(self, rs: RadioStations, stop: asyncio.Event) -> Registration | None:
        """Register with the RadioStation, falling back to the last registration it gave us."""
        assert self.signer is not None and self.node_store is not None
        self._sweep_worker_writes()  # half-written by workers killed with their peer
        self._take_worker_registrations()  # left by workers that ended with a peer killed
        cached = _readable_registration(self.node_store.get(REGISTRATION_CACHE.encode()))
        delay = 0.5
        while not stop.is_set():
            try:
                registration = await rs.connect(self.signer, self.target)
                log.info(
                    "registered with RadioStation %s as order %d", rs.target, registration.order
                )
                granted = {grant.channel for grant in registration.channels}
                registration = await self._with_counted(
                    registration, cached, f"RadioStation {rs.target} no longer grants every channel"
                )
                # (their heartbeats are refused: no registering again for them, as for channels
                # a registration made again no longer grants)
                self._ungranted = {grant.channel for grant in registration.channels} - granted
                self._write_cache(  # without the channels their chain no longer needs
                    REGISTRATION_CACHE.encode(), _encode_registration(registration), sync=True
                )
                return registration
            except RadioStationRefused as exc:
                if cached is None:
                    raise SystemExit(f"peer {self.target}: {exc}") from None
                none = replace(cached, channels=())
                refused = f"RadioStation {rs.target} refused this peer ({exc})"
                counted = await self._with_counted(none, cached, refused)
                if not counted.channels:
                    raise SystemExit(f"peer {self.target}: {exc}") from None
                return counted
            except RadioStationUnreachable as exc:
                if cached is not None:
                    log.warning(
                        "RadioStation %s %s (%s); using the last registration, registering "
                        "again at the heartbeats",
                        rs.target,
                        "busy" if isinstance(exc, RadioStationBusy) else "unreachable",
                        exc,
                    )
                    self._registration_pending = True  # tried again a HEARTBEAT_INTERVAL on
                    self._registered_again_at = asyncio.get_running_loop().time()
                    return cached
                log.warning("waiting for RadioStation at %s (%s)", rs.target, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 5.0)
        return None

    async def _with_counted(
        self, registration: Registration, cached: Registration | None, why: str
    ) -> Registration:
        """`registration` with the channels of the last one (`cached`) it lacks whose final chain
        here still counts this peer as a validator (its set, or the set pending on it). A peer
        unlisted from a channel is refused by the RadioStation, or not granted that channel, yet
        the chain needs its vote until it hands over to the set without it: left closed at a
        restart in between, a channel it held a third of the weight of halted for good."""
        if cached is None:
            return registration
        granted = {grant.channel for grant in registration.channels}
        missing = [grant for grant in cached.channels if grant.channel not in granted]
        counted = await self._counted_in(missing)
        if not counted:
            return registration
        log.warning(
            "%s; the chain of %s still counts this peer as a validator: opened from the last "
            "registration, it votes there until the chain hands over to a set without it, then "
            "follows it as an auditor",
            why,
            ", ".join(grant.channel for grant in counted),
        )
        return replace(registration, channels=registration.channels + tuple(counted))

    async def _counted_in(self, grants: list[ChannelGrant]) -> list[ChannelGrant]:
        """Of `grants`, those whose final chain here counts this peer as a validator (waiting
        for a store that a worker of a peer killed before may still hold)."""
        assert self.signer is not None
        counted = []
        for grant in grants:
            path = self.root / grant.channel / "blocks"
            if not path.is_dir():
                continue
            try:
                kv = await open_released(path, create=False)
            except (OSError, StorageError) as exc:
                log.warning("channel %s: its chain cannot be read: %s", grant.channel, exc)
                continue
            try:
                tip, _qc = restore_tip(BlockStore(kv, grant.channel), grant.channel)
            except (StorageError, BlockStoreError, StoreDamaged) as exc:
                log.warning("channel %s: its chain cannot be read: %s", grant.channel, exc)
                continue
            finally:
                kv.close()
            sets = (s for s in (tip.next_validators, tip.pending) if s is not None)
            if any(self.signer.address in validators for validators in sets):
                counted.append(grant)
        return counted

    async def _open_channel(
        self, grant: ChannelGrant, issuer: str, group: asyncio.TaskGroup
    ) -> None:
        """Open the channel of `grant` and start it in `group`. A storage failure as it opens
        (its store, its checks, the records its service reads) says what to do next, which the
        words of LevelDB and of the store's checks do not (operator review; with_storage_advice)."""
        try:
            await self._start_channel(grant, issuer, group)
        except (StorageError, BlockStoreError) as exc:
            raise with_storage_advice(exc) from None

    async def _start_channel(
        self, grant: ChannelGrant, issuer: str, group: asyncio.TaskGroup
    ) -> None:
        assert self.signer is not None and self.transport is not None
        kv = await open_released(
            self.root / grant.channel / "blocks",
            RELEASE_WAIT if self.options.worker is not None else 0.0,
            compression=bool(self.config.LEVELDB_COMPRESSION),
            write_buffer_mb=int(self.config.LEVELDB_WRITE_BUFFER_MB),
            max_file_mb=int(self.config.LEVELDB_MAX_FILE_MB),
        )
        self.stores.append(kv)
        window = block_window_us(
            float(self.config.TX_TIMESTAMP_WINDOW),
            int(float(self.config.MAX_TIMESTAMP_SKEW) * 1_000_000),
        )
        store = BlockStore(kv, grant.channel, window)
        store.check()
        package = self.options.score_package or grant.score_package
        if package != grant.score_package:
            log.warning(
                "channel %s: running SCORE %s (-c) instead of the channel's %s; its state root will "
                "differ from peers running the channel's package",
                grant.channel,
                package,
                grant.score_package,
            )
        settings = ChannelSettings(
            grant.channel,
            package,
            issuer,
            self.target,
            self.root / grant.channel,
            self.port,
            grant.score_settings,
        )
        service = ChannelService(
            settings=settings,
            config=self.config,
            signer=self.signer,
            store=store,
            transport=self.transport,
            on_fatal=functools.partial(self._fail, grant.channel),
            metrics=self.metrics.channel(grant.channel),
            on_members_wanted=self._members_wanted.set,
        )
        self.channels[grant.channel] = service
        self._channel_tasks[grant.channel] = group.create_task(
            service.run(), name=f"channel:{grant.channel}"
        )
        service.receive(m.ValidatorsChanged(grant.validators))
        # the member list last known, until the RadioStation's comes with the first heartbeat:
        # without it a restarted peer refused the others' calls over TLS ("not a party") and
        # sent its own to nobody for a while
        service.set_members(self._cached_members(grant.channel))

    def _fail(self, channel: str, reason: str) -> None:
        """Channel `channel` cannot go on (its storage failed): it stops (_channel_stopped)."""
        self._channel_stopped(channel, reason)

    def _channel_stopped(self, channel: str, why: str) -> None:
        """Channel `channel` stopped for good on this peer, for `why`: the others go on (a
        review had one channel's crashing worker stop every channel of the peer), and the
        peer stops, exit status 1, once none is left. Its calls are answered UNAVAILABLE with
        why; it sends no heartbeat, so the RadioStation lists this peer as gone from it."""
        self.stopped_channels.setdefault(channel, why)
        self.metrics.channel_stopped.labels(channel).set(1)
        task = self._channel_tasks.get(channel)
        if task is not None:  # its tasks end (a halted channel's catch-up fetched for good)
            # on the loop's next turn: a task not started yet (its channel failed as it opened)
            # has by then entered run(), whose `finally` closes its journal and SCORE
            try:
                asyncio.get_running_loop().call_soon(task.cancel)
            except RuntimeError:  # (no loop running: nothing of it runs either)
                task.cancel()
        # the channels granted, not those opened so far: one failing while the next opens
        served = {*self.channels, *self.workers}
        if self.registration is not None:
            served |= {grant.channel for grant in self.registration.channels}
        if served <= set(self.stopped_channels):
            self._stop_for(why)
            return
        log.error(
            "channel %s stopped on this peer: %s. The peer's other channels go on (%s)",
            channel,
            why,
            ", ".join(sorted(served - set(self.stopped_channels))),
        )
        monitor_log.event("Error", channel=channel, kind="channel_stopped", message=why[:500])

    def _stop_for(self, failure: str) -> None:
        """Stop the whole peer for `failure` (what it says as it stops), exit status 1."""
        self.failure = self.failure or failure
        if self._stop is not None:
            self._stop.set()

    async def _heartbeat_loop(self, rs: RadioStations, stop: asyncio.Event) -> None:
        """Report liveness per channel; refresh the peer list when the RadioStation's changes."""
        versions: dict[str, int] = {}
        while not stop.is_set():
            wanted = self._members_wanted.is_set()
            self._members_wanted.clear()
            interval = float(self.config.HEARTBEAT_INTERVAL)
            self._members_retry = (
                min(2 * self._members_retry, interval) if wanted else MEMBERS_RETRY_S
            )
            await self._heartbeats(rs, versions, wanted)
            await self._until_next_heartbeat(stop)

    async def _heartbeats(self, rs: RadioStations, versions: dict[str, int], wanted: bool) -> None:
        """One heartbeat per channel, and its member list when it changed (by `versions`), is
        missing or `wanted`; a RadioStation that does not know this peer is registered with again."""
        assert self.signer is not None
        if self.workers:
            self._take_worker_registrations()
        if self._registration_pending:  # (made by this process, with or without workers)
            await self._register_again(rs, unknown=False)
        for name, service in self.channels.items():
            if name in self.stopped_channels:  # gone from it, as the RadioStation should see
                continue
            try:
                status = service.status()
            except (StorageError, StoreDamaged) as exc:  # its store is damaged where status reads
                service.storage_failed(exc)
                continue
            try:
                version = await rs.heartbeat(
                    self.signer,
                    name,
                    status["peer_type"],
                    status["block_height"],
                    HeartbeatNews(
                        self._settings,
                        int(status.get("set_version", 0)),
                        bytes.fromhex(status.get("set_hash", "")),
                    ),
                )
                self._answered(rs)
                self._judge_settings(name, rs.settings_differ)
                self._ungranted.discard(name)
                if versions.get(name) != version or not service.members or wanted:
                    await self._refresh_peers(rs, service)
                    versions[name] = version
            except (RadioStationUnreachable, RadioStationRefused) as exc:
                if isinstance(exc, RadioStationBusy):
                    self._warn_busy(exc)
                elif isinstance(exc, RadioStationUnreachable):
                    self._unanswered(exc)
                else:
                    self._answered(rs)  # (a refusal is an answer: said where it is handled)
                    log.debug("heartbeat to RadioStation failed: %s", exc)
                if not service.members:
                    service.set_members(self._cached_members(name))
                unknown = isinstance(exc, RadioStationRefused) and exc.unknown_peer
                if unknown and name not in self._ungranted:
                    await self._register_again(rs)
                if unknown and status.get("role") != "auditor":
                    await self._follow_sets(rs, service)
                elif not unknown and isinstance(exc, RadioStationRefused):
                    # refused for another reason: its clock and the RadioStation's differ by more
                    # than MAX_TIMESTAMP_SKEW, say (which of them is wrong, neither knows). The
                    # member list is not bound to the clock: without it a new peer never learnt
                    # whom to sync from, and peers that had one never learnt who joined after
                    # (a RadioStation 40 s ahead kept a fresh network from making any block)
                    await self._follow_sets(rs, service)
            # answered or not, the members (listed, or last known) stay its members: an idle
            # channel's links to them are kept (a link unused for long is closed: peer_client)
            service.keep_members_ready()
        self._judge_clock(rs.clock_offset)
        await self._follow_revocations(rs)

    async def _follow_revocations(self, rs: RadioStations) -> None:
        """Over TLS, install the CRL the RadioStation serves when its digest (in the heartbeat
        answers) is new: one copy of the CA's CRL into the RadioStation's TLS folder reaches
        every node within a heartbeat, where each had to be copied by hand (a node not given it
        kept taking a revoked certificate). Installed only when this node's CA signed it and it
        is newer than this node's (grpc_util.install_crl), and not over a GRPC_SSL_REVOKED_PATH
        the operator set."""
        tls = self.tls
        if tls is None or tls.revocations is None or self.config.GRPC_SSL_REVOKED_PATH:
            return
        digest = rs.revocations_digest
        if not digest or digest == self._revocations_seen:
            return
        tls.revocations.current()
        if digest == sha3_256(tls.revocations.crl_pem):  # this node has it
            self._revocations_seen = digest
            return
        try:
            pem = await rs.revocations()
        except (RadioStationUnreachable, RadioStationRefused) as exc:
            log.debug("the RadioStation's revocations not fetched: %s", exc)
            return
        # tried: fetched again once the digest the RadioStation names changes (one naming a
        # digest of nothing it serves costs a fetch per change, not one a heartbeat)
        self._revocations_seen = digest
        try:
            count = grpc_util.install_crl(self.root / "tls", pem, tls.ca_pem)
        except grpc_util.CrlRefused as exc:
            log.warning("the CRL the RadioStation serves is not installed: %s", exc)
            return
        except OSError as exc:
            log.error("the CRL the RadioStation serves could not be written: %s", exc)
            self._revocations_seen = b""  # tried again at the next heartbeat
            return
        log.info(
            "installed the CRL the RadioStation serves: %d certificates revoked (in force within "
            "%g s)",
            count,
            grpc_util.REVOCATION_RECHECK_S,
        )

    def _judge_clock(self, offset: float | None) -> None:
        """Tell the channels whether this peer's clock is off the RadioStation's by more than
        MAX_TIMESTAMP_SKEW (as `offset` says; the RadioStation then refuses its heartbeats),
        warning once when it becomes so and again every CLOCK_WARN_S while it stays so."""
        skew = float(self.config.MAX_TIMESTAMP_SKEW)
        off = None
        if offset is not None and abs(offset) > skew:
            way = "behind" if offset > 0 else "ahead of"
            off = (
                f"this peer's clock is {abs(offset):.0f} s {way} the RadioStation's (more than "
                f"MAX_TIMESTAMP_SKEW, {skew:g} s)"
            )
        now = asyncio.get_running_loop().time()
        if off is None and offset is not None and abs(offset) > skew / 2:
            self._warn_of_drift(offset, skew, now)
        if off is not None and (self.clock_off is None or now - self._clock_warned >= CLOCK_WARN_S):
            log.warning(
                "%s: blocks and transactions are judged by the clock, so set the wrong one right "
                "(NTP). Either may be wrong: when the other peers say the same, it is the "
                "RadioStation's (the channels go on; the RadioStation refuses their heartbeats). "
                "A channel in which blocks this peer refused for their time become final all the "
                "same (its clock is the wrong one) takes no client transactions meanwhile",
                off,
            )
            self._clock_warned = now
        elif off is None and self.clock_off is not None and offset is None:
            log.info(
                "the RadioStation does not answer: what it said of this peer's clock is not "
                "current, so the channels no longer refuse client transactions on it"
            )
        elif off is None and self.clock_off is not None:
            log.info("this peer's clock is within MAX_TIMESTAMP_SKEW of the RadioStation's again")
        self.clock_off = off
        for service in self.channels.values():
            service.clock_off = off

    def _judge_settings(self, channel: str, differ: str | None) -> None:
        """Warn when the RadioStation says this peer's settings differ from some of the
        channel's other peers' (`differ`: which way, it says; each of them is told too), again
        every CLOCK_WARN_S while it says the same and every SETTINGS_CHANGED_WARN_S while what it
        says changes (a peer changing its values at each heartbeat had every other peer warn at
        each; review), and say when it no longer says so. When it says nothing (None: a
        RadioStation of an earlier version, or one that has no other peer's to compare with),
        nothing is said either way (review: a mismatch was said resolved when the RadioStation
        was rolled back)."""
        if differ is None:
            return
        now = asyncio.get_running_loop().time()
        told, warned = self._settings_told.get(channel, ("", -math.inf))
        again = CLOCK_WARN_S if differ == told else SETTINGS_CHANGED_WARN_S
        if differ and now - warned >= again:
            log.warning(
                "channel %s: its peers do not all run with the same settings, as the RadioStation "
                "says (%s): they must be alike on every peer of a channel (one set otherwise "
                "refuses the others' blocks or has its own refused, or its results differ), so "
                "set them alike",
                channel,
                differ,
            )
            self._settings_told[channel] = (differ, now)
        elif not differ and told:
            log.info(
                "channel %s: the RadioStation no longer says the peers' settings differ", channel
            )
            del self._settings_told[channel]

    def _warn_of_drift(self, offset: float, skew: float, now: float) -> None:
        """Warn (at most every CLOCK_WARN_S) of a clock off the RadioStation's by more than half
        MAX_TIMESTAMP_SKEW: the RadioStation takes it, but a peer as far off the other way is
        twice that from it, and each refuses the other's blocks for their time."""
        if now - self._drift_warned < CLOCK_WARN_S:
            return
        way = "behind" if offset > 0 else "ahead of"
        log.warning(
            "this peer's clock is %.0f s %s the RadioStation's, more than half MAX_TIMESTAMP_SKEW "
            "(%g s): a peer as far off the other way refuses its blocks for their time (each "
            "judges a block by its own clock). Either clock may be the wrong one (when the other "
            "peers say the same, it is the RadioStation's): set it right (NTP)",
            abs(offset),
            way,
            skew,
        )
        self._drift_warned = now

    async def _follow_sets(self, rs: RadioStations, service: ChannelService) -> None:
        """A peer the RadioStation no longer knows (unlisted or removed) still takes the
        channel's set and member list while the chain's voters name it: the chain must hand over
        to the set that removes it, and until then this peer votes and leads in its turns
        (`set_members` keeps the members the chain still counts). Without the sets a channel
        halted when the peers removed together held a third of the weight: their turns went
        unled and their complaints were missing. Without the member list it never learnt the
        address of a validator listed after it was unlisted, whose vote the handover needs: its
        proposals and certificates never reached that one (an end-to-end test stalled so under
        load)."""
        try:
            peers, validators = await rs.peer_list(service.name)
        except RadioStationRefused as exc:  # said once (it is asked again each heartbeat)
            if self._sets_refused.get(service.name) != str(exc):
                self._sets_refused[service.name] = str(exc)
                log.warning("channel %s: validator set not fetched: %s", service.name, exc)
            return
        except RadioStationUnreachable as exc:
            log.debug("validator set not fetched: %s", exc)
            return
        self._sets_refused.pop(service.name, None)
        self._warn_unreadable_set(rs, service.name)
        service.set_members(peers)
        if validators is not None:
            service.take_newest_set(validators)

    def _unanswered(self, exc: RadioStationUnreachable) -> None:
        """A heartbeat no RadioStation answered: warned about once none has answered for
        HEARTBEAT_TIMEOUT (counted from the last answer: the RadioStation takes this peer for
        gone then), then not again until one answers. The channels go on with the members they
        know, but learn of no new peer or validator set meanwhile; a dead RadioStation was
        logged at DEBUG only (operator review)."""
        now = asyncio.get_running_loop().time()
        if self._answered_at is None:
            self._answered_at = now
        waited = now - self._answered_at
        if self._unanswered_told or waited < float(self.config.HEARTBEAT_TIMEOUT):
            log.debug("heartbeat to RadioStation failed: %s", exc)
            return
        self._unanswered_told = True
        log.warning(
            "no RadioStation has answered for %.0f s (%s): the channels go on with the members "
            "they know, and learn of no new peer or validator set until one answers",
            waited,
            exc,
        )

    def _answered(self, rs: RadioStations) -> None:
        """A RadioStation answered a heartbeat: said when one was warned about as gone."""
        now = asyncio.get_running_loop().time()
        if self._unanswered_told and self._answered_at is not None:
            waited = now - self._answered_at
            log.info("RadioStation %s answers again after %.0f s", rs.target, waited)
        self._answered_at, self._unanswered_told = now, False

    def _warn_busy(self, exc: RadioStationBusy) -> None:
        """A heartbeat (or member list) the RadioStation was too busy to answer: warned about once
        a HEARTBEAT_INTERVAL however many channels ask; the next heartbeat tries again."""
        now = asyncio.get_running_loop().time()
        if now - self._busy_logged_at < float(self.config.HEARTBEAT_INTERVAL):
            log.debug("heartbeat to RadioStation failed: %s", exc)
            return
        self._busy_logged_at = now
        log.warning("RadioStation busy (%s): tried again at the next heartbeat", exc)

    async def _register_again(self, rs: RadioStations, unknown: bool = True) -> None:
        """Register again (as at the start) with a RadioStation that does not know this peer
        (`unknown`: one restarted on an empty or older registry, or a standby holding a copy
        from before this peer registered), or that did not take its registration at the start
        (_registration_pending). At most once per HEARTBEAT_INTERVAL, and after a failure twice
        as long each time (a peer the RadioStation refuses, one un-listed, costs it a probe
        rarely); the channels keep running as opened."""
        assert self.signer is not None
        now = asyncio.get_running_loop().time()
        if now - self._registered_again_at < self._register_again_wait:
            return
        self._registered_again_at = now
        first = unknown and self._unknown_to != rs.target
        if first:
            log.warning("RadioStation %s does not know this peer: registering again", rs.target)
            self._unknown_to = rs.target
        try:
            registration = await rs.connect(self.signer, self.target)
        except (RadioStationRefused, RadioStationUnreachable) as exc:
            log.log(logging.WARNING if first else logging.DEBUG, "registering again: %s", exc)
            longest = max(MAX_REGISTER_AGAIN_WAIT_S, float(self.config.HEARTBEAT_INTERVAL))
            self._register_again_wait = min(2 * self._register_again_wait, longest)
            return
        self._unknown_to = None
        self._registration_pending = False
        self._register_again_wait = float(self.config.HEARTBEAT_INTERVAL)
        log.info("registered again with RadioStation %s as order %d", rs.target, registration.order)
        self._compare_registration(rs.target, registration)
        if self.options.worker is None:
            self._cache_registration(registration)
        else:  # its peer holds the cache: a cache, so a failed write only costs a warning
            path = self.root / self.options.worker.grant.channel / WORKER_REGISTRATION
            try:
                write_atomic(path, _encode_registration(registration))
            except OSError as exc:
                log.warning("registration not left for the peer's cache in %s: %s", path, exc)

    def _sweep_worker_writes(self) -> None:
        """Remove from the channels' folders the temporary files of workers killed midway
        through writing a registration (durable.sweep_leftovers)."""
        with contextlib.suppress(OSError):
            for folder in self.root.iterdir():
                if folder.is_dir() and not folder.is_symlink():
                    sweep_leftovers(folder)

    def _take_worker_registrations(self) -> None:
        """Take into the registration cache what channel workers registered again with (the
        newest, when several did), as a peer without workers caches its own."""
        assert self.node_store is not None
        found: list[tuple[int, bytes]] = []
        for path in self.root.glob(f"*/{WORKER_REGISTRATION}"):
            taken = path.with_name(f".{WORKER_REGISTRATION}.taken")
            try:
                os.replace(path, taken)  # a worker writing again meanwhile makes a new one
                found.append((taken.stat().st_mtime_ns, taken.read_bytes()))
                taken.unlink()
            except OSError as exc:
                log.warning("cannot take the registration a channel worker made: %s", exc)
        for _, cache in sorted(found)[-1:]:
            try:
                registration = _decode_registration(cache)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("a channel worker's registration is unreadable: %s", exc)
                continue
            self._cache_registration(registration)

    def _cache_registration(self, registration: Registration) -> None:
        """Cache a registration made again, with the channels of the one cached before that it
        lacks: a channel no longer granted may still need this peer's vote, and a start opens it
        while its chain there counts this peer (`_with_counted`); the first start that finds the
        chain no longer does leaves it out of the cache."""
        assert self.node_store is not None
        before = _readable_registration(self._read_cache(REGISTRATION_CACHE.encode()))
        if before is not None:
            granted = {grant.channel for grant in registration.channels}
            formerly = [g for g in before.channels if g.channel not in granted]
            registration = replace(registration, channels=registration.channels + tuple(formerly))
        self._write_cache(
            REGISTRATION_CACHE.encode(), _encode_registration(registration), sync=True
        )

    def _write_cache(self, key: bytes, value: bytes, sync: bool = False) -> None:
        """Write to the node store, a cache of what the RadioStation said. A write it refuses (a
        full disk, an I/O error) is warned about, not raised: raised, it stopped every channel of
        the peer, healthy ones too, at the next member change after a disk was full a moment
        (review). LevelDB takes no write after a failed one, so the store is opened again for
        the next one."""
        assert self.node_store is not None
        try:
            if self._cache_refused and isinstance(self.node_store, LevelDBStore):
                self._reopen_node_store(self.node_store)
            self.node_store.put(key, value, sync=sync)
        except StorageError as exc:
            self._cache_refused = True
            log.warning("the node cache is not written, the peer runs on without it: %s", exc)
        else:
            self._cache_refused = False

    def _reopen_node_store(self, store: LevelDBStore) -> None:
        store.close()  # (twice is fine: an opening that failed left it closed)
        if store in self.stores:
            self.stores.remove(store)
        self.node_store = LevelDBStore(store.path)  # StorageError: it stays closed until then
        self.stores.append(self.node_store)

    def _read_cache(self, key: bytes) -> bytes | None:
        """A value of the node store (None, warned about, when it cannot be read: a cache)."""
        assert self.node_store is not None
        try:
            return self.node_store.get(key)
        except StorageError as exc:
            log.warning("the node cache is not read, the peer runs on without it: %s", exc)
            return None

    def _compare_registration(self, target: str, registration: Registration) -> None:
        """Warn where a registration made again differs from the one the channels run with (they
        are not rebuilt: a restart takes the new one); the served channels it does not grant make
        no more registrations."""
        granted = {grant.channel for grant in registration.channels}
        served = set(self.channels) | set(self.workers)
        opened = self.registration
        if opened is not None and registration.radiostation_address != opened.radiostation_address:
            log.warning(
                "RadioStation %s now signs as %s, not as %s: the channels trust %s until this "
                "peer restarts",
                target,
                registration.radiostation_address,
                opened.radiostation_address,
                opened.radiostation_address,
            )
        self._ungranted = served - granted
        if self._ungranted:
            log.warning(
                "RadioStation %s does not grant this peer channel(s) %s any more: served until "
                "this peer restarts",
                target,
                sorted(self._ungranted),
            )
        new = granted - served if self.options.worker is None else set()
        if new:
            log.warning(
                "RadioStation %s grants this peer channel(s) %s it does not serve: they open at "
                "its next start",
                target,
                sorted(new),
            )

    async def _until_next_heartbeat(self, stop: asyncio.Event) -> None:
        """HEARTBEAT_INTERVAL, cut short when a channel wants members: after MEMBERS_RETRY_S, and
        twice as long each time in a row (a validator that never registers costs no more than the
        usual heartbeats)."""
        interval = float(self.config.HEARTBEAT_INTERVAL)
        first = min(self._members_retry, interval)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first):
                await stop.wait()
        if stop.is_set() or self._members_wanted.is_set():
            return
        wanted = asyncio.ensure_future(self._members_wanted.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                (wanted, stopped),
                timeout=max(0.0, interval - first),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wanted.cancel()
            stopped.cancel()

    async def _refresh_peers(self, rs: RadioStations, service: ChannelService) -> None:
        peers, validators = await rs.peer_list(service.name)
        self._warn_unreadable_set(rs, service.name)
        service.set_members(peers)
        self._cache_members(service.name, peers)
        if validators is not None:
            service.take_newest_set(validators)

    def _warn_unreadable_set(self, rs: RadioStations, channel: str) -> None:
        """Warn, once a reason, of a validator set the RadioStation sent that this peer could not
        read (it went on with the set before, said nowhere: review of a rolling upgrade)."""
        reason = rs.unreadable_set
        if reason is not None and self._unreadable_sets.get(channel) != reason:
            log.warning("channel %s: %s", channel, reason)
        if reason is None:
            self._unreadable_sets.pop(channel, None)
        else:
            self._unreadable_sets[channel] = reason

    def _cache_members(self, channel: str, peers: list[PeerInfo]) -> None:
        assert self.node_store is not None
        rows = [[p.peer_id, p.target, p.order, p.group_id] for p in peers]
        self._write_cache(f"members/{channel}".encode(), json.dumps(rows).encode())

    def _cached_members(self, channel: str) -> list[PeerInfo]:
        """The member list cached for `channel`; none when it cannot be read (warned about: it
        is read at every channel's opening, and the RadioStation's list replaces it)."""
        assert self.node_store is not None
        raw = self._read_cache(f"members/{channel}".encode())
        if not raw:
            return []
        try:
            return [PeerInfo(*row) for row in json.loads(raw)]
        except (ValueError, TypeError) as exc:
            log.warning("channel %s: the cached member list cannot be read (%s)", channel, exc)
            return []

    def _rest_proxy(self) -> RestProxy:
        script = Path(__file__).resolve().parents[2] / "rest_proxy.py"
        args = [sys.executable, str(script), "-p", str(self.port), "--parent-pid", str(os.getpid())]
        if self._own_dir is not None:
            args += ["--peer-socket", str(self._own_dir.path / "peer.sock")]
        if self.options.config_path:
            args += ["-o", self.options.config_path]
        if self.options.debug:
            args.append("-d")
        return RestProxy(
            args,
            self.port + int(self.config.PORT_DIFF_REST_SERVICE_CONTAINER),
            float(self.config.CHILD_HANG_TIMEOUT),
            self.options.tls_password,
        )

    async def _shutdown(self, server: PeerServer, rest_task: asyncio.Task[None] | None) -> None:
        log.info("shutting down")
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))
        if self.workers and self.node_store is not None:
            self._take_worker_registrations()  # what they registered again with, to the last
        if self.rest_proxy is not None and rest_task is not None:
            await self.rest_proxy.stop()
            await rest_task
        await server.stop(grace=1.0)
        if self._own_dir is not None:
            self._own_dir.close()
        if self.transport is not None:
            await self.transport.close()
        for store in self.stores:
            store.close()


def _open_node_cache(path: Path) -> LevelDBStore:
    """The peer's node store, a cache of what the RadioStation said: one found damaged (one that
    lost its CURRENT file is refused as such, review) is moved aside and made anew, not a
    reason for the peer not to start."""
    try:
        return LevelDBStore(path)
    except StorageCorrupt as exc:
        aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
        log.warning("the node cache is damaged (%s); moved aside to %s, made anew", exc, aside)
        try:
            path.rename(aside)
        except OSError as move:
            raise StorageError(f"{exc}; cannot move it aside: {move}") from None
        return LevelDBStore(path)


_ANY_ADDRESS = ("0.0.0.0", "::", "")
_LOCALHOST = {"localhost": ("127.0.0.1", "::1")}


def _warn_about_target(listen: str, host: str) -> None:
    """Say at start when this peer listens on one address (IP_LOCAL) and tells the others to
    reach it at another (LOOPCHAIN_HOST): the others' messages never reach it, and nothing else
    said why its channel stopped (operator review)."""
    if listen in _ANY_ADDRESS or listen == host or listen in _LOCALHOST.get(host, ()):
        return
    log.warning(
        "IP_LOCAL %s is the one address this peer listens on, but LOOPCHAIN_HOST %s is where it "
        "tells the others to reach it: they will not; set LOOPCHAIN_HOST to %s (or to the name "
        "the others reach this host by, with IP_LOCAL 0.0.0.0)",
        listen,
        host,
        listen,
    )


def _is_loopback(host: str) -> bool:
    """Whether `host` (IP_LOCAL) is a loopback address or "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def _warn_about_key(key: KeyFile, password_given: bool) -> None:
    """Say loudly when the peer's key is kept unencrypted (acceptable on a development network)."""
    if key.protection in (KeyProtection.ENCRYPTED, KeyProtection.ENCRYPTED_DER):
        log.info("peer key %s: %s", key.path, key.protection.value)
        return
    if password_given:
        log.warning(
            "peer key %s is an older %s file: the password given is not used for it; it keeps "
            "working, but anyone who can read the file can sign as this peer",
            key.path,
            key.protection.value,
        )
        return
    made = "created" if key.created else "loaded"
    log.warning(
        "peer key %s %s UNENCRYPTED (no password given): anyone who can read the file can sign as "
        "this peer. Fine for a development network; elsewhere give a password in $%s or with "
        "--key-password-file FILE before the first start, and the key is kept encrypted",
        key.path,
        made,
        KEY_PASSWORD_ENV,
    )


MAX_KEYS_NAMED = 8  # other ports' keys a new key's warning names


def _warn_about_other_keys(key: KeyFile, storage: Path) -> None:
    """Say so when a key was just made while peers started with this storage on other ports
    keep theirs: a peer started on another port than before is a new peer, which no channel
    lists (the RadioStation then refuses it as not listed), and nothing said why (operator
    review)."""
    others: list[str] = []
    try:
        entries = sorted(e for e in storage.iterdir() if _PORT_FOLDER.fullmatch(e.name))
    except OSError:  # no storage folder to look in: nothing to name
        entries = []
    for entry in entries:
        other = entry / "peer_key"
        with contextlib.suppress(OSError):  # a folder this user may not look into: the next
            if other.is_file() and not os.path.samefile(other, key.path):
                others.append(str(other))
        if len(others) == MAX_KEYS_NAMED:
            break
    if others:
        log.warning(
            "peer key %s was created now: this peer is a new one (peer id %s). If it ran before "
            "on another port, it was another peer: peers started with this storage on other ports "
            "keep their keys in %s; to go on as one of them, start on its port or give its key "
            "with --private FILE (a new peer is listed in no channel yet)",
            key.path,
            key.signer.address,
            ", ".join(others),
        )


_PORT_FOLDER = re.compile(r"peer_[0-9]{1,5}")


class _Stop(Exception):
    """Raised inside the task group to end it when the stop event is set."""


def _encode_registration(registration: Registration) -> bytes:
    return json.dumps(
        {
            "order": registration.order,
            "radiostation_address": registration.radiostation_address,
            "channels": [_grant_json(g) for g in registration.channels],
        }
    ).encode()


def _grant_json(grant: ChannelGrant) -> dict[str, Any]:
    return {
        "channel": grant.channel,
        "score_package": grant.score_package,
        "validators": grant.validators.encode().decode(),
        "score_settings": grant.score_settings,
    }


def _grant_from_json(c: dict[str, Any]) -> ChannelGrant:
    return ChannelGrant(
        c["channel"],
        c["score_package"],
        ValidatorSet.decode(c["validators"].encode()),
        c.get("score_settings", {}),
    )


def _readable_registration(raw: bytes | None) -> Registration | None:
    """The cached registration `raw`, or None when there is none or it cannot be read (warned
    about: the peer goes on as without one)."""
    if raw is None:
        return None
    try:
        return _decode_registration(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("the cached registration cannot be read (%s): going on without it", exc)
        return None


def _decode_registration(raw: bytes) -> Registration:
    data = json.loads(raw)
    grants = tuple(_grant_from_json(c) for c in data["channels"])
    return Registration(data["order"], data["radiostation_address"], grants)
