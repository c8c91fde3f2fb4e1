"""`peer.py`: parse argv, build the configuration, run a PeerNode until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from loopchain import failpoints
from loopchain.blockchain.block_store import BlockStoreError
from loopchain.configure import (
    Config,
    ConfigError,
    LogFileUnusable,
    load_config,
    settings_without_effect,
    setup_logging,
)
from loopchain.lifecycle import (
    BEAT_FD_ARG,
    beat_to_parent,
    die_with_parent,
    keep_memory_private,
    stop_on_signals,
)
from loopchain.memory import start_giving_back
from loopchain.monitor_log import start_shipping
from loopchain.p2p.grpc_util import TLS_PASSWORD_ENV
from loopchain.peer.node import (
    PeerNode,
    PeerOptions,
    peer_key_path,
    worker_config,
    worker_options,
)
from loopchain.peer.workers import (
    MAX_WORKER_SPEC_BYTES,
    WORKER_SPEC_REFUSED,
    WORKER_STORAGE_FAILED,
)
from loopchain.storage.abc import StorageError
from loopchain.types.crypto import SignatureError, key_file_is_encrypted
from loopchain.types.passwords import (
    KEY_PASSWORD_ENV,
    PasswordError,
    choose_password,
    prompt_password,
)

log = logging.getLogger("loopchain.peer")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="peer.py", description="Run a loopchain peer.")
    parser.add_argument(
        "-p", "--port", type=int, help="gRPC port (REST is port + 1900); default PORT_PEER"
    )
    parser.add_argument(
        "-r", "--radio_station_target", help="RadioStation ip[:port][,standby ip:port]"
    )
    parser.add_argument("-o", "--configure_file_path", help="JSON configuration file")
    parser.add_argument(
        "-c",
        "--score",
        help="SCORE package this peer runs (default: the channel's, from the RadioStation)",
    )
    parser.add_argument(
        "--key-password-file",
        help=f"file (mode 0600) holding the private key's password; or set ${KEY_PASSWORD_ENV}",
    )
    parser.add_argument(
        "-a",
        "--key_password",
        help="the private key's password (deprecated: other users see it in the process list)",
    )
    parser.add_argument(
        "--public", help="public key file: the peer refuses to start unless it is its key's"
    )
    parser.add_argument("--private", help="private key file (PEM or hex secp256k1 key, mode 0600)")
    parser.add_argument("--no-rest", action="store_true", help="do not start the REST proxy child")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def configured_radiostations(value: str | None, config: Config) -> tuple[str, ...]:
    """The RadioStation targets from -r, else IP_RADIOSTATION:PORT_RADIOSTATION, with
    RADIOSTATION_STANDBY_TARGET after a single one (-r names the standby too when it names two)."""
    ip, port = str(config.IP_RADIOSTATION), int(config.PORT_RADIOSTATION)
    targets = radiostation_targets(value, ip, port)
    standby = str(config.RADIOSTATION_STANDBY_TARGET).strip()
    if len(targets) == 1 and standby:
        targets += radiostation_targets(standby, ip, port)
    return targets


def radiostation_targets(value: str | None, ip: str, port: int) -> tuple[str, ...]:
    """Targets from -r: "ip", "ip:port" or "ip:port,ip:port" (the second is a standby)."""
    if not value:
        return (f"{ip}:{port}",)
    targets = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        targets.append(part if ":" in part else f"{part}:{port}")
    if not targets:
        raise ConfigError(f"-r {value!r} names no RadioStation")
    return tuple(targets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, object] = {}
    if args.no_rest:
        overrides["RUN_REST_PROXY"] = False
    try:
        config = load_config(args.configure_file_path, overrides=overrides)
        port = args.port or int(config.PORT_PEER)
        targets = configured_radiostations(args.radio_station_target, config)
        setup_logging(config, debug=args.debug, process=f"peer:{port}")
        if config.MONITOR_LOG:
            start_shipping(config.MONITOR_LOG_HOST, config.MONITOR_LOG_PORT, "peer", f"peer:{port}")
        armed = failpoints.check()
    except (ConfigError, failpoints.FailPointError) as exc:
        print(f"peer.py: configuration error: {exc}", file=sys.stderr)
        return 2
    if armed:
        log.warning("fail points armed (this peer kills itself there): %s", ", ".join(armed))
    for line in settings_without_effect(config):
        log.warning("%s", line)
    try:
        password = key_password(args, peer_key_path(config, port, args.private))
    except PasswordError as exc:
        log.error("cannot start: %s", exc)
        return 1
    os.environ.pop(KEY_PASSWORD_ENV, None)  # no child of the peer inherits it
    # nor the TLS key's: its workers and REST proxy are handed it on stdin (review: a SCORE of
    # another channel read it from the proxy's /proc environ, and had the node's TLS identity)
    tls_password = os.environ.pop(TLS_PASSWORD_ENV, None)
    options = PeerOptions(
        port,
        targets,
        args.private,
        args.configure_file_path,
        args.debug,
        args.score,
        password,
        public_key_path=args.public,
        tls_password=tls_password,
    )
    return _run_node(PeerNode(config, options))


def worker_main(argv: list[str] | None = None) -> int:
    """A channel worker (`python -m loopchain.peer.worker --channel C --parent-pid P`): channel C
    of the peer P, as P describes it in JSON on stdin (with P's configuration and key: the worker
    reads neither file); ends when P ends. Its exit status tells P why it ended
    (loopchain.peer.workers)."""
    parser = argparse.ArgumentParser(prog="loopchain.peer.worker")
    parser.add_argument("--channel", required=True, help="the channel (as in the process list)")
    parser.add_argument("--parent-pid", type=int, default=0, help="end with this process")
    parser.add_argument(BEAT_FD_ARG, type=int, default=-1, help="beat on this pipe to its peer")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        raw = sys.stdin.buffer.read(MAX_WORKER_SPEC_BYTES + 1)
        if len(raw) > MAX_WORKER_SPEC_BYTES:
            raise ValueError(f"its peer sent more than the {MAX_WORKER_SPEC_BYTES} bytes it reads")
        spec = json.loads(raw)
        channel = spec["grant"]["channel"]
        if channel != args.channel:
            raise ValueError(f"--channel {args.channel} but its peer sent channel {channel}")
        options = worker_options(spec)
        config = worker_config(spec)
        if not keep_memory_private():  # its peer's key is in its memory from here on
            print("channel worker: could not make this process non-dumpable", file=sys.stderr)
        process = f"peer:{options.port}:{channel}"
        setup_logging(config, debug=options.debug, process=process)
        if config.MONITOR_LOG:
            start_shipping(config.MONITOR_LOG_HOST, config.MONITOR_LOG_PORT, "peer", process)
        failpoints.set_channel(channel)
        failpoints.check()
    except LogFileUnusable as exc:  # its peer opened it just before: no fault of the spec
        print(f"channel worker: cannot start: {exc}", file=sys.stderr)
        return 1  # (a crash: started again after a backoff, up to MAX_CRASHES)
    except (ConfigError, failpoints.FailPointError, ValueError, KeyError, TypeError) as exc:
        print(f"channel worker: cannot start: {exc}", file=sys.stderr)
        return WORKER_SPEC_REFUSED
    if not die_with_parent(args.parent_pid):
        return 0
    return _run_node(PeerNode(config, options), args.beat_fd)


def _run_node(node: PeerNode, beat_fd: int = -1) -> int:
    """Run `node` until a signal: 0, or 1 when it cannot start or its storage failed (in a
    channel worker: WORKER_STORAGE_FAILED when its storage failed or fails its checks)."""
    storage_failed = WORKER_STORAGE_FAILED if node.options.worker is not None else 1
    try:
        asyncio.run(_run(node, beat_fd))
    except (*STARTUP_ERRORS, BaseExceptionGroup) as exc:
        leaves = _leaves(exc)
        if not all(isinstance(leaf, STARTUP_ERRORS) for leaf in leaves):
            raise
        for leaf in leaves:
            log.error("cannot start: %s", leaf)
        if any(isinstance(leaf, (StorageError, BlockStoreError)) for leaf in leaves):
            return storage_failed
        return 1
    if node.failure:
        log.error("stopped: %s", node.failure)
        return storage_failed
    return 0


def key_password(args: argparse.Namespace, key_path: Path) -> str | None:
    """The key's password: --key-password-file, -a (with a warning), $LOOPCHAIN_KEY_PASSWORD, or
    typed at a terminal when the key file is encrypted; None when there is none."""
    password = choose_password(
        file=args.key_password_file,
        argv_value=args.key_password,
        env=KEY_PASSWORD_ENV,
        warn=log.warning,
        argv_flag="-a/--key_password",
        file_flag="--key-password-file",
    )
    if password is None and key_file_is_encrypted(key_path):
        password = prompt_password(f"password of the peer key {key_path}")
    return password


# Refusals that end the peer with a message, not a traceback: a port or store in use, a store
# that fails its checks, an unreadable key.
STARTUP_ERRORS = (OSError, StorageError, BlockStoreError, SignatureError)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as task groups raise them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _run(node: PeerNode, beat_fd: int) -> None:
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop)
    start_giving_back(int(node.config.MEMORY_GIVE_BACK_MB))
    await node.run(stop, opened=lambda: beat_to_parent(beat_fd))
