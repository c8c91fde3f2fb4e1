"""Range checks of configuration values hold for every layer: environment, JSON file, overrides."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loopchain.configure import MAX_CONFIG_INT, ConfigError, is_branch_name, load_config


@pytest.mark.parametrize(
    ("key", "text", "words"),
    [
        ("HEARTBEAT_TIMEOUT", "nan", ["HEARTBEAT_TIMEOUT", "finite"]),
        ("GRPC_TIMEOUT", "inf", ["GRPC_TIMEOUT", "finite"]),
        ("GRPC_TIMEOUT", "-Infinity", ["GRPC_TIMEOUT", "finite"]),
        ("GRPC_TIMEOUT", "1e400", ["GRPC_TIMEOUT", "finite"]),
        ("HEARTBEAT_INTERVAL", "0", ["HEARTBEAT_INTERVAL", "above 0"]),
        ("INTERVAL_BLOCKGENERATION", "-0.5", ["INTERVAL_BLOCKGENERATION", "above 0"]),
        ("SEND_TX_LIST_DURATION", "-1", ["SEND_TX_LIST_DURATION", "at least 0"]),
        ("SCORE_QUERY_TIMEOUT", "100000", ["SCORE_QUERY_TIMEOUT", "at most 86400"]),
        ("GRPC_MAX_MESSAGE_BYTES", "9" * 400, ["GRPC_MAX_MESSAGE_BYTES", "400 digits"]),
        ("GRPC_MAX_MESSAGE_BYTES", str(MAX_CONFIG_INT + 1), ["at most 2147483647"]),
        ("PORT_PEER", "0", ["PORT_PEER", "at least 1 and at most 65535"]),
        ("MONITOR_LOG_PORT", "70000", ["MONITOR_LOG_PORT", "65535"]),
        ("PORT_DIFF_INNER_SERVICE", "-70000", ["PORT_DIFF_INNER_SERVICE"]),
        ("TPS_LIMIT_PER_SEC", "-1", ["TPS_LIMIT_PER_SEC", "at least 0"]),
        ("MEMORY_GIVE_BACK_MB", "-1", ["MEMORY_GIVE_BACK_MB", "at least 0"]),
        ("CHILD_HANG_TIMEOUT", "1", ["CHILD_HANG_TIMEOUT (or 0: never)", "at least 3", "got 1"]),
        ("CHILD_HANG_TIMEOUT", "-1", ["CHILD_HANG_TIMEOUT", "at least 3"]),
        ("REST_MAX_RECEIVING_MB", str(MAX_CONFIG_INT + 1), ["REST_MAX_RECEIVING_MB", "at most"]),
        ("LEADER_COMPLAIN_RATIO", "0", ["LEADER_COMPLAIN_RATIO", "above 0"]),
        ("LEVELDB_WRITE_BUFFER_MB", "0", ["LEVELDB_WRITE_BUFFER_MB", "at least 1"]),
        ("LEVELDB_MAX_FILE_MB", "4096", ["LEVELDB_MAX_FILE_MB", "at most 1024"]),
        ("CHANNEL_WORKERS", "sometimes", ["CHANNEL_WORKERS", "auto, always, never", "sometimes"]),
        ("DEFAULT_SCORE_BRANCH", "--upload-pack=x", ["DEFAULT_SCORE_BRANCH", "git check-ref"]),
        ("DEFAULT_SCORE_BRANCH", "a..b", ["DEFAULT_SCORE_BRANCH", "branch name git takes"]),
        ("DEFAULT_SCORE_BRANCH", "x" * 201, ["DEFAULT_SCORE_BRANCH", "at most 200", "..."]),
    ],
)
def test_environment_values_out_of_range_name_the_key(
    key: str, text: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(environ={key: text})
    assert all(word in str(refused.value) for word in words), refused.value
    assert len(str(refused.value)) < 200


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "conf.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"HEARTBEAT_TIMEOUT": NaN}', ["HEARTBEAT_TIMEOUT", "finite"]),
        ('{"GRPC_TIMEOUT": Infinity}', ["GRPC_TIMEOUT", "finite"]),
        ('{"GRPC_TIMEOUT": 1e400}', ["GRPC_TIMEOUT", "finite"]),
        ('{"GRPC_TIMEOUT": ' + "9" * 400 + "}", ["GRPC_TIMEOUT", "out of range"]),
        ('{"MAX_BLOCK_TX_NUM": ' + "9" * 400 + "}", ["MAX_BLOCK_TX_NUM", "400 digits"]),
        ('{"MAX_BLOCK_TX_NUM": ' + "9" * 5000 + "}", ["not valid JSON"]),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nested too deeply"]),
        ('{"DEFAULT_STORAGE_PATH": "a\\u0000b"}', ["DEFAULT_STORAGE_PATH", "NUL"]),
    ],
)
def test_file_values_out_of_range_are_config_errors(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_config(path, {})
    assert all(word in str(refused.value) for word in words), refused.value


@pytest.mark.parametrize(
    "change",
    [
        {"HEARTBEAT_TIMEOUT": float("nan")},
        {"GRPC_TIMEOUT": 0},
        {"MAX_BLOCK_TX_NUM": 10**400},
        {"PORT_RADIOSTATION": 65536},
    ],
)
def test_replace_is_held_to_the_same_ranges(change: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(change))):
        load_config(environ={}).replace(**change)


def test_values_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    values = {
        "GRPC_TIMEOUT": 86_400,
        "SEND_TX_LIST_DURATION": 0,
        "MAX_TIMESTAMP_SKEW": 0.0,
        "TPS_LIMIT_PER_SEC": 0,
        "PORT_PEER": 65535,
        "PORT_DIFF_REST_SERVICE_CONTAINER": -1000,
        "GRPC_MAX_MESSAGE_BYTES": MAX_CONFIG_INT,
        "LEADER_COMPLAIN_RATIO": 1,
    }
    config = load_config(write(tmp_path, json.dumps(values)), {})
    assert {key: config[key] for key in values} == values


BRANCHES = [
    "master",
    "release/1.0",
    "v1.0-rc_2",
    "é",
    "a@b",
    "-x",
    "a..b",
    "a b",
    "a\tb",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[",
    "a\\b",
    "a@{b",
    "a//b",
    "/a",
    "a/",
    "a.",
    ".a",
    "a/.b",
    "a.lock",
    "a/b.lock/c",
    "a\x7f",
]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("name", BRANCHES)
def test_a_score_branch_is_a_name_git_takes(name: str) -> None:
    """DEFAULT_SCORE_BRANCH is what `git check-ref-format --branch` takes (peers check a SCORE
    out at it; the RadioStation's POST /api/v1/conf took any string of any length)."""
    git = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    assert is_branch_name(name) == (git.returncode == 0)
    if is_branch_name(name):
        assert load_config(environ={"DEFAULT_SCORE_BRANCH": name}).DEFAULT_SCORE_BRANCH == name
    else:
        with pytest.raises(ConfigError, match="DEFAULT_SCORE_BRANCH"):
            load_config(environ={"DEFAULT_SCORE_BRANCH": name})
