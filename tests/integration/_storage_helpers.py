"""Test helpers for the storage layer: a builder of valid signed chains, a line reader for
children, and the damage a failing disk does to a LevelDB table."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import plyvel

from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Validator, ValidatorSet
from loopchain.types.vote import QuorumCertificate, Vote

CHANNEL = "test_channel"
BASE_TIME_US = 1_700_000_000_000_000


def damage_a_table(store: Path, marker: bytes) -> Path:
    """Move what the closed LevelDB store at `store` holds into tables (uncompressed, as the
    peer writes them), then change one byte of `marker` in the table that holds it (returned)."""
    db = plyvel.DB(str(store), compression=None)
    try:
        db.compact_range()
    finally:
        db.close()
    return flip_in_tables(store, marker)


def flip_in_tables(store: Path, marker: bytes) -> Path:
    """Change one byte of `marker` where a table file of the LevelDB store at `store` holds it (as
    written: uncompressed), as a failing disk or a stray write would; returns that file."""
    for table in store.glob("*.ldb"):
        raw = bytearray(table.read_bytes())
        at = raw.find(marker)
        if at >= 0:
            raw[at + len(marker) // 2] ^= 0x01
            table.write_bytes(bytes(raw))
            return table
    raise AssertionError(f"no table of {store} holds the marker")


class ChainBuilder:
    """Makes a valid chain of one channel: real keys, signed blocks, votes and certificates."""

    def __init__(self, channel: str = CHANNEL, validators: int = 4, step_us: int = 1) -> None:
        self.channel = channel
        self.step_us = step_us  # between two blocks' timestamps (a transaction is stamped at its)
        self.signers = [Signer.generate() for _ in range(validators)]
        issuer = Signer.generate()
        members = tuple(Validator(s.address) for s in self.signers)
        self.validators = ValidatorSet(channel, 1, members).signed_by(issuer)
        self.height = -1
        self.prev_hash = b""
        self.prev_qc: QuorumCertificate | None = None
        self._tx_count = 0

    def transaction(self) -> Transaction:
        """A new, unique, signed transaction of this channel."""
        self._tx_count += 1
        data = {"n": self._tx_count}
        stamp = BASE_TIME_US + (self.height + 1) * (self.step_us - 1) + self._tx_count
        return Transaction.create_v1(self.channel, data, stamp, self.signers[0])

    def block(
        self,
        transactions: list[Transaction] | None = None,
        *,
        height: int | None = None,
        prev_hash: bytes | None = None,
        channel: str | None = None,
    ) -> Block:
        """The next block (or one with the given fields changed), without advancing the chain."""
        height = self.height + 1 if height is None else height
        leader = self.signers[height % len(self.signers)]
        return Block.create(
            channel=self.channel if channel is None else channel,
            height=height,
            round_=0,
            prev_hash=self.prev_hash if prev_hash is None else prev_hash,
            prev_qc=self.prev_qc,
            transactions=transactions or [],
            timestamp=BASE_TIME_US + height * self.step_us,
            leader=leader,
            next_leader=self.signers[(height + 1) % len(self.signers)].address,
            validators_hash=self.validators.hash,
        )

    def certify(
        self, block: Block, *, height: int | None = None, channel: str | None = None
    ) -> QuorumCertificate:
        """A certificate from a quorum (3 of 4) of validators for `block`."""
        votes = [
            Vote.create(
                block.header.channel if channel is None else channel,
                block.height if height is None else height,
                block.header.round,
                block.hash,
                signer,
            )
            for signer in self.signers[:3]
        ]
        return QuorumCertificate.from_votes(votes)

    def advance(self, block: Block, certificate: QuorumCertificate) -> None:
        """Make `block` the chain's tip, as a store would after saving it."""
        self.height, self.prev_hash, self.prev_qc = block.height, block.hash, certificate

    def next(self, tx_count: int = 0) -> tuple[Block, QuorumCertificate]:
        """Build, certify and advance to the next block holding `tx_count` new transactions."""
        block = self.block([self.transaction() for _ in range(tx_count)])
        certificate = self.certify(block)
        self.advance(block, certificate)
        return block, certificate


class LineReader:
    """Reads a child's stdout lines on a thread, so the test can wait for them with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, count: int, timeout: float) -> list[str]:
        """Block until `count` lines have arrived; fail when the deadline passes or the stream ends."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(self.lines)} of {count} lines in {timeout}s")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"child output ended after {self.lines!r}")
            self.lines.append(line)
        return self.lines

    def drain(self, timeout: float) -> list[str]:
        """Collect every remaining line until the stream ends (the child has exited)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "child output did not end"
        while True:
            line = self._queue.get_nowait()
            if line is None:
                return self.lines
            self.lines.append(line)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill a child if it is still running and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
