"""The proxy's v3 reader keeps a channel's name (for its SCORE's address) a few seconds, not for
good: a proxy started by hand may outlive its peer's configuration, whose default channel ("")
may then be another. A peer stands in that answers GetStatus with the name it serves now."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from loopchain.rest import icon_peer
from loopchain.rest.icon_peer import CHANNEL_NAME_TTL_S, PeerReader
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError


class Peer:
    """The PeerApi of a peer whose default channel is `default`; it counts GetStatus calls."""

    def __init__(self) -> None:
        self.default = "alpha"
        self.served = {"alpha", "beta"}
        self.asked = 0
        self.stub = SimpleNamespace(GetStatus="GetStatus")
        self.stopping = asyncio.Event()  # (PeerApi's: the proxy is not stopping)

    def __getattr__(self, name: str) -> Any:  # the submitters PeerReader makes: unused here
        if name.endswith("submitter"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    async def call_peer(self, method: str, request: Any) -> Any:
        assert method == "GetStatus"
        self.asked += 1
        name = request.channel or self.default
        if name not in self.served:
            raise JsonRpcError(JsonRpcCode.INVALID_PARAMS, f"channel {name!r} is not served")
        return SimpleNamespace(channel=name, block_height=7, nid="0x3")


async def test_a_channel_name_is_asked_once_in_its_time_and_again_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(icon_peer.time, "monotonic", lambda: now[0])
    peer = Peer()
    reader = PeerReader(peer)  # type: ignore[arg-type]
    assert [await reader.channel_name("") for _ in range(3)] == ["alpha"] * 3
    assert await reader.channel_name("beta") == "beta"
    assert peer.asked == 2  # once for "", once for "beta"
    peer.default = "beta"  # the peer restarted with another default channel
    now[0] += CHANNEL_NAME_TTL_S - 0.1
    assert await reader.channel_name("") == "alpha"  # still within its time
    now[0] += 0.2
    assert await reader.channel_name("") == "beta"  # asked again
    assert peer.asked == 3
    with pytest.raises(JsonRpcError) as refused:  # a channel not served is never kept
        await reader.channel_name("gamma")
    assert refused.value.code == JsonRpcCode.INVALID_PARAMS
    with pytest.raises(JsonRpcError):
        await reader.channel_name("gamma")
    assert peer.asked == 5
