"""An in-memory KeyValueStore with the semantics of the LevelDB backend (for tests and tools)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from loopchain.storage.abc import KeyValueStore, StorageError, WriteBatch

_Op = tuple[bytes, bytes | None]  # (key, value) or (key, None) for a delete


def check_bytes(name: str, value: object) -> bytes:
    """Return `value` when it is bytes; raise TypeError naming the argument otherwise."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    return value


class MemoryWriteBatch(WriteBatch):
    """Buffered writes applied to a MemoryStore at once on commit; dropped if never committed."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._ops: list[_Op] = []
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError("write batch was already committed")

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        self._ops.append((check_bytes("key", key), check_bytes("value", value)))

    def delete(self, key: bytes) -> None:
        self._check_open()
        self._ops.append((check_bytes("key", key), None))

    def commit(self) -> None:
        """Apply every buffered write at once."""
        self._check_open()
        self._store._apply(self._ops)
        self._done = True


class MemoryStore(KeyValueStore):
    """A dict-backed store; iteration is over a sorted snapshot taken when iterate() is called."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory store is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._data.get(check_bytes("key", key))

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._apply([(check_bytes("key", key), check_bytes("value", value))])

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._apply([(check_bytes("key", key), None)])

    def iterate(
        self, prefix: bytes = b"", *, reverse: bool = False, cached: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order."""
        self._check_open()
        check_bytes("prefix", prefix)
        with self._lock:
            items = [(k, v) for k, v in self._data.items() if k.startswith(prefix)]
        items.sort(reverse=reverse)
        return iter(items)

    def write_batch(self) -> WriteBatch:
        """A batch whose writes become visible together on commit."""
        self._check_open()
        return MemoryWriteBatch(self)

    def close(self) -> None:
        self._closed = True

    def _apply(self, ops: list[_Op]) -> None:
        self._check_open()
        with self._lock:
            for key, value in ops:
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value
