"""`rest_proxy.py`: argv → configuration → the REST app on PEER_PORT+1900 → run until SIGTERM/Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from loopchain.configure import Config, ConfigError, load_config, setup_logging
from loopchain.http_site import (
    TOO_MANY_CONNECTIONS,
    LimitedSite,
    RevokedClients,
    answer_malformed_http_in_json,
    connection_cap,
    rest_tls_context,
)
from loopchain.lifecycle import (
    BEAT_FD_ARG,
    PASSWORD_ON_STDIN,
    beat_to_parent,
    die_with_parent,
    keep_memory_private,
    stop_on_signals,
)
from loopchain.memory import start_giving_back
from loopchain.monitor_log import start_shipping
from loopchain.p2p.grpc_util import client_revocations
from loopchain.rest.app import create_app
from loopchain.rest.jsonrpc import outer_error
from loopchain.types.codes import ResponseCode, error_body
from loopchain.types.jsonrpc import JsonRpcCode

log = logging.getLogger("loopchain.rest")

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
PEER_HOST = "127.0.0.1"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
MAX_PASSWORD_BYTES = 4096


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line of rest_proxy.py."""
    parser = argparse.ArgumentParser(
        prog="rest_proxy.py",
        description="Serve the peer REST API v1 on PEER_PORT+1900, forwarding to the peer's gRPC.",
    )
    parser.add_argument("-p", "--port", type=int, help="the peer's gRPC port (default PORT_PEER)")
    parser.add_argument(
        "-o", "--configure_file_path", metavar="CONF_JSON", help="a JSON configuration file"
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="end with this process (the peer that starts it)"
    )
    parser.add_argument(
        PASSWORD_ON_STDIN,
        action="store_true",
        help="read the TLS key's password as the first line of stdin (as the peer starting it "
        "hands it: never in the environment, which other processes of the user can read)",
    )
    parser.add_argument(
        "--peer-socket",
        metavar="PATH",
        help="reach the peer at this unix socket (the one a peer serves the proxy it starts on)",
    )
    parser.add_argument(
        BEAT_FD_ARG,
        type=int,
        default=-1,
        help="beat on this pipe, for the peer that starts it to tell it from a hung one",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    """The effective configuration; ConfigError when a layer or a flag is wrong."""
    overrides = {} if args.port is None else {"PORT_PEER": args.port}
    config = load_config(args.configure_file_path, overrides=overrides)
    rest_port = config.PORT_PEER + config.PORT_DIFF_REST_SERVICE_CONTAINER
    if not 0 < config.PORT_PEER < 65536 or not 0 < rest_port < 65536:
        raise ConfigError(
            f"peer port {config.PORT_PEER} + PORT_DIFF_REST_SERVICE_CONTAINER "
            f"{config.PORT_DIFF_REST_SERVICE_CONTAINER} = {rest_port} is not a valid port"
        )
    return config


def _tls_folder(config: Config) -> Path:
    """The peer's TLS folder, where its certificate files are unless configured elsewhere."""
    return Path(config.DEFAULT_STORAGE_PATH) / f"peer_{config.PORT_PEER}" / "tls"


def rest_ssl_context(config: Config, password: str | None = None) -> ssl.SSLContext | None:
    """TLS for the REST API from ENABLE_REST_SSL (http_site.rest_tls_context): the certificate
    is the peer's own (GRPC_SSL_CERT_PATH / GRPC_SSL_KEY_PATH, by default
    {DEFAULT_STORAGE_PATH}/peer_<port>/tls/); with 2 clients must present a certificate of the
    same CA (GRPC_SSL_CA_CERT_PATH), checked on every request against the revocation lists
    (rest_client_check)."""
    return rest_tls_context(config, _tls_folder(config), password)


def rest_client_check(config: Config) -> Middleware | None:
    """With ENABLE_REST_SSL 2, the middleware refusing clients whose certificates the node's
    revocation lists name (those its gRPC side uses: GRPC_SSL_REVOKED_PATH, or revoked.json and
    ca.crl.pem in the peer's TLS folder), read again when they change; ConfigError when a list
    cannot be read or used."""
    if int(config.ENABLE_REST_SSL) != 2:
        return None
    try:
        revocations = client_revocations(config, _tls_folder(config))
    except OSError as exc:
        raise ConfigError(f"ENABLE_REST_SSL 2: {exc}") from None

    def refuse(request: web.Request, message: str) -> web.StreamResponse:
        return outer_error(request, 403, message)

    return RevokedClients(revocations.current, refuse).middleware()


def peer_target_of(config: Config) -> str:
    """Where the proxy reaches its peer: with mutual TLS between nodes, the plain loopback port the
    peer serves its proxy on; otherwise the peer's listener on IP_LOCAL (the loopback when the peer
    listens on every address), since a peer bound to one address does not answer on 127.0.0.1."""
    if config.GRPC_SSL_TYPE:
        return f"{PEER_HOST}:{config.PORT_PEER + config.PORT_DIFF_INNER_SERVICE}"
    host = str(config.IP_LOCAL)
    if host in WILDCARD_HOSTS:
        host = PEER_HOST
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{config.PORT_PEER}"


async def serve(
    config: Config, peer_socket: str | None = None, beat_fd: int = -1, password: str | None = None
) -> int:
    """Run the proxy until SIGTERM or SIGINT, reaching its peer at `peer_socket` when given
    (else at peer_target_of), beating on `beat_fd` when given, with the TLS key's `password`
    when given (else LOOPCHAIN_TLS_KEY_PASSWORD); the exit status."""
    host = config.IP_LOCAL
    port = config.PORT_PEER + config.PORT_DIFF_REST_SERVICE_CONTAINER
    peer_target = peer_target_of(config)
    access_log = (
        logging.getLogger("loopchain.rest.access") if log.isEnabledFor(logging.DEBUG) else None
    )
    try:
        ssl_context = rest_ssl_context(config, password)
        client_check = rest_client_check(config)
    except ConfigError as exc:
        print(f"rest_proxy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    answer_malformed_http_in_json(ResponseCode.INVALID_PARAMS, JsonRpcCode.INVALID_REQUEST)
    runner = web.AppRunner(
        create_app(
            config, peer_target, f"unix:{peer_socket}" if peer_socket else None, client_check
        ),
        access_log=access_log,
        keepalive_timeout=float(config.REST_KEEPALIVE_TIMEOUT),
        # a request whose client hung up is cancelled, not run on: a wait for a transaction's
        # result (Icon-Options: timeout) polled the peer for a minute after its client left
        handler_cancellation=True,
    )
    await runner.setup()
    site = LimitedSite(
        runner,
        host,
        port,
        max_connections=connection_cap(int(config.REST_MAX_CONNECTIONS)),
        refusal_body=orjson.dumps(error_body(ResponseCode.FAIL, TOO_MANY_CONNECTIONS)),
        ssl_context=ssl_context,
    )
    try:
        await site.start()
    except OSError as exc:
        await site.close()
        print(f"rest_proxy: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop)
    beat_to_parent(beat_fd)
    start_giving_back(int(config.MEMORY_GIVE_BACK_MB))
    scheme = "https" if ssl_context else "http"
    log.info(
        "REST proxy serving %s://%s:%d, forwarding to peer %s%s",
        scheme,
        host,
        port,
        peer_target,
        f" at {peer_socket}" if peer_socket else "",
    )
    await stop.wait()
    log.info("REST proxy stopping")
    await site.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of rest_proxy.py; returns the process exit status."""
    args = parse_args(argv)
    if not die_with_parent(args.parent_pid):
        print(f"rest_proxy: parent process {args.parent_pid} is gone; exiting", file=sys.stderr)
        return 0
    password = None
    if args.tls_password_stdin:
        keep_memory_private()  # (processes of the user read no memory of its)
        password = sys.stdin.readline(MAX_PASSWORD_BYTES).rstrip("\n")
    try:
        config = build_config(args)
        setup_logging(config, debug=args.debug, process=f"rest:{config.PORT_PEER}")
        if config.MONITOR_LOG:
            label = f"rest:{config.PORT_PEER}"
            start_shipping(config.MONITOR_LOG_HOST, config.MONITOR_LOG_PORT, "rest_proxy", label)
    except (ConfigError, OSError) as exc:
        print(f"rest_proxy: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(serve(config, args.peer_socket, args.beat_fd, password))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_OK
