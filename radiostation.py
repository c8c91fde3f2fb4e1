#!/usr/bin/env python3
"""RadioStation: ./radiostation.py [-p 7102] [-o conf.json] [-d] [--cert DIR] [-s SEED]."""

import sys

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    helper = Path(__file__).resolve().parent / "tools" / "_venv.py"
    runpy.run_path(str(helper))["into_venv"](__file__)

from loopchain.configure import install_crash_hooks  # after the switch into .venv
from loopchain.radiostation.main import main

if __name__ == "__main__":
    install_crash_hooks()  # a crash before its log is set up is one record, one write, too
    sys.exit(main())
