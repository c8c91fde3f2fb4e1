"""Run the real loopchain scripts as processes for end-to-end tests, and talk to them over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from loopchain.types.crypto import load_or_create_key

ROOT = Path(__file__).resolve().parents[1]
REST_DIFF = 1900
T = TypeVar("T")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(taken: set[int] | None = None) -> int:
    """A port P such that P and P + 1900 are free on 127.0.0.1 (and not in `taken`)."""
    taken = taken if taken is not None else set()
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        pair = {port, port + REST_DIFF}
        if (
            port + REST_DIFF < 65536
            and not pair & taken
            and _bindable(port)
            and _bindable(port + REST_DIFF)
        ):
            taken.update(pair)
            return port
    raise RuntimeError("no free port pair found")


def wait_until(condition: Callable[[], T | None], deadline: float, what: str) -> T:
    """Poll `condition` until it returns a truthy value or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    last_error: Exception | None = None
    while time.monotonic() < end:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {deadline} s waiting for {what} (last error: {last_error})"
    )


async def wait_until_async(
    condition: Callable[[], Awaitable[T | None]], deadline: float, what: str
) -> T:
    """Await `condition()` until it gives a truthy value or `deadline` seconds pass (never blocks)."""
    end = time.monotonic() + deadline
    last_error: Exception | None = None
    while time.monotonic() < end:
        try:
            if value := await condition():
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"timed out after {deadline} s waiting for {what} (last error: {last_error})"
    )


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """(status, parsed JSON body) of an HTTP request; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload or b"null")
        except json.JSONDecodeError:
            return exc.code, payload.decode(errors="replace")


def get(url: str) -> Any:
    status, body = http("GET", url)
    if status != 200:
        raise ValueError(f"GET {url} answered {status}: {body}")
    return body


def post_json(url: str, value: Any) -> Any:
    status, body = http("POST", url, json.dumps(value).encode())
    if status != 200:
        raise ValueError(f"POST {url} answered {status}: {body}")
    return body


def pid_alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def child_pids(parent: int) -> dict[int, str]:
    """Live child processes of `parent`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, IndexError, ValueError):
            continue  # gone while being read
    return found


class Proc:
    """One script run as a subprocess with its output in a log file; `prefix` runs it under
    another command that execs it (e.g. `ip netns exec NS`), so the pid stays the script's."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, prefix: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.args = args
        self.prefix = list(prefix)
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [*self.prefix, sys.executable, *self.args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after `timeout`)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return int(self.popen.returncode)

    def kill9(self) -> None:
        """kill -9 the process and its children (its REST proxy)."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LocalNetwork:
    """A RadioStation and peers as real processes in a temporary directory."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.taken: set[int] = set()
        self.rs_port = free_port_pair(self.taken)
        self.config_path = workdir / "conf.json"
        values = {
            "DEFAULT_STORAGE_PATH": str(workdir / "storage"),
            "CHANNEL_MANAGE_DATA_PATH": str(workdir / "channel_manage_data.json"),
            "HEARTBEAT_INTERVAL": 0.5,
        }
        values.update(config or {})
        self.config_values = values
        self.config_path.write_text(json.dumps(values))
        self.radiostation: Proc | None = None
        self.peers: dict[int, Proc] = {}
        self.procs: list[Proc] = []

    @property
    def rs_rest(self) -> str:
        return f"http://127.0.0.1:{self.rs_port + REST_DIFF}"

    def start_radiostation(self) -> Proc:
        proc = Proc(
            f"radiostation_{self.rs_port}",
            ["radiostation.py", "-p", str(self.rs_port), "-o", str(self.config_path)],
            self.workdir,
        )
        self.radiostation = proc.start()
        self.procs.append(proc)
        wait_until(lambda: get(f"{self.rs_rest}/api/v1/peer/list"), 30, "the RadioStation REST API")
        return proc

    def new_peer_port(self) -> int:
        return free_port_pair(self.taken)

    def make_peer_key(self, port: int) -> str:
        """Make (or keep) the key of the peer that will run on `port`; returns its id."""
        key_path = Path(self.config_values["DEFAULT_STORAGE_PATH"]) / f"peer_{port}" / "peer_key"
        return load_or_create_key(key_path).address

    def start_peer(self, port: int | None = None, wait: bool = True) -> int:
        port = port or self.new_peer_port()
        args = [
            "peer.py",
            "-p",
            str(port),
            "-r",
            f"127.0.0.1:{self.rs_port}",
            "-o",
            str(self.config_path),
        ]
        proc = Proc(f"peer_{port}", args, self.workdir).start()
        self.peers[port] = proc
        self.procs.append(proc)
        if wait:
            wait_until(
                lambda: get(f"{self.rest(port)}/api/v1/status/peer"), 40, f"peer {port} REST"
            )
        return port

    @staticmethod
    def rest(port: int) -> str:
        return f"http://127.0.0.1:{port + REST_DIFF}"

    def status(self, port: int) -> dict[str, Any]:
        return dict(get(f"{self.rest(port)}/api/v1/status/peer"))

    def height(self, port: int) -> int:
        return int(self.status(port)["block_height"])

    def block_hash_at(self, port: int, height: int) -> str:
        return str(get(f"{self.rest(port)}/api/v1/blocks?height={height}")["block_hash"])

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in reversed(self.procs):
            if proc.popen is not None and proc.popen.returncode is None:
                codes[proc.name] = proc.stop()
        return codes

    def stop_and_check(self) -> None:
        """Stop every process, then fail on a traceback in any log or an unclean exit."""
        codes = self.stop_all()
        bad = self.tracebacks()
        assert not bad, f"tracebacks in logs of {bad} (see {self.workdir})"
        assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"

    def tracebacks(self) -> list[str]:
        """Names of the processes whose logs hold a Python traceback."""
        names = {p.name for p in self.procs}
        return sorted(
            n
            for n in names
            if "Traceback" in (self.workdir / f"{n}.log").read_text(errors="replace")
        )


# ------------------------------------------------------------------ mutual TLS networks

INNER_DIFF = 10000  # PORT_DIFF_INNER_SERVICE: a TLS peer's plain loopback port for its proxy
TLS_TOOL = ROOT / "tools" / "tls_network.py"


def free_tls_port(taken: set[int] | None = None) -> int:
    """A port P such that P, P + 1900 and P + 10000 are free on 127.0.0.1 (and not in `taken`)."""
    taken = taken if taken is not None else set()
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        ports = {port, port + REST_DIFF, port + INNER_DIFF}
        if port + INNER_DIFF < 65536 and not ports & taken and all(map(_bindable, ports)):
            taken.update(ports)
            return port
    raise RuntimeError("no free port triple found")


class TlsNetwork(LocalNetwork):
    """A LocalNetwork whose nodes speak mutual TLS (GRPC_SSL_TYPE 2), with one CA and each node's
    key and certificate laid out by tools/tls_network.py before the nodes start."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None) -> None:
        super().__init__(workdir, {"GRPC_SSL_TYPE": 2, **(config or {})})
        self.storage = Path(json.loads(self.config_path.read_text())["DEFAULT_STORAGE_PATH"])
        self.peer_ids: dict[int, str] = {}
        self.rs_id = ""

    def new_peer_port(self) -> int:
        return free_tls_port(self.taken)

    def issue_tls(self, peer_ports: list[int]) -> dict[int, str]:
        """Run tools/tls_network.py for the RadioStation and `peer_ports`; their peer ids by port."""
        args = ["--storage", str(self.storage), "--radiostation", str(self.rs_port)]
        args += ["--peers", ",".join(str(p) for p in peer_ports)]
        done = subprocess.run(
            [sys.executable, str(TLS_TOOL), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tls_network.py failed ({done.returncode}): {done.stderr}")
        for line in done.stdout.splitlines():
            kind, port, node_id = line.replace(":", " ").split()
            if kind == "peer":
                self.peer_ids[int(port)] = node_id
            else:
                self.rs_id = node_id
        return dict(self.peer_ids)

    @property
    def ca_dir(self) -> Path:
        return self.storage / "ca"

    @property
    def rs_dir(self) -> Path:
        return self.storage / f"radiostation_{self.rs_port}"

    def peer_dir(self, port: int) -> Path:
        """The storage directory of the peer on `port` (its peer_key and tls/ live there)."""
        return self.storage / f"peer_{port}"
