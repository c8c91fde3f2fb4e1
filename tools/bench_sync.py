#!/usr/bin/env python3
"""Benchmark: sync rate of a fresh peer joining a long chain (blocks/s and tx/s).

    .venv/bin/python tools/bench_sync.py [--blocks 10000] [--txs-per-block 10] [--json]

Set-up (timed separately, not part of the figure): a real signed chain is built offline — four
validator keys, a RadioStation key signing the validator set, every block signed by the leader of
its round, certified by real votes of three or four validators, linked by prev_hash and prev_qc in
consecutive rounds (so every block is provably final), plus the commit proof of the tip — and saved
with BlockStore.save_block into LevelDB. That store is served by the real gRPC PeerService over a
real ChannelService on 127.0.0.1. Measured: a FRESH ChannelService (empty LevelDB, same
RadioStation address) calling `sync_once()` until its tip is the last block. The batch size is
SYNC_BATCH_BLOCKS from the configuration (defaults, environment, or loopchain/configure_user.py).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import Config, load_config, setup_logging
from loopchain.consensus.rules import leader_of
from loopchain.p2p import grpc_util
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.peer_client import GrpcTransport
from loopchain.p2p.peer_service import PeerServicer
from loopchain.peer.channel_service import ChannelService, ChannelSettings
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo, identify_digest
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Validator, ValidatorSet
from loopchain.types.vote import QuorumCertificate, Vote

CHANNEL = "bench_sync"
VALIDATORS = 4
SCORE_PACKAGE = "loopchain/default"
PROGRESS_EVERY = 1000
STOP_GRACE_S = 10.0  # for calls in flight when the server stops

# ------------------------------------------------------------------ building the chain


@dataclass(frozen=True)
class BuiltChain:
    """What was written: sizes, the tip, and the RadioStation address that signed the set."""

    blocks: int
    txs: int
    encoded_bytes: int  # blocks and certificates as stored
    tip_hash: bytes
    issuer: str
    validator_ids: tuple[str, ...]


class ChainWriter:
    """Builds a provably final chain block by block, with real signatures, into a BlockStore."""

    def __init__(self, store: BlockStore, txs_per_block: int, blocks_per_leader: int) -> None:
        self.store = store
        self.txs_per_block = txs_per_block
        self.blocks_per_leader = blocks_per_leader
        self.signers = {s.address: s for s in (Signer.generate() for _ in range(VALIDATORS))}
        self.issuer = Signer.generate()
        members = tuple(Validator(peer_id) for peer_id in self.signers)
        self.validators = ValidatorSet(CHANNEL, 1, members).signed_by(self.issuer)
        self.prev: tuple[Block, QuorumCertificate] | None = None
        self.base_us = time.time_ns() // 1000
        self.tx_count = 0
        self.encoded_bytes = 0

    def make_block(self, height: int, txs_per_block: int) -> Block:
        """The block of round `height` on top of the previous one, signed by its leader."""
        leader = self.signers[leader_of(self.validators, height, self.blocks_per_leader)]
        txs = [self._transaction(leader) for _ in range(txs_per_block)]
        return Block.create(
            channel=CHANNEL,
            height=height,
            round_=height,
            prev_hash=self.prev[0].hash if self.prev else b"",
            prev_qc=self.prev[1] if self.prev else None,
            transactions=txs,
            timestamp=self.base_us + height * 1000,
            leader=leader,
            next_leader=leader_of(self.validators, height + 1, self.blocks_per_leader),
            validators_hash=self.validators.hash,
            validator_update=self.validators if height == 0 else None,
        )

    def certify(self, block: Block) -> QuorumCertificate:
        """Votes of all four validators at every fourth height, of three (one rotating out) else."""
        voters = list(self.signers.values())
        if block.height % 4:
            del voters[block.height % 4]
        votes = [
            Vote.create(CHANNEL, block.height, block.header.round, block.hash, signer)
            for signer in voters
        ]
        return QuorumCertificate.from_votes(votes)

    def append(self) -> None:
        """Make, certify and save the next block."""
        height = self.prev[0].height + 1 if self.prev else 0
        # the genesis block (height 0) records the validator set and carries no transaction
        block = self.make_block(height, self.txs_per_block if height > 0 else 0)
        qc = self.certify(block)
        if self.prev is not None:  # the new block proves its parent final: save the parent now
            self.store.save_block(*self.prev, proof=(block, qc))
        self.encoded_bytes += len(block.encode()) + len(qc.encode())
        self.prev = (block, qc)

    def seal(self) -> BuiltChain:
        """Write the tip's commit proof (a certified empty child one round later), as peers do."""
        assert self.prev is not None
        tip = self.prev[0]
        child = self.make_block(tip.height + 1, 0)
        self.store.save_block(*self.prev, proof=(child, self.certify(child)))
        return BuiltChain(
            blocks=tip.height + 1,
            txs=self.tx_count,
            encoded_bytes=self.encoded_bytes,
            tip_hash=tip.hash,
            issuer=self.issuer.address,
            validator_ids=tuple(self.signers),
        )

    def _transaction(self, signer: Signer) -> Transaction:
        self.tx_count += 1
        data = {"bench": "sync", "n": self.tx_count}
        return Transaction.create_v1(CHANNEL, data, self.base_us + self.tx_count, signer)


def build_chain(
    store: BlockStore,
    blocks: int,
    txs_per_block: int,
    blocks_per_leader: int,
    progress: Callable[[int], None] | None = None,
) -> BuiltChain:
    """Write `blocks` final blocks of `txs_per_block` transactions each, and the tip's proof."""
    writer = ChainWriter(store, txs_per_block, blocks_per_leader)
    for height in range(blocks):
        writer.append()
        if progress is not None and (height + 1) % PROGRESS_EVERY == 0:
            progress(height + 1)
    return writer.seal()


# ------------------------------------------------------------------ serving and syncing


class OneChannelBackend:
    """A PeerBackend with exactly one channel."""

    def __init__(self, service: ChannelService, signer: Signer) -> None:
        self.service = service
        self.signer = signer

    def identify(self, challenge: bytes) -> tuple[str, bytes]:
        """This peer's id and its signature of the challenge (as a peer answers Identify)."""
        return self.signer.address, self.signer.sign(identify_digest(challenge))

    def channel(self, name: str) -> ChannelService:
        """The channel service when `name` is its channel (or empty)."""
        if name and name != self.service.name:
            raise RequestError(ErrorKind.NOT_FOUND, f"channel {name!r} is not served here")
        return self.service


def open_service(
    root: Path, config: Config, signer: Signer, issuer: str, transport: GrpcTransport
) -> tuple[ChannelService, LevelDBStore]:
    """A ChannelService over the LevelDB store in `root` (created when missing)."""
    kv = LevelDBStore(root)
    store = BlockStore(kv, CHANNEL)
    store.check()
    settings = ChannelSettings(CHANNEL, SCORE_PACKAGE, issuer, "127.0.0.1:0", root, 0)
    service = ChannelService(
        settings=settings, config=config, signer=signer, store=store, transport=transport
    )
    return service, kv


class SyncStalled(RuntimeError):
    """The fresh peer stopped gaining blocks before reaching the tip."""


async def sync_to(service: ChannelService, tip_height: int) -> int:
    """Call sync_once until the service's tip is `tip_height`; returns how many calls it took."""
    calls = 0
    while service.store.tip_height() < tip_height:
        calls += 1
        if await service.catchup.sync_once() == 0:
            raise SyncStalled(
                f"sync stopped at height {service.store.tip_height()} of {tip_height} "
                f"after {calls} sync_once calls (see the channel's warnings above)"
            )
    return calls


# ------------------------------------------------------------------ the benchmark


@dataclass(frozen=True)
class Options:
    blocks: int
    txs_per_block: int
    json: bool


def say(text: str) -> None:
    print(text, flush=True)


async def run(options: Options, workdir: Path) -> dict[str, Any]:
    """Build, serve, sync; returns the figures."""
    config = load_config()
    # 1. set-up: the chain, written into the server's store
    started = time.perf_counter()
    kv = LevelDBStore(workdir / "server")
    chain = build_chain(
        BlockStore(kv, CHANNEL),
        options.blocks,
        options.txs_per_block,
        int(config.LEADER_BLOCK_CREATION_LIMIT),
        lambda done: say(f"  built {done}/{options.blocks} blocks"),
    )
    kv.close()
    build_s = time.perf_counter() - started
    say(
        f"chain: {chain.blocks} blocks, {chain.txs} txs, {VALIDATORS} validators, "
        f"{chain.encoded_bytes / 1e6:.1f} MB encoded; built in {build_s:.1f} s (not measured)"
    )
    # 2. the serving peer: a real ChannelService behind the real gRPC PeerService
    links = GrpcTransport(config)
    started = time.perf_counter()
    server_signer = Signer.generate()
    served, served_kv = open_service(workdir / "server", config, server_signer, chain.issuer, links)
    open_s = time.perf_counter() - started
    server = grpc_util.create_server(config)
    pb_grpc.add_PeerServiceServicer_to_server(
        PeerServicer(OneChannelBackend(served, server_signer), server_signer.address), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fresh_kv: LevelDBStore | None = None
    try:
        say(f"server: opened the store in {open_s:.2f} s; serving on 127.0.0.1:{port}")
        # 3. the fresh peer, and the measured sync
        fresh, fresh_kv = open_service(
            workdir / "fresh", config, Signer.generate(), chain.issuer, links
        )
        fresh.set_members([PeerInfo(server_signer.address, f"127.0.0.1:{port}", 0)])
        started = time.perf_counter()
        calls = await sync_to(fresh, chain.blocks - 1)
        sync_s = time.perf_counter() - started
        # 4. the fresh peer must hold exactly the served chain
        if fresh.store.tip_hash() != chain.tip_hash or fresh.store.total_tx() != chain.txs:
            raise SyncStalled("the synced chain differs from the served one")
    finally:
        # (a range the fresh peer gave up on, on a loaded machine, is still being served: let it
        # end; cancelled, grpc printed its CancelledError as a traceback in a CI run)
        await server.stop(grace=STOP_GRACE_S)
        await links.close()
        served_kv.close()
        if fresh_kv is not None:
            fresh_kv.close()
    batch = int(config.SYNC_BATCH_BLOCKS)
    figures = {
        "benchmark": "sync",
        "blocks": chain.blocks,
        "txs_per_block": options.txs_per_block,
        "txs": chain.txs,
        "validators": VALIDATORS,
        "chain_bytes": chain.encoded_bytes,
        "batch_blocks": batch,
        "build_s": round(build_s, 3),
        "server_open_s": round(open_s, 3),
        "sync_s": round(sync_s, 3),
        "sync_calls": calls,
        "blocks_per_s": round(chain.blocks / sync_s, 1),
        "tx_per_s": round(chain.txs / sync_s, 1),
    }
    say(
        f"sync: {chain.blocks} blocks ({chain.txs} txs) in {sync_s:.2f} s with batches of "
        f"{batch} blocks: {figures['blocks_per_s']} blocks/s, {figures['tx_per_s']} tx/s"
    )
    return figures


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Sync rate of a fresh peer joining a long chain (blocks/s and tx/s)."
    )
    parser.add_argument("--blocks", type=int, default=10_000, help="chain length (default 10000)")
    parser.add_argument(
        "--txs-per-block", type=int, default=10, help="transactions in every block (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    args = parser.parse_args(argv)
    if args.blocks < 1:
        parser.error(f"--blocks must be at least 1, got {args.blocks}")
    if not 0 <= args.txs_per_block <= 1000:
        parser.error(f"--txs-per-block must be 0..1000, got {args.txs_per_block}")
    return Options(args.blocks, args.txs_per_block, args.json)


def set_up_logging() -> None:
    """The channel's log on stderr as a peer's, at WARNING unless LOOPCHAIN_LOG_LEVEL says: a
    range the fresh peer gave up on, cancelled at the server before its handler ran, is then an
    INFO line as in a peer, not grpc's traceback (a CI run failed on one)."""
    overrides = {} if "LOOPCHAIN_LOG_LEVEL" in os.environ else {"LOOPCHAIN_LOG_LEVEL": "WARNING"}
    setup_logging(load_config(overrides=overrides), debug=False, process="bench_sync")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    set_up_logging()
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp:
        try:
            figures = asyncio.run(run(options, Path(tmp)))
        except (SyncStalled, grpc.RpcError) as exc:
            print(f"bench_sync: {exc}", file=sys.stderr)
            return 1
    if options.json:
        print(json.dumps(figures, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
