"""Asks a registering peer to prove that its key answers at its target (PeerService.Identify):
a registration naming a dead target, or a target served by another key, never joins a channel."""

from __future__ import annotations

import os

import grpc

from loopchain.configure import Config
from loopchain.p2p.grpc_util import Tls, open_channel
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import recover_address
from loopchain.types.peer import IDENTIFY_CHALLENGE_BYTES, identify_digest


class TargetUnverified(Exception):
    """The target did not answer, or answered with another identity; the message says which."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry  # the target may answer later (down, slow); else it is someone else


async def verify_target(peer_id: str, target: str, config: Config, tls: Tls | None) -> None:
    """Return when the peer at `target` signs a fresh challenge with the key of `peer_id`."""
    challenge = os.urandom(IDENTIFY_CHALLENGE_BYTES)
    timeout = float(config.GRPC_TIMEOUT)
    async with open_channel(target, config, tls, peer_id) as channel:
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
