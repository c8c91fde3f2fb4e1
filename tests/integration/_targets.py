"""Registering peers' targets as a RadioStation's probe meets them, served by real gRPC servers on
127.0.0.1: one that proves a key, and one that holds every probe until it is released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import Signer
from loopchain.types.peer import identify_digest
from tools.procs import free_port_pair


class TinyPeer(pb_grpc.PeerServiceServicer):
    """Answers GetStatus and Identify like a peer would (Identify with the key of `signer`)."""

    def __init__(self, peer_id: str, target: str, signer: Signer | None = None) -> None:
        self.peer_id, self.target, self.signer = peer_id, target, signer
        self.challenges: list[bytes] = []

    async def Identify(
        self, request: pb.IdentifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.IdentifyReply:
        assert self.signer is not None
        self.challenges.append(request.challenge)
        signature = self.signer.sign(identify_digest(request.challenge))
        return pb.IdentifyReply(peer_id=self.peer_id, signature=signature)

    async def GetStatus(
        self, request: pb.ChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PeerStatusReply:
        return pb.PeerStatusReply(
            channel=request.channel,
            peer_id=self.peer_id,
            peer_target=self.target,
            peer_type=1,
            block_height=7,
            total_tx=11,
            consensus="LFT",
        )


@asynccontextmanager
async def served(add: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> AsyncIterator[str]:
    """`servicer` (added by `add`, a generated add_*Servicer_to_server) on a plain gRPC server
    at a free target of 127.0.0.1; the target."""
    target = f"127.0.0.1:{free_port_pair()}"
    server = grpc.aio.server()
    add(servicer, server)
    server.add_insecure_port(target)
    await server.start()
    try:
        yield target
    finally:
        await server.stop(None)


@asynccontextmanager
async def tiny_peer(signer: Signer, key: Signer | None = None) -> AsyncIterator[str]:
    """A peer serving as `signer` at a free target; it signs challenges with `key` (default:
    its own key; another key plays a peer that does not hold the id it claims)."""
    peer = TinyPeer(signer.address, "", key or signer)
    async with served(pb_grpc.add_PeerServiceServicer_to_server, peer) as target:
        peer.target = target
        yield target


class HangingPeer(pb_grpc.PeerServiceServicer):
    """A target whose Identify never answers until `release` is set: a probe of it holds its
    registration's call (`entered` counts the probes that reached it)."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()

    async def Identify(
        self, request: pb.IdentifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.IdentifyReply:
        self.entered += 1
        await self.release.wait()
        return pb.IdentifyReply()  # proves no key: the registration is refused


@asynccontextmanager
async def hanging_peer() -> AsyncIterator[tuple[str, HangingPeer]]:
    """A HangingPeer served at a free target; released and stopped at the end."""
    peer = HangingPeer()
    try:
        async with served(pb_grpc.add_PeerServiceServicer_to_server, peer) as target:
            yield target, peer
    finally:
        peer.release.set()
