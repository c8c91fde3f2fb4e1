#!/usr/bin/env python3
"""Benchmark: the peers' own work per transaction, without sockets, HTTP or SCORE processes.

    .venv/bin/python tools/bench_cluster.py [--txs 20000] [--clients 16] [--batch 16]
                                            [--profile [N]] [--json]

Four of the peer's real ChannelServices, each with a LevelDB block store and an intake journal
in a temporary directory, agree over the in-memory transport (messages encoded on send and
decoded on arrival, as gRPC carries them) in one process and on one event loop. CLIENTS
submitters hand them batches of BATCH v1 transactions the way REST proxies do (create_txs, spread
over the four), each waiting for its batch to be taken before the next, and backing off briefly
when refused. Measured from the first submission until every transaction is final on every
peer: the process's CPU seconds per committed transaction and per block, summed over the four
peers (a network of four peers spends this on its peers' event loops, plus gRPC, HTTP and the
SCORE). `--profile N` adds the N functions with the most CPU of their own (cProfile, by the
wall clock: a synced write counts, as it holds the event loop; it slows the run: compare its
shares, not its seconds, and as its cost is per call, code of many small calls looks dearer than
it is: a canonical-JSON walk over each result showed ~7 % there and is 0.7 us of 3.7 us per result
by timeit, about 0.5 % of a transaction's CPU; confirm a saving before building on it). Speed differs between machines: compare a change
by the ratio of two trees run alternately on one machine, never by the seconds alone. The
configuration is the peers' (defaults, loopchain/configure_user.py, the environment), so
`INTERVAL_BLOCKGENERATION=0.4 tools/bench_cluster.py` shows what half the blocks save.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import load_config
from loopchain.consensus import messages as m
from loopchain.p2p.errors import RequestError
from loopchain.p2p.memory import InMemoryNetwork
from loopchain.peer.channel_service import ChannelService, ChannelSettings
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo
from loopchain.types.validators import Validator, ValidatorSet

CHANNEL = "bench_channel"
PEERS = 4
REFUSED_BACKOFF_S = 0.2  # a refused submitter waits a block interval before it tries again
POLL_S = 0.05
DEADLINE_S = 600.0  # a run that has not finished by then is reported as stuck


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=20000, help="transactions in all")
    parser.add_argument("--clients", type=int, default=16, help="concurrent submitters")
    parser.add_argument("--batch", type=int, default=16, help="transactions per submission")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=30,
        default=0,
        metavar="N",
        help="list the N functions with the most CPU of their own",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if min(args.txs, args.clients, args.batch) < 1:
        parser.error("--txs, --clients and --batch must be at least 1")
    return args


class Cluster:
    """Four channel services over the in-memory transport, stores in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.config = load_config()  # defaults, loopchain/configure_user.py, the environment
        issuer = Signer.generate()
        signers = [Signer.generate() for _ in range(PEERS)]
        validators = ValidatorSet(
            CHANNEL, 1, tuple(Validator(s.address) for s in signers)
        ).signed_by(issuer)
        peers = [PeerInfo(s.address, f"memory:{i}", i) for i, s in enumerate(signers)]
        self.network = InMemoryNetwork()
        self.stores: list[LevelDBStore] = []
        self.services: list[ChannelService] = []
        for index, signer in enumerate(signers):
            kv = LevelDBStore(directory / f"peer{index}" / "blocks")
            self.stores.append(kv)
            settings = ChannelSettings(
                CHANNEL,
                "no/score",
                issuer.address,
                peers[index].target,
                directory / f"peer{index}",
                0,
            )
            service = ChannelService(
                settings=settings,
                config=self.config,
                signer=signer,
                store=BlockStore(kv, CHANNEL),
                transport=self.network.transport(signer.address),
            )
            service.set_members(peers)
            self.network.backends[signer.address] = service
            self.services.append(service)
        self.tasks = [asyncio.create_task(s.run()) for s in self.services]
        for service in self.services:
            service.receive(m.ValidatorsChanged(validators))

    def final_everywhere(self, tx_hash: bytes) -> bool:
        return all(s.store.has_transaction(tx_hash) for s in self.services)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for kv in self.stores:
            kv.close()


async def submitter(
    service: ChannelService, client: int, quota: int, batch: int, taken: list[bytes]
) -> int:
    """Submit `quota` transactions in batches; returns how many submissions were refused."""
    refused = sent = 0
    while sent < quota:
        size = min(batch, quota - sent)
        items = [{"client": client, "n": sent + i} for i in range(size)]
        outcomes = await service.create_txs(items)
        for outcome in outcomes:
            if isinstance(outcome, RequestError):
                refused += 1
            else:
                taken.append(outcome.hash)
                sent += 1
        if any(isinstance(o, RequestError) for o in outcomes):
            await asyncio.sleep(REFUSED_BACKOFF_S)
    return refused


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    cluster = Cluster(directory)
    try:
        start_height = cluster.services[0].store.tip_height()  # -1: the first block carries txs
        taken: list[bytes] = []
        quotas = [
            args.txs // args.clients + (c < args.txs % args.clients) for c in range(args.clients)
        ]
        profiler = cProfile.Profile() if args.profile else None
        cpu0, wall0 = time.process_time(), time.monotonic()
        if profiler:
            profiler.enable()
        refused = await asyncio.gather(
            *(
                submitter(cluster.services[c % PEERS], c, quotas[c], args.batch, taken)
                for c in range(args.clients)
            )
        )
        pending = taken

        def all_final() -> bool:  # each poll asks only about those not yet final everywhere
            nonlocal pending
            pending = [h for h in pending if not cluster.final_everywhere(h)]
            return not pending

        await wait_for(all_final, "every transaction final on every peer")
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        blocks = min(s.store.tip_height() for s in cluster.services) - start_height
        figures: dict[str, Any] = {
            "committed": len(taken),
            "refused_submissions": sum(refused),
            "blocks": blocks,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_tx": round(cpu / len(taken) * 1e6, 1),
            "cpu_ms_per_block": round(cpu / max(blocks, 1) * 1e3, 2),
            "tx_per_s": round(len(taken) / wall, 1),
            "messages_per_block": round(cluster.network.delivered / max(blocks, 1), 2),
        }
        if profiler:
            figures["profile"] = top_functions(profiler, args.profile)
        return figures
    finally:
        await cluster.stop()


async def wait_for(condition: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"bench_cluster: no {what} within {DEADLINE_S:g} s")
        await asyncio.sleep(POLL_S)


def top_functions(profiler: cProfile.Profile, count: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(row[2] for row in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    return [
        {
            "function": f"{Path(file).name}:{line} {name}",
            "own_share": round(own / total, 4),
            "calls": calls,
        }
        for (file, line, name), (_, calls, own, _cum, _callers) in rows[:count]
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # the channels have no SCORE package, on purpose: its own process is not what is measured
    logging.getLogger("loopchain.peer.score_runtime").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    if args.json:
        print(json.dumps(figures))
        return 0
    for key, value in figures.items():
        if key != "profile":
            print(f"{key:24} {value}")
    for row in figures.get("profile", []):
        print(f"{row['own_share'] * 100:5.1f}% {row['calls']:>9} {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
