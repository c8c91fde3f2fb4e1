"""gRPC channel and server construction with the project's limits, options and mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from loopchain import durable, fds
from loopchain.blockchain.chain import BLOCK_HEADROOM_BYTES
from loopchain.configure import Config, RefusalLog
from loopchain.safe_text import one_line, status_details
from loopchain.sources import host_source

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)

# metadata of a call a peer forwards to its channel worker: the address the peer took it from
FORWARDED_FROM_KEY = "x-loopchain-forwarded-from"


def caller_address(context: Any) -> str:
    """Who made a call, for a log line: the transport's address, or, for a call a peer forwarded
    to its channel worker, the address the peer took it from (believed on a unix socket only,
    which no one but this node's user can reach; the worker's own would say "unix:")."""
    forwarded = _forwarded_from(context)
    if forwarded is not None:
        return f"{one_line(forwarded)[:120]} (through its peer)"
    return str(context.peer())


def _forwarded_from(context: Any) -> str | None:
    """The address a call forwarded to a channel worker came to its peer from (None: a call
    not forwarded so)."""
    if str(context.peer()).startswith("unix:"):
        for key, value in context.invocation_metadata() or ():
            if key == FORWARDED_FROM_KEY:
                return str(value)
    return None


SSL_NONE = 0
SSL_MUTUAL = 2
TLS_PASSWORD_ENV = "LOOPCHAIN_TLS_KEY_PASSWORD"
# Revocation lists looked for in a node's TLS folder when GRPC_SSL_REVOKED_PATH is empty (both are
# used when both are there): serials in JSON, and the CA's CRL as certificate_util.py writes it.
REVOCATION_FILES = ("revoked.json", "ca.crl.pem")
CRL_PEM_START = b"-----BEGIN X509 CRL-----"
REVOCATION_RECHECK_S = 2.0  # how often a node looks whether its revocation lists changed
# The initial metadata a peer sends on a link stream it takes (a refused one ends without it).
STREAM_ACCEPTED = ("loopchain-stream", "accepted")
# trailing metadata of every refusal a handler answers (`refuse`): a status without it was not
# the handler's answer (the connection broke, the process died or stopped mid-call)
ANSWERED = ("loopchain-answered", "1")
NEVER_SENT = "failed to connect"  # how gRPC's UNAVAILABLE begins when no connection was had


class Revocations:
    """The serials a node's revocation lists name, read again when one of the files changes
    (looked at no more often than every REVOCATION_RECHECK_S), so that a revocation takes effect
    without a restart; callers are checked on every call. A list that cannot be read or used
    any more leaves the serials read before (and an error in the log): refusing every caller
    would stop the node, taking every caller would undo revocations."""

    def __init__(self, paths: tuple[Path, ...], ca_pem: bytes, required: bool) -> None:
        self._paths = paths  # those looked at; all must exist when `required` (a configured one)
        self._ca_pem = ca_pem
        self._required = required
        self._next_look = time.monotonic() + REVOCATION_RECHECK_S
        self._seen = self._stamp()
        self.crl_pem = b""  # the CRL among the lists (PEM, its CA's signature checked), if any
        self.serials = self._read()  # OSError at start: the node does not start

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _read(self) -> frozenset[int]:
        lists = self._paths if self._required else [p for p in self._paths if p.exists()]
        serials: set[int] = set()
        crl = b""
        for path in lists:
            data = _read(path, "revocation list")
            serials |= _revoked(path, data, self._ca_pem)
            if data.lstrip().startswith(CRL_PEM_START):
                crl = _crl_pem_alone(data)
        self.crl_pem = crl
        return frozenset(serials)

    def current(self) -> frozenset[int]:
        """The revoked serials, as the lists say now."""
        now = time.monotonic()
        if now < self._next_look:
            return self.serials
        self._next_look = now + REVOCATION_RECHECK_S
        stamp = self._stamp()
        if stamp == self._seen:
            return self.serials
        self._seen = stamp
        try:
            serials = self._read()
        except OSError as exc:
            log.error("%s; the revocations read before stay in force", exc)
            return self.serials
        if serials != self.serials:
            log.warning(
                "revocation lists changed: %d serials revoked (%d before)",
                len(serials),
                len(self.serials),
            )
        self.serials = serials
        return serials


@dataclass(frozen=True)
class Tls:
    """A node's TLS material: the CA it trusts, its certificate and key, and its revocations."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes  # unencrypted PKCS#8 PEM, as gRPC needs it
    revocations: Revocations | None = None
    # a TLS client of the same certificate and CA, to read the certificate another peer's server
    # presents (gRPC does not tell its client): see server_certs.ServerCheck
    handshake: ssl.SSLContext | None = None
    cert_path: Path | None = None  # where cert_pem was read (named in what is logged of it)

    @property
    def revoked(self) -> frozenset[int]:
        """The serials revoked now (the lists are read again when they change)."""
        return self.revocations.current() if self.revocations is not None else frozenset()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_tls(
    config: Config, default_dir: Path, password: str | None = None, *, notices: bool = True
) -> Tls | None:
    """The TLS material the configuration names (None when GRPC_SSL_TYPE is 0); the key's
    `password`, when not given, from LOOPCHAIN_TLS_KEY_PASSWORD. With `notices`, what the clock
    makes of the certificates is said (log_certificate_notices)."""
    kind = int(config.GRPC_SSL_TYPE)
    if kind == SSL_NONE:
        return None
    if kind != SSL_MUTUAL:
        raise OSError(f"GRPC_SSL_TYPE {kind} is not supported: use 0 (none) or 2 (mutual TLS)")

    def path(key: str, name: str) -> Path:
        return Path(config[key]) if config[key] else default_dir / name

    from cryptography import x509  # only nodes with TLS load it
    from cryptography.hazmat.primitives import serialization

    key_path, cert_path = (
        path("GRPC_SSL_KEY_PATH", "key.pem"),
        path("GRPC_SSL_CERT_PATH", "cert.pem"),
    )
    key_pem = _read(key_path, "TLS private key")
    if password is None:
        password = os.environ.get(TLS_PASSWORD_ENV)
    try:
        secret = password.encode() if password else None
        key = serialization.load_pem_private_key(key_pem, password=secret)
    except (ValueError, TypeError) as exc:
        raise OSError(f"cannot read the TLS private key: {exc}") from None
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = _read(cert_path, "TLS certificate")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise OSError(f"cannot read the TLS certificate {cert_path}: {exc}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        # the handshakes would fail, each with an error that does not say why
        raise OSError(
            f"the TLS private key {key_path} does not belong to the certificate {cert_path} "
            "(an issue cut short? issue the certificate again)"
        )
    ca_pem = _read(path("GRPC_SSL_CA_CERT_PATH", "ca.pem"), "CA certificate")
    try:
        handshake = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
        handshake.check_hostname = False  # the peer id the certificate binds is checked instead
        handshake.set_alpn_protocols(["h2"])  # as gRPC's client offers
        handshake.load_cert_chain(cert_path, key_path, password=password)
    except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise OSError(f"cannot use the TLS material in {cert_path.parent}: {exc}") from None
    tls = Tls(
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=plain,
        revocations=load_revocations(config, default_dir, ca_pem),
        handshake=handshake,
        cert_path=cert_path,
    )
    if notices:
        log_certificate_notices(tls, datetime.now(UTC))
    return tls


def log_certificate_notices(tls: Tls, now: datetime) -> int:
    """Say what `now` (this machine's clock) makes of this node's certificate and its CA's;
    how many things were said. An ERROR for one not valid: every handshake fails then, and TLS
    itself says only "certificate is not yet valid" or "has expired" in gRPC's own log, naming
    neither the certificate nor the clock (review: a peer 10 minutes behind its freshly issued
    certificate waited for its RadioStation for good, saying "UNAVAILABLE"); the node runs all
    the same: a clock set right makes it work. A WARNING for one that expires within
    certificates.EXPIRY_NOTICE_DAYS: peer certificates are issued for a year, and a network whose
    certificates were issued together stopped at once a year later, with nothing said before."""
    from loopchain.types import certificates

    try:
        cert = certificates.certificate_from_pem(tls.cert_pem)
        ca = certificates.certificate_from_pem(tls.ca_pem)
    except certificates.CertificateError:
        return 0  # files the handshake context took: its own errors say enough
    named = [
        (
            cert,
            f"this node's TLS certificate {tls.cert_path or ''} ",
            "every TLS link of this node fails",
            "issue it again (certificate_util.py peer issue) and restart this node with the new "
            "one",
        ),
        (
            ca,
            "the CA certificate ",
            "every certificate it issued fails",
            "make a new CA, issue every node's certificate again and restart the nodes with them",
        ),
    ]
    # a certificate that ends with its CA would too issued again: the CA's notice says it
    with_ca = cert.not_valid_after_utc >= ca.not_valid_after_utc
    said = 0
    for subject, what, fails, remedy in named:
        problem = certificates.window_problem(subject, now, what)
        expired = now > subject.not_valid_after_utc
        if subject is cert and with_ca and (expired or problem is None):
            continue
        if problem is not None:
            log.error(
                "%s, by this machine's clock (%s UTC): every TLS handshake with it fails%s",
                problem,
                now.isoformat(timespec="seconds").removesuffix("+00:00"),
                f": {remedy} (if it should still be valid, this clock is ahead: set it right, NTP)"
                if expired
                else " until it is valid. If the certificate is right, this clock is wrong: set "
                "it right (NTP); else issue the certificate again",
            )
            said += 1
        elif (notice := certificates.expiry_notice(subject, now, what)) is not None:
            log.warning("%s: %s after that: %s before then", notice, fails, remedy)
            said += 1
    return said


CERTIFICATE_CHECK_S = 86_400.0  # how often a running node says what its clock makes of them


async def watch_certificates(
    tls: Tls,
    stop: asyncio.Event,
    every: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Say what the clock makes of this node's certificates (log_certificate_notices) every
    `every` seconds (CERTIFICATE_CHECK_S), until `stop` is set: a node runs for months, and one
    that said nothing at its start said nothing before its certificate expired."""
    every = CERTIFICATE_CHECK_S if every is None else every
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()
            return
        log_certificate_notices(tls, clock())


def load_revocations(config: Config, default_dir: Path, ca_pem: bytes) -> Revocations:
    """The revocation lists of a node: GRPC_SSL_REVOKED_PATH (which must be there) when set,
    else those of REVOCATION_FILES found in `default_dir`, its TLS folder; OSError when one
    cannot be read or used."""
    configured = str(config.GRPC_SSL_REVOKED_PATH)
    if configured:
        return Revocations((Path(configured),), ca_pem, required=True)
    lists = tuple(default_dir / name for name in REVOCATION_FILES)
    return Revocations(lists, ca_pem, required=False)


def client_revocations(config: Config, default_dir: Path) -> Revocations:
    """The revocation lists (load_revocations) against which a REST server with mutual TLS
    checks its clients, for the CA GRPC_SSL_CA_CERT_PATH names (by default ca.pem in
    `default_dir`, the node's TLS folder); OSError when the CA or a list cannot be read or used."""
    ca_path = Path(config.GRPC_SSL_CA_CERT_PATH or default_dir / "ca.pem")
    return load_revocations(config, default_dir, ca_path.read_bytes())


def _revoked(path: Path, data: bytes, ca_pem: bytes) -> set[int]:
    """The serials a revocation list (`data`, read from `path`) names: a JSON list of serials,
    or a CRL in PEM, which must be signed by the CA (as tools/certificate_util.py and the
    RadioStation write ca.crl.pem)."""
    from loopchain.types import certificates  # only nodes with TLS load it

    try:
        ca_cert = certificates.certificate_from_pem(ca_pem)
        return certificates.revoked_serials_from_bytes(data, ca_cert)
    except certificates.CertificateError as exc:
        raise OSError(f"cannot use the revocation list {path}: {exc}") from None


def _crl_pem_alone(data: bytes) -> bytes:
    """The CRL of `data` (checked by _revoked) as PEM alone: as a peer writes what it installs
    (install_crl), so that a RadioStation's file with other line ends or text around its CRL
    has the digest of the one the peers hold."""
    from loopchain.types import certificates

    return certificates.crl_to_pem(certificates.crl_from_pem(data))


class CrlRefused(ValueError):
    """A CRL the RadioStation served that this node does not install (the message says why)."""


def install_crl(tls_dir: Path, pem: bytes, ca_pem: bytes) -> int:
    """Install `pem`, the CRL the RadioStation serves, as this node's tls_dir/ca.crl.pem (which
    its revocations read again within REVOCATION_RECHECK_S): it must be signed by this node's CA
    and issued later than the one installed (its lastUpdate), so that a RadioStation can neither
    forge revocations nor roll them back. The serials it revokes; CrlRefused saying why not."""
    from loopchain.types import certificates  # only nodes with TLS load it

    try:
        ca_cert = certificates.certificate_from_pem(ca_pem)
        crl = certificates.crl_from_pem(pem)
        serials = certificates.crl_entries(crl, ca_cert)
    except certificates.CertificateError as exc:
        raise CrlRefused(str(exc)) from None
    path = tls_dir / REVOCATION_FILES[1]
    try:
        installed = certificates.crl_from_pem(path.read_bytes())
    except FileNotFoundError:
        installed = None
    except (OSError, certificates.CertificateError):
        installed = None  # unreadable or damaged: the CA-signed one replaces it
    if installed is not None and crl.last_update_utc <= installed.last_update_utc:
        raise CrlRefused(
            f"it was issued {crl.last_update_utc.isoformat()}, not after this node's "
            f"({installed.last_update_utc.isoformat()})"
        )
    durable.write_atomic(path, certificates.crl_to_pem(crl))  # not the bytes around it
    return len(serials)


# How long one connection attempt may take before gRPC gives it up and starts another after its
# backoff (`initial`/`max_reconnect_backoff_ms`): TCP, TLS and HTTP/2 handshakes, three round
# trips (1.8 s between peers 300 ms apart) and a lost packet or two. gRPC's default is 20 s:
# across a network that drops packets without a word (a firewall, a routed network's cut), an
# attempt made during the cut waits for the kernel's SYN retransmissions (1, 3, 7, 15 s after it
# began), so a channel got its connection back up to ~8 s after the path healed (7.7 s measured
# after a 12 s cut). With 6 s the attempts follow each other, their SYNs at most 3 s apart.
MIN_CONNECT_TIMEOUT_MS = 6_000
CLIENT_PING_INTERVAL_MS = 10_000  # a client's keepalive ping while it has calls open
# A peer's link to another peer pings it this often, calls open or not, and drops the
# connection when a ping is not answered within LINK_PING_TIMEOUT_MS: gRPC answers pings on
# its own threads, without the event loop, so only a process that does not run at all (stopped,
# frozen, or its host gone) misses them, not a busy one. Its calls then fail UNAVAILABLE and the
# link tells the peer unreachable (peer_client.PeerLink) within ~6 s, where without the pings
# a stopped peer's connection stayed open, each message to it waiting out its deadline. A ping
# waits behind the data the link has written before it (a ping's timer starts as it is written):
# the timeout leaves a slow link room for a few MB of proposals ahead of it. (gRPC 1.85 waits
# for the answer to any ping in flight, a flow-control probe's too, before it sends the next
# keepalive, so that ping's timeout, not only the keepalive's, bounds how long a stop goes
# unseen: both are LINK_PING_TIMEOUT_MS.)
LINK_PING_INTERVAL_MS = 1_000
LINK_PING_TIMEOUT_MS = 5_000
# the shortest interval between two pings a server takes (at most half its clients' interval)
SERVER_MIN_PING_INTERVAL_MS = LINK_PING_INTERVAL_MS // 2


def channel_options(
    config: Config, *, watched: bool = False, max_receive: int | None = None
) -> list[tuple[str, int]]:
    """The options of a client channel; `watched`: pinged as a peer link's (see
    LINK_PING_INTERVAL_MS); `max_receive`: the largest answer taken, when smaller than
    GRPC_MAX_MESSAGE_BYTES (a call whose answers are small, to a server a stranger named)."""
    size = int(config.GRPC_MAX_MESSAGE_BYTES)
    options = [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", min(size, max_receive or size)),
        ("grpc.enable_retries", 0),
        ("grpc.keepalive_time_ms", CLIENT_PING_INTERVAL_MS),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ]
    if watched:
        options += [
            ("grpc.keepalive_time_ms", LINK_PING_INTERVAL_MS),
            ("grpc.keepalive_timeout_ms", LINK_PING_TIMEOUT_MS),
            ("grpc.http2.ping_timeout_ms", LINK_PING_TIMEOUT_MS),  # any ping (default 60 s)
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # 0: no limit (gRPC's default: 2)
        ]
    return list(dict(options).items())


def open_channel(
    target: str,
    config: Config,
    tls: Tls | None = None,
    server_name: str = "",
    *,
    watched: bool = False,
    max_receive: int | None = None,
) -> grpc.aio.Channel:
    """An aio channel to `target` (host:port): plain, or mutual TLS expecting the server's
    certificate to name `server_name` (a peer id, or the RadioStation's name); `watched` and
    `max_receive`: see channel_options."""
    options: list[tuple[str, Any]] = list(
        channel_options(config, watched=watched, max_receive=max_receive)
    )
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, credentials, options=options)


MAX_RANGE_REPLY_BYTES = 16 << 20  # see range_reply_bytes


def range_reply_bytes(max_proposal: int) -> int:
    """The bytes of blocks a GetBlockRange reply holds at most (the caller asks again for the
    rest): MAX_RANGE_REPLY_BYTES, or two of the largest blocks a member takes (`max_proposal`)
    when more, so that a range's first block is proven final by the next."""
    return max(MAX_RANGE_REPLY_BYTES, 2 * max_proposal)


def max_proposal_bytes(max_block_kbytes: int) -> int:
    """The largest proposal taken from a member, before it is decoded: twice the transactions a
    block of MAX_BLOCK_KBYTES holds (a leader may be configured otherwise; its block is judged
    once decoded) and room for the rest. A larger one would cost seconds of decoding and many
    times its size in memory before any check."""
    return 2 * max_block_kbytes * 1024 + BLOCK_HEADROOM_BYTES


REQUEST_ENVELOPE_BYTES = 64 << 10  # a request's fields besides its block or transactions


def max_submissions_bytes(config: Config) -> int:
    """The bytes of client submissions a REST proxy sends its peer in one call (at least one
    submission of REST_MAX_BODY_BYTES fits)."""
    return max(max_proposal_bytes(int(config.MAX_BLOCK_KBYTES)), int(config.REST_MAX_BODY_BYTES))


def max_request_bytes(config: Config) -> int:
    """The largest request a peer's gRPC server takes (refused by its length prefix, unread):
    a proposal, or a proxy's batch of client submissions, and their envelope."""
    return max_submissions_bytes(config) + REQUEST_ENVELOPE_BYTES


# Transport bounds of every server: what connections and streams may hold before any handler
# runs (without them, a client that is no member held GBs through 64 MiB messages, unfinished
# messages or read-ahead, and the peer's file descriptors through thousands of idle connections)
SERVER_MAX_CONNECTIONS = (
    512  # per listening port; more are closed at accept (see connections_a_port)
)
SERVER_HANDSHAKE_TIMEOUT_MS = 10_000  # TCP accepted, TLS / HTTP/2 preface not done (default 120 s)
SERVER_MAX_CONNECTION_IDLE_MS = 300_000  # a connection with no call for this long gets GOAWAY
SERVER_STREAM_WINDOW_BYTES = 1 << 20  # read-ahead per stream (BDP probing would grow it to 128 MiB)


def connections_a_port(ports: int, wanted: int = SERVER_MAX_CONNECTIONS) -> int:
    """The connections each of a server's `ports` listening ports holds: `wanted`, or fewer, so
    that they take at most half of the descriptors this process may open (its soft limit raised
    first as far as they need, up to the hard one): the other half is for its stores (LevelDB
    keeps an eighth of the limit open each), links, SCORE sockets and logs. Without this, a flood
    of connections took every descriptor (the stores' and the SCORE's too)."""
    soft = fds.raise_soft_limit(2 * ports * wanted)
    if soft is None:
        return wanted
    cap = max(1, min(wanted, soft // 2 // ports))
    if cap < wanted:
        log.warning(
            "at most %d gRPC connections a port (%d wanted): this process may open only %d file "
            "descriptors (raise its limit: ulimit -n)",
            cap,
            wanted,
            soft,
        )
    return cap


def server_options(
    config: Config,
    max_receive: int,
    max_rpcs: int | None,
    max_connections: int = SERVER_MAX_CONNECTIONS,
) -> list[tuple[str, int]]:
    """Options of a server taking requests of at most `max_receive` bytes (checked by gRPC on a
    message's length prefix; its replies may be up to GRPC_MAX_MESSAGE_BYTES), at most
    `max_rpcs` streams on one connection and `max_connections` connections a port."""
    size = int(config.GRPC_MAX_MESSAGE_BYTES)
    options = [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", min(size, max_receive)),
        ("grpc.keepalive_time_ms", 10_000),
        # the pings its clients send on idle streams (channel_options: every 10 s) and peer
        # links (every second, calls open or not) are welcome: gRPC's default (one in 5
        # minutes, none without a call) answered them with GOAWAY "too_many_pings"
        ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.server_handshake_timeout_ms", SERVER_HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", SERVER_MAX_CONNECTION_IDLE_MS),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", SERVER_STREAM_WINDOW_BYTES),
    ]
    if max_rpcs is not None:  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default: unbounded)
        options.append(("grpc.max_concurrent_streams", max_rpcs))
    return options


def create_server(
    config: Config,
    count_refusal: Callable[[str, str], None] | None = None,
    *,
    max_receive: int | None = None,
    max_rpcs: int | None = None,
    max_unary: int | None = None,
    max_connections: int = SERVER_MAX_CONNECTIONS,
) -> grpc.aio.Server:
    """An aio server taking requests of at most `max_receive` bytes (default
    GRPC_MAX_MESSAGE_BYTES), `max_rpcs` calls at once from one source (an address: see
    `call_source`; more are answered RESOURCE_EXHAUSTED before their request is read; None: no
    bound), of which at most `max_unary` one-request, one-reply calls in handlers in all (more
    are answered RESOURCE_EXHAUSTED: the rest stays for streams), and `max_connections`
    connections a port of `max_rpcs` calls each, with no port sharing; it answers a request
    whose bytes are not its method's message with INVALID_ARGUMENT, and a call whose request
    has not come within REQUEST_WAIT_S with DEADLINE_EXCEEDED (refusals counted by
    `count_refusal(method name, status name)` when given).

    Calls are bounded by source, not in all: gRPC's own bound (maximum_concurrent_rpcs) counts a
    call from its headers on, and nothing ended a call whose request never came, so one
    stranger's connection opening such calls took every slot of a peer, and every other peer's
    stream and call was refused (the chain stopped)."""
    receive = max_receive if max_receive is not None else int(config.GRPC_MAX_MESSAGE_BYTES)
    return grpc.aio.server(
        options=server_options(config, receive, max_rpcs, max_connections),
        interceptors=[CheckedRequests(count_refusal, max_unary, max_rpcs)],
    )


_STATUS_BY_VALUE = {status.value[0]: status for status in grpc.StatusCode}


def status_of(value: int) -> grpc.StatusCode:
    """The gRPC status a reply names by its number (a batch's per-item refusal); UNKNOWN for a
    number no status has."""
    return _STATUS_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> Any:
    """Answer a call with `code` and `message`: its handler returns what this returns (gRPC sends
    no answer message with a status other than OK). Unlike `context.abort`, which raises, this
    leaves no exception whose traceback keeps the handler's frames, and so the request, in a
    reference cycle until a full garbage collection (a flood of refused 3 MiB calls held ~660 MiB
    that way). The message is made one line and bounded (safe_text.status_details): it may quote
    what the caller sent, and a trailer past gRPC's size limits reaches the caller as "Stream
    removed" instead of the refusal."""
    context.set_code(code)
    context.set_details(status_details(message))
    context.set_trailing_metadata((ANSWERED,))
    return None


def answered_by_handler(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a failed call's status is its handler's refusal (`refuse`), not the transport's
    or a stopping process's."""
    trailing = exc.trailing_metadata() or ()
    return any((key, value) == ANSWERED for key, value in trailing)


class _Undecodable:
    """What a request whose bytes do not parse is handed over as: why they do not."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


REQUEST_WAIT_S = 30.0  # a one-request call's request must have come by then (from its headers)


def call_source(context: grpc.aio.ServicerContext) -> str:
    """Where a call comes from, as calls are bounded by: see `address_source`."""
    return address_source(str(context.peer()))


def first_source(context: Any) -> str:
    """`call_source`, or for a call its peer forwarded to a channel worker, the source of the
    address the peer took it from (a worker's own calls all come from "local")."""
    forwarded = _forwarded_from(context)
    return address_source(forwarded) if forwarded is not None else call_source(context)


def address_source(address: str) -> str:
    """The source of a gRPC peer `address` ("ipv4:10.1.2.3:5555"): its IPv4 address, its IPv6
    address's /64 network (what one host is given; a link-local address, with its zone, alone),
    or "local" for a unix socket."""
    kind, _, rest = address.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":  # gRPC writes the brackets percent-encoded: "ipv6:%5B::1%5D:40548"
        return host_source(urllib.parse.unquote(rest.rpartition(":")[0]).strip("[]"))
    return "local" if kind == "unix" else address


class CallsBySource:
    """Calls open now by source, at most `limit` each (None: any number); `what` they are, for
    a refusal's words."""

    __slots__ = ("held", "limit", "what")

    def __init__(self, limit: int | None, what: str = "calls") -> None:
        self.limit = limit
        self.what = what
        self.held: dict[str, int] = {}

    def take(self, source: str) -> str | None:
        """Count a call of `source`; or why it is refused (nothing counted)."""
        held = self.held.get(source, 0)
        if self.limit is not None and held >= self.limit:
            return f"{held} {self.what} from {source} are open on this server, limit {self.limit}"
        self.held[source] = held + 1
        return None

    def give(self, source: str) -> None:
        held = self.held[source] - 1
        if held:
            self.held[source] = held
        else:
            del self.held[source]


class _UnaryCalls:
    """One-request, one-reply calls in a handler now, at most `limit` (None: any number)."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held = 0


class CheckedRequests(grpc.aio.ServerInterceptor):
    """A request (or a stream's message) whose bytes are not its method's message is answered
    INVALID_ARGUMENT "malformed request: ..." and logged as a refusal (rate-limited): left to
    gRPC, each such call logged an ERROR with a traceback and was answered UNKNOWN. A
    one-request call past `max_unary` in handlers at once is answered RESOURCE_EXHAUSTED."""

    MAX_METHODS = 256  # checked handlers kept, one per method served

    def __init__(
        self,
        count_refusal: Callable[[str, str], None] | None = None,
        max_unary: int | None = None,
        max_a_source: int | None = None,
    ) -> None:
        self._checked: dict[str, grpc.RpcMethodHandler] = {}
        self._count = count_refusal
        self._unary = _UnaryCalls(max_unary)
        self._sources = CallsBySource(max_a_source)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        checked = self._checked.get(method)
        if checked is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
                return handler
            checked = _checked_handler(handler, method, self._count, self._unary, self._sources)
            if len(self._checked) < self.MAX_METHODS:
                self._checked[method] = checked
        return checked


def _checked_handler(
    handler: Any,
    method: str,
    count: Callable[[str, str], None] | None,
    unary: _UnaryCalls,
    sources: CallsBySource,
) -> Any:
    decode = handler.request_deserializer
    if decode is None:
        return handler

    def safe_decode(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # protobuf's DecodeError, or whatever a parser raises
            return _Undecodable(f"{type(exc).__name__}: {exc}"[:200])

    def refused(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> Any:
        if count is not None:
            count(method.rpartition("/")[2], code.name)
        return refuse(context, code, message)

    def refuse_malformed(bad: _Undecodable, context: grpc.aio.ServicerContext) -> Any:
        REFUSALS.refused(
            "refused a call from %s: %s malformed request", caller_address(context), method
        )
        return refused(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {bad.error}")

    async def taken(context: grpc.aio.ServicerContext) -> str:
        """The call's source, the call counted against it; or the call is refused (abort: its
        request is not read yet, and a status set is sent only once it is)."""
        source = call_source(context)
        refusal = sources.take(source)
        if refusal is not None:
            if count is not None:
                count(method.rpartition("/")[2], grpc.StatusCode.RESOURCE_EXHAUSTED.name)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, status_details(refusal))
        return source

    if handler.unary_unary is not None:
        unary_handler = handler.unary_unary

        async def checked_unary(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> Any:
            # served as a stream of one request, read here: a call counts against its source
            # from its headers on, and ends when its request does not come
            source = await taken(context)
            try:
                try:
                    async with asyncio.timeout(REQUEST_WAIT_S):
                        request = await context.read()
                except TimeoutError:
                    if count is not None:
                        count(method.rpartition("/")[2], grpc.StatusCode.DEADLINE_EXCEEDED.name)
                    await context.abort(  # see taken
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the request did not come within {REQUEST_WAIT_S:g} s",
                    )
                if request is grpc.aio.EOF:
                    # not counted: gRPC ends the read so for a caller that cancelled or went
                    # away, and for a request past its size bound (which it answers itself)
                    return refuse(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the call ended without a request",
                    )
                if isinstance(request, _Undecodable):
                    return refuse_malformed(request, context)
                if unary.limit is not None and unary.held >= unary.limit:
                    message = (
                        f"{unary.held} calls are in this server's handlers, limit {unary.limit}"
                    )
                    return refused(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
                unary.held += 1
                try:
                    answer = unary_handler(request, context)
                    return await answer if inspect.isawaitable(answer) else answer
                finally:
                    unary.held -= 1
            finally:
                sources.give(source)

        return grpc.stream_unary_rpc_method_handler(
            checked_unary,
            request_deserializer=safe_decode,
            response_serializer=handler.response_serializer,
        )

    async def decoded(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                refuse_malformed(request, context)
                return  # the stream ends: its handler's answer is discarded for the refusal
            yield request

    if handler.stream_unary is not None:
        streamed = handler.stream_unary

        async def checked_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> Any:
            source = await taken(context)
            try:
                answer = streamed(decoded(requests, context), context)
                return await answer if inspect.isawaitable(answer) else answer
            finally:
                sources.give(source)

        return grpc.stream_unary_rpc_method_handler(
            checked_stream,
            request_deserializer=safe_decode,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:  # its servicer writes its replies (context.write)
        both = handler.stream_stream

        async def checked_both(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> None:
            source = await taken(context)
            try:
                await both(decoded(requests, context), context)
            finally:
                sources.give(source)

        return grpc.stream_stream_rpc_method_handler(
            checked_both,
            request_deserializer=safe_decode,
            response_serializer=handler.response_serializer,
        )
    return handler


def bind(server: grpc.aio.Server, host: str, port: int, tls: Tls | None = None) -> None:
    """Bind `host:port` (mutual TLS when `tls` is given), failing at once with a clear message
    when the port is taken."""
    address = f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_pem, tls.cert_pem)],
                root_certificates=tls.ca_pem,
                require_client_auth=True,
            )
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: port in use or not allowed ({exc})") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}: port in use or not allowed")


def caller_certificate(context: Any) -> bytes | None:
    """The PEM certificate the calling node presented (None on a plain, local connection)."""
    auth = context.auth_context()
    certs = auth.get("x509_pem_cert") if auth else None
    return bytes(certs[0]) if certs else None
