"""A block store folder moved away while its peer runs (the real radiostation.py and peer.py): the
peer went on through its open files, unnoticed until LevelDB wanted a new file, and a restart began
from an empty chain (operator review). Now the next status (each heartbeat asks one) stops the
channel, and the peer with it, saying the folder was removed and what to do; put back, the folder
gives the peer its chain again. In the peer's own process and in a channel worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.procs import LocalNetwork, http, wait_until

CHANNEL = "loopchain_default"


@pytest.fixture(params=["never", "always"], ids=["in_process", "in_worker"])
def lone(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalNetwork]:
    """A RadioStation and one peer, its one validator; every process stopped at the end."""
    network = LocalNetwork(tmp_path, {"CHANNEL_WORKERS": request.param})
    try:
        yield network.start_with_peers(1)
    finally:
        network.stop_all()


@pytest.mark.timeout(240)
def test_a_store_folder_moved_away_stops_the_peer_saying_so_and_put_back_serves_again(
    lone: LocalNetwork,
) -> None:
    (port,) = lone.peers
    peer = lone.peers[port]
    tx_hash = lone.submit(port, {"note": "before the move"})
    wait_until(lambda: lone.final_on(port, tx_hash), 60, "the transaction final")
    height = lone.height(port)
    folder = Path(str(lone.config_values["DEFAULT_STORAGE_PATH"])) / f"peer_{port}" / CHANNEL
    blocks, aside = folder / "blocks", folder / "blocks.moved"
    blocks.rename(aside)

    # asked now, the status is refused with the reason, unless a heartbeat stopped the peer
    # (and its REST proxy) already
    try:
        status, body = http("GET", f"{lone.rest(port)}/api/v1/status/peer")
    except OSError:
        pass
    else:
        assert status != 200, body

    def ended() -> bool:
        return peer.popen is not None and peer.popen.poll() is not None

    wait_until(ended, 60, "the peer's stop")
    assert peer.popen is not None and peer.popen.returncode == 1, peer.popen.returncode
    log = peer.log_text()
    assert f"LevelDB store at {blocks} was removed while it was open" in log, log[-3000:]
    assert "Put the store back, or move what is there aside" in log, log[-3000:]
    assert "What is stored is whole" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    aside.rename(blocks)
    lone.start_peer(port)
    assert lone.height(port) >= height
    assert lone.final_on(port, tx_hash)
