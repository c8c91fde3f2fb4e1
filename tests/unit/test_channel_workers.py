"""The pieces of channel workers that need no network: the merged metrics of a peer and its
workers, a worker's refusal of what its peer hands it, and when a peer runs workers at all."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopchain.configure import load_config
from loopchain.p2p import worker_link
from loopchain.p2p.grpc_util import FORWARDED_FROM_KEY
from loopchain.p2p.radiostation_client import ChannelGrant
from loopchain.p2p.worker_link import WorkerLink, WorkerRefusal
from loopchain.peer import node as node_module
from loopchain.peer import workers
from loopchain.peer.metrics import PeerMetrics, merged_exposition
from loopchain.peer.node import (
    PeerNode,
    PeerOptions,
    cgroup_cpu_quota,
    usable_cores,
    worker_config,
    worker_options,
    worker_spec_json,
)
from loopchain.peer.workers import ChannelWorker
from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import Signer
from loopchain.types.validators import ValidatorSet


def _series(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"{key} twice"
            found[key] = sample.value
    return found


def _worker_text(channel: str, committed: int) -> bytes:
    metrics = PeerMetrics(process=True)
    metrics.channel(channel).committed_txs.inc(committed)
    metrics.rpc_error("GetTx", "NOT_FOUND")
    return metrics.exposition()


def test_merged_metrics_show_each_family_once_with_every_workers_series() -> None:
    own = PeerMetrics(process=True)
    own.rpc_error("Identify", "INVALID_ARGUMENT")
    text = merged_exposition(
        own.exposition(), {"alpha": _worker_text("alpha", 3), "beta": _worker_text("beta", 5)}
    )
    series = _series(text)
    assert series[("loopchain_committed_txs_total", frozenset({("channel", "alpha")}))] == 3
    assert series[("loopchain_committed_txs_total", frozenset({("channel", "beta")}))] == 5
    # each process's own figures: the peer's unlabelled, each worker's with its channel
    cpu = [labels for name, labels in series if name == "loopchain_process_cpu_seconds_total"]
    assert sorted(dict(labels).get("channel", "") for labels in cpu) == ["", "alpha", "beta"]
    errors = {
        labels: value
        for (name, labels), value in series.items()
        if name.startswith("loopchain_grpc_errors")
    }
    # the gRPC errors the peer's processes answered, by method and code, summed
    assert errors == {
        frozenset({("method", "Identify"), ("code", "INVALID_ARGUMENT")}): 1,
        frozenset({("method", "GetTx"), ("code", "NOT_FOUND")}): 2,
    }
    assert text.count(b"# TYPE loopchain_committed_txs_total counter") == 1


def test_without_workers_the_peers_own_metrics_are_kept() -> None:
    own = PeerMetrics()
    own.channel("alpha").committed_txs.inc(2)
    series = _series(merged_exposition(own.exposition(), {}))
    assert series[("loopchain_committed_txs_total", frozenset({("channel", "alpha")}))] == 2


@pytest.mark.parametrize(
    ("mode", "channels", "cores", "expected"),
    [
        ("auto", 1, 8, False),  # one channel: nothing to run apart
        ("auto", 2, 3, True),  # a core per channel and one for the rest
        ("auto", 2, 2, False),  # the workers would take turns on the same cores
        ("auto", 3, 4, True),
        ("always", 1, 1, True),
        ("never", 3, 64, False),
    ],
)
def test_when_a_peer_runs_its_channels_in_workers(
    mode: str, channels: int, cores: int, expected: bool
) -> None:
    config = load_config(overrides={"CHANNEL_WORKERS": mode})
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:7102",), None, None, False))
    assert node._in_workers(channels, cores) is expected


@pytest.mark.parametrize(
    ("host", "channels", "warned"),
    [
        ("0.0.0.0", 2, True),
        ("10.0.0.5", 3, True),
        ("peer.example", 2, True),  # a name may resolve anywhere
        ("0.0.0.0", 1, False),  # one channel: whoever reaches the port reads only its own
        ("127.0.0.1", 2, False),
        ("::1", 2, False),
        ("localhost", 2, False),
    ],
)
def test_a_peer_serving_channels_without_tls_off_the_loopback_says_who_reads_them(
    host: str, channels: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Channels keep their data to their parties over mutual TLS only (a review: README said it
    without the condition)."""
    config = load_config(overrides={"IP_LOCAL": host})
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:7102",), None, None, False))
    node._warn_about_plaintext(channels)
    said = [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said


@pytest.mark.parametrize(
    ("listen", "host", "warned"),
    [
        ("127.0.0.2", "127.0.0.1", True),  # the review's case: the others never reached it
        ("10.0.0.5", "127.0.0.1", True),
        ("10.0.0.5", "10.0.0.5", False),
        ("0.0.0.0", "peer1.example", False),  # every address: deploy/'s way
        ("::", "10.0.0.5", False),
        ("127.0.0.1", "127.0.0.1", False),  # the defaults
        ("127.0.0.1", "localhost", False),
    ],
)
def test_a_peer_listening_where_it_does_not_tell_the_others_to_reach_it_says_so(
    listen: str, host: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """IP_LOCAL one address and LOOPCHAIN_HOST another: the peer listened on the first and told
    the others the second, and its channel stopped with nothing in any log (operator review)."""
    with caplog.at_level(logging.WARNING, logger="loopchain.peer.node"):
        node_module._warn_about_target(listen, host)
    said = [r.getMessage() for r in caplog.records if "LOOPCHAIN_HOST" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert f"IP_LOCAL {listen}" in said[0] and f"set LOOPCHAIN_HOST to {listen}" in said[0]


def _worker(stdin: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopchain.peer.worker", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_refuses_a_spec_that_is_not_json_and_a_channel_it_was_not_named() -> None:
    done = _worker(b"{not json", "--channel", "alpha")
    assert done.returncode == 2 and "cannot start" in done.stderr, done.stderr
    spec = {**_MISMATCHED_SPEC, "socket": "/nonexistent/peer.sock"}
    done = _worker(json.dumps(spec).encode(), "--channel", "alpha")
    assert done.returncode == 2, done.stderr
    assert "--channel alpha but its peer sent channel beta" in done.stderr, done.stderr


def test_a_worker_that_cannot_open_its_log_file_crashes_and_is_not_refused(
    tmp_path: Path,
) -> None:
    """Its peer opened the same LOG_FILE_PATH just before: a worker that cannot (descriptors
    run out, the folder removed meanwhile) crashes, and is started again; a configuration error
    refused its spec, which stopped the channel on this peer for good (review)."""
    # a folder: no file opens there
    config = load_config(
        overrides={"DEFAULT_STORAGE_PATH": str(tmp_path), "LOG_FILE_PATH": str(tmp_path)}
    )
    options = PeerOptions(7100, ("127.0.0.1:7102",), str(tmp_path / "key"), None, False, None)
    grant = ChannelGrant("alpha", "loopchain/default", ValidatorSet("alpha", 1, ()), {})
    spec = worker_spec_json(options, grant, "hx" + "0" * 40, config, Signer.generate())
    spec["socket"] = "/nonexistent/peer.sock"
    done = _worker(json.dumps(spec).encode(), "--channel", "alpha")
    assert done.returncode == 1, done.stderr
    assert f"cannot open LOG_FILE_PATH {tmp_path}: IsADirectoryError" in done.stderr
    assert done.returncode not in (workers.WORKER_SPEC_REFUSED, workers.WORKER_STORAGE_FAILED)


_MISMATCHED_SPEC = {
    "port": 7100,
    "radiostation_targets": ["127.0.0.1:7102"],
    "debug": False,
    "score_package": None,
    "config": {},
    "signer_key": "01" * 32,
    "grant": {
        "channel": "beta",
        "score_package": "loopchain/default",
        "validators": "[]",
        "score_settings": {},
    },
    "issuer": "hx" + "0" * 40,
}


def test_a_worker_runs_with_its_peers_configuration_and_key_not_their_files(tmp_path: Path) -> None:
    """What a peer hands its worker carries the peer's configuration and key as the peer runs
    with them: the worker rereads neither file (edited, mistyped or moved since the peer
    started) and gets no password or key path; the spec fits what a worker reads."""
    config_path = tmp_path / "conf.json"
    config_path.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(tmp_path), "GRPC_TIMEOUT": 7.0}))
    config = load_config(str(config_path))
    signer = Signer.generate()
    options = PeerOptions(
        7100, ("127.0.0.1:7102",), str(tmp_path / "key"), str(config_path), False, None, "secret"
    )
    grant = ChannelGrant("beta", "loopchain/default", ValidatorSet("beta", 1, ()), {})
    spec = worker_spec_json(options, grant, "hx" + "0" * 40, config, signer)
    config_path.write_text("{not json")
    text = json.dumps({**spec, "socket": "/nonexistent/peer.sock"})
    assert "secret" not in text and str(config_path) not in text and "key" not in spec
    assert len(text) < workers.MAX_WORKER_SPEC_BYTES // 100
    received = json.loads(text)
    assert dict(worker_config(received)) == {**config, "RUN_REST_PROXY": False}
    worker = worker_options(received).worker
    assert worker is not None and worker.signer.address == signer.address


async def test_a_worker_not_listening_is_answered_unavailable_naming_the_channel(
    tmp_path: Path,
) -> None:
    config = load_config(overrides={"GRPC_TIMEOUT": 2.0})
    link = WorkerLink("alpha", tmp_path / "nobody.sock", config)
    request = pb.ChannelRequest(channel="alpha")
    with pytest.raises(WorkerRefusal) as refused:
        await link.call("GetStatus", request, None, 2.0)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert refused.value.message.startswith("channel alpha: its worker process is not answering")
    await link.close()
    with pytest.raises(WorkerRefusal) as refused:
        await link.call("GetStatus", request, None, 2.0)
    assert refused.value.message == "channel alpha: this peer is stopping"
    link.push(pb.TxBatch(channel="alpha"), None, SOURCE)  # dropped: no stream after the close
    assert link._links == {}


class _Stub:
    """A worker's stub that records the timeout each call is sent with."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def GetStatus(self, request: object, timeout: float, metadata: object) -> str:
        self.timeouts.append(timeout)
        return "answer"


async def test_a_call_admitted_after_a_probe_is_sent_with_what_is_left_of_its_time(
    tmp_path: Path,
) -> None:
    """A call that waited for a probe of its worker was sent with its caller's whole deadline:
    its caller gave up first (a 504, and the link never saw it run out). It is sent with what
    is left; none left, it is refused at once, never sent (review)."""
    link = WorkerLink("alpha", tmp_path / "nobody.sock", load_config())
    stub = _Stub()
    link.stub = stub  # type: ignore[assignment]

    async def probed() -> None:
        await asyncio.sleep(0.3)  # the probe under way when the call came

    link.health.admit = probed  # type: ignore[method-assign]
    request = pb.ChannelRequest(channel="alpha")
    try:
        assert await link.call("GetStatus", request, None, 2.0) == "answer"
        assert stub.timeouts[0] <= 2.0 - worker_link.FORWARD_MARGIN_S - 0.3
        with pytest.raises(WorkerRefusal) as refused:
            await link.call("GetStatus", request, None, worker_link.FORWARD_MARGIN_S + 0.2)
        assert refused.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "not sent" in refused.value.message and len(stub.timeouts) == 1
    finally:
        await link.close()


SOURCE = "ipv4:127.0.0.1:1"  # where a pushed message came from


def test_a_cgroup_quota_counts_as_fewer_cores(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a container's --cpus 1.5
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert usable_cores(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_cpu_quota(v1) == 4.0
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_the_peer_counts_its_workers_restarts_by_channel() -> None:
    restarts = {"alpha": 2, "beta": 0}
    metrics = PeerMetrics(worker_restarts=lambda: restarts)
    series = _series(metrics.exposition())
    assert (
        series[("loopchain_channel_worker_restarts_total", frozenset({("channel", "alpha")}))] == 2
    )
    assert (
        series[("loopchain_channel_worker_restarts_total", frozenset({("channel", "beta")}))] == 0
    )
    assert not any(
        name.startswith("loopchain_channel_worker")
        for name, _ in _series(PeerMetrics().exposition())
    )


def test_the_peer_counts_its_rest_proxy_restarts() -> None:
    restarts = [0]
    metrics = PeerMetrics(proxy_restarts=lambda: restarts[0])
    assert _series(metrics.exposition())[("loopchain_rest_proxy_restarts_total", frozenset())] == 0
    restarts[0] = 3
    assert _series(metrics.exposition())[("loopchain_rest_proxy_restarts_total", frozenset())] == 3


async def test_callers_not_named_have_a_stream_each_by_the_connection_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TLS no caller is named: each connection's messages go on streams of their own, so
    that one sender's messages never wait behind another's (they shared one queue), at most
    LINKS_PER_HOST connections of a host. Beyond them the host's other connections share one
    stream, unless its least recent one has been idle LINK_IDLE_S (then that one is closed): one
    host's many connections can neither hold more lanes for the worker nor close other hosts',
    and a host running more peers than that does not close and open a stream a message."""
    monkeypatch.setattr(worker_link, "LINKS_PER_HOST", 2)
    monkeypatch.setattr(worker_link, "LINK_IDLE_S", 3600.0)
    link = WorkerLink("alpha", tmp_path / "nobody.sock", load_config())

    def push(source: str) -> None:
        link.push(pb.TxBatch(channel="alpha"), None, source)

    def named() -> list[str]:
        return [dict(lane.metadata)[FORWARDED_FROM_KEY] for lane in link._links.values()]

    try:
        for source in ("ipv4:10.0.0.1:5000", "ipv4:10.0.0.2:5000", "ipv4:10.0.0.1:5001"):
            push(source)
        for _ in range(3):  # two more connections of 10.0.0.1, again and again: one stream
            push("ipv4:10.0.0.1:5002")
            push("ipv4:10.0.0.1:5003")
            push("ipv4:10.0.0.1:5000")
        assert named() == [
            "ipv4:10.0.0.2:5000",
            "ipv4:10.0.0.1:5001",
            "10.0.0.1",
            "ipv4:10.0.0.1:5000",
        ]
        monkeypatch.setattr(worker_link, "LINK_IDLE_S", 0.0)  # its least recent one is idle
        push("ipv4:10.0.0.1:5004")
        assert named() == [
            "ipv4:10.0.0.2:5000",
            "10.0.0.1",
            "ipv4:10.0.0.1:5000",
            "ipv4:10.0.0.1:5004",
        ]
        push("ipv6:[2001:db8::1]:5000")
        push("ipv6:[2001:db8::2]:5001")  # another address of the same /64: the same host
        assert named()[-2:] == ["ipv6:[2001:db8::1]:5000", "ipv6:[2001:db8::2]:5001"]
    finally:
        await link.close()


async def test_a_caller_beyond_the_limit_replaces_the_least_recent_never_sent_under_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each caller's messages go on a stream of its own name; with MAX_CALLER_LINKS callers'
    streams open, a new caller's replaces the least recently used one's (closed), so callers
    that come over the peer's life are never refused for good."""
    monkeypatch.setattr(worker_link, "MAX_CALLER_LINKS", 2)
    link = WorkerLink("alpha", tmp_path / "nobody.sock", load_config())
    try:
        link.push(pb.TxBatch(channel="alpha"), "hxa", SOURCE)
        link.push(pb.TxBatch(channel="alpha"), "hxb", SOURCE)
        first = link._links["hxa"]
        # its own stream again: now the most recent
        link.push(pb.TxBatch(channel="alpha"), "hxa", SOURCE)
        assert link._links["hxa"] is first
        link.push(pb.TxBatch(channel="alpha"), "hxc", SOURCE)
        assert list(link._links) == ["hxa", "hxc"]
        for name in ("hxa", "hxc"):
            assert link._links[name].metadata == ((worker_link.CALLER_KEY, name),)
    finally:
        await link.close()
    assert not link._retiring


async def test_a_worker_that_cannot_start_stops_its_peer(tmp_path: Path) -> None:
    """A worker that exits with status 2 (here: handed another channel than it was named for)
    is not started again: the peer is told to stop, naming the channel and the status."""
    fatal: list[str] = []
    worker = ChannelWorker("alpha", dict(_MISMATCHED_SPEC), load_config(), fatal.append)
    try:
        async with asyncio.timeout(60):
            await worker.run()
    finally:
        await worker.stop()
    assert fatal == [
        "the worker of channel alpha exited with status 2: it refused what its peer handed it "
        "(its reason above)"
    ]
    assert worker.restarts == 0
    assert not worker.socket_dir.exists()


async def test_a_crashed_worker_is_started_again_and_one_whose_storage_failed_is_not() -> None:
    """Each exit status of a worker is told apart: its storage failed (the peer stops, telling
    the operator to see to the storage), it refused its spec (the peer stops), it crashed (an
    exception nothing caught: started again, until MAX_CRASHES within CRASH_WINDOW), it was
    killed (started again however often). Before, a crash's status 1 counted as a storage
    failure: one bug in one channel stopped the peer, and told the operator to repair storage."""
    worker = ChannelWorker("alpha", dict(_MISMATCHED_SPEC), load_config(), print)
    await worker.link.close()
    assert worker._fatal(workers.WORKER_STORAGE_FAILED)
    assert "its storage failed (its reason and what to do above)" in worker._why(
        workers.WORKER_STORAGE_FAILED
    )
    assert worker._fatal(workers.WORKER_SPEC_REFUSED)
    assert all(not worker._fatal(-9) for _ in range(2 * workers.MAX_CRASHES))
    crashes = [worker._fatal(1) for _ in range(workers.MAX_CRASHES)]
    assert crashes == [False] * (workers.MAX_CRASHES - 1) + [True]
    why = worker._why(1)
    assert f"crashed {workers.MAX_CRASHES} times" in why and "storage" not in why, why


async def test_a_worker_ended_by_a_signal_of_its_own_fault_counts_as_a_crash() -> None:
    """A worker a C extension crashes (SIGSEGV, SIGABRT, ...) at every start, for instance reading
    damaged data, stops the peer after MAX_CRASHES within CRASH_WINDOW, telling the signal; one
    killed from outside (kill -9, the OOM killer, SIGTERM) is started again however often. Before,
    every signal was a kill from outside, and a worker crashing at each start was started
    forever."""
    worker = ChannelWorker("alpha", dict(_MISMATCHED_SPEC), load_config(), print)
    await worker.link.close()
    outside = [-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP]
    assert not any(worker._fatal(code) for code in outside * workers.MAX_CRASHES)
    crashes = [worker._fatal(-signal.SIGSEGV) for _ in range(workers.MAX_CRASHES)]
    assert crashes == [False] * (workers.MAX_CRASHES - 1) + [True]
    assert "the last time with signal SIGSEGV" in worker._why(-signal.SIGSEGV)
    assert worker._fatal(-signal.SIGABRT) and worker._fatal(-signal.SIGBUS)
