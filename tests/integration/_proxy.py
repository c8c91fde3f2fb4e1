"""rest_proxy.py as a subprocess for the integration tests (the REST v1 and JSON-RPC v3 suites)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration._fake_peer import FakePeer, start_fake_peer
from tools.procs import REST_DIFF, Proc, free_port_pair, wait_until_async


class ProxyProcess(Proc):
    """rest_proxy.py as a subprocess (tools/procs.Proc), with its output in a file."""

    def __init__(self, peer_port: int, workdir: Path, conf: dict[str, Any] | None = None) -> None:
        conf_path = workdir / f"conf_{peer_port}.json"
        conf_path.write_text(json.dumps(conf or {}))
        args = ["rest_proxy.py", "-p", str(peer_port), "-o", str(conf_path)]
        super().__init__(f"proxy_{peer_port}", args, workdir)
        self.base = f"http://127.0.0.1:{peer_port + REST_DIFF}"

    async def wait_ready(self, session: aiohttp.ClientSession, deadline_s: float = 30.0) -> None:
        """Poll until the proxy answers HTTP (any JSON reply), failing if it exits first."""

        async def answers() -> bool:
            if not self.alive:
                pytest.fail(f"rest_proxy exited with {self.stop()}: {self.log_text()}")
            try:
                async with session.get(self.base + "/api/v1/ready-probe") as resp:
                    await resp.json()
                    return True
            except aiohttp.ClientConnectionError:
                return False

        try:
            await wait_until_async(answers, deadline_s, "rest_proxy to answer HTTP")
        except AssertionError as exc:
            pytest.fail(f"{exc}: {self.log_text()}")


@contextlib.asynccontextmanager
async def proxy_in_front_of(
    fake: FakePeer, workdir: Path, conf: dict[str, Any], session: aiohttp.ClientSession
) -> AsyncIterator[ProxyProcess]:
    """`fake` served on a free port with a real rest_proxy.py in front of it, answering; at the end
    both stop, and the proxy must have exited 0 with a clean log."""
    port = free_port_pair()
    server, _ = await start_fake_peer(port, fake)
    proxy = ProxyProcess(port, workdir, conf)
    proxy.start()
    try:
        await proxy.wait_ready(session)
        yield proxy
    finally:
        status = proxy.stop()
        await server.stop(None)
    assert status == 0, proxy.log_text()
    proxy.assert_clean_log()
