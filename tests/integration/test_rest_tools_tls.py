"""demotool.py, gtool.py and loadtool.py over TLS and mutual TLS with the network's own CA: a
RadioStation-like aiohttp server on 127.0.0.1 serving with loopchain.http_site.rest_tls_context
(ENABLE_REST_SSL 1 and 2) and the certificates tools/tls_network.py makes; the tools run as
subprocesses with --cacert, --cert and --key (loadtool: --tls-key) and --server-name."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from loopchain.configure import load_config
from loopchain.http_site import rest_tls_context
from tools.procs import ROOT, TOOL_DEADLINE, one_error_line, run_tool

DEMOTOOL = ROOT / "tools" / "demotool.py"
GTOOL = ROOT / "tools" / "gtool.py"
LOADTOOL = ROOT / "tools" / "loadtool.py"

RS_NAME = "loopchain-radiostation"  # the name tls_network.py gives the RadioStation's certificate
CHANNELS = {"kofia_1": {"score_package": "loopchain/default", "peers": []}}


@dataclass(frozen=True)
class Network:
    """The TLS files of a network: the RadioStation's folder (the server) and a peer's (a
    client of mutual TLS)."""

    rs: Path
    peer: Path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Network:
    storage = tmp_path_factory.mktemp("tls_storage")
    # the numbers only name the folders: nothing listens on them
    args = ["--storage", str(storage), "--radiostation", "1102", "--peers", "1100"]
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tls_network.py"), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=TOOL_DEADLINE,
    )
    return Network(storage / "radiostation_1102" / "tls", storage / "peer_1100" / "tls")


class TlsNode:
    """An aiohttp server in a thread of its own serving channel data and queries over TLS."""

    def __init__(self, tls_folder: Path, mode: int) -> None:
        config = load_config(None, {"ENABLE_REST_SSL": str(mode)})
        self._context = rest_tls_context(config, tls_folder)
        self.url = ""
        self.queries = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _channel_data(self, request: web.Request) -> web.Response:
        return web.json_response({"response_code": 0, "data": CHANNELS})

    async def _query(self, request: web.Request) -> web.Response:
        self.queries += 1
        return web.json_response({"response_code": 0, "response": {"answer": 42}})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/channel/data", self._channel_data)
        app.router.add_post("/api/v1/query", self._query)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._context).start()
        self.url = f"https://127.0.0.1:{self._runner.addresses[0][1]}"

    def __enter__(self) -> TlsNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(TOOL_DEADLINE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            done = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            done.result(TOOL_DEADLINE)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TOOL_DEADLINE)
        self._loop.close()


@pytest.fixture
def tls_node(network: Network) -> Iterator[TlsNode]:
    with TlsNode(network.rs, 1) as node:
        yield node


@pytest.fixture
def mutual_node(network: Network) -> Iterator[TlsNode]:
    with TlsNode(network.rs, 2) as node:
        yield node


def test_gtool_and_demotool_over_tls_with_the_networks_ca(
    network: Network, tls_node: TlsNode
) -> None:
    trust = ["--cacert", str(network.rs / "ca.pem"), "--server-name", RS_NAME]
    done = run_tool(GTOOL, "-r", tls_node.url, *trust, "--json", "channels")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == CHANNELS
    done = run_tool(DEMOTOOL, "-p", tls_node.url, *trust, "query", '{"method": "x"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": 42}

    untrusted = one_error_line(run_tool(GTOOL, "-r", tls_node.url, "channels"), "gtool")
    assert f"TLS with {tls_node.url} failed: " in untrusted, untrusted
    assert untrusted.endswith("(see --cacert FILE of its CA)"), untrusted
    unnamed = run_tool(
        GTOOL, "-r", tls_node.url, "--cacert", str(network.rs / "ca.pem"), "channels"
    )
    mismatch = one_error_line(unnamed, "gtool")  # 127.0.0.1 is not the name it carries
    assert "mismatch" in mismatch and mismatch.endswith("(see --server-name NAME)"), mismatch


def test_mutual_tls_with_a_client_certificate(network: Network, mutual_node: TlsNode) -> None:
    trust = ["--cacert", str(network.peer / "ca.pem"), "--server-name", RS_NAME]
    client = ["--cert", str(network.peer / "cert.pem"), "--key", str(network.peer / "key.pem")]
    done = run_tool(GTOOL, "-r", mutual_node.url, *trust, *client, "--json", "channels")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == CHANNELS
    done = run_tool(DEMOTOOL, "-p", mutual_node.url, *trust, *client, "query", "{}")
    assert done.returncode == 0, done.stderr

    refused = one_error_line(run_tool(GTOOL, "-r", mutual_node.url, *trust, "channels"), "gtool")
    # no client certificate: the server refuses it in the handshake or closes the connection
    assert mutual_node.url in refused, refused

    client = ["--cert", str(network.peer / "cert.pem"), "--tls-key", str(network.peer / "key.pem")]
    args = ["-p", mutual_node.url, *trust, *client, "-t", "1", "-m", "1s", "--rate", "5", "--json"]
    done = run_tool(LOADTOOL, *args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["submitted"] > 0 and summary["errors"] == {}, summary
    assert mutual_node.queries >= summary["submitted"]


@pytest.mark.parametrize("tool", [GTOOL, DEMOTOOL, LOADTOOL], ids=lambda p: p.stem)
def test_tls_files_that_cannot_be_used_are_one_line(
    network: Network, tls_node: TlsNode, tmp_path: Path, tool: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    url_flag = {GTOOL: "-r", DEMOTOOL: "-p", LOADTOOL: "-p"}[tool]
    key_flag = "--tls-key" if tool == LOADTOOL else "--key"
    command = ["-m", "1s"] if tool == LOADTOOL else ["status"]
    cases = [
        (["--cacert", str(tmp_path / "missing.pem")], "cannot read it: No such file or directory"),
        (["--cacert", str(garbage)], "not a usable certificate or key"),
        (["--cert", str(garbage)], "not a usable certificate or key"),
        (["--cert", str(network.peer / "cert.pem"), key_flag, str(garbage)], "not a usable"),
        ([key_flag, str(network.peer / "key.pem")], "needs --cert"),
    ]
    for options, message in cases:
        line = one_error_line(run_tool(tool, url_flag, tls_node.url, *options, *command), tool.stem)
        assert message in line, (options, line)
    plain = tls_node.url.replace("https://", "http://")
    options = ["--cacert", str(network.rs / "ca.pem")]
    line = one_error_line(run_tool(tool, url_flag, plain, *options, *command), tool.stem)
    assert "are for an https:// " in line, line
