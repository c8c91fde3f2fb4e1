"""A channel worker that stops answering (SIGSTOP), with the real processes (CHANNEL_WORKERS
"always", two channels): the REST proxy's submissions to it time out once, answered 504 saying
that whether the peer took them is unknown, and then its channel's calls are refused at once
(503), while the other channel is served, whichever of the two is the default one. Before, a
streamed batch was forwarded to the worker with the stream's long deadline (the peer never saw
it time out, the proxy's giving up only cancelled it: 504 after 504), and the proxy probed only
the peer's default channel (a hung default worker had every channel refused)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_channel_workers import ALPHA, BETA, CHANNELS, STOPPED_WORKERS, workers
from tools.procs import LocalNetwork, http, running_network, wait_until


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("hung")
    with running_network(workdir, 1, STOPPED_WORKERS, channels=CHANNELS) as network:
        yield network


def _submit(net: LocalNetwork, port: int, channel: str, data: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"channel": channel, "data": data}).encode()
    status, answer = http("POST", f"{net.rest(port)}/api/v1/transactions", body, timeout=60)
    return status, answer


def _status(net: LocalNetwork, port: int, channel: str) -> int:
    url = f"{net.rest(port)}/api/v1/status/peer?channel={channel}"
    return http("GET", url, timeout=60)[0]


def _outcome_unknown(status: int, answer: dict[str, Any]) -> bool:
    message = str(answer.get("message", ""))
    return status == 504 and "is unknown" in message and "look them up" in message


def _continued(net: LocalNetwork, port: int, pid: int, channel: str) -> None:
    os.kill(pid, signal.SIGCONT)
    wait_until(lambda: _status(net, port, channel) == 200, 60, f"{channel} served again")
    wait_until(
        lambda: _submit(net, port, channel, f"{channel} again")[0] == 200,
        60,
        f"{channel} takes transactions again",
    )


@pytest.mark.parametrize("stopped_channel", [BETA, ALPHA])
def test_a_stopped_worker_times_out_once_then_only_its_channel_is_refused_at_once(
    net: LocalNetwork, stopped_channel: str
) -> None:
    port = sorted(net.peers)[0]
    other = ALPHA if stopped_channel == BETA else BETA
    stopped = workers(net.peers[port].pid)[stopped_channel]
    os.kill(stopped, signal.SIGSTOP)
    try:
        status, answer = _submit(net, port, stopped_channel, "sent to a stopped worker")
        # a submission sent whose answer never came: it may have been taken
        assert _outcome_unknown(status, answer), (status, answer)
        # the other channel is served on the same proxy, at once (not probed with this one)
        assert _status(net, port, other) == 200
        status, answer = _submit(net, port, other, f"{other} while {stopped_channel} is stopped")
        assert status == 200, answer
        # the stopped channel's next submission is refused at once, not timed out again
        status, answer = _submit(net, port, stopped_channel, "refused")
        assert status == 503, (status, answer)
        assert _status(net, port, stopped_channel) == 503
    finally:
        _continued(net, port, stopped, stopped_channel)
