"""The peer's GetBlock with `unless_hash` (a poll of the last block): the last block is sent only
when it is another than the one the caller names; a block asked by height or hash is always
sent. A channel stands in that holds two final blocks as the store serves them."""

from __future__ import annotations

from typing import Any

from loopchain.blockchain.block_store import StoredBlock
from loopchain.p2p.peer_service import PeerServicer
from loopchain.protos import loopchain_pb2 as pb

OLD, LAST = bytes([1]) * 32, bytes([2]) * 32


class TwoBlocks:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def member_ids(self) -> set[str]:
        return set()

    def last_block_hash(self) -> bytes:
        return LAST

    def get_block(self, height: int, block_hash: bytes) -> StoredBlock | None:
        self.sent.append((height, block_hash))
        which = b"old" if block_hash == OLD or height == 0 else b"last"
        return StoredBlock("c", which, b"qc", b"")


class Backend:
    def __init__(self, channel: TwoBlocks) -> None:
        self._channel = channel

    def channel(self, name: str) -> Any:
        return self._channel


async def test_the_last_block_is_sent_only_when_it_is_another_than_the_one_named() -> None:
    channel = TwoBlocks()
    servicer = PeerServicer(Backend(channel), "peer")  # type: ignore[arg-type]

    async def ask(**fields: Any) -> pb.BlockReply:
        reply: pb.BlockReply = await servicer.GetBlock(
            pb.GetBlockRequest(channel="c", **fields), None
        )
        return reply

    unchanged = await ask(height=-1, unless_hash=LAST.hex())
    assert unchanged.unchanged and not unchanged.block and channel.sent == []
    assert (await ask(height=-1, unless_hash="0x" + LAST.hex().upper())).unchanged
    assert channel.sent == []
    for stale in (OLD.hex(), "", "zz"):  # another block, none, or a malformed hint: sent
        reply = await ask(height=-1, unless_hash=stale)
        assert not reply.unchanged and reply.block == b"last"
    # a block asked by height or hash is sent whatever unless_hash names
    assert (await ask(height=0, unless_hash=LAST.hex())).block == b"old"
    assert (await ask(block_hash=OLD.hex(), unless_hash=LAST.hex())).block == b"old"
    assert channel.sent == [(-1, b""), (-1, b""), (-1, b""), (0, b""), (0, OLD)]
