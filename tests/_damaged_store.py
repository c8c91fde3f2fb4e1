"""A store damaged where a test chooses: the in-memory store whose reads of chosen keys fail as
LevelDB's do when a table's checksum does not match (StorageCorrupt naming the store's path)."""

from __future__ import annotations

from loopchain.storage.abc import StorageCorrupt, StorageReplaced
from loopchain.storage.memory import MemoryStore

# where the damaged store would be on this machine: what the peer logs, never what it answers
DAMAGED_PATH = "/var/lib/loopchain/.storage/peer_7100/alpha/blocks"


class DamagedStore(MemoryStore):
    """A MemoryStore whose `get` of a key in `damaged` raises what LevelDBStore raises for a
    table whose checksum does not match; every other read and write is the MemoryStore's."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: set[bytes] = set()
        self.removed = False  # its folder is gone (check_in_place fails as LevelDBStore's does)

    def get(self, key: bytes) -> bytes | None:
        if key in self.damaged:
            raise StorageCorrupt(
                f"LevelDB store at {DAMAGED_PATH} is corrupt: Corruption: block checksum "
                f"mismatch: {DAMAGED_PATH}/000005.ldb"
            )
        return super().get(key)

    def check_in_place(self) -> None:
        if self.removed:
            raise StorageReplaced(
                f"LevelDB store at {DAMAGED_PATH} was removed while it was open: what was "
                "written since is not in what is there now. Put the store back, or move what is "
                "there aside (the peer then syncs the chain from the others), and start the peer "
                "again"
            )
