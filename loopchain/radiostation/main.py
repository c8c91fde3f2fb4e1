"""RadioStation entry point: argv -> configuration -> wiring -> one asyncio run until a signal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from loopchain.configure import Config, ConfigError, load_config, setup_logging
from loopchain.http_site import (
    TOO_MANY_CONNECTIONS,
    LimitedSite,
    RevokedClients,
    answer_malformed_http_in_json,
    connection_cap,
    rest_tls_context,
)
from loopchain.lifecycle import stop_on_signals
from loopchain.memory import start_giving_back
from loopchain.monitor_log import start_shipping
from loopchain.p2p.grpc_util import (
    bind,
    client_revocations,
    connections_a_port,
    create_server,
    load_tls,
    watch_certificates,
)
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.certs import (
    CA_PASSWORD_ENV,
    CertificateService,
    CertStoreError,
    create_certificate_service,
)
from loopchain.radiostation.channel_admin import read_channel_file
from loopchain.radiostation.channels import ChannelDataError, ChannelSpec, load_channels
from loopchain.radiostation.grpc_service import RadioStationService
from loopchain.radiostation.operator import (
    OperatorToken,
    TokenFileError,
    load_or_create_token,
    token_path,
)
from loopchain.radiostation.registry import MAX_PEERS, Registry, RegistryError
from loopchain.radiostation.rest import create_app, error_response
from loopchain.radiostation.station import Station, check_station_settings
from loopchain.types.codes import ResponseCode, error_body
from loopchain.types.crypto import SignatureError, load_or_create_key

log = logging.getLogger("loopchain.radiostation")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
GRACE_SECONDS = 1.0
# gRPC requests are registrations, heartbeats and peer-list asks: a few hundred bytes each (a
# registration holds its call while the station probes the peer, up to GRPC_TIMEOUT)
MAX_REQUEST_BYTES = 256 << 10
# calls at once from one address (grpc_util.call_source); more are answered RESOURCE_EXHAUSTED.
# Registrations probing their targets hold at most MAX_PROBES in all, so heartbeats and peer lists
# always find room.
MAX_CALLS = 128
# connections its gRPC port holds: a peer and each of its channel workers hold one, so every peer
# it may register (MAX_PEERS) with up to three channel workers, and the tools (an idle connection
# costs ~17 KB; the 512 of a peer's port left peers past the 512th, or fewer with workers, unable
# to register or beat)
GRPC_CONNECTIONS = 4 * MAX_PEERS + 96


class StartupError(Exception):
    """A problem that stops the RadioStation from starting; carries the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line flags of the compat spec."""
    parser = argparse.ArgumentParser(
        prog="radiostation.py", description="loopchain RadioStation: peer directory per channel"
    )
    parser.add_argument("-p", "--port", type=int, help="gRPC port (REST on port + 1900)")
    parser.add_argument("-o", "--configure_file_path", help="JSON configuration file")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument(
        "--cert",
        metavar="DIR",
        help="CA directory to use instead of the RadioStation's own (see tools/certificate_util.py);"
        f" an encrypted CA key is opened with the password in ${CA_PASSWORD_ENV}",
    )
    parser.add_argument("-s", "--seed", help="accepted for compatibility; not used yet")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The effective configuration from all layers plus the flags; ConfigError when invalid."""
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["PORT_RADIOSTATION"] = args.port
    if args.debug:
        overrides["LOOPCHAIN_LOG_LEVEL"] = "DEBUG"
    config = load_config(args.configure_file_path, environ, overrides)
    for port in (
        config.PORT_RADIOSTATION,
        config.PORT_RADIOSTATION + config.PORT_DIFF_REST_SERVICE_CONTAINER,
    ):
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range 1..65535")
    check_station_settings(config)
    return config


def storage_dir(config: Config) -> Path:
    """The RadioStation's own directory under DEFAULT_STORAGE_PATH."""
    return Path(config.DEFAULT_STORAGE_PATH) / f"radiostation_{config.PORT_RADIOSTATION}"


def _check_mode(config: Config, channels: Mapping[str, ChannelSpec]) -> None:
    """Listed mode needs every entry to name a peer id; open mode is said loudly."""
    if not config.ENABLE_CHANNEL_AUTH:
        log.warning(
            "OPEN MODE: ENABLE_CHANNEL_AUTH is off, so any peer whose key answers at its target "
            "joins every channel and votes in it. For a permissioned network list each peer's "
            "peer_id in %s and set ENABLE_CHANNEL_AUTH",
            config.CHANNEL_MANAGE_DATA_PATH,
        )
        return
    for name, spec in channels.items():
        if spec.members is None:
            raise StartupError(
                f"ENABLE_CHANNEL_AUTH is on but {config.CHANNEL_MANAGE_DATA_PATH} does not exist: "
                "listed mode needs the channel file listing the peers' ids "
                "(tools/listed_channels.py writes one)",
                EXIT_CONFIG,
            )
        unlisted = spec.unlisted()
        if unlisted:
            raise StartupError(
                f"{config.CHANNEL_MANAGE_DATA_PATH}: channel {name!r}: peers{unlisted} name no "
                "peer_id; with ENABLE_CHANNEL_AUTH a peer is admitted by its id (a target alone "
                'is not an identity): add each entry\'s "peer_id" (the id a peer logs at start, '
                '"peer id hx..."; tools/listed_channels.py writes such a file), or set '
                "ENABLE_CHANNEL_AUTH false (open mode, where an entry may name a target alone)",
                EXIT_CONFIG,
            )
        if not spec.members:
            log.warning(
                "channel %s lists no peers; with ENABLE_CHANNEL_AUTH no peer can join", name
            )


def create_station(config: Config) -> Station:
    """Channels, signing key and registry wired into a Station; StartupError when one fails."""
    try:
        channels = load_channels(
            Path(config.CHANNEL_MANAGE_DATA_PATH),
            config.LOOPCHAIN_DEFAULT_CHANNEL,
            config.DEFAULT_SCORE_PACKAGE,
            int(str(config.ICON_NID), 16),
        )
    except ChannelDataError as exc:
        raise StartupError(str(exc), EXIT_CONFIG) from None
    channel_file = read_channel_file(Path(config.CHANNEL_MANAGE_DATA_PATH))
    directory = storage_dir(config)
    try:
        signer = load_or_create_key(directory / "radiostation_key")
        registry = Registry.open(directory / "registry.json", channels, config.ENABLE_CHANNEL_AUTH)
    except (RegistryError, SignatureError) as exc:
        raise StartupError(str(exc), EXIT_RUNTIME) from None
    except OSError as exc:
        raise StartupError(f"cannot use storage {directory}: {exc}", EXIT_RUNTIME) from None
    _check_mode(config, channels)
    log.info(
        "RadioStation %s: channels %s, %d registered peers, storage %s",
        signer.address,
        list(channels),
        len(registry),
        directory,
    )
    try:  # it saves the registry when the channel file changed a set's content meanwhile
        station = Station(config, registry, signer, time.time)
    except ChannelDataError as exc:  # the genesis its peers were given gives two channels one nid
        raise StartupError(str(exc), EXIT_CONFIG) from None
    except OSError as exc:
        raise StartupError(f"cannot use storage {directory}: {exc}", EXIT_RUNTIME) from None
    station.channel_file, station.channel_file_known = channel_file, True
    return station


def create_operator_token(config: Config) -> OperatorToken:
    """The operator's bearer token, created at the first start; StartupError when unsafe."""
    path = token_path(config.RADIOSTATION_ADMIN_TOKEN_PATH, storage_dir(config))
    try:
        token, created = load_or_create_token(path)
    except TokenFileError as exc:
        raise StartupError(str(exc), EXIT_RUNTIME) from None
    log.info(
        "operator token %s %s (mode 0600): REST writes need 'Authorization: Bearer <its content>'",
        "created in" if created else "read from",
        path,
    )
    return token


def create_certificates(config: Config, cert_dir: str | None) -> CertificateService:
    """The certificate service over --cert DIR or the own CA directory, its CA checked if present."""
    password = os.environ.get(CA_PASSWORD_ENV) or None
    try:
        certs = create_certificate_service(config, cert_dir, password)
    except CertStoreError as exc:
        raise StartupError(str(exc), EXIT_CONFIG) from None
    try:
        log.info("certificates: %s", certs.describe_state())
    except CertStoreError as exc:
        raise StartupError(str(exc), EXIT_RUNTIME) from None
    return certs


def create_grpc_server(station: Station) -> grpc.aio.Server:
    """The gRPC server with the RadioStation service, bound to IP_LOCAL:PORT_RADIOSTATION."""
    config = station.config
    station.tls = load_tls(config, storage_dir(config) / "tls")
    server = create_server(
        config,
        max_receive=MAX_REQUEST_BYTES,
        max_rpcs=MAX_CALLS,
        max_connections=connections_a_port(1, GRPC_CONNECTIONS),
    )
    pb_grpc.add_RadioStationServicer_to_server(RadioStationService(station), server)
    bind(server, config.IP_LOCAL, config.PORT_RADIOSTATION, station.tls)
    return server


def create_rest_tls(config: Config) -> ssl.SSLContext | None:
    """TLS for the REST API (ENABLE_REST_SSL 1 or 2) with the RadioStation's own TLS files, those
    of its gRPC side (by default cert.pem, key.pem and ca.pem in its storage's tls folder): the
    operator token crosses the network only encrypted. Before, the setting was taken and not
    used, and the token went in the clear (review); StartupError when the files cannot be used."""
    try:
        return rest_tls_context(config, storage_dir(config) / "tls")
    except ConfigError as exc:
        raise StartupError(str(exc), EXIT_CONFIG) from None


def create_rest_client_check(config: Config) -> Any:
    """With ENABLE_REST_SSL 2, the middleware refusing (403) clients whose certificates the
    revocation lists name, those its gRPC side checks (GRPC_SSL_REVOKED_PATH, or revoked.json and
    ca.crl.pem in its TLS folder), read again when they change: the handshake checks only the CA,
    so a revoked holder kept the REST API, operator calls included; StartupError when a list
    cannot be read or used."""
    if int(config.ENABLE_REST_SSL) != 2:
        return None
    try:
        revocations = client_revocations(config, storage_dir(config) / "tls")
    except OSError as exc:
        raise StartupError(f"ENABLE_REST_SSL 2: {exc}", EXIT_CONFIG) from None

    def refuse(request: web.Request, message: str) -> web.StreamResponse:
        return error_response(ResponseCode.FAIL, message, 403)

    return RevokedClients(revocations.current, refuse).middleware()


async def start_rest(
    station: Station,
    certs: CertificateService,
    token: OperatorToken,
    debug: bool,
    tls: ssl.SSLContext | None = None,
    client_check: Any = None,
) -> LimitedSite:
    """The REST site on IP_LOCAL:port + PORT_DIFF_REST_SERVICE_CONTAINER (over `tls` when
    given, its clients checked by `client_check` when given), started."""
    config = station.config
    host, port = config.IP_LOCAL, config.PORT_RADIOSTATION + config.PORT_DIFF_REST_SERVICE_CONTAINER
    access_log = logging.getLogger("aiohttp.access") if debug else None
    answer_malformed_http_in_json(ResponseCode.INVALID_PARAMS)
    app = create_app(station, token, certs, client_check)
    runner = web.AppRunner(
        app,
        access_log=access_log,
        handle_signals=False,
        keepalive_timeout=float(config.REST_KEEPALIVE_TIMEOUT),
    )
    await runner.setup()
    site = LimitedSite(
        runner,
        host,
        port,
        # beside the gRPC port's connections, in the same process
        max_connections=connection_cap(int(config.REST_MAX_CONNECTIONS), GRPC_CONNECTIONS),
        refusal_body=json.dumps(error_body(ResponseCode.FAIL, TOO_MANY_CONNECTIONS)).encode(),
        ssl_context=tls,
    )
    try:
        await site.start()
    except OSError as exc:
        await site.close()
        raise OSError(f"cannot listen on {host}:{port} (REST): {exc.strerror or exc}") from None
    return site


def _leader_text(station: Station) -> dict[str, str]:
    result = {}
    for channel in station.registry.channels:
        leader = station.leader(channel)
        result[channel] = leader.record.peer_id if leader else ""
    return result


async def watch_leaders(station: Station, stop: asyncio.Event) -> None:
    """Log whenever a channel's leader changes, until `stop` is set."""
    known = _leader_text(station)
    last_leaders = {channel: leader for channel, leader in known.items() if leader}
    while not stop.is_set():
        try:
            async with asyncio.timeout(float(station.config.HEARTBEAT_INTERVAL)):
                await stop.wait()
        except TimeoutError:
            pass
        current = _leader_text(station)
        for channel, leader in current.items():
            if leader != known.get(channel):
                log.info("channel %s: leader is %s", channel, leader or "none")
        for channel in leader_changes(last_leaders, current):
            station.metrics.leader_changes.labels(channel).inc()
        known = current


def leader_changes(last_leaders: dict[str, str], current: dict[str, str]) -> list[str]:
    """The channels whose leader is now a peer other than the last one known, updating
    `last_leaders`. A leader first seen, or one that went unknown (a late heartbeat) and came
    back, is no change."""
    changed = []
    for channel, leader in current.items():
        if not leader:
            continue
        previous = last_leaders.get(channel)
        if previous is not None and previous != leader:
            changed.append(channel)
        last_leaders[channel] = leader
    return changed


def _install_signal_handlers(stop: asyncio.Event) -> None:
    stop_on_signals(asyncio.get_running_loop(), stop)


async def serve(
    station: Station,
    certs: CertificateService,
    token: OperatorToken,
    debug: bool,
    rest_tls: ssl.SSLContext | None = None,
    client_check: Any = None,
) -> None:
    """Serve gRPC and REST until SIGTERM or Ctrl-C, then stop both and flush the registry."""
    config = station.config
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    start_giving_back(int(config.MEMORY_GIVE_BACK_MB))
    server = create_grpc_server(station)
    await server.start()
    try:
        site = await start_rest(station, certs, token, debug, rest_tls, client_check)
    except OSError:
        await server.stop(None)
        raise
    try:
        log.info(
            "RadioStation listening on %s:%d (REST %d); waiting for peers, no leader yet",
            config.IP_LOCAL,
            config.PORT_RADIOSTATION,
            config.PORT_RADIOSTATION + config.PORT_DIFF_REST_SERVICE_CONTAINER,
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(watch_leaders(station, stop))
            if station.tls is not None:
                tasks.create_task(watch_certificates(station.tls, stop))
        log.info("stopping: closing servers and flushing the registry")
    finally:
        await server.stop(GRACE_SECONDS)
        await site.close()
        station.registry.flush()
    log.info("RadioStation stopped")


def _fail(message: str, code: int) -> int:
    print(f"radiostation: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the RadioStation; returns the process exit code."""
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        setup_logging(config, debug=args.debug, process=f"radiostation:{config.PORT_RADIOSTATION}")
        if config.MONITOR_LOG:
            label = f"radiostation:{config.PORT_RADIOSTATION}"
            start_shipping(config.MONITOR_LOG_HOST, config.MONITOR_LOG_PORT, "radiostation", label)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:
        return _fail(f"cannot open LOG_FILE_PATH {config.LOG_FILE_PATH}: {exc}", EXIT_CONFIG)
    if args.seed:
        log.warning(
            "-s is accepted but not used yet: certificate keys come from the OS's randomness"
        )
    try:
        station = create_station(config)
        token = create_operator_token(config)
        certs = create_certificates(config, args.cert)
        rest_tls = create_rest_tls(config)
        client_check = create_rest_client_check(config)
        asyncio.run(serve(station, certs, token, args.debug, rest_tls, client_check))
    except StartupError as exc:
        return _fail(str(exc), exc.exit_code)
    except OSError as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    return EXIT_OK
