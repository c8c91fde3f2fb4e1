"""Layered configuration: defaults < configure_user.py < environment < JSON file < overrides."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import errno
import json
import logging
import logging.handlers
import os
import re
import subprocess
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopchain import configure_default
from loopchain.configure import (
    DEFAULTS,
    Config,
    ConfigError,
    describe,
    load_config,
    log_file_handler,
    parse_env_value,
    read_json_layer,
    settings_without_effect,
    setup_logging,
)

USER_MODULE = "loopchain.configure_user"


@pytest.fixture
def user_layer(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A real configure_user module (installed in sys.modules for this test only)."""
    module = types.ModuleType(USER_MODULE)
    monkeypatch.setitem(sys.modules, USER_MODULE, module)
    return module


@pytest.fixture(autouse=True)
def no_user_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests do not see a developer's own configure_user.py unless they install one."""
    monkeypatch.setitem(sys.modules, USER_MODULE, types.ModuleType(USER_MODULE))


def write_json(tmp_path: Path, values: Any) -> str:
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_defaults_come_from_configure_default() -> None:
    config = load_config(environ={})
    assert config.PORT_PEER == configure_default.PORT_PEER == 7100
    assert config["VOTING_RATIO"] == 0.67
    assert config.DEFAULT_STORAGE_PATH == ".storage"
    assert set(config) == set(DEFAULTS)
    assert len(config) == len(DEFAULTS)


def test_layers_override_in_order(tmp_path: Path, user_layer: types.ModuleType) -> None:
    user_layer.PORT_PEER = 7201
    user_layer.IP_LOCAL = "10.0.0.1"
    environ = {"PORT_PEER": "7202", "LOOPCHAIN_DEFAULT_CHANNEL": "env_channel"}
    path = write_json(tmp_path, {"PORT_PEER": 7203, "MAX_BLOCK_TX_NUM": 5})
    overrides = {"PORT_PEER": 7204}

    assert load_config(path, environ, overrides).PORT_PEER == 7204
    assert load_config(path, environ).PORT_PEER == 7203
    assert load_config(None, environ).PORT_PEER == 7202
    assert load_config(None, {}).PORT_PEER == 7201
    full = load_config(path, environ, overrides)
    assert full.IP_LOCAL == "10.0.0.1"  # only the user layer set it
    assert full.LOOPCHAIN_DEFAULT_CHANNEL == "env_channel"  # only the environment set it
    assert full.MAX_BLOCK_TX_NUM == 5  # only the JSON file set it
    assert full.GRPC_TIMEOUT == configure_default.GRPC_TIMEOUT  # nobody set it


def test_user_layer_is_checked_too(user_layer: types.ModuleType) -> None:
    user_layer.NOT_A_KEY = 1
    with pytest.raises(ConfigError, match=r"'NOT_A_KEY' in loopchain/configure_user\.py"):
        load_config(environ={})


def test_unknown_key_in_json_names_the_key_and_file(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"PORT_PEER": 7100, "PORT_PERE": 7200})
    with pytest.raises(ConfigError, match="PORT_PERE") as info:
        load_config(path, {})
    assert path in str(info.value)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="'NO_SUCH_KEY'"):
        load_config(None, {}, {"NO_SUCH_KEY": 1})


def test_environment_names_that_are_not_keys_are_ignored() -> None:
    config = load_config(environ={"PATH": "/bin", "port_peer": "1", "PORT_PEER_X": "2"})
    assert config.PORT_PEER == 7100


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PORT_PEER", "7100"),
        ("PORT_PEER", True),
        ("PORT_PEER", 7100.0),
        ("VOTING_RATIO", "0.67"),
        ("VOTING_RATIO", False),
        ("ENABLE_CHANNEL_AUTH", 2),
        ("ENABLE_CHANNEL_AUTH", "true"),
        ("IP_LOCAL", 127),
    ],
)
def test_wrong_type_in_json_names_the_key(tmp_path: Path, key: str, value: Any) -> None:
    path = write_json(tmp_path, {key: value})
    with pytest.raises(ConfigError, match=f"configuration key {key} must be"):
        load_config(path, {})


def test_lenient_but_exact_json_types(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"GRPC_TIMEOUT": 1, "ENABLE_CHANNEL_AUTH": 1, "RUN_REST_PROXY": 0})
    config = load_config(path, {})
    assert config.GRPC_TIMEOUT == 1.0 and isinstance(config.GRPC_TIMEOUT, float)
    assert config.ENABLE_CHANNEL_AUTH is True
    assert config.RUN_REST_PROXY is False


@pytest.mark.parametrize(
    "content",
    ["", "{not json", "[1, 2]", '"PORT_PEER"'],
)
def test_bad_json_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "conf.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(str(path), {})


def test_missing_json_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "absent.json"), {})


# -- environment parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
        (" true ", True),
    ],
)
def test_env_bool(text: str, expected: bool) -> None:
    assert load_config(environ={"ENABLE_CHANNEL_AUTH": text}).ENABLE_CHANNEL_AUTH is expected


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("ENABLE_CHANNEL_AUTH", "maybe"),
        ("PORT_PEER", "7.5"),
        ("PORT_PEER", "seven"),
        ("PORT_PEER", ""),
        ("VOTING_RATIO", "two thirds"),
    ],
)
def test_env_bad_values_name_the_variable(key: str, text: str) -> None:
    with pytest.raises(ConfigError, match=f"environment variable {key}="):
        load_config(environ={key: text})


def test_env_numbers() -> None:
    config = load_config(environ={"PORT_PEER": "7300", "VOTING_RATIO": "0.75", "GRPC_TIMEOUT": "3"})
    assert config.PORT_PEER == 7300
    assert config.VOTING_RATIO == 0.75
    assert config.GRPC_TIMEOUT == 3.0 and isinstance(config.GRPC_TIMEOUT, float)


def test_env_dicts_and_lists_are_json() -> None:
    assert parse_env_value("K", '{"a": [1, 2]}', {}) == {"a": [1, 2]}
    assert parse_env_value("K", "[1, 2]", []) == [1, 2]
    with pytest.raises(ConfigError, match="K"):
        parse_env_value("K", "[1, 2]", {})
    with pytest.raises(ConfigError, match="environment variable K="):
        parse_env_value("K", "{not json", {})


def test_env_dict_key_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEFAULTS, "TEST_CHANNEL_OPTIONS", {"default": {"score": "x"}})  # type: ignore[index]
    config = load_config(environ={"TEST_CHANNEL_OPTIONS": '{"ch": {"score": "y"}}'})
    assert config.TEST_CHANNEL_OPTIONS == {"ch": {"score": "y"}}
    assert describe(config, "TEST_CHANNEL_OPTIONS")[0]["type"] == 4


# -- the Config object


def test_config_is_immutable() -> None:
    config = load_config(environ={})
    with pytest.raises(AttributeError, match="immutable"):
        config.PORT_PEER = 1
    with pytest.raises(AttributeError, match="immutable"):
        config.NEW_KEY = 1
    with pytest.raises(TypeError):
        config["PORT_PEER"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError, match="no configuration key NOPE"):
        _ = config.NOPE
    assert config.PORT_PEER == 7100


def test_config_does_not_alias_its_input() -> None:
    values = dict(DEFAULTS)
    config = Config(values)
    values["PORT_PEER"] = 1
    assert config.PORT_PEER == 7100


def test_replace_makes_a_checked_copy() -> None:
    config = load_config(environ={})
    changed = config.replace(PORT_PEER=7300, GRPC_TIMEOUT=1)
    assert changed.PORT_PEER == 7300 and changed.GRPC_TIMEOUT == 1.0
    assert config.PORT_PEER == 7100
    with pytest.raises(ConfigError, match="PORT_PEER"):
        config.replace(PORT_PEER="7300")
    with pytest.raises(ConfigError, match="'UNKNOWN'"):
        config.replace(UNKNOWN=1)


def test_config_can_be_copied() -> None:
    config = load_config(environ={})
    assert copy.deepcopy(config) == config


# -- describe


def test_describe_all_keys_with_type_codes() -> None:
    config = load_config(environ={}, overrides={"PORT_PEER": 7500})
    rows = describe(config)
    assert [row["name"] for row in rows] == sorted(DEFAULTS)
    by_name = {row["name"]: row for row in rows}
    assert by_name["PORT_PEER"] == {"name": "PORT_PEER", "value": 7500, "type": 1}
    assert by_name["IP_LOCAL"]["type"] == 0
    assert by_name["VOTING_RATIO"]["type"] == 2
    assert by_name["ENABLE_CHANNEL_AUTH"]["type"] == 3


def test_describe_one_key_or_none() -> None:
    config = load_config(environ={})
    assert describe(config, "GRPC_TIMEOUT") == [
        {"name": "GRPC_TIMEOUT", "value": configure_default.GRPC_TIMEOUT, "type": 2}
    ]
    assert describe(config, "NOT_A_KEY") == []


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"VOTING_RATIO": 0.5}, "VOTING_RATIO"),
        ({"VOTING_RATIO": 1.0}, "VOTING_RATIO"),
        ({"LEADER_BLOCK_CREATION_LIMIT": 0}, "LEADER_BLOCK_CREATION_LIMIT"),
        ({"TIMEOUT_FOR_LEADER_COMPLAIN": 0.0}, "TIMEOUT_FOR_LEADER_COMPLAIN"),
        ({"MAX_TIMEOUT_FOR_LEADER_COMPLAIN": 0.5}, "MAX_TIMEOUT_FOR_LEADER_COMPLAIN"),
    ],
)
def test_unsafe_or_impossible_settings_are_refused(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(environ={}, overrides=overrides)
    with pytest.raises(ConfigError, match=key):
        load_config(environ={}).replace(**overrides)


def test_the_log_file_rotates_by_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "peer.log"
    config = load_config(
        environ={},
        overrides={
            "LOG_FILE_PATH": str(path),
            "LOG_FILE_ROTATE_MAX_BYTES": 2000,
            "LOG_FILE_ROTATE_BACKUP_COUNT": 2,
        },
    )
    handler = log_file_handler(config)
    logger = logging.getLogger("test.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(200):
            logger.warning("line %d %s", n, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name != ".__peer.lock")
    assert files == ["peer.log", "peer.log.1", "peer.log.2"]  # the oldest are gone
    # rotated once it holds the bound: by the line that took it there at most
    assert all((tmp_path / name).stat().st_size <= 2000 + 60 for name in files)
    assert "line 199 " in path.read_text()


def test_the_log_file_rotates_by_time_or_not_at_all_and_refuses_unknown_periods(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "rs.log")
    timed = load_config(
        environ={}, overrides={"LOG_FILE_PATH": path, "LOG_FILE_ROTATE_WHEN": "midnight"}
    )
    unbounded = load_config(
        environ={}, overrides={"LOG_FILE_PATH": path, "LOG_FILE_ROTATE_MAX_BYTES": 0}
    )
    handlers = [log_file_handler(timed), log_file_handler(unbounded)]
    try:
        assert isinstance(handlers[0], logging.handlers.TimedRotatingFileHandler)
        assert not isinstance(handlers[1], logging.handlers.BaseRotatingHandler)
        assert isinstance(handlers[1], logging.FileHandler)
    finally:
        for handler in handlers:
            handler.close()
    with pytest.raises(ConfigError, match="LOG_FILE_ROTATE_WHEN 'hourly' must be empty"):
        load_config(environ={"LOG_FILE_ROTATE_WHEN": "hourly"})
    with pytest.raises(ConfigError, match="LOG_FILE_ROTATE_MAX_BYTES must be at least 0"):
        load_config(environ={"LOG_FILE_ROTATE_MAX_BYTES": "-1"})
    with pytest.raises(ConfigError, match="LOG_FILE_ROTATE_INTERVAL must be at least 1"):
        load_config(overrides={"LOG_FILE_ROTATE_INTERVAL": 0}, environ={})


@contextlib.contextmanager
def _grpc_logging(path: Path, level: str) -> Iterator[logging.Logger]:
    """grpc.aio's logger with `setup_logging` (LOOPCHAIN_LOG_LEVEL `level`) writing to `path`;
    afterwards the logging and grpc's own `traceback` (when grpc is loaded) are as before."""
    root, grpc_logger = logging.getLogger(), logging.getLogger("grpc._cython.cygrpc")
    saved = (root.handlers[:], root.level, grpc_logger.filters[:], grpc_logger.level)
    cygrpc = sys.modules.get("grpc._cython.cygrpc")
    if cygrpc is not None:
        cygrpc.traceback = traceback  # as grpc imports it (an earlier test may have set it)
    overrides = {"LOG_FILE_PATH": str(path), "LOOPCHAIN_LOG_LEVEL": level}
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    setup_logging(load_config(environ={}, overrides=overrides), debug=False, process="score")
    try:
        yield grpc_logger
    finally:
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks  # pytest's own
        if cygrpc is not None:
            cygrpc.traceback = traceback
        for handler in root.handlers:
            handler.close()
        root.handlers[:], grpc_logger.filters[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        grpc_logger.setLevel(saved[3])


def _log_as_grpc_aio_does(path: Path, level: str) -> list[str]:
    """The lines `setup_logging` (LOOPCHAIN_LOG_LEVEL `level`) writes to `path` for grpc.aio's
    records of a handler task cancelled before its first step, and of any other exception."""
    with _grpc_logging(path, level) as grpc_logger:
        # as grpc.aio reports a handler task cancelled before its first step, and any other
        for exc in (asyncio.CancelledError(), ValueError("a servicer bug")):
            try:
                raise exc
            except BaseException:
                grpc_logger.exception(
                    "Exception not handled by _handle_exceptions in servicer method [%s]",
                    "/loopchain.score.ScoreService/CommitBlock",
                )
    return path.read_text().splitlines()


def test_an_rpc_cancelled_before_its_handler_ran_is_one_info_line_and_other_grpc_errors_stay(
    tmp_path: Path,
) -> None:
    lines = _log_as_grpc_aio_does(tmp_path / "score.log", "INFO")
    assert "INFO" in lines[0] and not any("CancelledError" in line for line in lines)
    assert lines[0].endswith(
        "RPC /loopchain.score.ScoreService/CommitBlock was cancelled before its handler ran"
    )
    assert "ERROR" in lines[1] and "Exception not handled" in lines[1]
    assert lines[-1] == "ValueError: a servicer bug"
    quiet = _log_as_grpc_aio_does(tmp_path / "quiet.log", "WARNING")
    assert "ERROR" in quiet[0] and "cancelled before" not in "\n".join(quiet)  # an INFO line less


def test_grpc_s_own_traceback_print_spares_cancellations_once_such_a_record_was_logged(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """grpc.aio (1.85) logs the cancelled call with the method inside the message and then calls
    `traceback.print_exc()` itself: the line names the method, and that print is skipped for a
    CancelledError but still made for any other exception."""
    cygrpc = pytest.importorskip("grpc._cython.cygrpc")
    path = tmp_path / "score.log"
    with _grpc_logging(path, "INFO") as grpc_logger:
        try:
            raise asyncio.CancelledError()
        except asyncio.CancelledError:
            cygrpc.traceback.print_exc()  # before any such record: printed
            assert "CancelledError" in capfd.readouterr().err
            grpc_logger.exception(
                "Exception not handled by _handle_exceptions in servicer method "
                "[/loopchain.score.ScoreService/Query]"
            )
            cygrpc.traceback.print_exc()
        assert "Traceback" not in capfd.readouterr().err
        try:
            raise ValueError("a servicer bug")
        except ValueError:
            cygrpc.traceback.print_exc()
        assert "ValueError: a servicer bug" in capfd.readouterr().err
        assert cygrpc.traceback.format_exc is traceback.format_exc  # the rest is the module's
    lines = path.read_text().splitlines()
    assert lines[-1].endswith(
        "INFO    [score] grpc._cython.cygrpc: "
        "RPC /loopchain.score.ScoreService/Query was cancelled before its handler ran"
    ), lines


def test_a_reply_grpc_could_not_send_is_one_info_line_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A caller that stops reading and leaves makes grpc's core refuse the reply
    (ExecuteBatchError), which grpc logged at ERROR with a traceback and printed again: a stranger
    could write a traceback into a peer's log per connection (review). It is one INFO line naming
    the method now, and grpc's own print is skipped for it."""
    cygrpc = pytest.importorskip("grpc._cython.cygrpc")
    path = tmp_path / "peer.log"
    with _grpc_logging(path, "INFO") as grpc_logger:
        try:
            raise cygrpc.ExecuteBatchError('Failed "execute_batch": (SendStatusFromServer,)')
        except cygrpc.ExecuteBatchError:
            grpc_logger.exception(
                "ExecuteBatchError raised in core by servicer method [%s]",
                "/loopchain.PeerService/GetBlockRange",
            )
            cygrpc.traceback.print_exc()
        assert "Traceback" not in capfd.readouterr().err
    lines = path.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "INFO    [score] grpc._cython.cygrpc: RPC /loopchain.PeerService/GetBlockRange ended "
        "before its answer could be sent: its caller left"
    ), lines


def test_keys_lft_has_no_use_for_are_named_when_set_never_silently_ignored() -> None:
    """LEADER_COMPLAIN_RATIO and BLOCK_VOTE_TIMEOUT are accepted (the original's files keep
    working) and, set to another value than the default, named with why they change nothing."""
    assert settings_without_effect(load_config(environ={})) == []
    config = load_config(environ={"LEADER_COMPLAIN_RATIO": "0.6", "BLOCK_VOTE_TIMEOUT": "5"})
    lines = settings_without_effect(config)
    assert len(lines) == 2
    assert lines[0].startswith("LEADER_COMPLAIN_RATIO = 0.6 has no effect: ")
    assert lines[1].startswith("BLOCK_VOTE_TIMEOUT = 5.0 has no effect: ")


def test_a_log_file_on_a_full_disk_is_told_once_not_a_traceback_a_record(tmp_path: Path) -> None:
    """A real process logging as every node does, its log file on /dev/full (every write fails
    with ENOSPC): its records still reach stderr, with one line about the file, no traceback."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    script = """
import logging
from loopchain.configure import load_config, setup_logging
for rotate in ({"LOG_FILE_ROTATE_MAX_BYTES": 0}, {"LOG_FILE_ROTATE_MAX_BYTES": 10_000}):
    config = load_config(environ={}, overrides={"LOG_FILE_PATH": "/dev/full", **rotate})
    setup_logging(config, debug=False, process="node")
    for n in range(300):
        logging.getLogger("loopchain.test").warning("record %d", n)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    err = done.stderr
    assert "Traceback" not in err and "Logging error" not in err, err[:3000]
    told = [line for line in err.splitlines() if "takes no records" in line]
    assert len(told) == 2 and all("No space left on device" in line for line in told), told
    assert err.count("record 299") == 2 and err.count("] loopchain.test: record ") == 600


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"LOG_OUTPUT_TYPE": "syslog"}, "must be console, file or console|file"),
        ({"LOG_OUTPUT_TYPE": "file"}, "LOG_OUTPUT_TYPE file needs LOG_FILE_PATH"),
        (
            {"LOG_OUTPUT_TYPE": "console", "LOG_FILE_PATH": "node.log"},
            "LOG_OUTPUT_TYPE console does not write LOG_FILE_PATH",
        ),
    ],
)
def test_a_log_output_type_at_odds_with_log_file_path_is_refused(
    overrides: dict, said: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_config(environ={}, overrides=overrides)
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_config(environ={k: str(v) for k, v in overrides.items()})


_LOGS_THREE = """
import logging, sys
from loopchain.configure import load_config, setup_logging
config = load_config(environ={"LOG_FILE_PATH": sys.argv[1], "LOG_OUTPUT_TYPE": sys.argv[2]})
setup_logging(config, debug=False, process="node")
for n in range(3):
    logging.getLogger("loopchain.test").warning("record %d", n)
print("printed", file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("output", "in_file", "on_stderr"),
    [("file", 3, 0), ("console|file", 3, 3), ("file|console", 3, 3)],
)
def test_log_output_type_file_writes_the_records_to_the_file_alone(
    tmp_path: Path, output: str, in_file: int, on_stderr: int
) -> None:
    """LOG_OUTPUT_TYPE "file": the records go to LOG_FILE_PATH alone (./localnet.sh keeps each
    node's stderr apart, unrotated, for what is not a record); stderr keeps the rest."""
    path = tmp_path / "node.log"
    done = subprocess.run(
        [sys.executable, "-c", _LOGS_THREE, str(path), output],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert path.read_text().count("] loopchain.test: record ") == in_file
    assert done.stderr.count("] loopchain.test: record ") == on_stderr, done.stderr
    assert "printed" in done.stderr


def test_records_a_log_file_alone_refuses_go_to_stderr(tmp_path: Path) -> None:
    """LOG_OUTPUT_TYPE "file" on a full disk: stderr takes the records, none is lost."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    done = subprocess.run(
        [sys.executable, "-c", _LOGS_THREE, "/dev/full", "file"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    err = done.stderr
    assert "Traceback" not in err and "Logging error" not in err, err[:3000]
    assert [line.split(": ", 1)[1] for line in err.splitlines() if "loopchain.test" in line] == [
        "record 0",
        "record 1",
        "record 2",
    ]
    assert err.count("takes no records") == 1, err


class _FailingWrites:
    """A log file's stream whose first `failures` writes fail as on a full disk."""

    def __init__(self, stream: Any, failures: int) -> None:
        self.stream, self.failures = stream, failures

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@pytest.mark.parametrize("rotate", [{}, {"LOG_FILE_ROTATE_MAX_BYTES": 0}], ids=["size", "plain"])
def test_a_log_file_that_takes_records_again_says_how_many_it_missed(
    tmp_path: Path, rotate: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "peer.log"
    config = load_config(environ={}, overrides={"LOG_FILE_PATH": str(path), **rotate})
    handler = log_file_handler(config)
    opened = handler.stream or handler.do_open()  # a rotated one opens its file at the first write
    handler.stream = _FailingWrites(opened, 5)
    logger = logging.getLogger("test.full_disk")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(8):
            logger.warning("record %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    assert lines == [
        "record 5",
        f"5 log records before the one above were not written to {path} "
        "(OSError: No space left on device)",
        "record 6",
        "record 7",
    ]
    told = capsys.readouterr().err
    assert told.count("takes no records") == 1 and "Traceback" not in told, told


def test_a_configuration_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    """A folder (or a file without permission) given with -o was a traceback (review)."""
    with pytest.raises(ConfigError, match=f"configuration file {tmp_path} cannot be read"):
        read_json_layer(str(tmp_path))


# a child's preamble: its stderr keeps each write apart, and their list is printed at its exit
_KEEP_WRITES = """
import atexit, sys

class Writes:
    def __init__(self): self.writes = []
    def write(self, text): self.writes.append(text); return len(text)
    def flush(self): pass
    def isatty(self): return False

writes = Writes()
sys.stderr = writes
atexit.register(lambda: print(repr(writes.writes), file=sys.__stderr__))
"""

_UNCAUGHT = (
    _KEEP_WRITES
    + """
import asyncio, threading
from loopchain.configure import load_config, setup_logging
setup_logging(load_config(environ={}, overrides={"LOG_FILE_PATH": sys.argv[1]}), debug=False,
              process="node")
thread = threading.Thread(target=lambda: 1 / 0, name="divider")
thread.start()
thread.join()

class Finalised:
    def __del__(self):
        raise KeyError("in a finaliser")

Finalised()

async def main():
    async def fail():
        raise ValueError("a bug nobody caught")
    async with asyncio.TaskGroup() as group:
        group.create_task(fail())

asyncio.run(main())
"""
)


def test_an_exception_nothing_catches_is_one_record_in_both_logs(tmp_path: Path) -> None:
    """An exception that ends the process (or a thread), or that Python cannot raise (in a
    finaliser), is logged as one record: one write to stderr and a copy in LOG_FILE_PATH. Python's own hook wrote a traceback in pieces to stderr
    only, and a peer's channel workers write to the same stderr: CI saw a worker's traceback cut
    in two by its peer's lines."""
    path = tmp_path / "node.log"
    done = subprocess.run(
        [sys.executable, "-c", _UNCAUGHT, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    writes = [text for text in ast.literal_eval(done.stderr) if text.strip()]
    assert len(writes) == 3, writes
    thread, finaliser, process = writes
    assert re.match(r"\S+ \S+ CRITICAL \[node\] loopchain: divider stopped by an exception", thread)
    assert "Traceback (most recent call last)" in thread, thread
    assert thread.rstrip().endswith("ZeroDivisionError: division by zero"), thread
    assert re.match(r"\S+ \S+ WARNING +\[node\] loopchain: Exception ignored in: <func", finaliser)
    assert finaliser.rstrip().endswith("KeyError: 'in a finaliser'"), finaliser
    assert re.match(r"\S+ \S+ CRITICAL \[node\] loopchain: stopped by an exception", process)
    assert "+ Exception Group Traceback (most recent call last)" in process, process
    assert "ValueError: a bug nobody caught" in process, process
    assert path.read_text() == "".join(writes)


_EARLY_CRASH = (
    _KEEP_WRITES
    + """
import runpy
sys.argv = ["worker", "--channel", "c"]
runpy.run_module("loopchain.peer.worker", run_name="__main__")
"""
)


def test_a_channel_worker_that_crashes_before_its_log_is_set_up_writes_one_record() -> None:
    """Its stderr is its peer's. A crash before it read its configuration (here: it was given
    no stdin at all) went through Python's own hook, a traceback a line at a time between its
    peer's lines; each entry point installs the hooks first now."""
    done = subprocess.run(
        [sys.executable, "-c", _EARLY_CRASH],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.close(0),  # no stdin: sys.stdin is None
    )
    assert done.returncode == 1, done.stderr
    writes = [text for text in ast.literal_eval(done.stderr) if text.strip()]
    assert len(writes) == 1, writes
    assert writes[0].startswith("stopped by an exception nothing caught"), writes
    assert "AttributeError: 'NoneType' object has no attribute 'buffer'" in writes[0], writes


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("peer.py", ["-p", "17990", "-r", "127.0.0.1:1"]),
        ("rest_proxy.py", ["-p", "17990"]),
        ("radiostation.py", ["-p", "17990"]),
    ],
)
@pytest.mark.parametrize("where", ["missing-folder", "a-directory"])
def test_a_log_file_that_cannot_be_opened_is_a_configuration_error(
    tmp_path: Path, script: str, args: list[str], where: str
) -> None:
    """peer.py ended with a traceback ("a bug: please report it"), and the others said first
    that the file would be written without rotation, then that it could not be (operator
    review); a directory was taken, rotated, and every record went to stderr (review): one line
    naming the file, the configuration's exit status."""
    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "missing" / "node.log"
    error = "FileNotFoundError"
    if where == "a-directory":
        path, error = tmp_path / "logs", "IsADirectoryError"
        path.mkdir()
    done = subprocess.run(
        [sys.executable, str(root / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "LOG_FILE_PATH": str(path), "DEFAULT_STORAGE_PATH": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"cannot open LOG_FILE_PATH {path}: {error}" in lines[0], lines


_ROTATED_IMPORTS = """
import sys
import loopchain.peer.main, loopchain.rest.main, loopchain.radiostation.main
from loopchain.configure import load_config, setup_logging
before = set(sys.modules)
setup_logging(load_config(environ={"LOG_FILE_PATH": sys.argv[1]}), debug=False, process="node")
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_a_rotated_log_file_costs_no_package_metadata_reading(tmp_path: Path) -> None:
    """portalocker 4 (concurrent_log_handler's lock library) reads its version from the package
    metadata as it is imported: importlib.metadata with zipfile, csv and more, 1.8 MB more in each
    node process that rotates its log file, which ./localnet.sh's all do (bench: idle RSS 674 ->
    692 MB). The version pinned says its version as a constant."""
    done = subprocess.run(
        [sys.executable, "-c", _ROTATED_IMPORTS, str(tmp_path / "node.log")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = done.stdout.split()
    assert "concurrent_log_handler" in imported, imported  # (the rotated file's handler)
    assert not [name for name in imported if name.startswith("importlib.metadata")], imported
