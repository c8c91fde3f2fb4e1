"""The folders a test's code syncs (durable.sync_directory, and the modules given that hold it
under another name), recorded as they are synced for real."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from loopchain import durable


def record_syncs(monkeypatch: pytest.MonkeyPatch, *also: tuple[ModuleType, str]) -> list[Path]:
    """The folders synced from now on, in order; `also`: (module, name) pairs that hold
    sync_directory under a name of their own."""
    synced: list[Path] = []
    real_sync = durable.sync_directory

    def remembering_sync(folder: Path) -> None:
        synced.append(Path(folder))
        real_sync(folder)

    monkeypatch.setattr(durable, "sync_directory", remembering_sync)
    for module, name in also:
        monkeypatch.setattr(module, name, remembering_sync)
    return synced
