"""The SCORE's state in its own KeyValueStore, staged per transaction and per block.

Key schema (one LevelDB, owned by the SCORE process):

* ``s:`` + user key -> value: the SCORE's state as its last committed block left it.
* ``m:height`` (decimal), ``m:state_root``, ``m:results_hash`` (32 bytes), ``m:block_hash`` (hex):
  the last committed block; absent before the first commit (height -1, EMPTY_ROOT roots).
* ``b:`` + height (8 bytes, big-endian) -> canonical JSON of that block's BlockView.
* ``h:`` + block hash (hex, ASCII) -> height (8 bytes, big-endian).

Invariant: a block's user writes, its BlockView records and the meta keys are written in ONE write
batch, so the store always holds the state of exactly one committed height and its roots.

A transaction writes into a `TxOverlay`; when it succeeds the overlay is merged into the block's
staged writes, when it raises the overlay is dropped. Reads see tx, then staged, then committed data.

A read the store fails (StorageError: a checksum mismatch, an I/O error) is remembered until the
engine asks (`raise_read_failure`), so SCORE code that catches the error and goes on cannot turn
this machine's failing disk into a result: the engine raises it once that code returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopchain.blockchain.coin import RESERVED_PREFIX
from loopchain.blockchain.execution import TxResult, next_state_root, results_hash
from loopchain.blockchain.score_base import BlockView, ScoreError
from loopchain.storage.abc import KeyValueStore, StorageCorrupt, StorageError
from loopchain.types import canonical
from loopchain.types.hashing import EMPTY_ROOT


def damage_marker(path: Path) -> Path:
    """The file saying the state store at `path` is to be moved aside and made anew from the
    chain when next opened (see process.open_state_store): found corrupt while in use, or older
    or newer than the chain this peer recorded (ScoreSupervisor.replace_state)."""
    return path.with_name(f"{path.name}.damaged")


USER_PREFIX = b"s:"
META_PREFIX = b"m:"
BLOCK_PREFIX = b"b:"
HASH_PREFIX = b"h:"
_HEIGHT = META_PREFIX + b"height"
_STATE_ROOT = META_PREFIX + b"state_root"
_RESULTS_HASH = META_PREFIX + b"results_hash"
_BLOCK_HASH = META_PREFIX + b"block_hash"

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
# What the writes of one transaction, and of one block, may take: each key's bytes and its last
# value's (a delete counts its key). A put past the first raises in the SCORE (its transaction
# fails unless the SCORE catches it); a successful transaction whose writes would take its block
# past the second fails (its writes discarded). Values are counted as often as they are written:
# many keys holding one shared value are as many copies in the block's write batch, and the
# state root hashes each. A block's writes are held in memory until they are committed.
MAX_TX_WRITE_BYTES = 8 * 1024 * 1024
MAX_BLOCK_WRITE_BYTES = 64 * 1024 * 1024
BLOCK_CACHE_SIZE = 1000

Writes = dict[bytes, bytes | None]  # user key -> value, None for a delete


class StateConflict(Exception):
    """A commit or rollback that does not match the staged block."""


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"state keys must be bytes, got {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"state keys must be 1 to {MAX_KEY_BYTES} bytes, got {len(key)}")
    return key


def _check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"state values must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"state values must be at most {MAX_VALUE_BYTES} bytes, got {len(value)}")
    return value


def _write_bytes(key: bytes, value: bytes | None) -> int:
    """What one write counts towards MAX_TX_WRITE_BYTES and MAX_BLOCK_WRITE_BYTES."""
    return len(key) + (0 if value is None else len(value))


def _bytes_after(total: int, writes: Writes, more: Writes) -> int:
    """`total` (the bytes of `writes`) once `more` is laid over `writes`."""
    for key, value in more.items():
        if key in writes:
            total -= _write_bytes(key, writes[key])
        total += _write_bytes(key, value)
    return total


def _height_key(height: int) -> bytes:
    return BLOCK_PREFIX + height.to_bytes(8, "big")


def encode_block_view(view: BlockView) -> bytes:
    """Canonical JSON of a BlockView."""
    return canonical.encode(
        {
            "height": view.height,
            "block_hash": view.block_hash,
            "timestamp": view.timestamp,
            "leader": view.leader,
        }
    )


def decode_block_view(raw: bytes) -> BlockView:
    """Parse a stored BlockView; raises EncodingError when malformed."""
    fields: dict[str, type | tuple[type, ...]] = {
        "height": int,
        "block_hash": str,
        "timestamp": int,
        "leader": str,
    }
    obj = canonical.decode_object(raw, fields)
    return BlockView(obj["height"], obj["block_hash"], obj["timestamp"], obj["leader"])


@dataclass(frozen=True)
class StagedBlock:
    """A block executed but not yet committed: its writes, records and resulting roots."""

    view: BlockView
    writes: Writes
    state_root: bytes
    results_hash: bytes


class TxOverlay:
    """One transaction's writes over the block's staged writes and the committed state."""

    def __init__(self, state: ScoreState) -> None:
        self._state = state
        self.writes: Writes = {}
        self.write_bytes = 0  # of `writes`, at most MAX_TX_WRITE_BYTES

    def get(self, key: bytes) -> bytes | None:
        """The value as this transaction sees it."""
        key = _check_key(key)
        if key in self.writes:
            return self.writes[key]
        return self._state.read_staged(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Record a write (applied only if the transaction succeeds)."""
        self._record(_check_key(key), _check_value(value))

    def delete(self, key: bytes) -> None:
        """Record a delete (applied only if the transaction succeeds)."""
        self._record(_check_key(key), None)

    def _record(self, key: bytes, value: bytes | None) -> None:
        total = _bytes_after(self.write_bytes, self.writes, {key: value})
        if total > MAX_TX_WRITE_BYTES:
            raise ScoreError(
                f"a transaction may write at most {MAX_TX_WRITE_BYTES} bytes of keys and values; "
                f"this write would take its writes to {total}"
            )
        self.writes[key] = value
        self.write_bytes = total


class ReadOnlyState:
    """The committed state; every write is refused with `reason`."""

    def __init__(self, state: ScoreState, reason: str) -> None:
        self._state = state
        self._reason = reason

    def get(self, key: bytes) -> bytes | None:
        """The committed value at `key`."""
        return self._state.read_committed(_check_key(key))

    def put(self, key: bytes, value: bytes) -> None:
        raise ScoreError(self._reason)

    def delete(self, key: bytes) -> None:
        raise ScoreError(self._reason)


class NoState:
    """The state as a SCORE's constructor sees it: every read and write refused with `reason`."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def get(self, key: bytes) -> bytes | None:
        raise ScoreError(self._reason)

    def put(self, key: bytes, value: bytes) -> None:
        raise ScoreError(self._reason)

    def delete(self, key: bytes) -> None:
        raise ScoreError(self._reason)


class StateProxy:
    """The StateAccess a SCORE holds: routes to the current transaction overlay or a read-only view."""

    def __init__(self, idle: ReadOnlyState) -> None:
        self._idle = idle
        self.target: TxOverlay | ReadOnlyState | NoState = idle

    def reset(self) -> None:
        """Route to the read-only view again (after a transaction or query)."""
        self.target = self._idle

    def get(self, key: bytes) -> bytes | None:
        return self.target.get(_score_key(key))

    def put(self, key: bytes, value: bytes) -> None:
        self.target.put(_score_key(key), value)

    def delete(self, key: bytes) -> None:
        self.target.delete(_score_key(key))


def _score_key(key: object) -> bytes:
    """A key SCORE code may use: not one of the engine's (the coin's balances)."""
    key = _check_key(key)
    if key.startswith(RESERVED_PREFIX):
        raise ValueError("state keys starting with a NUL byte are reserved for the engine")
    return key


class ScoreState:
    """Committed state in a KeyValueStore plus the writes of the block being executed."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._block_writes: Writes = {}
        self._block_write_bytes = 0  # of _block_writes
        self.staged: StagedBlock | None = None
        self._read_failure: StorageError | None = None  # the first a read met since forgotten
        self.executed_height, self.state_root, self.results_hash, self.block_hash = self._meta()
        self.blocks = BlockHistory(self.read, lambda: self.executed_height)

    def _meta(self) -> tuple[int, bytes, bytes, str]:
        """The executed height, roots and block hash the store records; StorageCorrupt when they
        are damaged, so that the store is moved aside and replayed from the chain (as a
        package's load failure, it gave this peer results 9100 no other peer gave; review)."""
        raw_height = self.store.get(_HEIGHT)
        if raw_height is None:
            return -1, EMPTY_ROOT, EMPTY_ROOT, ""
        state_root = self.store.get(_STATE_ROOT) or b""
        result_root = self.store.get(_RESULTS_HASH) or b""
        if len(state_root) != 32 or len(result_root) != 32:
            raise StorageCorrupt("SCORE state meta is damaged: roots missing or malformed")
        if not raw_height.isdigit() or len(raw_height) > 19:
            shown = raw_height[:20].decode("ascii", "replace")
            raise StorageCorrupt(f"SCORE state meta is damaged: executed height {shown!r}")
        block_hash = (self.store.get(_BLOCK_HASH) or b"").decode("ascii", "replace")
        return int(raw_height), state_root, result_root, block_hash

    def read(self, key: bytes) -> bytes | None:
        """The store's value at `key`; a StorageError the store raises is remembered (the first
        since forget_read_failure) before it is raised, so code that catches it cannot hide it."""
        try:
            return self.store.get(key)
        except StorageError as exc:
            if self._read_failure is None:
                self._read_failure = exc
            raise

    def forget_read_failure(self) -> None:
        """Start remembering read failures afresh (before a SCORE call)."""
        self._read_failure = None

    def raise_read_failure(self) -> None:
        """Raise the StorageError a read met since forget_read_failure, if any, forgetting it."""
        failure, self._read_failure = self._read_failure, None
        if failure is not None:
            raise failure

    def read_committed(self, key: bytes) -> bytes | None:
        """The value committed at user key `key`."""
        return self.read(USER_PREFIX + key)

    def read_staged(self, key: bytes) -> bytes | None:
        """The value at `key` after the block's successful transactions so far."""
        if key in self._block_writes:
            return self._block_writes[key]
        return self.read_committed(key)

    def begin_block(self) -> None:
        """Start executing a block, dropping any block staged before."""
        self._block_writes = {}
        self._block_write_bytes = 0
        self.staged = None

    def overlay(self) -> TxOverlay:
        """A fresh overlay for one transaction of the current block."""
        return TxOverlay(self)

    def block_write_bytes_with(self, overlay: TxOverlay) -> int:
        """What the block's writes would take with `overlay`'s merged (see MAX_BLOCK_WRITE_BYTES)."""
        return _bytes_after(self._block_write_bytes, self._block_writes, overlay.writes)

    def merge(self, overlay: TxOverlay) -> None:
        """Apply a successful transaction's writes to the block's staged writes."""
        self._block_write_bytes = self.block_write_bytes_with(overlay)
        self._block_writes.update(overlay.writes)

    def stage_block(self, view: BlockView, results: list[TxResult]) -> StagedBlock:
        """Compute the roots the block would commit to; nothing is written."""
        writes = dict(self._block_writes)
        root = next_state_root(self.state_root, writes)
        self.staged = StagedBlock(view, writes, root, results_hash(results))
        return self.staged

    def commit(self, height: int) -> StagedBlock:
        """Write the staged block's writes, its BlockView and the meta in one write batch."""
        staged = self.staged
        if staged is None or staged.view.height != height:
            have = "nothing" if staged is None else f"height {staged.view.height}"
            raise StateConflict(f"cannot commit height {height}: {have} is staged")
        with self.store.write_batch() as batch:
            for key, value in staged.writes.items():
                if value is None:
                    batch.delete(USER_PREFIX + key)
                else:
                    batch.put(USER_PREFIX + key, value)
            for key, raw in self.blocks.records(staged.view).items():
                batch.put(key, raw)
            batch.put(_HEIGHT, str(height).encode("ascii"))
            batch.put(_STATE_ROOT, staged.state_root)
            batch.put(_RESULTS_HASH, staged.results_hash)
            batch.put(_BLOCK_HASH, staged.view.block_hash.encode("ascii"))
        self.executed_height, self.state_root = height, staged.state_root
        self.results_hash, self.block_hash = staged.results_hash, staged.view.block_hash
        self.blocks.remember(staged.view)
        self.begin_block()
        return staged

    def rollback(self) -> None:
        """Discard the staged block (and any half-executed one)."""
        self.begin_block()


class BlockGate:
    """The BlockReader a SCORE holds: its channel's blocks, unless `closed` gives why not."""

    def __init__(self, blocks: BlockHistory) -> None:
        self._blocks = blocks
        self.closed: str | None = None

    def _open(self) -> BlockHistory:
        if self.closed is not None:
            raise ScoreError(self.closed)
        return self._blocks

    def last_block(self) -> BlockView | None:
        return self._open().last_block()

    def block_by_height(self, height: int) -> BlockView | None:
        return self._open().block_by_height(height)

    def block_by_hash(self, block_hash: str) -> BlockView | None:
        return self._open().block_by_hash(block_hash)


class BlockHistory:
    """The BlockReader of a SCORE: committed blocks, the newest ones cached in memory."""

    def __init__(
        self, read: Callable[[bytes], bytes | None], executed_height: Callable[[], int]
    ) -> None:
        self._read = read  # the store's get (ScoreState.read)
        self._executed_height = executed_height
        self._cache: OrderedDict[int, BlockView] = OrderedDict()
        self._heights: dict[str, int] = {}

    @staticmethod
    def records(view: BlockView) -> dict[bytes, bytes]:
        """The store records of one committed block."""
        height = view.height.to_bytes(8, "big")
        return {
            _height_key(view.height): encode_block_view(view),
            HASH_PREFIX + view.block_hash.encode("ascii"): height,
        }

    def remember(self, view: BlockView) -> None:
        """Cache a committed block, forgetting the oldest beyond BLOCK_CACHE_SIZE."""
        self._cache[view.height] = view
        self._heights[view.block_hash] = view.height
        while len(self._cache) > BLOCK_CACHE_SIZE:
            _, old = self._cache.popitem(last=False)
            self._heights.pop(old.block_hash, None)

    def last_block(self) -> BlockView | None:
        """The last committed block, or None before the first."""
        height = self._executed_height()
        return self.block_by_height(height) if height >= 0 else None

    def block_by_height(self, height: int) -> BlockView | None:
        """The committed block at `height`, or None."""
        if not isinstance(height, int) or not 0 <= height <= self._executed_height():
            return None
        cached = self._cache.get(height)
        if cached is not None:
            return cached
        raw = self._read(_height_key(height))
        return decode_block_view(raw) if raw is not None else None

    def block_by_hash(self, block_hash: str) -> BlockView | None:
        """The committed block with hex hash `block_hash`, or None."""
        if not isinstance(block_hash, str) or not block_hash.isascii():
            return None
        height = self._heights.get(block_hash)
        if height is None:
            raw = self._read(HASH_PREFIX + block_hash.encode("ascii"))
            height = int.from_bytes(raw, "big") if raw is not None else None
        return self.block_by_height(height) if height is not None else None
