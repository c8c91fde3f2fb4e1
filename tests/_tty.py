"""Run a command on a pseudo-terminal (its controlling terminal, so getpass asks there) and answer
its prompts, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass


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
    pid, master = pty.fork()
    if pid == 0:  # the child: its stdin, stdout, stderr and controlling terminal are the pty
        try:
            os.chdir(cwd)
            os.execve(argv[0], list(argv), env)
        finally:
            os._exit(127)
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
                os.kill(pid, signal.SIGTERM)
                stopped = True
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{argv} did not finish within {deadline} s: {output!r}")
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return TtyRun(output.decode(errors="replace"), os.waitstatus_to_exitcode(status))
