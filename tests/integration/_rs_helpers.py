"""Helpers to run the real radiostation.py as a subprocess and talk to it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from loopchain.configure import DEFAULTS, load_config
from loopchain.protos import loopchain_pb2 as pb
from loopchain.radiostation.certs import CertificateDirectory, CertificateService
from loopchain.radiostation.operator import OperatorToken
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.rest import create_app
from loopchain.radiostation.station import Station
from loopchain.types.crypto import Signer
from loopchain.types.peer import connect_digest, heartbeat_digest, settings_digest
from tools.procs import REST_DIFF, Proc, assert_clean_log, free_port_pair, wait_until_async

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "radiostation.py"
READY_DEADLINE = 30.0


def bare_app(tmp_path: Path) -> web.Application:
    """The RadioStation's REST app over an empty station in this process (no server): to read
    its routes."""
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)})
    station = Station(config, Registry({}, False), Signer.generate(), time.time)
    certs = CertificateService(CertificateDirectory(tmp_path / "ca"), True, "x")
    return create_app(station, OperatorToken(tmp_path / "t", b"t" * 43), certs)


def connect_request(signer: Signer, target: str, group_id: str = "") -> pb.ConnectPeerRequest:
    """A correctly signed registration request of `signer` at `target`."""
    digest = connect_digest(signer.address, target, group_id)
    return pb.ConnectPeerRequest(
        peer_id=signer.address,
        target=target,
        group_id=group_id,
        public_key=signer.public_key,
        signature=signer.sign(digest),
    )


def heartbeat_request(
    signer: Signer,
    channel: str = "",
    peer_type: int = 0,
    block_height: int = 0,
    timestamp_us: int | None = None,
    key: Signer | None = None,
    settings: bytes = b"",
) -> pb.HeartbeatRequest:
    """A heartbeat of `signer` signed with `key` (default: its own) at `timestamp_us` (now),
    saying `settings` (none: as an older peer's)."""
    now_us = time.time_ns() // 1000 if timestamp_us is None else timestamp_us
    digest = heartbeat_digest(signer.address, channel, peer_type, block_height, now_us)
    return pb.HeartbeatRequest(
        peer_id=signer.address,
        channel=channel,
        peer_type=peer_type,
        block_height=block_height,
        timestamp_us=now_us,
        signature=(key or signer).sign(digest),
        settings=settings,
        settings_signature=(key or signer).sign(settings_digest(digest, settings)),
    )


class RadioStationProcess:
    """One radiostation.py subprocess (a tools.procs.Proc per run) with its own storage and logs;
    it runs in `workdir` (relative paths in its configuration are relative to it) without the
    test's configuration variables in its environment."""

    def __init__(self, workdir: Path, port: int, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.port = port
        self.rest_port = port + REST_DIFF
        self.config_path = workdir / "rs_conf.json"
        self.config_path.write_text(json.dumps(config))
        self.proc: Proc | None = None
        self.runs = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def token_path(self) -> Path:
        """The operator token file this process uses (RADIOSTATION_ADMIN_TOKEN_PATH or default)."""
        config = json.loads(self.config_path.read_text())
        configured = config.get("RADIOSTATION_ADMIN_TOKEN_PATH")
        if configured:
            return self.workdir / configured
        storage = self.workdir / config.get("DEFAULT_STORAGE_PATH", ".storage")
        return storage / f"radiostation_{self.port}" / "admin_token"

    def operator(self) -> dict[str, str]:
        """The header that authorises a state-changing REST call."""
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def _log_path(self, run: int) -> Path:
        return self.workdir / f"rs_{self.port}_{run}.log"

    def start(self, *extra: str) -> None:
        """Start the process (stdout and stderr to a log file of this run)."""
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
        args = [str(SCRIPT), "-p", str(self.port), "-o", str(self.config_path), *extra]
        proc = Proc(self._log_path(self.runs).stem, args, self.workdir, env=env, cwd=self.workdir)
        self.proc = proc.start()

    def logs(self) -> str:
        """Everything every run of this process has written."""
        paths = [self._log_path(r) for r in range(1, self.runs + 1)]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def current_log(self) -> str:
        return self._log_path(self.runs).read_text(errors="replace")

    async def wait_ready(self) -> None:
        """Poll the REST API until it answers (gRPC is started before REST)."""
        url = f"{self.rest}/api/v1/conf?name=PORT_RADIOSTATION"
        async with aiohttp.ClientSession() as session:

            async def answers() -> bool:
                if not self.is_running():
                    raise AssertionError("radiostation exited early")
                try:
                    async with session.get(url) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await self._wait(answers, READY_DEADLINE, "its REST API")

    async def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait (polling, with a deadline) for the process to exit; returns its code."""
        assert self.proc is not None

        async def exited() -> bool:
            return not self.is_running()

        try:
            await self._wait(exited, timeout, "it to exit")
        finally:
            if self.is_running():
                self.proc.kill9()
        return self.proc.wait()

    async def _wait(
        self, condition: Callable[[], Awaitable[bool]], deadline: float, what: str
    ) -> None:
        """wait_until_async, with this process's logs in the failure message."""
        try:
            await wait_until_async(condition, deadline, f"radiostation {self.port}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.logs()}") from None

    async def run_to_exit(self, *extra: str) -> tuple[int, str]:
        """Start the process and wait for it to stop on its own; (exit code, all its logs)."""
        self.start(*extra)
        return await self.wait_exit(), self.logs()

    async def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM) and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await self.wait_exit()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.alive


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET `url`; returns (HTTP status, decoded JSON body)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post_raw(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST raw bytes as JSON (with extra `headers`); returns (HTTP status, decoded JSON body)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Any request; returns (HTTP status, decoded JSON body, response headers)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers or {}) as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


class RadioStations:
    """The radiostation.py processes one test starts in `workdir`; `close` stops each and fails on
    an unclean exit, a traceback, or the operator token in a log."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[RadioStationProcess] = []

    async def start(
        self,
        config: dict[str, Any] | None = None,
        channels: dict[str, Any] | None = None,
        *,
        port: int | None = None,
        extra: tuple[str, ...] = (),
    ) -> RadioStationProcess:
        channel_file = self.workdir / "channel_manage_data.json"
        if channels is not None:
            channel_file.write_text(json.dumps(channels))
        base = {
            "DEFAULT_STORAGE_PATH": str(self.workdir / "storage"),
            "CHANNEL_MANAGE_DATA_PATH": str(channel_file),
            # these tests register keys at targets nobody serves; the target check has its own
            # tests, with peers that answer
            "RADIOSTATION_CHECK_TARGETS": False,
        }
        rs = RadioStationProcess(self.workdir, port or free_port_pair(), {**base, **(config or {})})
        rs.start(*extra)
        self.started.append(rs)
        await rs.wait_ready()
        return rs

    async def close(self) -> None:
        for rs in self.started:
            if rs.is_running():
                assert await rs.terminate() == 0, rs.logs()
            logs = rs.logs()
            assert_clean_log(logs, f"radiostation {rs.port}", rs.workdir)
            if rs.token_path.exists():
                assert rs.token_path.read_text().strip() not in logs


StartRS = Callable[
    ..., Awaitable[RadioStationProcess]
]  # RadioStations.start (the start_rs fixture)
