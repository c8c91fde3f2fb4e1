"""Protobuf <-> domain and protobuf -> REST JSON conversions (the only place *_pb2 types are read)."""

from __future__ import annotations

from typing import Any

from loopchain.protos import loopchain_pb2 as pb


def peer_status_to_json(reply: pb.PeerStatusReply) -> dict[str, Any]:
    """A peer's status in the shape of REST /api/v1/status/peer."""
    return {
        "response_code": 0,
        "status": f"Service is online: {reply.peer_type}",
        "peer_type": str(reply.peer_type),
        "peer_id": reply.peer_id,
        "peer_target": reply.peer_target,
        "channel": reply.channel,
        "leader_id": reply.leader_id,
        "block_height": reply.block_height,
        "block_hash": reply.block_hash,
        "total_tx": reply.total_tx,
        "consensus": reply.consensus,
        "made_block_count": reply.made_block_count,
        "leader_complaint": reply.leader_complaint,
        "audience_count": reply.audience_count,
        "tx_pool_size": reply.tx_pool_size,
        "round": reply.round,
        "validator_count": reply.validator_count,
        "pending_validator_count": reply.pending_validator_count,
        "executed_height": reply.executed_height,
        "state_root": reply.state_root,
        "role": reply.role,
        "channels": list(reply.channels),
    }
