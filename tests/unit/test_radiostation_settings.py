"""Which configuration keys an operator may set on a running RadioStation (POST /api/v1/conf):
those it reads as it works (RUNTIME). Keys read once at start need a restart; every other key is
a peer's, which the RadioStation reads nowhere: it answered 200 to MAX_BLOCK_TX_NUM, which
changed nothing anywhere (operator review)."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from loopchain.configure import DEFAULTS, load_config
from loopchain.radiostation.channels import ChannelSpec
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import RUNTIME, STARTUP_ONLY, SettingRefused, Station
from loopchain.types.crypto import Signer

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "loopchain" / "radiostation"


def _station(tmp_path: Path) -> Station:
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)})
    channel = ChannelSpec("c", "loopchain/default", ())
    registry = Registry.open(tmp_path / "registry.json", {"c": channel}, False)
    return Station(config, registry, Signer.generate(), time.time)


def _keys_read(source: str) -> set[str]:
    """The configuration keys a module reads as attributes (`config.KEY`, `x.config.KEY`)."""
    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in DEFAULTS
    }


def test_every_key_the_radiostation_reads_is_set_at_runtime_or_at_start_only() -> None:
    read: set[str] = set()
    for module in sorted(PACKAGE_DIR.glob("*.py")):
        read |= _keys_read(module.read_text())
    assert read, "no configuration key found: the scan is broken"
    assert RUNTIME <= set(DEFAULTS) and not RUNTIME & STARTUP_ONLY
    assert read - RUNTIME - STARTUP_ONLY == set()


@pytest.mark.parametrize("name", ["MAX_BLOCK_TX_NUM", "TX_POOL_MAX", "SCORE_STEP_LIMIT"])
def test_a_peers_setting_is_refused_naming_what_the_radiostation_sets(
    tmp_path: Path, name: str
) -> None:
    station = _station(tmp_path)
    with pytest.raises(SettingRefused, match=f"{name} is not a RadioStation setting") as refused:
        station.set_config(name, DEFAULTS[name])
    assert refused.value.field == "name" and "HEARTBEAT_TIMEOUT" in str(refused.value)
    assert station.config[name] == DEFAULTS[name]


def test_log_output_type_is_read_at_start_only(tmp_path: Path) -> None:
    with pytest.raises(SettingRefused, match="LOG_OUTPUT_TYPE is read once at start"):
        _station(tmp_path).set_config("LOG_OUTPUT_TYPE", "console")


@pytest.mark.parametrize(("name", "value"), [("HEARTBEAT_TIMEOUT", 12.5), ("GRPC_TIMEOUT", 3.0)])
def test_a_radiostation_setting_is_set(tmp_path: Path, name: str, value: float) -> None:
    station = _station(tmp_path)
    assert station.set_config(name, value)[name] == value
    assert station.config[name] == value
