"""Runs a channel's SCORE process, loads its package and restarts it whenever it exits.

The peer never dies with its SCORE: a crash, a kill or a missed invoke deadline (the process is
then killed, since a looping transaction must not hold the chain) only leads to a restart with
backoff, after which the package is loaded again and the state is the last committed one.

A SCORE is other people's code, so the process gets nothing of the peer it does not need:
* an environment built from an allow-list (PATH, Python's own variables): never the peer's
  LOOPCHAIN_* settings or key passwords; its time zone (UTC) and locale (C.UTF-8) are the same on
  every peer, whatever the peer's are;
* its own empty working directory (mode 0700, emptied at every start), as $HOME too;
* no inherited file descriptors but stdin (/dev/null), stdout and stderr (one pipe, which the
  supervisor reads: output.py logs what comes through it, as the peer logs, bounded and paced);
* a process group of its own, signalled whole when the process is stopped or killed and SIGKILLed
  once it has exited, however it exited: what a SCORE forks (and leaves in the group) does not
  outlive it with its state store and socket descriptors;
* its unix socket inside a directory of mode 0700 with an unguessable name, so no other user can
  reach it or put a socket in its place (owned_dir.py: a peer killed with kill -9 leaves it, and
  the next SCORE supervisor started with the same temp directory removes it);
* its package and state DB as absolute paths in the Load call.
Before the first start the supervising process makes itself non-dumpable, so processes of the same
user (its SCORE among them) can no longer read its memory or environment through /proc or ptrace;
the SCORE process in turn drops every capability (see process.py). Files of the peer's user stay
readable to the SCORE: the peer's key is kept encrypted, its password only in the peer's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import loopchain
from loopchain.configure import Config
from loopchain.durable import write_atomic
from loopchain.lifecycle import (
    CHILD_GROUP,
    keep_memory_private,
    signal_group,
    terminate,
    until_exit_or,
)
from loopchain.scoreservice.client import (
    ScoreClient,
    ScoreRejected,
    ScoreStatusInfo,
    ScoreUnavailable,
)
from loopchain.scoreservice.output import ScoreOutput, level_name
from loopchain.scoreservice.owned_dir import OwnedDir, private_dir
from loopchain.scoreservice.packages import ScorePackage
from loopchain.scoreservice.state import damage_marker

log = logging.getLogger(__name__)

START_DEADLINE = 30.0  # seconds a new process has to answer Status
STOP_DEADLINE = 5.0  # seconds between SIGTERM and SIGKILL
OUTPUT_DRAIN = 2.0  # seconds an ended process's last output has to be logged
FIRST_BACKOFF = 0.2
STABLE_AFTER = 30.0  # a process that ran this long resets the backoff
# a Load that failed (too slow: a package whose import is slow on this machine, a cold disk; or
# the process died) is given twice as long the next time, up to 2**MAX_LOAD_DOUBLINGS times the
# first deadline (the longer of GRPC_TIMEOUT and SCORE_INVOKE_TIMEOUT): with the same deadline
# each time, a load slower than it was killed and started again for good (review)
MAX_LOAD_DOUBLINGS = 4
MAX_SOCKET_PATH_BYTES = 107  # sun_path of a Linux unix socket address, without its NUL
SOCKET_NAME = "score.sock"
SOCKET_DIR_PREFIX = "loopchain-score-"
_PROJECT_ROOT = Path(loopchain.__file__).resolve().parents[1]

# The environment a SCORE process gets: what Python and the C library need, nothing of the peer's.
ENV_ALLOWED = frozenset(
    {
        "PATH",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "PYTHONPYCACHEPREFIX",
    }
)
# Set alike on every peer, never taken from the peer's: a SCORE that turns block.timestamp into a
# date (time.localtime, datetime.fromtimestamp) or formats text by the locale must record the same
# results on every peer, and a peer's TZ, LANG, LC_* (or its /etc/localtime without TZ) differ.
# No bytecode is written: a module a SCORE imports late (in invoke) would add __pycache__ to its
# package folder, which is the user's repository and only ever read (packages.py).
ENV_FIXED = {
    "TZ": "UTC",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "PYTHONUTF8": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "GRPC_VERBOSITY": "ERROR",  # as every process of this package sets (loopchain/__init__.py)
}


def query_limit(config: Config) -> float:
    """Seconds a SCORE process lets one query call run before it ends itself (its --query-limit):
    the query's deadline (its caller has gone by then), and at most half a block's, so that a
    block waiting behind a query stuck in C work meets an ended process, tried again once it is
    started again, rather than its deadline, which counts towards giving the SCORE up."""
    return min(float(config.SCORE_QUERY_TIMEOUT), float(config.SCORE_INVOKE_TIMEOUT) / 2)


def score_environment(environ: Mapping[str, str], work_dir: Path) -> dict[str, str]:
    """The environment of a SCORE process: the allowed variables of `environ`, $HOME its work
    directory, a PYTHONPATH that finds loopchain, and what every peer's SCORE must see alike: one
    hash seed (a SCORE that iterates a set of strings must write the same state everywhere), the
    time zone and the locale, and no bytecode written (ENV_FIXED)."""
    env = {name: value for name, value in environ.items() if name in ENV_ALLOWED}
    env.update(ENV_FIXED)
    env.update(HOME=str(work_dir), MALLOC_ARENA_MAX="2", PYTHONUNBUFFERED="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), environ.get("PYTHONPATH", "")) if p
    )
    return env


class ScoreSupervisor:
    """Owner of one channel's SCORE process: start, load, restart with backoff, stop."""

    def __init__(
        self,
        config: Config,
        channel: str,
        work_dir: Path,
        state_path: Path,
        package: ScorePackage | None,
        package_error: str | None,
    ) -> None:
        self.config = config
        self.channel = channel
        self.work_dir = Path(work_dir).absolute()  # the SCORE's working directory
        self.state_path = Path(state_path).absolute()  # the SCORE's cwd is not the peer's
        if package is not None:
            package = dataclasses.replace(package, path=Path(package.path).absolute())
        self.package = package
        self._socket_dir = OwnedDir(SOCKET_DIR_PREFIX)  # made at start
        self.socket_dir = self._socket_dir.path
        self.socket_path = self.socket_dir / SOCKET_NAME
        self._client = ScoreClient(self.socket_path, config, on_invoke_timeout=self.kill)
        self._process: asyncio.subprocess.Process | None = None
        self._output: ScoreOutput | None = None  # the reader of the process's output
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self.restarts = 0
        self.last_exit: tuple[int, int | None] | None = None  # (pid, status) of the last to end
        self._exited = asyncio.Condition()  # notified whenever last_exit changes
        self.load_error: str | None = None  # why the running process could not load the package
        self._loads_failed = 0  # Loads that failed in a row (see MAX_LOAD_DOUBLINGS)
        self._state = ScoreStatusInfo.unavailable("SCORE process not started yet")
        self._fatal = self._fatal_reason(package, package_error)

    def _fatal_reason(self, package: ScorePackage | None, package_error: str | None) -> str | None:
        if package is None:
            return package_error or "no SCORE package"
        size = len(os.fsencode(str(self.socket_path)))
        if size > MAX_SOCKET_PATH_BYTES:
            return (
                f"SCORE socket path {self.socket_path} is {size} bytes long; "
                f"unix sockets allow {MAX_SOCKET_PATH_BYTES}: set TMPDIR to a shorter directory"
            )
        return None

    @property
    def client(self) -> ScoreClient:
        """The client of the process (it reconnects by itself after a restart)."""
        return self._client

    async def _note_exit(self, pid: int, status: int | None) -> None:
        async with self._exited:
            self.last_exit = (pid, status)
            self._exited.notify_all()

    async def exit_status(self, pid: int, timeout: float) -> int | None:
        """The exit status of the process `pid` once it has ended and been seen to (None after
        `timeout` seconds, or when it ended without one)."""
        try:
            async with asyncio.timeout(timeout), self._exited:
                await self._exited.wait_for(
                    lambda: self.last_exit is not None and self.last_exit[0] == pid
                )
        except TimeoutError:
            return None
        assert self.last_exit is not None
        return self.last_exit[1]

    @property
    def pid(self) -> int | None:
        """The running process's id, or None."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def status(self) -> ScoreStatusInfo:
        """The SCORE's last known status; status -1 with the reason when it is not available."""
        if self._fatal is not None:
            return ScoreStatusInfo.unavailable(self._fatal)
        if self._ready.is_set() and self._client.last_status is not None:
            return self._client.last_status
        return self._state

    async def wait_ready(self, timeout: float) -> bool:
        """True once the package is loaded (False after `timeout` seconds or when it never can be)."""
        if self._fatal is not None:
            return False
        if self._ready.is_set():  # the usual case, once per block: no timer to arm
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Keep the SCORE process running until stop(); returns when stopped."""
        self._running = True
        try:
            if self._fatal is not None:
                log.error("SCORE of channel %s is not available: %s", self.channel, self._fatal)
                await self._stopping.wait()
                return
            if not keep_memory_private():
                log.warning(
                    "could not make this process non-dumpable: its SCORE may read its memory"
                )
            await self._supervise()
        finally:
            self._socket_dir.close()
            self._finished.set()

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        while not self._stopping.is_set():
            started = loop.time()
            code = await self._run_once()
            if self._stopping.is_set():
                return
            if loop.time() - started > STABLE_AFTER:
                backoff = FIRST_BACKOFF
            self.restarts += 1
            self._state = ScoreStatusInfo.unavailable(
                f"SCORE process exited ({code}); restarting in {backoff:.1f} s"
            )
            log.warning("SCORE process of channel %s exited (%s); restart", self.channel, code)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            backoff = min(backoff * 2, float(self.config.SCORE_RESTART_BACKOFF_MAX))

    async def _run_once(self) -> str:
        """Run one process until it exits or stop() is called; returns how it ended."""
        try:
            process = await self._spawn()
        except OSError as exc:
            return f"could not start: {exc}"
        self._process = process
        failure = None
        try:
            failure = await self._bring_up(process)
            await self._until_exit_or_stop(process)
        finally:
            self._ready.clear()
            await terminate(process, STOP_DEADLINE, group=True)
            await self._note_exit(process.pid, process.returncode)
            if self._output is not None:  # its last lines (a stack dump) logged before its end
                await asyncio.to_thread(self._output.join, OUTPUT_DRAIN)
        ended = f"exit code {process.returncode}"
        if process.returncode == -signal.SIGALRM:
            ended = f"a query call ran past {query_limit(self.config):g} s (stacks logged above)"
        return f"{ended}: {failure}" if failure else ended

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._socket_dir.open()
        self.work_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.work_dir, empty=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        config = self.config
        args = [
            *("-m", "loopchain.scoreservice.process", "--socket", str(self.socket_path)),
            *("--step-limit", str(config.SCORE_STEP_LIMIT)),
            *("--memory-mb", str(config.SCORE_MEMORY_LIMIT_MB)),
            *("--max-message-bytes", str(config.GRPC_MAX_MESSAGE_BYTES)),
            *("--give-back-mb", str(config.MEMORY_GIVE_BACK_MB)),
            *("--parent-pid", str(os.getpid())),
            *("--query-limit", f"{query_limit(config):g}"),
        ]
        label = f"score:{self.channel}"
        # the level this process logs at (-d's DEBUG, else LOOPCHAIN_LOG_LEVEL; review: the
        # setting alone missed -d, and a peer started with -d took a setting no level named)
        level = level_name(logging.getLogger().getEffectiveLevel())
        args += ["--log-records", "--log-level", level, "--monitor-label", label]
        if config.MONITOR_LOG:  # the process's records go to the peer's collector too
            args += ["--monitor-log", f"{config.MONITOR_LOG_HOST}:{config.MONITOR_LOG_PORT}"]
        self._state = ScoreStatusInfo.unavailable("SCORE process starting")
        reading, writing = os.pipe()
        try:  # read from the start: a thread that cannot start leaves no process behind
            try:
                self._output = ScoreOutput(reading, label)
            except RuntimeError as exc:  # "can't start new thread": this machine's, for now
                raise OSError(f"no thread to read its output: {exc}") from exc
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=writing,
                stderr=writing,
                env=score_environment(os.environ, self.work_dir),
                cwd=self.work_dir,
                close_fds=True,
                process_group=CHILD_GROUP,
            )
        finally:
            os.close(writing)  # the reader sees the pipe's end once the process's copies close
        return process

    async def _bring_up(self, process: asyncio.subprocess.Process) -> str | None:
        """Wait until the process answers Status, then Load the package. Returns why the process
        is killed, when it is: it died, was too slow or could not open its state store while
        loading (a local condition, tried again after a backoff; not a load error)."""
        assert self.package is not None
        if not await self._await_answer(process):
            if process.returncode is None and not self._stopping.is_set():
                log.error("SCORE process did not answer within %.0f s; killing it", START_DEADLINE)
                signal_group(process, signal.SIGKILL)
            return None
        base = max(float(self.config.GRPC_TIMEOUT), float(self.config.SCORE_INVOKE_TIMEOUT))
        timeout = base * 2 ** min(self._loads_failed, MAX_LOAD_DOUBLINGS)
        try:
            status = await self._client.load(self.channel, self.package, self.state_path, timeout)
        except ScoreUnavailable as exc:  # died, too slow or its store failed: start afresh
            self._loads_failed += 1
            self._state = ScoreStatusInfo.unavailable(exc.message)
            if process.returncode is None and not self._stopping.is_set():
                log.error("SCORE of channel %s: %s; killing it", self.channel, exc.message)
                signal_group(process, signal.SIGKILL)
            return exc.message
        except ScoreRejected as exc:  # e.g. another package loaded: report, keep serving Status
            self._state = ScoreStatusInfo.unavailable(exc.message)
            return None
        self._loads_failed = 0
        if status.loaded:
            self.load_error = None
            self._ready.set()
        else:
            self.load_error = status.message
            self._state = status
            log.error("SCORE of channel %s could not be loaded: %s", self.channel, status.message)
        return None

    async def _await_answer(self, process: asyncio.subprocess.Process) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_DEADLINE
        while loop.time() < deadline:
            if process.returncode is not None or self._stopping.is_set():
                return False
            try:
                await self._client.status()
                return True
            except ScoreUnavailable:
                await asyncio.sleep(0.05)
        return False

    async def _until_exit_or_stop(self, process: asyncio.subprocess.Process) -> None:
        await until_exit_or(process, self._stopping)

    def kill(self) -> None:
        """SIGKILL the process and its group (it is restarted and re-loaded); used when an invoke
        misses its deadline."""
        process = self._process
        if process is not None and process.returncode is None:
            log.error("SCORE of channel %s missed its invoke deadline; killing it", self.channel)
            signal_group(process, signal.SIGKILL)

    async def replace_state(self, reason: str) -> None:
        """Have the SCORE's state store moved aside (kept for inspection) and made anew, empty,
        for the peer to replay its chain into: marked as one found corrupt is (`reason` is logged
        when it is moved), and the running process ended; the next one started moves it aside as
        it opens it. Returns once that process has ended. Raises OSError when the mark cannot be
        written (the process is then left running)."""
        # (two syncs: off the event loop every channel of a peer may share)
        await asyncio.to_thread(write_atomic, damage_marker(self.state_path), reason.encode())
        process = self._process
        if process is None or process.returncode is not None:
            return  # the next process started opens the marked store
        log.error("SCORE of channel %s: %s; its state is made anew", self.channel, reason)
        signal_group(process, signal.SIGKILL)
        await self.exit_status(process.pid, STOP_DEADLINE * 2)

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and stop supervising."""
        self._stopping.set()
        process = self._process
        if process is not None:
            await terminate(process, STOP_DEADLINE, group=True)
        if self._running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_DEADLINE * 2):
                    await self._finished.wait()
        await self._client.close()
