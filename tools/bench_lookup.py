#!/usr/bin/env python3
"""Benchmark: a transaction looked up by hash in an old final block (GetTx, GET
/api/v1/transactions, icx_getTransactionByHash), in microseconds per lookup.

    .venv/bin/python tools/bench_lookup.py [--blocks 40] [--txs-per-block 1000] [-n 2000] [--json]

A real signed chain (tools/bench_sync.py's builder) is saved into LevelDB, the store reopened, and
`-n` transactions drawn at random from all its blocks are looked up (none of these blocks is kept
decoded; the store keeps the last two it parsed whole, so with the earlier index ~1 lookup in 20
finds its block parsed over 40 blocks, half of them over 4). Measured twice in the same run, on
the same store: with each transaction placed in its block's bytes by the index (as this version
writes it), then with the index as earlier versions wrote it (height and position only: the
block's bytes are parsed whole for each lookup). Figures vary ~3x between machines of one kind;
compare the two only within one run.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from loopchain.blockchain import block_store as schema
from loopchain.blockchain.block_store import BlockStore
from loopchain.storage.leveldb import LevelDBStore
from tools.bench_sync import CHANNEL, build_chain

SEED = 1  # the same draw of transactions for both measurements, and from run to run


def _per_lookup_us(folder: Path, hashes: list[bytes]) -> float:
    """Microseconds of CPU per lookup of `hashes` in a store opened afresh (nothing cached)."""
    with LevelDBStore(folder) as kv:
        store = BlockStore(kv, CHANNEL)
        started = time.process_time()
        for tx_hash in hashes:
            found = store.find_transaction(tx_hash)
            if found is None or found[0].hash != tx_hash:
                raise SystemExit(f"bench_lookup: {tx_hash.hex()} was not found as itself")
        return (time.process_time() - started) / len(hashes) * 1e6


def _place_as_earlier_versions(folder: Path, hashes: list[bytes]) -> None:
    """The index of every transaction cut to height and position, as earlier versions wrote it."""
    with LevelDBStore(folder) as kv, kv.write_batch() as batch:
        for tx_hash in hashes:
            placed = kv.get(schema.TX + tx_hash)
            assert placed is not None
            batch.put(schema.TX + tx_hash, placed[:12])


def measure(blocks: int, txs_per_block: int, lookups: int) -> dict[str, float | int]:
    """Build the chain in a temporary folder and time the lookups both ways."""
    with tempfile.TemporaryDirectory(prefix="bench_lookup-") as temporary:
        folder = Path(temporary) / "store"
        with LevelDBStore(folder) as kv:
            store = BlockStore(kv, CHANNEL)
            build_chain(store, blocks, txs_per_block, blocks_per_leader=1)
            every: list[bytes] = []
            for height in range(store.tip_height() + 1):
                block = store.block_by_height(height)
                assert block is not None
                every.extend(tx.hash for tx in block.transactions)
        drawn = random.Random(SEED).choices(every, k=lookups)
        placed = _per_lookup_us(folder, drawn)
        _place_as_earlier_versions(folder, every)
        parsed = _per_lookup_us(folder, drawn)
    return {
        "blocks": blocks,
        "txs_per_block": txs_per_block,
        "lookups": lookups,
        "placed_us": round(placed, 1),
        "parsed_whole_us": round(parsed, 1),
        "ratio": round(placed / parsed, 3),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=40, help="final blocks (default 40)")
    parser.add_argument("--txs-per-block", type=int, default=1000, help="default 1000")
    parser.add_argument("-n", "--lookups", type=int, default=2000, help="default 2000")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    options = parser.parse_args(argv)
    if options.blocks < 2 or options.txs_per_block < 1 or options.lookups < 1:
        parser.error("--blocks must be >= 2 (the first holds none), the others >= 1")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    figures = measure(options.blocks, options.txs_per_block, options.lookups)
    if options.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{figures['lookups']} random lookups over {figures['blocks']} blocks of "
        f"{figures['txs_per_block']} transactions (CPU per lookup):\n"
        f"  placed in its block's bytes (this version): {figures['placed_us']:>9.1f} us\n"
        f"  block's bytes parsed whole (earlier index):  {figures['parsed_whole_us']:>9.1f} us\n"
        f"  ratio: {figures['ratio']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
