"""A peer's hung children are killed and started again (real processes, CHILD_HANG_TIMEOUT 5):
a REST proxy stopped with SIGSTOP (as a blocked event loop or a deadlock leaves it) gives no
beat, and a new proxy serves the port; a channel worker so stopped is replaced too, and its
channel takes transactions again, what it acknowledged before final. Before, a hung proxy or
worker stayed as it was for good: the peer's REST API answered nothing, or its channel refused
every call, until someone killed the process by hand."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.test_channel_workers import committed, final_everywhere, workers
from tests.e2e.test_rest_proxy_restart import _proxy_of, _serving, wait_for_another_proxy
from tools.procs import REST_DIFF, LocalNetwork, running_network, wait_until

CHANNEL = "hung"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    config = {
        "LOOPCHAIN_DEFAULT_CHANNEL": CHANNEL,
        "CHANNEL_WORKERS": "always",
        "CHILD_HANG_TIMEOUT": 5,  # a slow, busy machine still beats within it
    }
    channels = {CHANNEL: {"score_package": "loopchain/default"}}
    with running_network(
        tmp_path_factory.mktemp("hung_children"), 1, config, channels=channels
    ) as network:
        yield network


def test_a_stopped_rest_proxy_is_killed_and_another_serves_its_port(net: LocalNetwork) -> None:
    port, peer = next(iter(net.peers.items()))
    hung = _proxy_of(peer.pid)
    assert hung is not None and _serving(net, port)
    os.kill(hung, signal.SIGSTOP)
    wait_for_another_proxy(net, port, peer.pid, hung, 90)
    log = peer.log_text()
    assert f"the REST proxy on port {port + REST_DIFF} (pid {hung}) gave no sign of life" in log
    assert f"REST proxy on port {port + REST_DIFF} exited (signal 9)" in log


def test_a_stopped_worker_is_killed_and_its_channel_goes_on(net: LocalNetwork) -> None:
    port, peer = next(iter(net.peers.items()))
    acknowledged = committed(net, port, CHANNEL, "before the stop", "a tx before the stop")
    hung = workers(peer.pid)[CHANNEL]
    os.kill(hung, signal.SIGSTOP)
    wait_until(
        lambda: workers(peer.pid).get(CHANNEL, hung) != hung,
        90,
        "a new worker of the channel",
    )
    committed(net, port, CHANNEL, "after the stop", "a tx through the new worker")
    assert final_everywhere(net, CHANNEL, acknowledged)
    log = peer.log_text()
    assert f"the worker of channel {CHANNEL} (pid {hung}) gave no sign of life" in log
    assert peer.alive
