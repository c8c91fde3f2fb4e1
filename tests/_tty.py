"""Run a command on a pseudo-terminal (its controlling terminal, so getpass asks there) and answer
its prompts, as a person at a terminal would.

The command is started by subprocess in a session of its own, through a trampoline that takes
the terminal as its controlling one and execs the command, not by pty.fork: forking the test
process whole (gRPC loaded and running) has gRPC restart its threads in the child, which may log
onto the terminal the test reads (tests/_exec.py)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

_ON_TTY = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execve(sys.argv[1], sys.argv[1:], os.environ)"
)


@dataclass
class TtyRun:
    """What a command printed on its terminal and how it ended."""

    output: str
    exit_code: int


def run_on_tty(
    argv: Sequence[str],
    answers: Sequence[tuple[str, str]],
    *,
    env: dict[str, str],
    cwd: str,
    deadline: float = 60.0,
    stop_when: str | None = None,
) -> TtyRun:
    """Run `argv`; each time the output shows the prompt of the next (prompt, answer) pair, type
    the answer. With `stop_when`, SIGTERM the command once its output shows that text."""
    master, terminal = pty.openpty()
    try:  # its stdin, stdout, stderr and controlling terminal are the pty
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", _ON_TTY, *argv],  # (-I: the command's PYTHON* not read)
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(terminal)
    output = b""
    pending = list(answers)
    stopped = False
    end = time.monotonic() + deadline
    try:
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            output += chunk
            text = output.decode(errors="replace")
            if pending and pending[0][0] in text.rsplit("\n", 1)[-1]:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
            if stop_when and not stopped and stop_when in text:
                process.send_signal(signal.SIGTERM)
                stopped = True
        else:
            os.killpg(process.pid, signal.SIGKILL)  # its session's group: what it started too
            process.wait()
            raise AssertionError(f"{argv} did not finish within {deadline} s: {output!r}")
    finally:
        os.close(master)
    return TtyRun(output.decode(errors="replace"), process.wait())
