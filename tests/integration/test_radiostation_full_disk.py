"""A RadioStation whose storage is full when it starts on an edited channel file: the new version
of the edited channel's set cannot be saved, so it refuses to start with a clear message rather
than serve it unsaved, and starts once there is room. On a real tmpfs; skipped when one cannot be
mounted (not root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.radiostation.main import EXIT_RUNTIME, StartupError, create_station, storage_dir
from loopchain.types.crypto import Signer
from tests._mounts import Filler


def test_an_edit_the_full_disk_cannot_version_stops_the_start_and_is_taken_with_room(
    tmp_path: Path, disk: Path
) -> None:
    a, b = Signer.generate(), Signer.generate()
    data = {"c": {"peers": [{"peer_id": a.address}, {"peer_id": b.address}]}}
    channel_file = tmp_path / "channel_manage_data.json"
    channel_file.write_text(json.dumps(data))
    config = load_config(
        environ={},
        overrides={
            "CHANNEL_MANAGE_DATA_PATH": str(channel_file),
            "DEFAULT_STORAGE_PATH": str(disk),
            "ENABLE_CHANNEL_AUTH": True,
            "LOOPCHAIN_DEFAULT_CHANNEL": "c",
        },
    )
    first = create_station(config).registry.version("c")
    registry = storage_dir(config) / "registry.json"
    saved = registry.read_bytes()
    data["c"]["peers"][0]["weight"] = 3  # the operator edits the file and restarts
    channel_file.write_text(json.dumps(data))
    filler = Filler(disk)
    assert filler.top_up() == 0
    with pytest.raises(StartupError, match="cannot use storage") as refused:
        create_station(config)
    assert refused.value.exit_code == EXIT_RUNTIME
    assert registry.read_bytes() == saved
    filler.remove()
    station = create_station(config)
    assert station.registry.version("c") == first + 1
    assert [v.weight for v in station.validator_set("c").validators] == [3, 1]
