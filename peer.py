#!/usr/bin/env python3
"""Run a loopchain peer: ./peer.py [-p 7100] [-r RS_HOST[:PORT]] [-o conf.json] [-d]."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_VENV_PY = os.path.join(_HERE, ".venv", "bin", "python")
if os.path.exists(_VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(
    os.path.join(_HERE, ".venv")
):
    os.execv(_VENV_PY, [_VENV_PY, *sys.argv])

from loopchain.peer.main import main  # noqa: E402 - after the re-exec into .venv

if __name__ == "__main__":
    sys.exit(main())
