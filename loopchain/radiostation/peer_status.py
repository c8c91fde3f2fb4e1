"""Asks a registered peer for its live status over gRPC (PeerService.GetStatus), with a deadline."""

from __future__ import annotations

from typing import Any

import grpc

from loopchain.configure import Config
from loopchain.p2p.codec import peer_status_to_json
from loopchain.p2p.grpc_util import Tls, open_channel
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.registry import PeerRecord
from loopchain.types.codes import ResponseCode

# The largest status answer taken (its longest field: the names of the peer's channels, 16 KB at
# most): any client asks for any member's, and 8 answers of 60 MB held the RadioStation's loop
# 1.5 s and took 700 MB (review).
STATUS_REPLY_BYTES = 64 << 10


class PeerStatusError(Exception):
    """A peer's status could not be fetched; carries the REST response code and a message."""

    def __init__(self, code: ResponseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error_of(record: PeerRecord, exc: grpc.aio.AioRpcError, timeout: float) -> PeerStatusError:
    who = f"peer {record.peer_id} at {record.target}"
    status = exc.code()
    if status == grpc.StatusCode.UNAVAILABLE:
        return PeerStatusError(ResponseCode.FAIL, f"{who} is unreachable: {exc.details()}")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerStatusError(ResponseCode.TIMEOUT, f"{who} did not answer within {timeout} s")
    return PeerStatusError(ResponseCode.FAIL, f"{who} answered {status.name}: {exc.details()}")


async def fetch_status(
    record: PeerRecord, channel: str, config: Config, tls: Tls | None = None
) -> dict[str, Any]:
    """The peer's status as REST /api/v1/status/peer JSON; PeerStatusError when it fails."""
    timeout = float(config.GRPC_TIMEOUT)
    async with open_channel(
        record.target, config, tls, record.peer_id, max_receive=STATUS_REPLY_BYTES
    ) as channel_to_peer:
        stub = pb_grpc.PeerServiceStub(channel_to_peer)
        try:
            reply = await stub.GetStatus(pb.ChannelRequest(channel=channel), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error_of(record, exc, timeout) from None
    return peer_status_to_json(reply)
