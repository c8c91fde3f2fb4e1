"""Asks a registering peer to prove that its key answers at its target (PeerService.Identify):
a registration naming a dead target, or a target served by another key, never joins a channel.

Over mutual TLS the probe first reads whose certificate the target serves, in a handshake that
names no server: a gRPC client names the peer id it expects (TLS SNI), and a gRPC server whose
certificate binds another id writes an ERROR line to its log for that name, so a member that
registered another node's address (the RadioStation's own among them) would have the probe write
ERROR lines into that node's log, and into the RadioStation's, at will."""

from __future__ import annotations

import asyncio
import os
import ssl

import grpc

from loopchain.configure import Config
from loopchain.p2p.grpc_util import Tls, open_channel
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import recover_address
from loopchain.types.peer import IDENTIFY_CHALLENGE_BYTES, identify_digest

# target checks a RadioStation makes at once. Each holds its registration's call for up to
# GRPC_TIMEOUT, at a target the caller names, so without a bound of their own (below the server's
# MAX_CALLS) registrations whose targets never answer took every call slot, and members'
# heartbeats were refused; past it a registration is refused at once, busy, without a probe.
MAX_PROBES = 32
# ... of them for callers from one source (an IPv4 address, an IPv6 /64, this host), and one at a
# time for a peer id: a probe that fails costs its caller nothing, so one caller registering keys
# of its own (open mode), or a listed member's key, at a target that takes connections and never
# answers held every slot for good, and no peer could register or rejoin (review)
MAX_PROBES_PER_SOURCE = 8
# The largest Identify answer taken (a peer id and a signature: ~110 bytes): the target is any
# registering stranger's, and 8 answers of 64 MB (GRPC_MAX_MESSAGE_BYTES) took 400 MB (review).
IDENTIFY_REPLY_BYTES = 4 << 10


class ProbeSlots:
    """The target checks in flight, by source and by peer id (see MAX_PROBES)."""

    def __init__(self) -> None:
        self.count = 0
        self._by_source: dict[str, int] = {}
        self._peer_ids: set[str] = set()

    def refusal(self, peer_id: str, source: str) -> str | None:
        """Why a check of `peer_id`'s target, asked from `source`, is refused now (None: it may
        take a slot)."""
        if self.count >= MAX_PROBES:
            return (
                f"this RadioStation is checking {self.count} registering peers' targets, as "
                "many as it checks at once (MAX_PROBES); try again shortly"
            )
        if peer_id in self._peer_ids:
            return f"the target of {peer_id} is being checked already; try again shortly"
        if self._by_source.get(source, 0) >= MAX_PROBES_PER_SOURCE:
            return (
                f"this RadioStation is checking {MAX_PROBES_PER_SOURCE} targets for callers from "
                f"{source}, as many as it checks at once for one source "
                "(MAX_PROBES_PER_SOURCE); try again shortly"
            )
        return None

    def take(self, peer_id: str, source: str) -> None:
        self.count += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        self._peer_ids.add(peer_id)

    def give_back(self, peer_id: str, source: str) -> None:
        self.count -= 1
        left = self._by_source[source] - 1
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]
        self._peer_ids.discard(peer_id)


class TargetUnverified(Exception):
    """The target did not answer, or answered with another identity; the message says which."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry  # the target may answer later (down, slow); else it is someone else


def _client_context(tls: Tls) -> ssl.SSLContext:
    """A TLS client context trusting the network's CA and presenting this node's certificate
    (loaded from memory: the key is never written to a disk), matching no host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # who serves is read from the certificate it serves
    context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
    context.set_alpn_protocols(["h2"])
    fd = os.memfd_create("loopchain-tls-client")
    try:
        with open(fd, "wb", closefd=False) as chain:
            chain.write(tls.cert_pem + b"\n" + tls.key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context


async def served_identity(target: str, tls: Tls, timeout: float) -> str:
    """The peer id bound by the certificate of the network's CA that `target` serves, read in a
    TLS handshake that sends no server name (TargetUnverified when none is read)."""
    from loopchain.types import certificates  # cryptography: only a RadioStation with TLS

    context = _client_context(tls)
    host, _, port = target.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), ssl=context, server_hostname=""
            )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        raise TargetUnverified(
            f"target {target} did not answer over TLS with a certificate of this network's CA: "
            f"{exc.__class__.__name__}",
            True,
        ) from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    try:
        cert = certificates.certificate_from_pem(ssl.DER_cert_to_PEM_cert(der).encode())
        return certificates.peer_identity(cert)[0]
    except certificates.CertificateError as exc:
        raise TargetUnverified(
            f"target {target} serves no peer's certificate: {exc}", False
        ) from None


async def verify_target(peer_id: str, target: str, config: Config, tls: Tls | None) -> None:
    """Return when the peer at `target` signs a fresh challenge with the key of `peer_id` (over
    TLS: to a client that names `peer_id`, once the target's certificate binds it)."""
    challenge = os.urandom(IDENTIFY_CHALLENGE_BYTES)
    timeout = float(config.GRPC_TIMEOUT)
    if tls is not None:
        served = await served_identity(target, tls, timeout)
        if served != peer_id:
            raise TargetUnverified(
                f"target {target} serves the certificate of {served[:50]!r}, not of {peer_id}",
                False,
            )
    async with open_channel(
        target, config, tls, peer_id, max_receive=IDENTIFY_REPLY_BYTES
    ) as channel:
        stub = pb_grpc.PeerServiceStub(channel)
        try:
            reply = await stub.Identify(pb.IdentifyRequest(challenge=challenge), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            raise TargetUnverified(
                f"target {target} did not prove the key of {peer_id}: {exc.code().name}", retry
            ) from None
    if reply.peer_id != peer_id:
        raise TargetUnverified(
            f"target {target} is peer {reply.peer_id[:50]!r}, not {peer_id}", False
        )
    try:
        signer = recover_address(identify_digest(challenge), reply.signature)
    except ValueError:
        signer = None
    if signer != peer_id:
        raise TargetUnverified(
            f"target {target} did not sign the challenge with the key of {peer_id}", False
        )
