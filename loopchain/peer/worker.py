"""`python -m loopchain.peer.worker`: a channel worker process, started by its peer (see
loopchain/peer/workers.py); what it runs comes as JSON on its stdin."""

from __future__ import annotations

import sys

from loopchain.configure import install_crash_hooks
from loopchain.peer.main import worker_main

if __name__ == "__main__":
    # a crash before it sets up its log is one record, one write, too: not a traceback a line
    # at a time between its peer's lines (its stderr is its peer's)
    install_crash_hooks()
    sys.exit(worker_main())
