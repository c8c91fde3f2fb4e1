"""A SCORE cannot reach its peer's secrets: a real SCORE process, run by ScoreSupervisor in this
(peer-like) process, reports what it can see; secrets are planted in the peer's environment, an
encrypted peer key on disk and an inheritable descriptor of it in the peer."""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopchain.scoreservice.supervisor import ENV_ALLOWED, ENV_FIXED, score_environment
from loopchain.types.crypto import KeyProtection, SignatureError, open_key_file
from loopchain.types.passwords import KEY_PASSWORD_ENV
from tests.integration._score_helpers import (
    Blocks,
    make_package,
    make_supervisor,
    running,
    score_config,
)

PASSWORD = "peer-key-password-4c1b"
TLS_PASSWORD = "tls-key-password-9e2d"
TOKEN = "api-token-77aa"
_PR_GET_DUMPABLE = 3

# Reports what a SCORE can see: environment, working directory, descriptors, files of its peer.
PROBE_SCORE = """
import ctypes
import json
import os

from loopchain.blockchain.score_base import ScoreBase


def read(path):
    try:
        with open(path, "rb") as handle:
            return {"text": handle.read().decode("utf-8", "replace")}
    except OSError as exc:
        return {"error": type(exc).__name__}


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        return None

    def query(self, params):
        request = json.loads(params)
        descriptors = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                descriptors[name] = os.readlink("/proc/self/fd/" + name)
            except OSError:
                pass  # the descriptor of the listing itself, closed by now
        parent = os.getppid()
        return json.dumps({
            "environ": dict(os.environ),
            "cwd": os.getcwd(),
            "cwd_entries": sorted(os.listdir(".")),
            "descriptors": descriptors,
            "key": read(request["key_path"]),
            "parent": parent,
            "parent_environ": read("/proc/%d/environ" % parent),
            "parent_memory": read("/proc/%d/mem" % parent),
            "status": read("/proc/self/status")["text"],
        })
"""


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The peer's environment holds key passwords and another secret; a locale variable too."""
    monkeypatch.setenv(KEY_PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv("LOOPCHAIN_TLS_KEY_PASSWORD", TLS_PASSWORD)
    monkeypatch.setenv("SOME_SERVICE_TOKEN", TOKEN)
    monkeypatch.setenv("LC_MESSAGES", "POSIX")
    yield


async def _probe(tmp_path: Path, key_path: Path) -> tuple[dict[str, Any], Any]:
    package = make_package(tmp_path, "probe", PROBE_SCORE)
    supervisor = make_supervisor(tmp_path, score_config(), package)
    supervisor.work_dir.mkdir(parents=True)
    (supervisor.work_dir / "left_by_an_earlier_run").write_text("x")
    async with running(supervisor):
        answer = await supervisor.client.query(json.dumps({"key_path": str(key_path)}))
        socket_dir = supervisor.socket_dir
        assert stat.S_IMODE(os.lstat(socket_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(supervisor.work_dir).st_mode) == 0o700
    assert not socket_dir.exists()  # removed when the supervisor stops
    return json.loads(answer), supervisor


async def test_a_score_sees_no_secret_of_its_peer(tmp_path: Path, secrets_in_env: None) -> None:
    # the peer's key, created the way the peer creates it, with the password from its environment
    key_path = tmp_path / "peer" / "peer_key"
    key = open_key_file(key_path, os.environ[KEY_PASSWORD_ENV])
    assert key.created and key.protection is KeyProtection.ENCRYPTED
    # a descriptor of the key file the peer would hand to a child that inherited descriptors
    leaked = os.open(key_path, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        report, supervisor = await _probe(tmp_path, key_path)
    finally:
        os.close(leaked)

    # 1. environment: only allowed variables, no secret among their values
    environ: dict[str, str] = report["environ"]
    fixed = {"HOME", "PYTHONPATH", "MALLOC_ARENA_MAX", "PYTHONUNBUFFERED", "PYTHONHASHSEED"}
    assert set(environ) <= ENV_ALLOWED | fixed | set(ENV_FIXED)
    assert "LC_MESSAGES" not in environ and environ["LC_ALL"] == "C.UTF-8"
    assert environ["HOME"] == str(supervisor.work_dir)
    assert not any(n.startswith("LOOPCHAIN_") or "PASSWORD" in n for n in environ)
    for secret in (PASSWORD, TLS_PASSWORD, TOKEN):
        assert secret not in json.dumps(report), f"{secret} reached the SCORE"

    # 2. its own working directory, emptied before it started
    assert report["cwd"] == str(supervisor.work_dir) == str(tmp_path / "state_cwd")
    assert report["cwd_entries"] == []

    # 3. descriptors: stdin is /dev/null, stdout and stderr one pipe its supervisor reads (not
    # the peer's own); the rest are the process's own sockets, event descriptors and state DB
    # files, never the key file
    descriptors: dict[str, str] = report["descriptors"]
    assert descriptors["0"] == "/dev/null"
    assert descriptors["1"] == descriptors["2"] and descriptors["1"].startswith("pipe:")
    assert descriptors["2"] not in {os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)}
    assert str(leaked) not in descriptors or descriptors[str(leaked)] != str(key_path)
    assert str(key_path) not in descriptors.values()
    state_dir = str(supervisor.state_path) + os.sep
    for fd, target in descriptors.items():
        if fd in ("0", "1", "2"):
            continue
        own = target.startswith(("socket:", "anon_inode:", "pipe:", state_dir))
        assert own, f"descriptor {fd} -> {target} was not opened by the SCORE process itself"

    # 4. the key file is readable (same user) but encrypted, and its password is out of reach:
    # the peer is non-dumpable (closed to processes of its user without CAP_SYS_PTRACE) and the
    # SCORE holds no capability (a SCORE run by root is refused too), so /proc/<peer> is closed
    assert report["parent"] == os.getpid()
    assert ctypes.CDLL(None).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    text = report["key"]["text"]
    assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), text
    assert key.signer.secret_bytes().hex() not in text
    with pytest.raises(SignatureError, match="is encrypted"):
        open_key_file(key_path)
    assert report["parent_environ"] == {"error": "PermissionError"}
    assert report["parent_memory"] == {"error": "PermissionError"}
    status = dict(line.split(":\t", 1) for line in report["status"].splitlines() if ":\t" in line)
    assert status["CapEff"].strip() == status["CapPrm"].strip() == "0" * 16
    assert status["CapBnd"].strip() == "0" * 16
    assert status["NoNewPrivs"].strip() == "1"


async def test_socket_directories_are_private_and_unguessable(tmp_path: Path) -> None:
    package = make_package(tmp_path)
    first = make_supervisor(tmp_path, score_config(), package, state="one")
    second = make_supervisor(tmp_path, score_config(), package, state="two")
    assert first.socket_dir != second.socket_dir
    for supervisor in (first, second):
        assert supervisor.socket_dir.parent == Path(tempfile.gettempdir()).absolute()
        assert len(supervisor.socket_dir.name) >= len("loopchain-score-") + 16
    # a directory someone else made at that name (here: one open to everybody) is not used
    first.socket_dir.mkdir(mode=0o777)
    os.chmod(first.socket_dir, 0o777)
    async with running(first):
        assert stat.S_IMODE(os.lstat(first.socket_dir).st_mode) == 0o700  # ours: tightened
    link_target = tmp_path / "elsewhere"
    link_target.mkdir()
    second.socket_dir.symlink_to(link_target)
    try:
        async with running(second, ready=False):
            status = await _status_when_started(second)
            assert "could not start" in status and "not a directory of this user" in status
    finally:
        second.socket_dir.unlink()


async def _status_when_started(supervisor: Any) -> str:
    from tools.procs import wait_until_async

    async def reported() -> str | None:
        message = str(supervisor.status().message)
        return message if "could not start" in message else None

    return await wait_until_async(reported, 30, "the supervisor to report the refusal")


def test_the_environment_is_built_from_an_allow_list(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANG": "de_DE.UTF-8",  # replaced, as the time zone: every peer's SCORE sees the same
        "LC_ALL": "de_DE.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "LANGUAGE": "de",
        "TZ": "Pacific/Kiritimati",
        "PYTHONHASHSEED": "random",  # replaced: every peer hashes alike
        "PYTHONPATH": "/extra",
        KEY_PASSWORD_ENV: "x",
        "LOOPCHAIN_TLS_KEY_PASSWORD": "x",
        "LOOPCHAIN_CA_KEY_PASSWORD": "x",
        "DEFAULT_STORAGE_PATH": "/data",
        "AWS_SECRET_ACCESS_KEY": "x",
        "SSH_AUTH_SOCK": "/tmp/agent",
        "HOME": "/root",
    }
    env = score_environment(environ, tmp_path)
    assert env["PATH"] == "/usr/bin" and env["LANG"] == env["LC_ALL"] == "C.UTF-8"
    assert env["TZ"] == "UTC" and not {"LC_TIME", "LANGUAGE"} & set(env)
    assert env["PYTHONHASHSEED"] == "0" and env["HOME"] == str(tmp_path)
    assert env["PYTHONPATH"].endswith(os.pathsep + "/extra")
    assert not {KEY_PASSWORD_ENV, "DEFAULT_STORAGE_PATH", "SSH_AUTH_SOCK"} & set(env)
    assert "x" not in env.values()


# Turns block.timestamp into a calendar date and a month name with the standard library's local
# time and locale functions (allowed: the timestamp is the block's, not a clock)
CALENDAR_SCORE = """
import datetime
import json
import locale
import time

from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        seconds = block.timestamp // 1_000_000
        local = time.localtime(seconds)
        seen = {
            "date": datetime.datetime.fromtimestamp(seconds).isoformat(),
            "zone": time.strftime("%Z", local),
            "locale": locale.setlocale(locale.LC_ALL, ""),
            "month": time.strftime("%B", local),
        }
        self.put_json("seen", seen)
        return {"code": 0, "message": json.dumps(seen, sort_keys=True)}
"""


async def test_every_peer_time_zone_and_locale_give_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = Blocks().next({"op": "date"})
    seconds = block.header.timestamp // 1_000_000
    runs = []
    # a peer in UTC, then one 14 hours ahead (a POSIX TZ: no zone database needed) with a locale
    for index, (zone, language) in enumerate((("UTC", "C.UTF-8"), ("LINT-14", "POSIX"))):
        monkeypatch.setenv("TZ", zone)
        monkeypatch.setenv("LC_ALL", language)
        monkeypatch.setenv("LANG", language)
        package = make_package(tmp_path / str(index), "calendar", CALENDAR_SCORE)
        async with running(make_supervisor(tmp_path / str(index), score_config(), package)) as sup:
            staged = await sup.client.invoke_block(block)
        runs.append((staged.results, staged.state_root, staged.results_hash))
    assert runs[0] == runs[1]
    utc = datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None)
    # BASE_TIME_US: 2023-11-14 22:13:20 UTC, 2023-11-15 12:13:20 in LINT-14
    seen = {"date": utc.isoformat(), "zone": "UTC", "locale": "C.UTF-8", "month": "November"}
    assert [(r.code, json.loads(r.message)) for r in runs[1][0]] == [(0, seen)]


# Imports a module of its package only when a transaction comes (a late import)
LATE_IMPORT_SCORE = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        from . import helper

        return {"code": 0, "message": str(helper.ANSWER)}
"""


async def test_a_late_import_writes_no_bytecode_into_the_package_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # the peer's does not matter
    package = make_package(tmp_path, "late", LATE_IMPORT_SCORE)
    (package.path / "helper.py").write_text("ANSWER = 42\n")
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        staged = await supervisor.client.invoke_block(Blocks().next({"op": "import"}))
    assert [(r.code, r.message) for r in staged.results] == [(0, "42")]
    assert sorted(p.name for p in package.path.iterdir()) == [
        "helper.py",
        "package.json",
        "score_main.py",
    ]
