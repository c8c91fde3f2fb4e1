"""The peer's heartbeat loop asks the RadioStation for a channel's member list when a channel
wants a member it has no address for, without waiting for the next heartbeat, and never faster
than MEMBERS_RETRY_S, doubling while the member stays missing.

The RadioStation is an in-memory stand-in with the client's two methods the loop calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.p2p.radiostation_client import HeartbeatNews
from loopchain.peer import node as node_module
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.storage.memory import MemoryStore
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo
from loopchain.types.validators import ValidatorSet
from tests.unit._heartbeat import CHANNEL, HeartbeatChannel
from tools.procs import wait_until_async

pytestmark = pytest.mark.asyncio

DEADLINE = 30.0  # far below the heartbeat interval of these tests, far above the work


class RadioStation:
    """The two calls of RadioStationClient the heartbeat loop makes; each peer_list is timed."""

    clock_offset = 0.0  # its clock agrees with the peer's
    settings_differ = ""  # the peer's settings are the others'
    unreadable_set = None  # every set it sends is read

    def __init__(self) -> None:
        self.listed: list[float] = []

    async def heartbeat(
        self, signer: Signer, channel: str, peer_type: int, height: int, said: HeartbeatNews
    ) -> int:
        return 1  # the list's version never changes: only a wanted member makes it asked again

    def asked(self, times: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(self.listed) >= times

        return check

    async def peer_list(self, channel: str) -> tuple[list[PeerInfo], ValidatorSet | None]:
        self.listed.append(time.monotonic())
        return [PeerInfo("hx" + "1" * 40, "127.0.0.1:7100", 1)], None


def _node(tmp_path: Path) -> PeerNode:
    config = load_config(
        environ={},
        overrides={
            "HEARTBEAT_INTERVAL": 600.0,
            "HEARTBEAT_TIMEOUT": 1200.0,
            "DEFAULT_STORAGE_PATH": str(tmp_path),
        },
    )
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:7102",), None, None, False))
    node.signer = Signer.generate()
    node.node_store = MemoryStore()
    node.channels[CHANNEL] = HeartbeatChannel()  # type: ignore[assignment]
    return node


async def test_a_wanted_member_list_is_asked_for_at_once_and_no_faster_than_doubling(
    tmp_path: Path,
) -> None:
    node, rs, stop = _node(tmp_path), RadioStation(), asyncio.Event()
    loop = asyncio.create_task(node._heartbeat_loop(rs, stop))  # type: ignore[arg-type]
    try:
        await wait_until_async(rs.asked(1), DEADLINE, "the first member list")
        for times in range(2, 5):  # a member that stays missing: wanted again after each answer
            node._members_wanted.set()
            await wait_until_async(rs.asked(times), DEADLINE, "the member list again")
        assert len(rs.listed) == 4  # nothing asked without a reason (the interval is 600 s)
        gaps = [b - a for a, b in zip(rs.listed[1:], rs.listed[2:], strict=False)]
        retry = node_module.MEMBERS_RETRY_S
        assert gaps[0] >= 2 * retry * 0.9 and gaps[1] >= 4 * retry * 0.9, gaps
        stop.set()
        await asyncio.wait_for(loop, DEADLINE)  # a stop ends the wait at once
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
