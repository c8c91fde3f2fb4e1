"""Run the real loopchain scripts as processes for end-to-end tests, and talk to them over HTTP.

The test support in one place: `Proc` (the one runner of the project's scripts), `LocalNetwork`
(a RadioStation and peers), the log scan every test applies (`LOG_PROBLEMS`,
`assert_clean_log`), and the polling and HTTP helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from loopchain.types.crypto import load_or_create_key

ROOT = Path(__file__).resolve().parents[1]
REST_DIFF = 1900
T = TypeVar("T")

# what no log of a healthy process holds: an uncaught exception, a pending task dropped by its
# loop, a failed task or future nobody awaited
LOG_PROBLEMS = (
    "Traceback (most recent call last)",
    "Task was destroyed",
    "exception was never retrieved",
)
# Such a line: a traceback's first line, or asyncio's words at the start of a line or as a record
# of the asyncio logger (the project's format). The same words quoted from a request by a refusal
# stay inside their line (a node writes a message on one line: loopchain.safe_text).
# A SCORE process's lines are its peer's records, named "[score:C] <logger>" (what it wrote
# outside a record "[score:C] output": a traceback Python printed is one of those).
_RECORD = r"\S+ \S+ \w+ +\[[^\]]*\] (?:\[score:[^\]]*\] )?"
_PROBLEM_LINE = re.compile(
    r"^(?:\s*\+ Exception Group |\s*)Traceback \(most recent call last\)"
    rf"|^{_RECORD}output: (?:\s*\+ Exception Group |\s*)Traceback \(most recent call last\)"
    rf"|^(?:{_RECORD}(?:asyncio|output): )?"
    r"(?:Task was destroyed|(?:Task|Future) exception was never retrieved)"
)


def is_problem_line(line: str) -> bool:
    """Whether `line` of a log shows a problem (LOG_PROBLEMS, where they mean one)."""
    return _PROBLEM_LINE.match(line) is not None


def log_problems(text: str) -> list[str]:
    """The lines of `text` that show a problem (is_problem_line), in order."""
    return [line for line in text.splitlines() if is_problem_line(line)]


# A line of a node's log at level ERROR or CRITICAL (the project's format), or one gRPC's core
# wrote at level E (e.g. "E1203 14:04:57.379020 3437 file.cc:868] ...")
ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \S+ (ERROR|CRITICAL)\b|^E\d{4} \d\d:\d\d:\d\d")


def error_lines(text: str) -> list[str]:
    """The lines of a log written at level ERROR or above (by the node or by gRPC's core)."""
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def problem_excerpts(text: str, before: int = 2, after: int = 12, limit: int = 6000) -> str:
    """Each problem line of `text` with `before` lines above and `after` below (where a
    traceback's exception is); overlapping excerpts merged, at most `limit` characters."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if is_problem_line(line)]
    spans: list[list[int]] = []
    for i in hits:
        start, end = max(0, i - before), min(len(lines), i + after + 1)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    excerpt = "\n[...]\n".join("\n".join(lines[a:b]) for a, b in spans)
    return excerpt if len(excerpt) <= limit else excerpt[:limit] + "\n[... more]"


def assert_clean_log(text: str, name: str, where: Path | str | None = None) -> None:
    """Fail, naming `name` (and `where` its log is) and showing the problem lines in context, if
    `text` holds any of LOG_PROBLEMS."""
    problems = log_problems(text)
    if problems:
        place = f" ({where})" if where else ""
        raise AssertionError(
            f"{name}{place}: {len(problems)} problem line(s) in its output, "
            f"first {problems[0].strip()!r}:\n{problem_excerpts(text)}"
        )


def _bindable(port: int) -> bool:
    """True when a server could listen on `port` now (as the nodes do, with SO_REUSEADDR: the
    TIME_WAIT connections a stopped network leaves do not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def hold_port(port: int) -> socket.socket:
    """A socket listening on `port`, as another server holding it would (with SO_REUSEADDR, as
    `_bindable` checks: without it, the TIME_WAIT connections an earlier test left on a port
    `free_port_pair` handed out refuse the bind)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


# Test ports come from outside the kernel's ephemeral range, where no outgoing connection's local
# port can take one between choosing it and a node binding it (that race once failed a peer's
# start in CI); each pytest-xdist worker draws from its own residues modulo 100, and since the
# offsets to a node's other ports (1900, 10000) are multiples of 100, all ports of one node stay in
# its worker's share. A machine whose ephemeral range leaves no room gets ports from the kernel.
PORT_FLOOR = 10000  # below: well-known ports, and the local network's 7100.. and 9000..
PORT_STRIDE = 100
MAX_PORT = 65535


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out for outgoing connections (32768-60999 when unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_bases(reach: int) -> list[range]:
    """Ranges of multiples of PORT_STRIDE, each base B such that B .. B + PORT_STRIDE - 1 + `reach`
    stays clear of the ephemeral range (below it, but not under PORT_FLOOR, or above it)."""
    low, high = _ephemeral_range()
    last = PORT_STRIDE - 1 + reach  # the farthest port from a base a node can take
    below = range(PORT_FLOOR, low - last, PORT_STRIDE)
    first_above = -(-(high + 1) // PORT_STRIDE) * PORT_STRIDE
    above = range(first_above, MAX_PORT + 1 - last, PORT_STRIDE)
    return [bases for bases in (below, above) if len(bases)]


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _candidate_ports(reach: int) -> Iterator[int]:
    """Random ports P of this test worker's share with P .. P + `reach` outside the ephemeral
    range (from the kernel, with P + `reach` in range, when no such port exists)."""
    workers = max(1, min(PORT_STRIDE, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % workers
    residues = range(worker, PORT_STRIDE, workers)
    bases = [base for span in _port_bases(reach) for base in span]
    for _ in range(500):
        if bases:
            yield random.choice(bases) + random.choice(residues)
        elif (port := _kernel_port()) + reach <= MAX_PORT:
            yield port


def _free_ports(offsets: Sequence[int], taken: set[int] | None) -> int:
    """A port P such that P + each of `offsets` is free on 127.0.0.1 and not in `taken` (which
    it joins)."""
    taken = taken if taken is not None else set()
    for port in _candidate_ports(max(offsets)):
        ports = {port + offset for offset in offsets}
        if not ports & taken and all(map(_bindable, ports)):
            taken.update(ports)
            return port
    raise RuntimeError(f"no free ports at offsets {list(offsets)} found")


def free_port_pair(taken: set[int] | None = None) -> int:
    """A port P such that P and P + 1900 are free on 127.0.0.1 (and not in `taken`)."""
    return _free_ports((0, REST_DIFF), taken)


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


def wait_serving(proc: Proc, url: str, deadline: float, what: str) -> Any:
    """Wait until GET `url` answers (its JSON) while `proc` runs; fails at once, showing the end
    of its output, if the process ends first."""

    def serving() -> Any:
        if not proc.alive:
            raise AssertionError(
                f"{proc.name} ended with {proc.returncode} before {what} answered:\n"
                f"{proc.log_text()[-3000:]}{proc.err_text()[-3000:]}"
            )
        return get(url)

    return wait_until(serving, deadline, what)


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


BUSY_PAUSE = 0.25  # seconds a test client waits before asking again after a 503


def post_until_taken(
    url: str, body: bytes, stop: threading.Event | None = None, deadline: float = 60.0
) -> tuple[int, Any, int]:
    """POST `body` as a polite client does: a 503 (the peer's "not now, try again", as it answers
    while its pool waits for a block, e.g. during a leader's failover) is asked again after a
    pause, until another answer, `stop` or `deadline`; (status, body, 503s answered). OSError
    when the peer cannot be reached."""
    stop = stop if stop is not None else threading.Event()
    end = time.monotonic() + deadline
    busy = 0
    while True:
        status, reply = http("POST", url, body)
        if status != 503 or time.monotonic() > end:
            return status, reply, busy
        busy += 1
        if stop.wait(BUSY_PAUSE):  # the pause the peer asked for (Retry-After), cut short by stop
            return status, reply, busy


TOOL_DEADLINE = 60.0  # a tool run by a test that has not ended by then is killed, failing it


def run_tool(
    script: Path, *args: str, cwd: Path | None = None, deadline: float = TOOL_DEADLINE
) -> subprocess.CompletedProcess[str]:
    """One of the project's tools run as a process (stdin empty, its output captured)."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=deadline,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str], tool: str) -> str:
    """The one line `tool` printed on stderr when it failed (exit status 1, no traceback)."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: "), done.stderr
    return lines[0]


def pid_alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendant_pids(root: int) -> list[int]:
    """Every live process below `root` (children before grandchildren)."""
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for parent in frontier for pid in child_pids(parent)]
        found.extend(children)
        frontier = children
    return found


def cmdline_of(pid: int) -> str:
    """The command line of process `pid` ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_pids(parent: int) -> dict[int, str]:
    """Live child processes of `parent`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found[int(entry.name)] = cmdline_of(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone while being read
    return found


class Proc:
    """One script run as a subprocess with its output in a log file `log_dir/name.log` (appended
    to on each start); the one runner of the project's scripts in the tests.

    By default it is `sys.executable ARGS` in the repository root, in its own session (so a
    kill reaches its children), with stdin from /dev/null (never a prompt on the terminal of
    the person running the tests) and the test's environment. `prefix` runs it under another
    command that execs it (e.g. `ip netns exec NS`), so the pid stays the script's; `python`
    None runs `args` as they are (a shell script); `env` replaces the environment (PYTHONUNBUFFERED
    is always set); `stderr_apart` keeps stderr in `log_dir/name.err` (see `err_text`)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_dir: Path,
        prefix: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        python: str | None = sys.executable,
        stderr_apart: bool = False,
    ) -> None:
        self.name = name
        self.args = args
        self.prefix = list(prefix)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.python = python
        self.log_path = log_dir / f"{name}.log"
        self.err_path = log_dir / f"{name}.err" if stderr_apart else None
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [*self.prefix, *([self.python] if self.python else []), *self.args]

    def start(self) -> Proc:
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1")
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log_path, "ab"))
            err: IO[bytes] | int = subprocess.STDOUT
            if self.err_path is not None:
                err = files.enter_context(open(self.err_path, "ab"))
            self.popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (None while it runs or before it starts)."""
        return None if self.popen is None else self.popen.poll()

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process if it still runs."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end; its exit code (subprocess.TimeoutExpired after `timeout`,
        the process left running)."""
        assert self.popen is not None
        return int(self.popen.wait(timeout))

    def run(self, timeout: float = 60.0, grace: float = 15.0) -> int:
        """Start the process and wait for it to end by itself; its exit code. Past `timeout` it
        is stopped (SIGTERM, SIGKILL after `grace`) and the test fails, showing its output."""
        self.start()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace)
            raise AssertionError(
                f"{self.name} still ran after {timeout} s:\n{self.log_text()[-3000:]}"
                + (f"\nstderr:\n{self.err_text()[-3000:]}" if self.err_path else "")
            ) from None

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
        """kill -9 the process and every process below it (its REST proxy, SCORE processes and
        workers, each in a process group of its own): a power loss, nothing ends gracefully."""
        assert self.popen is not None
        below = descendant_pids(self.popen.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def err_text(self) -> str:
        """What it wrote to stderr (with `stderr_apart`; otherwise stderr is in the log)."""
        path = self.err_path
        return path.read_text(errors="replace") if path and path.exists() else ""

    def problems(self) -> list[str]:
        """The problem lines (LOG_PROBLEMS) in its log and stderr."""
        return log_problems(self.log_text()) + log_problems(self.err_text())

    def assert_clean_log(self, since: int = 0) -> None:
        """Fail if its log (from character `since` on) or its stderr shows a problem."""
        assert_clean_log(self.log_text()[since:], self.name, self.log_path)
        if self.err_path is not None:
            assert_clean_log(self.err_text(), self.name, self.err_path)


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
        wait_serving(proc, f"{self.rs_rest}/api/v1/peer/list", 30, "the RadioStation REST API")
        return proc

    def new_peer_port(self) -> int:
        return free_port_pair(self.taken)

    def make_peer_key(self, port: int) -> str:
        """Make (or keep) the key of the peer that will run on `port`; returns its id."""
        key_path = (
            Path(str(self.config_values["DEFAULT_STORAGE_PATH"])) / f"peer_{port}" / "peer_key"
        )
        return load_or_create_key(key_path).address

    def start_peer(
        self, port: int | None = None, wait: bool = True, prefix: Sequence[str] = ()
    ) -> int:
        """Start a peer (under `prefix`, a command that execs it, as Proc's) on `port` or a new
        one; with `wait`, return once its REST API answers."""
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
        proc = Proc(f"peer_{port}", args, self.workdir, prefix).start()
        self.peers[port] = proc
        self.procs.append(proc)
        if wait:
            wait_serving(proc, f"{self.rest(port)}/api/v1/status/peer", 40, f"peer {port} REST")
        return port

    @staticmethod
    def rest(port: int) -> str:
        return f"http://127.0.0.1:{port + REST_DIFF}"

    def status(self, port: int, channel: str = "") -> dict[str, Any]:
        query = f"?channel={channel}" if channel else ""
        return dict(get(f"{self.rest(port)}/api/v1/status/peer{query}"))

    def height(self, port: int) -> int:
        return int(self.status(port)["block_height"])

    def submit(self, port: int, data: object) -> str:
        """POST a transaction to the peer on `port`; its hash (fails unless accepted)."""
        reply = post_json(f"{self.rest(port)}/api/v1/transactions", data)
        assert reply["response_code"] == 0, reply
        return str(reply["tx_hash"])

    def tx_height(self, port: int, tx_hash: str) -> int | None:
        """The height of the block holding the transaction (-1 while pooled), None if unknown."""
        status, body = http("GET", f"{self.rest(port)}/api/v1/transactions?hash={tx_hash}")
        return int(body["block_height"]) if status == 200 else None

    def final_on(self, port: int, tx_hash: str) -> bool:
        """True once the transaction is in a final block of the peer on `port`."""
        height = self.tx_height(port, tx_hash)
        return height is not None and height >= 0

    def block_hash_at(self, port: int, height: int) -> str:
        return str(get(f"{self.rest(port)}/api/v1/blocks?height={height}")["block_hash"])

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in reversed(self.procs):
            if proc.popen is not None and proc.popen.returncode is None:
                codes[proc.name] = proc.stop()
        return codes

    def start_with_peers(
        self,
        peers: int,
        deadline: float = 60.0,
        audience: bool = False,
        channels: Mapping[str, Any] | None = None,
    ) -> LocalNetwork:
        """Start the RadioStation and `peers` peers; wait until every peer counts them all as
        validators (and, with `audience`, the others as its audience). `channels` is written as
        the RadioStation's channel_manage_data.json first, and then waited for in each channel."""
        if channels is not None:
            (self.workdir / "channel_manage_data.json").write_text(json.dumps(channels))
        self.start_radiostation()
        for _ in range(peers):
            self.start_peer()
        what = f"{peers} peers that know all {peers} validators"
        names = list(channels or [""])
        wait_until(
            lambda: all(self.sees_every_validator(audience, name) for name in names), deadline, what
        )
        return self

    def sees_every_validator(self, audience: bool = False, channel: str = "") -> bool:
        """True when every peer counts all the network's peers as the validators in force, none
        pending (and, with `audience`, the others as its audience) in `channel` (by default the
        default one)."""
        count = len(self.peers)
        for port in sorted(self.peers):
            status = self.status(port, channel)
            if status["validator_count"] != count or status.get("pending_validator_count"):
                return False
            if audience and status["audience_count"] != count - 1:
                return False
        return True

    def stop_and_check(self) -> None:
        """Stop every process, then fail on a problem (LOG_PROBLEMS) in any log or an unclean
        exit."""
        self.check(self.stop_all())

    def check(self, codes: dict[str, int]) -> None:
        """Fail on a problem in any log (each shown in context), or on an exit code in `codes`
        (as stop_all returns them) other than 0."""
        self.assert_clean_logs()
        assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"

    def problem_logs(self) -> list[str]:
        """Names of the processes whose logs show a problem (LOG_PROBLEMS)."""
        return sorted({p.name for p in self.procs if p.problems()})

    tracebacks = problem_logs  # the older name: it finds more than tracebacks now

    def assert_clean_logs(self) -> None:
        """Fail, with every bad log's problem lines in context, if any log shows a problem."""
        bad = {p.name: p for p in self.procs if p.problems()}
        if bad:
            shown = "\n\n".join(
                f"== {name} ({proc.log_path}):\n{problem_excerpts(proc.log_text())}"
                for name, proc in sorted(bad.items())
            )
            raise AssertionError(
                f"problems in the logs of {sorted(bad)} ({self.workdir}):\n{shown}"
            )


@contextlib.contextmanager
def running_network(
    workdir: Path,
    peers: int,
    config: dict[str, Any] | None = None,
    *,
    deadline: float = 60.0,
    audience: bool = False,
    channels: Mapping[str, Any] | None = None,
) -> Iterator[LocalNetwork]:
    """A LocalNetwork of a RadioStation and `peers` peers that all know each other as validators
    (see LocalNetwork.start_with_peers; `channels`, the channel file's content); at the end every
    process is stopped and must have exited 0 with no problem in its log."""
    network = LocalNetwork(workdir, config)
    try:
        yield network.start_with_peers(peers, deadline, audience, channels)
    finally:
        network.stop_and_check()


# ------------------------------------------------------------------ mutual TLS networks

INNER_DIFF = 10000  # PORT_DIFF_INNER_SERVICE: a TLS peer's plain loopback port for its proxy
TLS_TOOL = ROOT / "tools" / "tls_network.py"


def free_tls_port(taken: set[int] | None = None) -> int:
    """A port P such that P, P + 1900 and P + 10000 are free on 127.0.0.1 (and not in `taken`)."""
    return _free_ports((0, REST_DIFF, INNER_DIFF), taken)


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
