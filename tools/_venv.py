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

(the root scripts name `tools/_venv.py`). Imported as a module (tests, `python -m`, the
`loopchain-*` entry points of .venv/bin) nothing happens: those run in the interpreter that imports
them.
"""

from __future__ import annotations

import os
import sys

GUARD = "LOOPCHAIN_VENV_REEXEC"  # set for the re-executed process alone: re-exec at most once
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
VENV = os.path.join(ROOT, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")


def into_venv(script: str) -> None:
    """Re-execute `script` (with this process's arguments) by .venv/bin/python unless this
    interpreter is that venv's, there is no .venv, or this process is already the re-execution."""
    if os.environ.pop(GUARD, None) is not None:
        return  # never loop, even when the venv's prefix does not look like .venv
    if not os.path.isfile(VENV_PYTHON):
        return
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    os.environ[GUARD] = "1"
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(script), *sys.argv[1:]])
