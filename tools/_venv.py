"""Go on in the repository's .venv: the scripts run as files (`./peer.py`, `./tools/gtool.py`, a
shebang's `python3`, `python3 -I ...`) load this file by its path (runpy.run_path: standard
library only, no sys.path involved) and call into_venv before importing anything of the project,
so a python without the project's dependencies re-executes the script with .venv/bin/python.

Each script's preamble (placed before its first project import; the imports after it carry
`noqa: E402`):

    if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
        import runpy
        from pathlib import Path

        runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

(the root scripts name `tools/_venv.py`). Imported as a module (tests, the `loopchain-*` entry
points of .venv/bin) nothing happens: those run in the interpreter that imports them. `python -m
tools.NAME` runs the preamble too. A python that has the project and its dependencies already (any
environment it was installed in) goes on as it is; only one lacking them is switched, with its
command line as given (interpreter flags such as -I or -O kept).
"""

from __future__ import annotations

import importlib.util
import os
import sys

GUARD = "LOOPCHAIN_VENV_REEXEC"  # set for the re-executed process alone: re-exec at most once
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
VENV = os.path.join(ROOT, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")


# what a script needs besides the standard library: found, the interpreter is left as it is
NEEDED = ("loopchain", "grpc", "google.protobuf", "aiohttp", "plyvel", "coincurve", "orjson")


def _has_everything() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in NEEDED)
    except (ImportError, ValueError):  # a parent package missing, or a broken one
        return False


def into_venv(script: str) -> None:
    """Re-execute `script` (its command line as given, interpreter flags kept) by
    .venv/bin/python when this interpreter lacks the project or its dependencies, unless it is
    that venv's, there is no .venv, or this process is already the re-execution."""
    if os.environ.pop(GUARD, None) is not None:
        return  # never loop, even when the venv's prefix does not look like .venv
    if not os.path.isfile(VENV_PYTHON):
        return
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV) or _has_everything():
        return
    os.environ[GUARD] = "1"
    given = list(getattr(sys, "orig_argv", ()))[1:]
    if not given:  # (an embedding interpreter) the script and its arguments
        given = [os.path.abspath(script), *sys.argv[1:]]
    os.execv(VENV_PYTHON, [VENV_PYTHON, *given])
