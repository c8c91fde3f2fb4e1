"""What the RadioStation takes from the peers it calls, over a stand-in peer's real gRPC server on
127.0.0.1: the target a registering stranger names (Identify) and any member a client asks about
(GetStatus) answer in a few hundred bytes, and a larger answer is refused unread: 8 answers of
60 MB (GRPC_MAX_MESSAGE_BYTES allows 64) took the RadioStation 400-700 MB and held its loop."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from loopchain.configure import load_config
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.peer_status import STATUS_REPLY_BYTES, PeerStatusError, fetch_status
from loopchain.radiostation.probe import IDENTIFY_REPLY_BYTES, TargetUnverified, verify_target
from loopchain.radiostation.registry import PeerRecord
from loopchain.types.crypto import Signer
from loopchain.types.peer import identify_digest
from tests.integration._targets import served

pytestmark = pytest.mark.asyncio

CONFIG = load_config(environ={}, overrides={"GRPC_TIMEOUT": 5.0})
PEER = Signer.generate()


class Peer(pb_grpc.PeerServiceServicer):
    """Proves PEER's key and tells a status, each answer `padding` bytes larger than needed."""

    def __init__(self, padding: int) -> None:
        self.padding = padding

    async def Identify(self, request: pb.IdentifyRequest, context: Any) -> Any:
        signature = PEER.sign(identify_digest(request.challenge))
        return pb.IdentifyReply(peer_id=PEER.address + " " * self.padding, signature=signature)

    async def GetStatus(self, request: pb.ChannelRequest, context: Any) -> Any:
        return pb.PeerStatusReply(peer_id=PEER.address, consensus="x" * self.padding)


def serving(peer: Peer) -> AbstractAsyncContextManager[str]:
    return served(pb_grpc.add_PeerServiceServicer_to_server, peer)


async def test_a_target_answering_identify_at_length_is_refused_unread() -> None:
    async with serving(Peer(0)) as target:
        await verify_target(PEER.address, target, CONFIG, None)  # the right size: proven
    async with serving(Peer(IDENTIFY_REPLY_BYTES)) as target:
        with pytest.raises(TargetUnverified) as raised:
            await verify_target(PEER.address, target, CONFIG, None)
    assert "RESOURCE_EXHAUSTED" in raised.value.message
    assert not raised.value.retry


async def test_a_member_answering_its_status_at_length_is_refused_unread() -> None:
    async with serving(Peer(STATUS_REPLY_BYTES // 2)) as target:
        record = PeerRecord(PEER.address, target, "", 1, PEER.public_key)
        status = await fetch_status(record, "", CONFIG)
    assert status["peer_id"] == PEER.address and len(status["consensus"]) == STATUS_REPLY_BYTES // 2
    async with serving(Peer(STATUS_REPLY_BYTES)) as target:
        record = PeerRecord(PEER.address, target, "", 1, PEER.public_key)
        with pytest.raises(PeerStatusError) as raised:
            await fetch_status(record, "", CONFIG)
    assert "answered RESOURCE_EXHAUSTED" in raised.value.message
