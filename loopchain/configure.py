"""Layered configuration: defaults < configure_user.py < environment < JSON file < explicit overrides.

`load_config` returns one frozen `Config`; it is passed down, never read from a global.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import importlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType, TracebackType
from typing import Any

from loopchain import configure_default
from loopchain.safe_text import MAX_LOG_MESSAGE, bounded, one_line


class ConfigError(ValueError):
    """A configuration layer named an unknown key or gave a value of the wrong type."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _module_keys(module: ModuleType) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if k.isupper() and not k.startswith("_")}


DEFAULTS: Mapping[str, Any] = _module_keys(configure_default)


def _type_name(value: Any) -> str:
    return type(value).__name__


def shown(value: Any, limit: int = 60) -> str:
    """repr(value), shortened: a message never carries a 400-digit number or a long string (what
    a caller sent is echoed through this)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # beyond the interpreter's 4300 digits
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def coerce(key: str, value: Any, default: Any) -> Any:
    """Return `value` as the type of `default`, or raise ConfigError naming `key`."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                message = f"configuration key {key} is out of range: {shown(value)}"
                raise ConfigError(message) from None
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (dict, list)):
        if isinstance(value, type(default)):
            return value
    raise ConfigError(
        f"configuration key {key} must be {_type_name(default)}, got {_type_name(value)} "
        f"{shown(value)}"
    )


def parse_env_value(key: str, text: str, default: Any) -> Any:
    """Parse an environment string typed like the key's default."""
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (dict, list)):
            return coerce(key, json.loads(text), default)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"environment variable {key}={text!r} is not a valid {_type_name(default)}"
        ) from exc
    return text


class Config(Mapping[str, Any]):
    """An immutable set of configuration values, readable as attributes or as a mapping."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no configuration key {name}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use replace()")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with the given keys changed (checked like any other layer)."""
        values = _apply(dict(self._values), changes, "override")
        validate(values)
        return Config(values)

    def __repr__(self) -> str:
        return f"Config({len(self._values)} keys)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self._values,))


def _apply(values: dict[str, Any], layer: Mapping[str, Any], origin: str) -> dict[str, Any]:
    for key, value in layer.items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown configuration key {shown(key)} in {origin}")
        values[key] = coerce(key, value, DEFAULTS[key])
    return values


# Ranges every layer is held to (files, environment, overrides and the RadioStation's POST /conf).
MAX_CONFIG_INT = 2**31 - 1  # every integer key fits a 32-bit field (gRPC options, sizes, counts)
MAX_CONFIG_SECONDS = 86_400.0  # no time setting beyond a day
_PORTS = ("PORT_PEER", "PORT_RADIOSTATION", "MONITOR_LOG_PORT")  # 1..65535
_PORT_DIFFS = ("PORT_DIFF_REST_SERVICE_CONTAINER", "PORT_DIFF_INNER_SERVICE")  # -65535..65535
_NON_NEGATIVE_INTS = (
    "TPS_LIMIT_PER_SEC",
    "ENABLE_REST_SSL",
    "GRPC_SSL_TYPE",
    "STORAGE_MIN_FREE_MB",
    "LOG_FILE_ROTATE_MAX_BYTES",
    "LOG_FILE_ROTATE_BACKUP_COUNT",
    "MEMORY_GIVE_BACK_MB",
)
_POSITIVE_INTS = (
    "GRPC_MAX_MESSAGE_BYTES",
    "REST_MAX_BODY_BYTES",
    "SCORE_STEP_LIMIT",
    "SCORE_MEMORY_LIMIT_MB",
    "SYNC_BATCH_BLOCKS",
    "MAX_TX_COUNT_IN_ADDTX_LIST",
    "MAX_TX_BYTES",
    "TX_POOL_MAX_BYTES",
    "LOG_FILE_ROTATE_INTERVAL",
)
_POSITIVE_SECONDS = (  # deadlines and intervals: zero would spin or fail every call at once
    "GRPC_TIMEOUT",
    "REST_KEEPALIVE_TIMEOUT",
    "REST_BODY_TIMEOUT",
    "REST_SEND_TIMEOUT",
    "SCORE_QUERY_TIMEOUT",
    "SCORE_INVOKE_TIMEOUT",
    "SCORE_RESTART_BACKOFF_MAX",
    "INTERVAL_BLOCKGENERATION",
    "TIMEOUT_FOR_LEADER_COMPLAIN",
    "MAX_TIMEOUT_FOR_LEADER_COMPLAIN",
    "BLOCK_VOTE_TIMEOUT",
    "TX_POOL_ADMIT_WAIT",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TIMEOUT",
    "TX_TIMESTAMP_WINDOW",
)
MIN_CHILD_HANG_TIMEOUT = 3.0  # seconds without a beat (one a second) before a child is killed
_NON_NEGATIVE_SECONDS = ("MAX_TIMESTAMP_SKEW", "SEND_TX_LIST_DURATION")
_LEVELDB_MB = ("LEVELDB_WRITE_BUFFER_MB", "LEVELDB_MAX_FILE_MB")
_ROTATE_WHEN = re.compile(r"[SMHD]|midnight|W[0-6]", re.IGNORECASE)  # logging.handlers' names
_LOG_OUTPUTS = ("console", "file", "console|file", "file|console")  # LOG_OUTPUT_TYPE
_NID = re.compile(r"0x[1-9a-f][0-9a-f]{0,7}")  # ICON_NID: hex as ICON writes it, 1 to 2**32 - 1
# DEFAULT_SCORE_BRANCH: a branch name git takes (git check-ref-format --branch), of bounded length
MAX_BRANCH_CHARS = 200
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
BRANCH_RULE = (
    f"a branch name git takes (git check-ref-format --branch), of at most {MAX_BRANCH_CHARS} "
    "characters"
)


def _in_range(key: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    if value < low or (low_open and value == low) or value > high:
        bound = f"above {_bound(low)}" if low_open else f"at least {_bound(low)}"
        message = f"{key} must be {bound} and at most {_bound(high)}, got {shown(value)}"
        raise ConfigError(message)


def _bound(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def is_branch_name(name: str) -> bool:
    """Whether git takes `name` as a branch name (BRANCH_RULE): no spaces, control characters,
    '~^:?*[\\', '..', '@{' or '//'; no part starting with '.' or ending with '.lock'; not
    starting with '-' or '/', not ending with '/' or '.'; not '@' or 'HEAD'."""
    if not 0 < len(name) <= MAX_BRANCH_CHARS or name in ("@", "HEAD") or name.startswith("-"):
        return False
    if _BRANCH_FORBIDDEN.search(name) or name.endswith("."):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


def validate_ranges(values: Mapping[str, Any]) -> None:
    """Refuse values out of range: NaN and infinities, oversized integers, ports, counts, times."""
    for key, value in values.items():
        default = DEFAULTS.get(key)
        if isinstance(default, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool):
            _in_range(key, value, -MAX_CONFIG_INT, MAX_CONFIG_INT)
        if key.endswith("_PATH") and isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"{key} must not contain a NUL character")
    for key in _PORTS:
        _in_range(key, values[key], 1, 65535)
    for key in _PORT_DIFFS:
        _in_range(key, values[key], -65535, 65535)
    for key in _NON_NEGATIVE_INTS:
        _in_range(key, values[key], 0, MAX_CONFIG_INT)
    for key in _POSITIVE_INTS:
        _in_range(key, values[key], 1, MAX_CONFIG_INT)
    for key in _POSITIVE_SECONDS:
        _in_range(key, values[key], 0, MAX_CONFIG_SECONDS, low_open=True)
    for key in _NON_NEGATIVE_SECONDS:
        _in_range(key, values[key], 0, MAX_CONFIG_SECONDS)
    hang = values["CHILD_HANG_TIMEOUT"]
    if hang != 0:
        _in_range(
            "CHILD_HANG_TIMEOUT (or 0: never)", hang, MIN_CHILD_HANG_TIMEOUT, MAX_CONFIG_SECONDS
        )
    _in_range("LEADER_COMPLAIN_RATIO", values["LEADER_COMPLAIN_RATIO"], 0, 1, low_open=True)
    for key in _LEVELDB_MB:
        _in_range(key, values[key], 1, 1024)  # LevelDB clips its sizes to 1 GB


CHANNEL_WORKER_MODES = ("auto", "always", "never")


def validate(values: Mapping[str, Any]) -> None:
    """Refuse combinations no layer may produce (unsafe consensus settings, impossible bounds)."""
    validate_ranges(values)
    if values["CHANNEL_WORKERS"] not in CHANNEL_WORKER_MODES:
        raise ConfigError(
            f"CHANNEL_WORKERS must be one of {', '.join(CHANNEL_WORKER_MODES)}, "
            f"got {values['CHANNEL_WORKERS']!r}"
        )
    ratio = values["VOTING_RATIO"]
    if not 2 / 3 - 1e-9 <= ratio < 1:
        raise ConfigError(
            f"VOTING_RATIO {ratio} must be at least 2/3 (BFT safety) and below 1 (liveness)"
        )
    for key in (
        "LEADER_BLOCK_CREATION_LIMIT",
        "MAX_BLOCK_TX_NUM",
        "MAX_BLOCK_KBYTES",
        "TX_POOL_MAX",
        "TX_POOL_ADMIT_MAX",
        "TX_POOL_ADMIT_BACKLOG",
        "REST_MAX_INFLIGHT",
        "REST_MAX_CONNECTIONS",
        "REST_MAX_SENDING_MB",
        "REST_MAX_RECEIVING_MB",
    ):
        if values[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {values[key]}")
    for key in (
        "TIMEOUT_FOR_LEADER_COMPLAIN",
        "GRPC_TIMEOUT",
        "SCORE_QUERY_TIMEOUT",
        "TX_POOL_ADMIT_WAIT",
    ):
        if values[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {values[key]}")
    if values["HEARTBEAT_TIMEOUT"] < 2 * values["HEARTBEAT_INTERVAL"]:
        raise ConfigError(
            f"HEARTBEAT_TIMEOUT {values['HEARTBEAT_TIMEOUT']} must be at least twice "
            f"HEARTBEAT_INTERVAL {values['HEARTBEAT_INTERVAL']}: a peer is disconnected only "
            "after it missed a heartbeat"
        )
    if values["MAX_TX_COUNT_IN_ADDTX_LIST"] > 1000:
        raise ConfigError("MAX_TX_COUNT_IN_ADDTX_LIST must be at most 1000 (a peer's batch limit)")
    if values["MAX_TX_BYTES"] > values["MAX_BLOCK_KBYTES"] * 1024:
        raise ConfigError(
            f"MAX_TX_BYTES {values['MAX_TX_BYTES']} must not exceed MAX_BLOCK_KBYTES "
            f"({values['MAX_BLOCK_KBYTES']} KiB): such a transaction could never be in a block"
        )
    if not _NID.fullmatch(values["ICON_NID"]):
        raise ConfigError(
            f"ICON_NID {shown(values['ICON_NID'])} must be a network id written as ICON writes "
            'it: "0x" and lowercase hex digits without leading zeros, at most 8 (such as "0x3")'
        )
    if not is_branch_name(values["DEFAULT_SCORE_BRANCH"]):
        raise ConfigError(
            f"DEFAULT_SCORE_BRANCH {shown(values['DEFAULT_SCORE_BRANCH'])} must be {BRANCH_RULE}"
        )
    output = values["LOG_OUTPUT_TYPE"]
    if output not in _LOG_OUTPUTS:
        raise ConfigError(f"LOG_OUTPUT_TYPE {shown(output)} must be console, file or console|file")
    if "console" not in output and not values["LOG_FILE_PATH"]:
        raise ConfigError(
            "LOG_OUTPUT_TYPE file needs LOG_FILE_PATH: the records would be written nowhere"
        )
    if "file" not in output and values["LOG_FILE_PATH"]:
        raise ConfigError(
            "LOG_OUTPUT_TYPE console does not write LOG_FILE_PATH: clear it, or write both with "
            "console|file"
        )
    when = values["LOG_FILE_ROTATE_WHEN"]
    if when and not _ROTATE_WHEN.fullmatch(when):
        raise ConfigError(
            f"LOG_FILE_ROTATE_WHEN {shown(when)} must be empty (rotate by size), S, M, H, D, "
            "midnight or W0..W6"
        )
    if values["MAX_TIMEOUT_FOR_LEADER_COMPLAIN"] < values["TIMEOUT_FOR_LEADER_COMPLAIN"]:
        raise ConfigError(
            "MAX_TIMEOUT_FOR_LEADER_COMPLAIN must not be below TIMEOUT_FOR_LEADER_COMPLAIN"
        )


def _user_layer() -> dict[str, Any]:
    try:
        module = importlib.import_module("loopchain.configure_user")
    except ModuleNotFoundError as exc:
        if exc.name == "loopchain.configure_user":
            return {}
        raise
    return _module_keys(module)


def read_json_layer(path: str) -> dict[str, Any]:
    """Read a flat JSON object of configuration keys; errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:  # a folder, no permission, an I/O error: named, not a traceback
        raise ConfigError(
            f"configuration file {path} cannot be read: {exc.strerror or exc}"
        ) from None
    except ValueError as exc:  # JSONDecodeError, or a number longer than 4300 digits
        raise ConfigError(f"configuration file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"configuration file {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a JSON object")
    return data


def load_config(
    json_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration from all layers, lowest priority first."""
    environ = os.environ if environ is None else environ
    values = copy.deepcopy(dict(DEFAULTS))
    _apply(values, _user_layer(), "loopchain/configure_user.py")
    env_layer = {k: parse_env_value(k, environ[k], DEFAULTS[k]) for k in DEFAULTS if k in environ}
    _apply(values, env_layer, "the environment")
    if json_path:
        _apply(values, read_json_layer(json_path), json_path)
    if overrides:
        _apply(values, overrides, "command-line flags")
    validate(values)
    return Config(values)


def config_from_values(values: Mapping[str, Any], origin: str) -> Config:
    """The configuration whose values another process built (as `dict(config)` gives them, sent
    as JSON), checked as any layer: a channel worker runs with its peer's, never rereading files
    that may have changed since its peer started."""
    merged = _apply(copy.deepcopy(dict(DEFAULTS)), values, origin)
    validate(merged)
    return Config(merged)


# Keys of the original that LFT has no use for: accepted (users' files keep working) and, when set
# to another value than the default, named at a peer's start, never silently ignored.
WITHOUT_EFFECT = {
    "LEADER_COMPLAIN_RATIO": "LFT joins a complaint once more than a third of the voting weight "
    "complains, and a timeout certificate takes VOTING_RATIO of it",
    "BLOCK_VOTE_TIMEOUT": "LFT waits for a round's votes within the round's timeout "
    "(TIMEOUT_FOR_LEADER_COMPLAIN, doubling up to MAX_TIMEOUT_FOR_LEADER_COMPLAIN)",
}


def settings_without_effect(config: Config) -> list[str]:
    """A line for each key of WITHOUT_EFFECT set to another value than its default."""
    return [
        f"{key} = {config[key]!r} has no effect: {why}"
        for key, why in WITHOUT_EFFECT.items()
        if config[key] != DEFAULTS[key]
    ]


def describe(config: Config, name: str | None = None) -> list[dict[str, Any]]:
    """Configuration as the RadioStation REST shape: [{"name", "value", "type"}]."""
    type_codes = {str: 0, int: 1, float: 2, bool: 3, dict: 4, list: 4}
    keys = [name] if name is not None else sorted(config)
    return [
        {"name": k, "value": config[k], "type": type_codes.get(type(DEFAULTS[k]), 0)}
        for k in keys
        if k in config
    ]


_LEVEL_COLOURS = {
    "DEBUG": "\033[36m",
    "INFO": "\033[32m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}
_COLOUR_RESET = "\033[0m"
_QUIET_LOGGERS = {"asyncio": logging.WARNING, "grpc": logging.INFO, "aiohttp.server": logging.INFO}


class _OneLineFormatter(logging.Formatter):
    """A record's message on one line and bounded (safe_text), whatever it quotes from a
    request; a traceback below it stays as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(bounded(record.message, MAX_LOG_MESSAGE))
        return super().formatMessage(record)


class _ColourFormatter(_OneLineFormatter):
    """A formatter that colours the whole line by its level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        colour = _LEVEL_COLOURS.get(record.levelname)
        return f"{colour}{text}{_COLOUR_RESET}" if colour else text


def setup_logging(
    config: Config,
    *,
    debug: bool,
    process: str,
    stderr_format: logging.Formatter | None = None,
) -> None:
    """Configure the root logger: level from -d or LOOPCHAIN_LOG_LEVEL, stderr and LOG_FILE_PATH
    as LOG_OUTPUT_TYPE says (with "file" alone, stderr takes the records the file refuses).

    With -d on a terminal the stderr lines are coloured by level; the file never is.
    `stderr_format` replaces the stderr lines' format (a SCORE process's records for its peer).
    """
    level_name = "DEBUG" if debug else str(config.LOOPCHAIN_LOG_LEVEL).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ConfigError(f"LOOPCHAIN_LOG_LEVEL {config.LOOPCHAIN_LOG_LEVEL!r} is not a log level")
    fmt = f"%(asctime)s %(levelname)-7s [{process}] %(name)s: %(message)s"
    stream = logging.StreamHandler(sys.stderr)
    colour = debug and sys.stderr.isatty()
    if stderr_format is not None:
        stream.setFormatter(stderr_format)
    else:
        stream.setFormatter(_ColourFormatter(fmt) if colour else _OneLineFormatter(fmt))
    handlers: list[logging.Handler] = [stream]
    if config.LOG_FILE_PATH:
        try:
            file_handler = log_file_handler(config)
        except OSError as exc:  # a folder missing, say: the node's configuration is wrong
            raise LogFileUnusable(
                f"cannot open LOG_FILE_PATH {config.LOG_FILE_PATH}: {_trouble(exc)}"
            ) from exc
        file_handler.setFormatter(_OneLineFormatter(fmt))
        if "console" in config.LOG_OUTPUT_TYPE:
            handlers.append(file_handler)
        else:
            file_handler.fallback, handlers = stream, [file_handler]
    logging.basicConfig(level=level, handlers=handlers, force=True)
    for name, floor in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, floor))
    logging.getLogger("aiohttp.server").addFilter(_malformed_http_in_one_line)
    logging.getLogger("grpc._cython.cygrpc").addFilter(_rpc_cancelled_before_it_ran)
    # the coroutine of such a call's handler, never started, is collected with a RuntimeWarning
    warnings.filterwarnings("ignore", "coroutine '_handle_rpc' was never awaited", RuntimeWarning)
    install_crash_hooks()


def install_crash_hooks() -> None:
    """Log an exception that ends the process or a thread, or that Python cannot raise, as one
    record (see _log_uncaught). Each process's entry point calls it first: before setup_logging,
    logging's last resort writes such a record to stderr in one write as well (a channel
    worker's crash before it read its configuration went through Python's own hook, a line at
    a time, between its peer's lines)."""
    sys.excepthook, threading.excepthook = _log_uncaught, _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """sys.unraisablehook: an exception Python could not raise (in a finaliser, at a collection)
    logged as one record at WARNING, as Python says it ("Exception ignored in: ..."): its own hook
    writes it in pieces (one took 39 writes), which other processes' lines came between."""
    try:
        where = repr(unraisable.object) if unraisable.object is not None else ""
    except Exception:  # any repr may fail (Python's own hook says the same)
        where = "<object repr() failed>"
    said = unraisable.err_msg or "Exception ignored in"
    logging.getLogger("loopchain").warning(
        "%s", f"{said}: {where}" if where else said, exc_info=unraisable.exc_value
    )


_CRASHED = "stopped by an exception nothing caught (a bug: please report it with this traceback)"


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook: an exception that ends the process is logged as one record, so one write
    to stderr (Python's own hook writes a traceback in pieces, and a peer's channel workers write
    to its stderr: their lines came between, and a test found the traceback cut in two) and a
    copy in LOG_FILE_PATH (before, it went to stderr only). Ctrl-C stays as Python says it."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("loopchain").critical(_CRASHED, exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: as _log_uncaught, for an exception that ends a thread."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    if issubclass(args.exc_type, KeyboardInterrupt):
        threading.__excepthook__(args)
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("loopchain").critical(
        "%s %s", name, _CRASHED, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


class LogFileUnusable(ConfigError):
    """LOG_FILE_PATH cannot be opened (`__cause__`: the OSError): a node's configuration
    error at start; a channel worker's, whose peer opened it just before, a crash (retried)."""


class _DiskTroubleTold(logging.FileHandler):
    """A log file's handler that takes a failed write of the disk's (full, read-only, gone) as a
    condition, not a fault: one line on stderr at most every TOLD_EVERY_S seconds, counting the
    records not written, and a line in the file once it takes records again (logging's own
    handling printed a traceback for each record). Any other error is handled as logging does."""

    TOLD_EVERY_S = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = 0
        self._trouble = ""
        self._told_at = -math.inf
        # where a record the file refuses goes instead (stderr, when it has no records else)
        self.fallback: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        lost = self.lost
        super().emit(record)
        if lost and self.lost == lost:  # written again after records were lost
            self.lost, trouble = 0, self._trouble
            note = logging.makeLogRecord(
                {
                    "name": __name__,
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "%d log records before the one above were not written to %s (%s)",
                    "args": (lost, self.baseFilename, trouble),
                }
            )
            super().emit(note)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the last flush failed: the file is closed anyway
            super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.lost += 1
        self._trouble = _trouble(error)
        self._tell(
            f"takes no records ({self._trouble}); {self.lost} not written there so far (stderr "
            "has them)"
        )
        if self.fallback is not None:
            self.fallback.handle(record)

    def _tell(self, what: str) -> None:
        """Say on stderr what became of this file, at most every TOLD_EVERY_S seconds."""
        now = time.monotonic()
        if now - self._told_at >= self.TOLD_EVERY_S:
            self._told_at = now
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"loopchain: the log file {self.baseFilename} {what}\n")


def _trouble(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


class _LogFile(_DiskTroubleTold):
    pass


class _RotationTroubleTold(_DiskTroubleTold):
    """A rotated log file's handler that also says when the file cannot be rotated (a folder
    made read-only, say): concurrent_log_handler writes on into the file, past its bound, and
    says nothing unless in its debug mode (review)."""

    num_rollovers: int  # concurrent_log_handler's count of the rotations it made

    def doRollover(self) -> None:
        made = self.num_rollovers
        try:
            super().doRollover()  # type: ignore[misc]
        except OSError as exc:  # by time: the rename's error
            self._tell(f"cannot be rotated ({_trouble(exc)}): it grows past its bound")
            raise
        if self.num_rollovers == made:  # by size: a failed rename is returned from, unsaid
            folder = os.path.dirname(self.baseFilename)
            self._tell(
                f"cannot be rotated (renaming it failed: is {folder} writable?): it grows past "
                "its bound"
            )


@functools.cache
def _rotated_log_file(*, by_time: bool) -> Any:
    """The class of a log file rotated by time or by size, by whichever of the processes that
    write it finds it due (the peer, its REST proxy and its channel workers all write
    LOG_FILE_PATH): under a lock beside the file (`.__NAME.lock`), and the others write to the
    new file after (concurrent_log_handler). Each rotated it by itself: records went to files
    already rotated away and deleted, and backups were shifted out early (log review). Imported
    here, not at the top: only a rotated file needs it (~0.5 MB a process)."""
    import concurrent_log_handler

    base = (
        concurrent_log_handler.ConcurrentTimedRotatingFileHandler
        if by_time
        else concurrent_log_handler.ConcurrentRotatingFileHandler
    )
    name = "_TimeRotatedLogFile" if by_time else "_SizeRotatedLogFile"
    return type(name, (_RotationTroubleTold, base), {})


def _rotation_lock_problem(path: str) -> str | None:
    """Why the lock file beside the log file `path` cannot be made (None when it can)."""
    import concurrent_log_handler

    folder, name = concurrent_log_handler.ConcurrentRotatingFileHandler.baseLockFilename(
        os.path.abspath(path)
    )
    try:
        with open(os.path.join(folder, name), "a"):
            return None
    except OSError as exc:
        return f"its lock file {os.path.join(folder, name)} cannot be made ({_trouble(exc)})"


def log_file_handler(config: Config) -> _DiskTroubleTold:
    """The handler of LOG_FILE_PATH: rotated by time (LOG_FILE_ROTATE_WHEN), else by size
    (LOG_FILE_ROTATE_MAX_BYTES, unless 0), keeping LOG_FILE_ROTATE_BACKUP_COUNT old files."""
    path, backups = config.LOG_FILE_PATH, int(config.LOG_FILE_ROTATE_BACKUP_COUNT)
    # opened now, whatever the handler (a rotated one opens it at its first record): a file
    # that cannot be (a missing folder, a directory) is an error of its own, said at start
    with open(path, "a", encoding="utf-8"):
        pass
    if not config.LOG_FILE_ROTATE_WHEN and not config.LOG_FILE_ROTATE_MAX_BYTES:
        return _LogFile(path, encoding="utf-8")
    # a rotated file is written under a lock file beside it: when that cannot be made, the
    # records go to the file unrotated (every one was lost, or the process did not start)
    problem = _rotation_lock_problem(path)
    if problem is None:
        try:
            if config.LOG_FILE_ROTATE_WHEN:
                return _rotated_log_file(by_time=True)(  # type: ignore[no-any-return]
                    path,
                    when=config.LOG_FILE_ROTATE_WHEN,
                    interval=int(config.LOG_FILE_ROTATE_INTERVAL),
                    backupCount=backups,
                    encoding="utf-8",
                    utc=bool(config.LOG_FILE_ROTATE_UTC),
                )
            return _rotated_log_file(by_time=False)(  # type: ignore[no-any-return]
                path,
                maxBytes=int(config.LOG_FILE_ROTATE_MAX_BYTES),
                backupCount=backups,
                encoding="utf-8",
            )
        except OSError as exc:  # a rotation due at once that failed, say
            problem = f"it cannot be rotated ({_trouble(exc)})"
    unrotated_file = _LogFile(path, encoding="utf-8")  # (one that cannot be opened: said alone)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"loopchain: the log file {path} is written without rotation: {problem}\n")
    return unrotated_file


def _is_http_error(exc: BaseException | None) -> bool:
    return exc is not None and any(c.__name__ == "HttpProcessingError" for c in type(exc).__mro__)


def _malformed_http_in_one_line(record: logging.LogRecord) -> bool:
    """An HTTP request the server could not even parse (a 100 KB request line, a broken header) is
    a client's error: one warning line, not a traceback, so nobody can flood a log with them. So is
    a body it cannot decode (a Content-Encoding its bytes are not in, a broken chunk), which aiohttp
    finds reading the rest of a body no handler read after the answer was sent (its cause is the
    parser's error)."""
    exc = record.exc_info[1] if record.exc_info else None
    if _is_http_error(exc) or (exc is not None and _is_http_error(exc.__cause__)):
        untold = _MALFORMED_HTTP.take()  # at most RefusalLog's lines a second (review)
        if untold is None:
            return False
        more = f" ({untold} more refused not logged)" if untold else ""
        record.msg, record.args = "refused a malformed HTTP request: %s%s", (str(exc)[:200], more)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


_SERVICER_METHOD = re.compile(r"servicer method \[([^\]]*)\]")


def _rpc_cancelled_before_it_ran(record: logging.LogRecord) -> bool:
    """grpc.aio logs an RPC whose caller went away (or whose server began stopping) before its
    handler took its first step as an unhandled CancelledError with a traceback, at ERROR, and
    then prints the same traceback to stderr itself; once its handler runs the same cancellation
    is a DEBUG line. Nothing was done for it and nothing is lost, so it is one INFO line (with the
    method, whether grpc passes it as an argument or in the message) and no traceback; every other
    exception grpc reports stays an ERROR with its traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError) and "servicer method" in str(record.msg):
        if isinstance(record.args, tuple) and record.args:
            method = str(record.args[0])
        else:
            named = _SERVICER_METHOD.search(str(record.msg))
            method = named.group(1) if named else "?"
        record.msg, record.args = "RPC %s was cancelled before its handler ran", (method,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        _quiet_cancellation_echo(sys.modules.get(record.name))
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)  # (checked at ERROR)
    if _unsendable(exc) and "servicer method" in record.getMessage():
        # the reply could not be sent: its caller stopped reading and left (a stranger could
        # write a traceback at ERROR into the log per connection so); nothing is lost here
        named = _SERVICER_METHOD.search(record.getMessage())
        method = named.group(1) if named else "?"
        record.msg = "RPC %s ended before its answer could be sent: its caller left"
        record.args = (method,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        _quiet_cancellation_echo(sys.modules.get(record.name))
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)
    return True


def _unsendable(exc: BaseException | None) -> bool:
    """grpc's core refused to send a call's status or reply (ExecuteBatchError): the call's
    connection broke off first."""
    return exc is not None and type(exc).__name__ == "ExecuteBatchError"


class _TracebackSparingCancellations:
    """Stands in for the `traceback` module inside grpc's cygrpc, whose call scheduler follows the
    record above with `traceback.print_exc()`: a CancelledError being handled is not printed (its
    record said all there is to say), nor a reply grpc could not send; any other exception is,
    as before."""

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, asyncio.CancelledError) and not _unsendable(exc):
            file = kwargs.pop("file", None) or sys.stderr
            file.write(traceback.format_exc(*args, **kwargs))  # one write (see _log_uncaught)


def _quiet_cancellation_echo(cygrpc: ModuleType | None) -> None:
    """Give `cygrpc` (grpc's module that logged the record, about to print its traceback) the
    stand-in above as its `traceback`: set at the first such record, before it prints."""
    if cygrpc is not None and isinstance(getattr(cygrpc, "traceback", None), ModuleType):
        cygrpc.traceback = _TracebackSparingCancellations()  # type: ignore[attr-defined]


class RefusalLog:
    """Logs refused inputs at WARNING (or `level`), at most `per_second` lines a second (the rest
    are counted and reported with the next line), so hostile input leaves a trace but cannot flood
    the log."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.level = level
        self.per_second = per_second
        self.clock = clock
        self._allowance = per_second
        self._last = clock()
        self.suppressed = 0

    def refused(self, message: str, *args: object) -> None:
        untold = self.take()
        if untold is None:
            return
        if untold:
            message += f" ({untold} more refusals not logged)"
        self.logger.log(self.level, message, *args)

    def take(self) -> int | None:
        """Whether a line may be logged now: None when not (it is counted), else how many were
        not logged since the last one (to be said with it)."""
        if not self.grant(1):
            self.suppressed += 1
            return None
        untold, self.suppressed = self.suppressed, 0
        return untold

    def grant(self, wanted: int) -> int:
        """How many of `wanted` lines may be logged now (taken from the allowance: `per_second`
        a second, a second's worth at once at most); the caller counts the others."""
        now = self.clock()
        self._allowance = min(
            self.per_second, self._allowance + (now - self._last) * self.per_second
        )
        self._last = now
        granted = min(wanted, int(self._allowance))
        self._allowance -= granted
        return granted


# malformed HTTP requests refused (_malformed_http_in_one_line): each logged a line, at any rate
_MALFORMED_HTTP = RefusalLog(logging.getLogger("aiohttp.server"))
