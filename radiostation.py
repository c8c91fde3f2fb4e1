#!/usr/bin/env python3
"""RadioStation: ./radiostation.py [-p 7102] [-o conf.json] [-d] [--cert DIR] [-s SEED]."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
IN_VENV = Path(sys.prefix).resolve() == VENV.resolve()
if (VENV / "bin" / "python").exists() and not IN_VENV and "LOOPCHAIN_VENV_EXEC" not in os.environ:
    os.environ["LOOPCHAIN_VENV_EXEC"] = "1"  # guard: re-exec at most once
    venv_python = str(VENV / "bin" / "python")
    os.execv(venv_python, [venv_python, str(Path(__file__).resolve()), *sys.argv[1:]])

from loopchain.radiostation.main import main  # noqa: E402 - after the re-exec into .venv

if __name__ == "__main__":
    sys.exit(main())
