"""tools/listed_channels.py: keys made where peers look, channels listing their ids, settings,
genesis data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loopchain.radiostation.channels import load_channels
from loopchain.types.crypto import load_or_create_key
from loopchain.types.genesis import GenesisData
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
    specs = load_channels(out, "a", "org/x")
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
    assert not (tmp_path / "k").exists()  # refused before any key is made


GENESIS = {
    "accounts": [
        {"name": "god", "address": "hx" + "e" * 40, "balance": "0xd3c21bcecceda1000000"},
    ],
    "message": "dev",
}


def test_genesis_is_written_into_every_channel_only_when_given(tmp_path: Path) -> None:
    out = tmp_path / "channels.json"
    args = ["--out", str(out), "--channels", "a,b", "--peer", f"127.0.0.1:7100={tmp_path / 'k'}"]
    assert main([*args, "--genesis", json.dumps(GENESIS)]) == 0
    written = json.loads(out.read_text())
    # each channel its own network id (a v3 transaction names no channel): 0x3, then 0x4
    own = [{**GENESIS, "nid": "0x3"}, {**GENESIS, "nid": "0x4"}]
    assert [written[name]["genesis_data"] for name in ("a", "b")] == own
    specs = load_channels(out, "a", "org/x")
    assert specs["b"].genesis == GenesisData.from_json(own[1])
    stated = {**GENESIS, "nid": "0x9"}  # a stated nid is the operator's: kept, and one channel
    assert main([*args[:3], "a", *args[4:], "--genesis", json.dumps(stated)]) == 0
    assert json.loads(out.read_text())["a"]["genesis_data"] == stated
    assert main([*args[:3], "a", *args[4:], "--genesis", json.dumps(GENESIS)]) == 0
    assert json.loads(out.read_text())["a"]["genesis_data"] == GENESIS  # alone: ICON_NID's
    assert main(args) == 0  # without --genesis the channels state none
    assert all("genesis_data" not in channel for channel in json.loads(out.read_text()).values())
    assert load_channels(out, "a", "org/x")["a"].genesis is None


@pytest.mark.parametrize(
    ("genesis", "message"),
    [
        ("{not json", "--genesis: "),
        ("[]", "--genesis: expected a JSON object"),
        (
            '{"accounts": [{"name": "a", "address": "hx1", "balance": "0x1"}]}',
            "accounts[0].address",
        ),
    ],
)
def test_bad_genesis_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], genesis: str, message: str
) -> None:
    args = ["--out", str(tmp_path / "c.json"), "--genesis", genesis]
    assert main([*args, "--peer", f"127.0.0.1:7100={tmp_path / 'k'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
    assert not (tmp_path / "k").exists()  # refused before any key is made


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channels", "kofia,bad/name"], "--channels: 'bad/name' must be 1 to 64 letters"),
        (["--channels", "a b"], "--channels: 'a b' must be"),
        (["--score", "../../etc"], "--score '../../etc' must be"),
    ],
)
def test_names_the_radiostation_refuses_are_refused_before_any_key_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """The file was written and the RadioStation refused it at start (review)."""
    out = tmp_path / "c.json"
    assert main(["--out", str(out), *args, "--peer", f"127.0.0.1:7100={tmp_path / 'k'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("listed_channels.py: ") and message in err, err
    assert not out.exists() and not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("folder", "is a directory"),
        ("file/c.json", "file is not a directory"),
        ("file/deeper/c.json", "file is not a directory"),
    ],
)
def test_an_out_that_cannot_be_a_file_is_refused_before_any_key_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("not a folder")
    key = tmp_path / "peer" / "k"
    assert main(["--out", str(tmp_path / out), "--peer", f"127.0.0.1:7100={key}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("listed_channels.py: --out ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not key.exists()
    assert list((tmp_path / "folder").iterdir()) == []


def test_the_channel_file_is_readable_by_all_whatever_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "new" / "c.json"
    previous = os.umask(0o077)
    try:
        assert main(["--out", str(out), "--peer", f"127.0.0.1:7100={tmp_path / 'k'}"]) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["c.json"]


def test_a_key_password_that_is_not_utf8_is_refused_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Undecodable bytes of the environment (held as lone surrogates) are refused in one line
    that shows no part of the password, before any key or file is made."""
    monkeypatch.setitem(os.environb, b"LOOPCHAIN_KEY_PASSWORD", b"Qz7\xffWv")
    out, key = tmp_path / "c.json", tmp_path / "peer" / "k"
    assert main(["--out", str(out), "--peer", f"127.0.0.1:7100={key}"]) == 1
    err = capsys.readouterr().err
    assert err == "listed_channels.py: $LOOPCHAIN_KEY_PASSWORD is not UTF-8 text\n"
    assert not key.exists() and not out.exists()
