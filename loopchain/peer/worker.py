"""`python -m loopchain.peer.worker`: a channel worker process, started by its peer (see
loopchain/peer/workers.py); what it runs comes as JSON on its stdin."""

from __future__ import annotations

import sys

from loopchain.peer.main import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
