"""A PeerService behind the real gRPC interface, for testing clients of the peer (REST proxy, tools).

It keeps real signed transactions and blocks built with loopchain.types, answers with the gRPC status
codes the real peer uses, and lets a test force an error on a method, hold Query calls forever or
stall every call as a stopped process would.
Run it alone (`python tests/integration/_fake_peer.py PORT`) to get a peer that makes a block every
0.2 s, for trying the load tool by hand.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from loopchain.p2p.errors import TX_NOT_FOUND_BECAUSE
from loopchain.p2p.grpc_util import ANSWERED
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.transaction import Transaction

DEFAULT_CHANNEL = "loopchain_default"
VALIDATORS_HASH = sha3_256(b"fake validator set")


@dataclass
class ChannelChain:
    """One channel's pool and chain."""

    name: str
    pool: dict[str, Transaction] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    tx_heights: dict[str, int] = field(default_factory=dict)
    results: dict[str, tuple[int, str]] = field(default_factory=dict)  # default: (0, "")
    executed_height: int | None = None  # blocks above it are not executed yet (None: all are)

    def find_tx(self, tx_hash: str) -> tuple[Transaction, int, int] | None:
        """(transaction, block height, index in the block); -1, -1 while pooled."""
        if tx_hash in self.pool:
            return self.pool[tx_hash], -1, -1
        height = self.tx_heights.get(tx_hash)
        if height is None:
            return None
        hashes = [tx.hash_hex for tx in self.blocks[height].transactions]
        index = hashes.index(tx_hash)
        return self.blocks[height].transactions[index], height, index

    def executed(self, height: int) -> bool:
        return height >= 0 and (self.executed_height is None or height <= self.executed_height)


class FakePeer(pb_grpc.PeerServiceServicer):
    """PeerService over in-memory chains; `score` False answers SCORE calls with UNIMPLEMENTED."""

    def __init__(self, channels: tuple[str, ...] = (DEFAULT_CHANNEL,), score: bool = True) -> None:
        self.signer = Signer.generate()
        self.chains = {name: ChannelChain(name) for name in channels}
        self.default_channel = channels[0]
        self.score = score
        self.forced: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.calls: deque[tuple[str, Any]] = deque(maxlen=1000)
        self.counted: Counter[str] = Counter()  # every call entered, by method, for good
        self.dropped: dict[str, str] = {}  # tx hash -> why it is not known, as the real peer says
        self.unchanged_blocks = 0  # last-block polls answered "unchanged" (no block sent)
        self.release_queries = asyncio.Event()
        self.answering = asyncio.Event()  # cleared: every call waits, as on a stopped process
        self.sends_tx_hashes = True  # GetBlock carries its transactions' hashes, as a peer's does
        self.answering.set()

    # ------------------------------------------------------------ test controls

    def fail(self, method: str, code: grpc.StatusCode, details: str) -> None:
        """Answer every call of `method` with this error until `clear_failures`."""
        self.forced[method] = (code, details)

    def clear_failures(self) -> None:
        self.forced.clear()

    def stall(self) -> None:
        """Hold every call from now on until `go_on` (the connection stays open)."""
        self.answering.clear()

    def go_on(self) -> None:
        self.answering.set()

    def make_block(self, channel: str = DEFAULT_CHANNEL) -> Block:
        """Commit the channel's pool into a new signed block."""
        chain = self.chains[channel]
        prev = chain.blocks[-1] if chain.blocks else None
        block = Block.create(
            channel=channel,
            height=len(chain.blocks),
            round_=0,
            prev_hash=prev.hash if prev else b"",
            prev_qc=None,
            transactions=list(chain.pool.values()),
            timestamp=time.time_ns() // 1000,
            leader=self.signer,
            next_leader=self.signer.address,
            validators_hash=VALIDATORS_HASH,
        )
        chain.blocks.append(block)
        for tx in block.transactions:
            chain.tx_heights[tx.hash_hex] = block.height
        chain.pool.clear()
        return block

    # ------------------------------------------------------------ helpers

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((method, request))
        self.counted[method] += 1
        await self.answering.wait()
        if method in self.forced:
            code, details = self.forced[method]
            await context.abort(code, details, trailing_metadata=(ANSWERED,))  # as `refuse`

    async def _chain(self, channel: str, context: grpc.aio.ServicerContext) -> ChannelChain:
        name = channel or self.default_channel
        if name not in self.chains:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"channel {name!r} is not served by this peer"
            )
        return self.chains[name]

    async def _find_tx(
        self, chain: ChannelChain, tx_hash: str, context: grpc.aio.ServicerContext
    ) -> tuple[Transaction, int, int]:
        found = chain.find_tx(tx_hash)
        if found is None:
            why = self.dropped.get(tx_hash)
            tail = " is not known" if why is None else f"{TX_NOT_FOUND_BECAUSE}{why}"  # the peer's
            message = f"transaction {tx_hash}{tail}"
            await context.abort(grpc.StatusCode.NOT_FOUND, message)
        return found

    async def _require_score(self, context: grpc.aio.ServicerContext) -> None:
        if not self.score:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the SCORE service is not running on this peer"
            )

    # ------------------------------------------------------------ client-facing calls

    async def CreateTx(self, request: pb.CreateTxRequest, context: Any) -> pb.CreateTxReply:
        await self._enter("CreateTx", request, context)
        chain = await self._chain(request.channel, context)
        try:
            data = json.loads(request.data_json)
            tx = Transaction.create_v1(chain.name, data, time.time_ns() // 1000, self.signer)
        except (ValueError, EncodingError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid transaction: {exc}")
        chain.pool[tx.hash_hex] = tx
        return pb.CreateTxReply(tx_hash=tx.hash_hex, channel=chain.name)

    async def CreateTxBatch(
        self, request: pb.CreateTxBatchRequest, context: Any
    ) -> pb.CreateTxBatchReply:
        """As the real peer: one result per item; each item is also recorded as a CreateTx."""
        for text in request.data_json:
            self.calls.append(
                ("CreateTx", pb.CreateTxRequest(channel=request.channel, data_json=text))
            )
        await self._enter("CreateTxBatch", request, context)
        if any(_asks_to_hang(text) for text in request.data_json):
            await self.release_queries.wait()  # held as a hanging query is
        if "CreateTx" in self.forced:
            code, details = self.forced["CreateTx"]
            await context.abort(code, details, trailing_metadata=(ANSWERED,))  # as `refuse`
        chain = await self._chain(request.channel, context)
        results = []
        for index, text in enumerate(request.data_json):
            try:
                data = json.loads(text)
                tx = Transaction.create_v1(
                    chain.name, data, time.time_ns() // 1000 + index, self.signer
                )
            except (ValueError, EncodingError) as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                results.append(pb.CreateTxResult(code=code, message=f"invalid transaction: {exc}"))
                continue
            chain.pool[tx.hash_hex] = tx
            results.append(pb.CreateTxResult(tx_hash=tx.hash_hex))
        return pb.CreateTxBatchReply(results=results)

    async def GetTx(self, request: pb.GetTxRequest, context: Any) -> pb.GetTxReply:
        await self._enter("GetTx", request, context)
        chain = await self._chain(request.channel, context)
        tx, height, index = await self._find_tx(chain, request.tx_hash, context)
        return pb.GetTxReply(
            tx=tx.encode(),
            channel=chain.name,
            block_height=height,
            block_hash=chain.blocks[height].hash.hex() if height >= 0 else "",
            peer_id=self.signer.address,
            score_id="loopchain/default",
            score_version="0.1.0",
            tx_index=index,
        )

    async def GetTxResult(self, request: pb.GetTxRequest, context: Any) -> pb.TxResultReply:
        await self._enter("GetTxResult", request, context)
        await self._require_score(context)
        chain = await self._chain(request.channel, context)
        _, height, index = await self._find_tx(chain, request.tx_hash, context)
        block_hash = chain.blocks[height].hash.hex() if height >= 0 else ""
        place = {"block_height": height, "block_hash": block_hash, "tx_index": index}
        if not chain.executed(height):
            return pb.TxResultReply(code=2, message="not invoked yet", **place)
        code, message = chain.results.get(request.tx_hash, (0, ""))
        return pb.TxResultReply(code=code, message=message, executed=True, **place)

    async def GetTxBatch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.GetTxBatchReply:
        """As the real peer: each hash answered as GetTx answers it (and recorded as a GetTx
        call, so that forced GetTx failures and overrides apply), a refusal in its own entry."""
        await self._enter("GetTxBatch", request, context)
        await self._chain(request.channel, context)
        entries = [
            pb.TxEntry(code=code, message=message, tx=answer)
            for code, message, answer in await self._each(_tx_requests(request), self.GetTx)
        ]
        return pb.GetTxBatchReply(results=entries)

    async def GetTxResultBatch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.TxResultBatchReply:
        """As GetTxBatch, for GetTxResult; with_tx: an executed transaction's bytes too."""
        await self._enter("GetTxResultBatch", request, context)
        await self._require_score(context)
        chain = await self._chain(request.channel, context)
        answers = await self._each(_tx_requests(request), self.GetTxResult)
        for tx_hash, (_, _, answer) in zip(request.tx_hashes, answers, strict=True):
            if request.with_tx and answer is not None and answer.executed:
                found = chain.find_tx(tx_hash)
                answer.tx = found[0].encode() if found is not None else b""
        entries = [
            pb.TxResultEntry(code=code, message=message, result=answer)
            for code, message, answer in answers
        ]
        return pb.TxResultBatchReply(results=entries)

    async def GetBalance(self, request: pb.BalanceRequest, context: Any) -> pb.BalanceReply:
        await self._enter("GetBalance", request, context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fake peer keeps no balances")
        raise AssertionError("abort returned")

    async def GetBalanceBatch(
        self, request: pb.BalanceBatchRequest, context: Any
    ) -> pb.BalanceBatchReply:
        """As GetTxBatch, for GetBalance."""
        await self._enter("GetBalanceBatch", request, context)
        await self._require_score(context)
        await self._chain(request.channel, context)
        asks = [pb.BalanceRequest(channel=request.channel, address=a) for a in request.addresses]
        entries = [
            pb.BalanceEntry(code=code, message=message, balance=answer)
            for code, message, answer in await self._each(asks, self.GetBalance)
        ]
        return pb.BalanceBatchReply(results=entries)

    async def _each(
        self, requests: list[Any], method: Callable[[Any, Any], Awaitable[Any]]
    ) -> list[tuple[int, str, Any]]:
        """(0, "", the answer) or (code, details, None) for each request, as `method` answers
        it alone."""
        entries: list[tuple[int, str, Any]] = []
        for request in requests:
            try:
                entries.append((0, "", await method(request, _Entry())))
            except _Refused as refused:
                code, details = refused.args
                entries.append((code.value[0], details, None))
        return entries

    async def GetBlock(self, request: pb.GetBlockRequest, context: Any) -> pb.BlockReply:
        await self._enter("GetBlock", request, context)
        chain = await self._chain(request.channel, context)
        if request.block_hash:
            block = next((b for b in chain.blocks if b.hash.hex() == request.block_hash), None)
            if block is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"block {request.block_hash} is not known"
                )
        elif request.height >= 0:
            if request.height >= len(chain.blocks):
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"there is no block at height {request.height}"
                )
            block = chain.blocks[request.height]
        elif chain.blocks:
            block = chain.blocks[-1]
            if request.unless_hash == block.hash.hex():  # as the real peer: a poll of it
                self.unchanged_blocks += 1
                return pb.BlockReply(channel=request.channel, unchanged=True)
        else:
            return pb.BlockReply(channel=chain.name)
        hashes = b"".join(tx.hash for tx in block.transactions) if self.sends_tx_hashes else b""
        return pb.BlockReply(channel=chain.name, block=block.encode(), tx_hashes=hashes)

    async def GetStatus(self, request: pb.ChannelRequest, context: Any) -> pb.PeerStatusReply:
        await self._enter("GetStatus", request, context)
        chain = await self._chain(request.channel, context)
        last = chain.blocks[-1] if chain.blocks else None
        return pb.PeerStatusReply(
            channel=chain.name,
            peer_id=self.signer.address,
            peer_target=context.peer() or "",
            peer_type=1,
            leader_id=self.signer.address,
            block_height=last.height if last else -1,
            block_hash=last.hash.hex() if last else "",
            total_tx=len(chain.tx_heights),
            made_block_count=len(chain.blocks),
            consensus="LFT",
            tx_pool_size=len(chain.pool),
            channels=list(self.chains),
            validator_count=1,
        )

    async def Query(self, request: pb.QueryRequest, context: Any) -> pb.QueryReply:
        await self._enter("Query", request, context)
        await self._require_score(context)
        await self._chain(request.channel, context)
        params = json.loads(request.params_json)
        if isinstance(params, dict) and params.get("hang"):
            await self.release_queries.wait()
        return pb.QueryReply(response_json=json.dumps({"echo": params}))

    async def QueryBatch(self, request: pb.QueryBatchRequest, context: Any) -> pb.QueryBatchReply:
        """As the real peer: one result per query; each is also recorded as a Query."""
        for text in request.params_json:
            self.calls.append(("Query", pb.QueryRequest(channel=request.channel, params_json=text)))
        await self._enter("QueryBatch", request, context)
        await self._require_score(context)
        await self._chain(request.channel, context)
        if any(_asks_to_hang(text) for text in request.params_json):
            await self.release_queries.wait()
        results = []
        for text in request.params_json:
            try:
                answer = json.dumps({"echo": json.loads(text)})
            except ValueError as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                results.append(pb.QueryResult(code=code, message=f"query is not valid JSON: {exc}"))
                continue
            results.append(pb.QueryResult(response_json=answer))
        return pb.QueryBatchReply(results=results)

    async def GetScoreStatus(self, request: pb.ChannelRequest, context: Any) -> pb.ScoreStatusReply:
        await self._enter("GetScoreStatus", request, context)
        await self._require_score(context)
        await self._chain(request.channel, context)
        return pb.ScoreStatusReply(
            id="loopchain/default", version="0.1.0", all_version=["0.1.0", "0.0.9"], status=0
        )


def _tx_requests(request: pb.TxLookupBatchRequest) -> list[pb.GetTxRequest]:
    return [pb.GetTxRequest(channel=request.channel, tx_hash=h) for h in request.tx_hashes]


class _Refused(Exception):
    """A lookup of a batch refused (its status code and details)."""


class _Entry:
    """The context one lookup of a batch is answered in: its refusal is the entry's own."""

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        raise _Refused(code, details)


def _asks_to_hang(text: str) -> bool:
    """A submission `{"hang": true, ...}`: held until the test releases it."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("hang") is True


async def start_fake_peer(
    port: int, peer: FakePeer | None = None
) -> tuple[grpc.aio.Server, FakePeer]:
    """Serve `peer` (a new FakePeer by default) on 127.0.0.1:port."""
    peer = peer or FakePeer()
    server = grpc.aio.server()
    pb_grpc.add_PeerServiceServicer_to_server(peer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    return server, peer


async def _run_standalone(port: int, interval: float) -> None:  # pragma: no cover - manual use
    server, peer = await start_fake_peer(port)
    print(f"fake peer on 127.0.0.1:{port}, a block every {interval} s", flush=True)
    try:
        while True:
            await asyncio.sleep(interval)
            peer.make_block()
    finally:
        await server.stop(None)


if __name__ == "__main__":  # pragma: no cover - manual use
    asyncio.run(_run_standalone(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.2))
