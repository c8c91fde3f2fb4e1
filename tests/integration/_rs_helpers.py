"""Helpers to run the real radiostation.py as a subprocess and talk to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from loopchain.configure import DEFAULTS
from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import Signer
from loopchain.types.peer import connect_digest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "radiostation.py"
REST_DIFF = 1900
READY_DEADLINE = 30.0
POLL_INTERVAL = 0.05


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port P such that P and P + 1900 are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + REST_DIFF < 65536 and _bindable(port) and _bindable(port + REST_DIFF):
            return port
    raise RuntimeError("no free port pair found")


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


class RadioStationProcess:
    """One radiostation.py subprocess with its own storage and logs."""

    def __init__(self, workdir: Path, port: int, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.port = port
        self.rest_port = port + REST_DIFF
        self.config_path = workdir / "rs_conf.json"
        self.config_path.write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _log_path(self, run: int) -> Path:
        return self.workdir / f"rs_{self.port}_{run}.log"

    def start(self, *extra: str) -> None:
        """Start the process (stdout and stderr to a log file of this run)."""
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self._log_path(self.runs), "wb") as log:
            self.proc = subprocess.Popen(
                [str(SCRIPT), "-p", str(self.port), "-o", str(self.config_path), *extra],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def logs(self) -> str:
        """Everything every run of this process has written."""
        paths = [self._log_path(r) for r in range(1, self.runs + 1)]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def current_log(self) -> str:
        return self._log_path(self.runs).read_text(errors="replace")

    async def wait_ready(self) -> None:
        """Poll the REST API until it answers (gRPC is started before REST)."""
        deadline = time.monotonic() + READY_DEADLINE
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"radiostation exited early:\n{self.current_log()}")
                try:
                    async with session.get(f"{self.rest}/api/v1/conf?name=PORT_RADIOSTATION") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(POLL_INTERVAL)
        raise AssertionError(f"radiostation not ready in {READY_DEADLINE}s:\n{self.current_log()}")

    async def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait (polling, with a deadline) for the process to exit; returns its code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"radiostation did not exit in {timeout}s:\n{self.logs()}")
            await asyncio.sleep(POLL_INTERVAL)
        return int(self.proc.returncode)

    async def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return await self.wait_exit()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET `url`; returns (HTTP status, decoded JSON body)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post_raw(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST raw bytes as JSON; returns (HTTP status, decoded JSON body)."""
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)
