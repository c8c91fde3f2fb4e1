"""Start a Python program with a setting of its process changed first (a signal's disposition, a
resource limit), by a trampoline that changes it and execs the program: never by subprocess's
`preexec_fn`, which makes subprocess fork the calling process whole. gRPC, loaded in a test
process, restarts its threads in a forked child, and the descriptors subprocess then closes before
the exec made them log "epoll_wait error: Bad file descriptor" into the program's stderr, which a
test read (a clean-clone run of the suite failed so)."""

from __future__ import annotations

import sys


def python_after(setup: str, script: str, *args: str) -> list[str]:
    """The command that runs `setup` (Python statements; os and sys are imported), then execs
    this interpreter on `script` with `args`."""
    trampoline = (
        f"import os, sys\n{setup}\nos.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [sys.executable, "-c", trampoline, script, *args]
