"""A SCORE process ends with its peer however the peer ends, even busy in C code that holds the
interpreter: its state store's lock is free for the peer started again. A real SCORE process under
a real supervisor in a stand-in peer process, which kill -9 ends mid-call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopchain.storage.abc import StoreLocked
from loopchain.storage.leveldb import LevelDBStore
from tools.procs import ROOT, wait_until

PEER = """
import asyncio, os, signal, sys
from pathlib import Path
from tests.integration._score_helpers import Blocks, make_package, make_supervisor, score_config

SOURCE = '''
from loopchain.blockchain.score_base import ScoreBase
class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        open(transaction.data["started"], "w").close()
        return {"code": 0, "message": str(sum(range(10**14)))}  # C work, holding the GIL
'''

async def main(root: Path) -> None:
    supervisor = make_supervisor(root, score_config(SCORE_INVOKE_TIMEOUT=600.0),
                                 make_package(root, "busy", SOURCE))
    asyncio.create_task(supervisor.run())
    assert await supervisor.wait_ready(60)
    (root / "score.pid").write_text(str(supervisor.pid))
    started = root / "started"
    asyncio.create_task(supervisor.client.invoke_block(Blocks().next({"started": str(started)})))
    while not started.exists():
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(Path(sys.argv[1])))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone but for its exit status (its parent, init, reaps it)
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(120)
def test_a_score_process_busy_in_c_code_ends_with_its_killed_peer(tmp_path: Path) -> None:
    """Before, it was sent SIGTERM, which Python handles between bytecodes: stuck in one call
    of C code it outlived its peer, holding the state's lock, and the peer started again could
    not open its state."""
    script = tmp_path / "peer.py"
    script.write_text(PEER)
    with open(tmp_path / "peer.log", "wb") as log:  # not a pipe, which the SCORE holds too
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=90,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    assert done.returncode == -9, (tmp_path / "peer.log").read_text()[-2000:]
    pid = int((tmp_path / "score.pid").read_text())
    try:
        wait_until(lambda: not _alive(pid), 30, "the SCORE process to end with its peer")
    finally:
        if _alive(pid):
            os.kill(pid, 9)
    # its lock is free once its last thread is gone (its main thread is a zombie while the
    # others still end: the descriptors they share are closed after them)
    wait_until(lambda: _lock_free(tmp_path / "state"), 30, "the state's lock to be free")


def _lock_free(path: Path) -> bool:
    try:
        LevelDBStore(path).close()
    except StoreLocked:
        return False
    return True
