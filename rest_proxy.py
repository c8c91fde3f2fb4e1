#!/usr/bin/env python3
"""REST proxy: serves the peer REST API v1 on PEER_PORT+1900 and forwards to the peer's gRPC."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
_GUARD = "LOOPCHAIN_REST_PROXY_REEXEC"
if (
    os.path.isfile(os.path.join(VENV, "bin", "python"))
    and os.path.realpath(sys.prefix) != os.path.realpath(VENV)
    and not os.environ.get(_GUARD)
):
    os.environ[_GUARD] = "1"  # never loop if the venv's prefix looks different
    python = os.path.join(VENV, "bin", "python")
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])
os.environ.pop(_GUARD, None)

from loopchain.rest.main import main  # noqa: E402 - after the re-exec into .venv

if __name__ == "__main__":
    sys.exit(main())
