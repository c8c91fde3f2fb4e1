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
tools.NAME` runs the preamble too. A python the project was installed into (pip installs its
pinned dependencies with it: a CI environment, another venv) goes on as it is; any other is switched,
with its command line as given (interpreter flags such as -I or -O kept; -S, which would leave the
venv's packages out, dropped).
"""

from __future__ import annotations

import os
import sys

GUARD = "LOOPCHAIN_VENV_REEXEC"  # set for the re-executed process alone: re-exec at most once
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
VENV = os.path.join(ROOT, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")


PROJECT = "loopchain"  # the distribution pip installs (pyproject.toml), its dependencies with it


def _installed_here() -> bool:
    """Whether the project was installed into this interpreter's environment (modules found
    one by one could be other versions, or some of them only: a review had such a python fail)."""
    import importlib.metadata  # only for a python that is not .venv's (it costs every process)

    for dist in importlib.metadata.distributions(name=PROJECT):
        # (not the egg-info an editable install leaves in the repository, which the root
        # scripts' own folder on sys.path finds for any python)
        if os.path.realpath(str(dist.locate_file(""))) != ROOT:
            return True
    return False


def into_venv(script: str) -> None:
    """Re-execute `script` (its command line as given, interpreter flags but -S kept) by
    .venv/bin/python unless this interpreter is that venv's or has the project installed, there
    is no .venv, or this process is already the re-execution."""
    if os.environ.pop(GUARD, None) is not None:
        return  # never loop, even when the venv's prefix does not look like .venv
    if not os.path.isfile(VENV_PYTHON):
        return
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV) or _installed_here():
        return
    os.environ[GUARD] = "1"
    given = [arg for arg in list(getattr(sys, "orig_argv", ()))[1:] if arg != "-S"]
    if not given:  # (an embedding interpreter) the script and its arguments
        given = [os.path.abspath(script), *sys.argv[1:]]
    os.execv(VENV_PYTHON, [VENV_PYTHON, *given])
