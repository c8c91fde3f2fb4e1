"""Replies a caller does not read, over real gRPC: a peer counts the bytes of the replies it has
made and not yet sent, refuses large ones past its bounds (RESOURCE_EXHAUSTED), and gives the
bytes back once the call is done, so that one caller cannot make it hold GBs and others still
sync from it."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import peer_service
from loopchain.p2p.grpc_util import max_proposal_bytes
from loopchain.p2p.peer_service import BlockRangeResult
from loopchain.p2p.server import start_peer_server
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from tests.integration._one_channel import CHANNEL, OneChannelBackend
from tools.procs import free_port_pair, wait_until_async

CONFIG = load_config(environ={})
BLOCK = b"{" * (1 << 20)
RANGE_BLOCKS = 8  # an 8 MiB reply, as a range of full blocks is
CALLS = 10


class _Channel:
    """Serves an 8 MiB range of blocks, whatever is asked."""

    def __init__(self) -> None:
        self.ranges = 0

    def member_ids(self) -> set[str]:
        return set()

    def block_range(
        self, from_height: int, max_blocks: int, max_bytes: int = 0
    ) -> BlockRangeResult:
        self.ranges += 1
        return BlockRangeResult([(BLOCK, b"{}")] * RANGE_BLOCKS, 1000, None)


class _Monitor:
    def __init__(self) -> None:
        self.errors: Counter[tuple[str, str]] = Counter()

    def rpc_error(self, method: str, code: str) -> None:
        self.errors[method, code] += 1

    def exposition(self) -> bytes:
        return b""


def _reply_bytes() -> int:
    one = pb.FinalBlock(block=BLOCK, certificate=b"{}")
    return pb.BlockRange(channel=CHANNEL, blocks=[one] * RANGE_BLOCKS, tip_height=1000).ByteSize()


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK header field: literal, not indexed, no Huffman coding."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


Asking = tuple[asyncio.StreamWriter, "asyncio.Task[None]"]


async def _ask_without_reading(port: int, calls: int) -> Asking:
    """An HTTP/2 connection whose streams take no reply bytes (SETTINGS_INITIAL_WINDOW_SIZE 0),
    asking `calls` GetBlockRange calls; the server's settings and pings are answered by a task
    of the event loop, so it stays up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, struct.pack(">HI", 4, 0)))
    request = pb.BlockRangeRequest(channel=CHANNEL, max_blocks=100).SerializeToString()
    body = b"\x00" + struct.pack(">I", len(request)) + request
    head = (
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/loopchain.PeerService/GetBlockRange"),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    )
    block = b"".join(_literal(name, value) for name, value in head)
    for n in range(calls):
        stream = 2 * n + 1
        writer.write(_frame(1, 0x4, stream, block) + _frame(0, 0x1, stream, body))
    await writer.drain()

    async def answer() -> None:
        try:
            while True:
                header = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
                if header[3] == 4 and not header[4] & 1:
                    writer.write(_frame(4, 1, 0))
                elif header[3] == 6 and not header[4] & 1:
                    writer.write(_frame(6, 1, 0, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    return writer, asyncio.create_task(answer())


async def _close(asking: Asking) -> None:
    writer, answering = asking
    writer.close()
    await asyncio.gather(answering, return_exceptions=True)


async def test_replies_a_caller_does_not_read_are_bounded_and_others_still_get_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller that reads nothing asked ten 8 MiB ranges: the peer kept all ten (40 such calls
    on one connection held 3.9 GB). Now the ones past its share (UNSENT_RANGES_A_CALLER ranges
    of at most range_reply_bytes) are refused RESOURCE_EXHAUSTED; another caller still gets its
    range meanwhile; and once the first connection goes, its bytes are given back. (Callers are
    told apart by host; on this one, by connection.)"""
    monkeypatch.setattr(peer_service, "call_source", lambda context: str(context.peer()))
    monkeypatch.setattr(peer_service, "RANGES_A_CALLER", CALLS)  # (this bound alone here)
    channel = _Channel()
    monitor = _Monitor()
    port = free_port_pair()
    server = await start_peer_server(OneChannelBackend(channel), "p", CONFIG, port, None, monitor)
    non_reader = await _ask_without_reading(port, CALLS)
    try:

        async def all_answered() -> bool:
            return channel.ranges == CALLS

        await wait_until_async(all_answered, 30, "every range to be made")
        refused = monitor.errors["GetBlockRange", "RESOURCE_EXHAUSTED"]
        largest = max_proposal_bytes(int(CONFIG.MAX_BLOCK_KBYTES))
        share = peer_service.UNSENT_RANGES_A_CALLER * peer_service.range_reply_bytes(largest)
        # What the caller holds stays within its share. (How many are refused is not exact: a
        # reply gRPC fails to send is done, its bytes given back, and a later call may then go.)
        held = server._servicer.unsent.held
        assert 0 < held <= share
        assert 0 < refused < CALLS
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as other:
            request = pb.BlockRangeRequest(channel=CHANNEL, max_blocks=100)
            reply = await pb_grpc.PeerServiceStub(other).GetBlockRange(request, timeout=30)
        assert len(reply.blocks) == RANGE_BLOCKS
    finally:
        await _close(non_reader)

    async def given_back() -> bool:
        return server._servicer.unsent.held == 0

    await wait_until_async(given_back, 30, "the unread replies' bytes to be given back")
    await server.stop(0)


class _HeldChannel(_Channel):
    """A range read that waits until the test lets it go, noting the thread it runs in (`small`:
    a range of one small block, not 8 MiB)."""

    def __init__(self, small: bool = False) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.release = threading.Event()
        self.small = small

    def block_range(
        self, from_height: int, max_blocks: int, max_bytes: int = 0
    ) -> BlockRangeResult:
        self.threads.append(threading.current_thread().name)
        assert self.release.wait(30), "the test never let the range go"
        if self.small:
            return BlockRangeResult([(b"{}", b"{}")], 1000, None)
        return super().block_range(from_height, max_blocks, max_bytes)


async def test_a_block_range_is_read_and_built_beside_the_event_loop() -> None:
    """A range of blocks (up to 16 MiB read from the store and copied into the reply) is made
    in a thread of its own pool, RANGE_BUILDERS at once, while the event loop goes on serving:
    a status call is answered while a range is being read. Before, the whole read and build took
    one turn of the loop, and two callers asking a dozen ranges a second made a peer fail every
    round it led (review)."""
    channel = _HeldChannel()
    port = free_port_pair()
    server = await start_peer_server(
        OneChannelBackend(channel), "p", CONFIG, port, None, _Monitor()
    )
    options = [("grpc.max_receive_message_length", 64 << 20)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as link:
            stub = pb_grpc.PeerServiceStub(link)
            request = pb.BlockRangeRequest(channel=CHANNEL, max_blocks=100)
            asked = asyncio.ensure_future(stub.GetBlockRange(request, timeout=60))

            async def reading() -> bool:
                return bool(channel.threads)

            await wait_until_async(reading, 30, "the range to be read")
            metrics = await stub.GetMetrics(pb.MetricsRequest(), timeout=30)
            assert metrics is not None  # answered while the range is still being read
            assert not asked.done()
            channel.release.set()
            reply = await asked
        assert len(reply.blocks) == RANGE_BLOCKS
        assert channel.threads == ["range_0"], channel.threads
    finally:
        channel.release.set()
        await server.stop(0)


async def test_one_callers_block_ranges_past_its_share_are_refused_at_once() -> None:
    """A caller asking ranges faster than they are built had each wait for the builders (up to
    16 MiB each to build), ahead of every other caller's ranges. Past RANGES_A_CALLER of a
    channel being built or waiting, its next is refused RESOURCE_EXHAUSTED at once; one it gives
    up (cancels) or that is answered frees its place."""
    channel = _HeldChannel(small=True)
    monitor = _Monitor()
    port = free_port_pair()
    server = await start_peer_server(OneChannelBackend(channel), "p", CONFIG, port, None, monitor)
    share = peer_service.RANGES_A_CALLER
    source = f"127.0.0.1 in channel {CHANNEL!r}"
    options = [("grpc.max_receive_message_length", 64 << 20)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as link:
            stub = pb_grpc.PeerServiceStub(link)
            request = pb.BlockRangeRequest(channel=CHANNEL, max_blocks=100)
            held = [
                asyncio.ensure_future(stub.GetBlockRange(request, timeout=60)) for _ in range(share)
            ]

            def holding(count: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return server._servicer._ranges.held.get(source, 0) == count

                return check

            await wait_until_async(holding(share), 30, f"{share} ranges to be under way")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetBlockRange(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{share} block ranges from {source}" in str(refused.value.details())
            assert monitor.errors["GetBlockRange", "RESOURCE_EXHAUSTED"] == 1
            held.pop().cancel()  # waiting for a builder: given up, its place is free
            await wait_until_async(holding(share - 1), 30, "the cancelled range's place")
            held.append(asyncio.ensure_future(stub.GetBlockRange(request, timeout=60)))
            await wait_until_async(holding(share), 30, "the range asked again to be taken")
            channel.release.set()
            replies = await asyncio.gather(*held)
            assert [len(reply.blocks) for reply in replies] == [1] * share
            assert server._servicer._ranges.held == {}
    finally:
        channel.release.set()
        await server.stop(0)
