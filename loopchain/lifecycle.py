"""What every child process of the node does about its parent: it ends when the parent ends,
however the parent ends (kill -9 included), so a restarted parent always gets its ports back."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies; False when the parent
    `parent_pid` is already gone (the caller should exit at once)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return not parent_pid or os.getppid() == parent_pid
