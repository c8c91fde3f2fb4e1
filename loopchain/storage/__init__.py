"""Key-value storage: the KeyValueStore interface with LevelDB and in-memory backends.

Pure layers import the interface from `loopchain.storage.abc` (and `MemoryStore` from
`loopchain.storage.memory`); only process shells and tools open LevelDB, through `open_store`.
"""

from __future__ import annotations

from pathlib import Path

from loopchain.storage.abc import KeyValueStore


def open_store(path: str | Path, *, create: bool = True) -> KeyValueStore:
    """Open (creating it unless `create` is False) the LevelDB store in directory `path`."""
    from loopchain.storage.leveldb import LevelDBStore  # plyvel only when a store is opened

    return LevelDBStore(path, create=create)
