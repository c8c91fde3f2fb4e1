"""tools/listed_channels.py: keys made where peers look, channels listing their ids, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.radiostation.channels import load_channels
from loopchain.types.crypto import load_or_create_key
from tools.listed_channels import main


def test_channels_list_the_peers_ids_and_settings_name_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "channels.json"
    keys = {port: tmp_path / f"peer_{port}" / "peer_key" for port in (7100, 7200)}
    args = ["--out", str(out), "--channels", "a,b", "--score", "sample/token"]
    args += [
        "--score-settings",
        '{"token": {"owner": "@127.0.0.1:7200"}, "n": ["@127.0.0.1:7100"]}',
    ]
    for port, key in keys.items():
        args += ["--peer", f"127.0.0.1:{port}={key}"]
    assert main(args) == 0
    ids = {port: load_or_create_key(key).address for port, key in keys.items()}
    assert capsys.readouterr().out.split() == [
        "127.0.0.1:7100",
        ids[7100],
        "127.0.0.1:7200",
        ids[7200],
    ]
    specs = load_channels(out, "a", "x")
    for spec in specs.values():
        assert [(m.peer_id, m.target) for m in spec.members or ()] == [
            (ids[7100], "127.0.0.1:7100"),
            (ids[7200], "127.0.0.1:7200"),
        ]
        assert spec.score_settings == {"token": {"owner": ids[7200]}, "n": [ids[7100]]}
    assert main(args) == 0  # a second run keeps the keys, so the ids
    assert json.loads(out.read_text())["a"]["peers"][0]["peer_id"] == ids[7100]


@pytest.mark.parametrize(
    ("settings", "message"),
    [('{"o": "@10.0.0.1:1"}', "no --peer has the target"), ("[1]", "must be a JSON object")],
)
def test_bad_settings_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str, message: str
) -> None:
    args = ["--out", str(tmp_path / "c.json"), "--score-settings", settings]
    assert main([*args, "--peer", f"127.0.0.1:7100={tmp_path / 'k'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
