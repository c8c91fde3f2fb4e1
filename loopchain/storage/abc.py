"""The key-value store interface every backend implements (LevelDB for nodes, memory for tests)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType


class StorageError(RuntimeError):
    """A store that cannot be opened or used (held by another process, corrupt, closed)."""


class StoreLocked(StorageError):
    """A store that another process holds open (it may be about to end and release it)."""


class StorageCorrupt(StorageError):
    """A store whose files do not hold a readable database (the backend says it is corrupt)."""


class StorageReplaced(StorageCorrupt):
    """A store whose folder was removed or replaced while it was open: its words say what to do
    (put it back, or move what is there aside)."""


class WriteBatch(ABC):
    """Writes applied atomically, all or nothing, when the batch is committed."""

    @abstractmethod
    def put(self, key: bytes, value: bytes) -> None: ...

    @abstractmethod
    def delete(self, key: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None:
        """Apply every write at once (synced to disk for persistent backends)."""

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()


class KeyValueStore(ABC):
    """Ordered byte keys to byte values."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        """Store one value; `sync` waits until it is durable."""

    @abstractmethod
    def delete(self, key: bytes, *, sync: bool = False) -> None: ...

    @abstractmethod
    def iterate(
        self, prefix: bytes = b"", *, reverse: bool = False, cached: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order (`cached=False`: a
        one-off scan, which a backend with a cache keeps out of it)."""

    @abstractmethod
    def write_batch(self) -> WriteBatch:
        """A batch whose writes become visible together on commit."""

    @abstractmethod
    def close(self) -> None: ...

    def check_in_place(self) -> None:
        """StorageError when the store's files are no longer where it was opened (its folder
        removed or replaced while it is open); a store in memory always is."""
        return None

    def __enter__(self) -> KeyValueStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
