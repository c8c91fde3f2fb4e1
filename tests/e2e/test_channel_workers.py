"""Channel workers, with the real processes: four peers in two channels run each channel in a
worker process of its own (CHANNEL_WORKERS "always": "auto" would not on a machine of fewer than
three cores), with its own SCORE process. A worker killed with kill -9 is started again by its
peer and its channel catches up, while the peer's other channel goes on meanwhile; a peer killed with kill -9 takes its workers (and their SCOREs) with it
and, started again, serves both channels on its port, even when started again at once, while
the old workers still hold their stores. A worker that stops answering (SIGSTOP)
gets its channel's calls refused at once (503) rather than waited for, the other channel served."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopchain import failpoints
from loopchain.peer.workers import MAX_CRASHES
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.transaction import Transaction
from tests.e2e._crashes import environment
from tools.procs import LocalNetwork, http, is_problem_line, running_network, wait_until

ALPHA, BETA = "alpha", "beta"
CHANNELS = {
    ALPHA: {"score_package": "loopchain/default"},
    BETA: {"score_package": "loopchain/default"},
}


# channel workers, none killed as hung: tests stop (SIGSTOP) them longer than a hung one is left
STOPPED_WORKERS = {
    "LOOPCHAIN_DEFAULT_CHANNEL": ALPHA,
    "CHANNEL_WORKERS": "always",
    "CHILD_HANG_TIMEOUT": 0,
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("workers")
    with running_network(workdir, 4, STOPPED_WORKERS, channels=CHANNELS) as network:
        yield network


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode() for part in raw.split(b"\0") if part]


def workers(peer_pid: int) -> dict[str, int]:
    """The worker processes of a peer by channel (from their command lines)."""
    found = {}
    for pid in _children(peer_pid):
        args = _cmdline(pid)
        if "loopchain.peer.worker" in args:
            found[args[args.index("--channel") + 1]] = pid
    return found


def _restarts(net: LocalNetwork, port: int) -> dict[str, float]:
    """loopchain_channel_worker_restarts_total of a peer's /metrics, by channel."""
    with urllib.request.urlopen(f"{net.rest(port)}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["channel"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "loopchain_channel_worker_restarts_total"
    }


def score_children(pid: int) -> list[int]:
    return [c for c in _children(pid) if "loopchain.scoreservice.process" in _cmdline(c)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def submit(net: LocalNetwork, port: int, channel: str, data: object) -> str | None:
    """The hash of a transaction `port` accepted into `channel`, None when it refused it now."""
    body_bytes = json.dumps({"channel": channel, "data": data}).encode()
    status, body = http("POST", f"{net.rest(port)}/api/v1/transactions", body_bytes)
    return str(body["tx_hash"]) if status == 200 and body.get("response_code") == 0 else None


def final_everywhere(net: LocalNetwork, channel: str, tx_hash: str) -> bool:
    for port in net.peers:
        url = f"{net.rest(port)}/api/v1/transactions?hash={tx_hash}&channel={channel}"
        status, body = http("GET", url)
        if status != 200 or body.get("block_height", -1) < 0:
            return False
    return True


def committed(net: LocalNetwork, port: int, channel: str, data: object, what: str) -> str:
    """Submit through `port` (again while it refuses) and wait until final on every peer."""
    accepted: list[str] = []

    def accept() -> bool:
        tx_hash = submit(net, port, channel, data)
        if tx_hash is not None:
            accepted.append(tx_hash)
        return bool(accepted)

    wait_until(accept, 60, f"{what}: accepted by peer {port}")
    wait_until(partial(final_everywhere, net, channel, accepted[0]), 90, f"{what}: final")
    return accepted[0]


def test_each_channel_runs_in_a_worker_of_its_own_with_its_own_score(net: LocalNetwork) -> None:
    for port, proc in net.peers.items():
        found = workers(proc.pid)
        assert sorted(found) == [ALPHA, BETA], (port, found)
        for channel, pid in found.items():
            assert len(score_children(pid)) == 1, (port, channel)
        assert score_children(proc.pid) == [], "the peer's own process runs no SCORE"
    for channel in CHANNELS:
        committed(net, min(net.peers), channel, f"first in {channel}", f"a first tx of {channel}")


def test_a_killed_worker_comes_back_and_the_other_channel_goes_on(net: LocalNetwork) -> None:
    port = sorted(net.peers)[1]
    peer = net.peers[port]
    before = workers(peer.pid)
    victim = before[ALPHA]
    victim_scores = score_children(victim)
    acknowledged = committed(net, port, ALPHA, "before the kill", "an alpha tx before the kill")
    os.kill(victim, signal.SIGKILL)
    # the peer's other channel is served meanwhile, through the same peer and REST proxy
    committed(net, port, BETA, "while alpha's worker is down", "a beta tx meanwhile")
    assert workers(peer.pid)[BETA] == before[BETA], "the other worker was not restarted"
    wait_until(
        lambda: workers(peer.pid).get(ALPHA, victim) != victim,
        30,
        "a new worker of alpha",
    )
    wait_until(
        lambda: not any(_alive(pid) for pid in victim_scores),
        30,
        "the killed worker's SCORE process ends with it",
    )
    committed(net, port, ALPHA, "after the restart", "an alpha tx through the restarted worker")
    restarts = _restarts(net, port)
    assert restarts == {ALPHA: 1.0, BETA: 0.0}, restarts
    assert final_everywhere(net, ALPHA, acknowledged)
    heights = {p: net.status(p, ALPHA)["block_height"] for p in net.peers}
    wait_until(
        lambda: len({net.status(p, ALPHA)["block_height"] for p in net.peers}) == 1,
        30,
        f"alpha at one height on every peer (was {heights})",
    )
    assert peer.alive


def test_a_killed_peer_takes_its_workers_along_and_starts_again(net: LocalNetwork) -> None:
    port = sorted(net.peers)[2]
    peer = net.peers[port]
    descendants = list(workers(peer.pid).values())
    descendants += [s for w in descendants for s in score_children(w)]
    proxies = [c for c in _children(peer.pid) if "rest_proxy.py" in " ".join(_cmdline(c))]
    assert len(descendants) == 4 and len(proxies) == 1
    peer.send_signal(signal.SIGKILL)
    peer.wait(30)
    wait_until(
        lambda: not any(_alive(pid) for pid in descendants + proxies),
        30,
        "the killed peer's workers, SCOREs and REST proxy end",
    )
    net.start_peer(port)
    new = net.peers[port]
    assert sorted(workers(new.pid)) == [ALPHA, BETA]
    for channel in CHANNELS:
        committed(net, port, channel, f"after the peer's restart in {channel}", f"{channel} tx")
    body = json.dumps({"channel": "nobody", "data": 1}).encode()
    status, reply = http("POST", f"{net.rest(port)}/api/v1/transactions", body)
    assert status == 404 and "'nobody' is not served" in reply["message"], reply


def test_a_peer_started_again_at_once_after_a_kill_waits_for_its_old_workers_stores(
    net: LocalNetwork,
) -> None:
    """Started again right after a kill -9, before the old workers have ended (they shut down
    gracefully on their PDEATHSIG and hold their stores meanwhile), the peer's new workers wait
    for the stores instead of failing (which stopped the new peer). To hold the old workers there
    on any machine: their SCOREs are stopped (SIGSTOP) before the kill, so each old worker's
    shutdown waits on its SCORE with its stores open, and the old workers are stopped right after
    the kill, there (stopped before it, the kernel would hang them up when their parent died: an
    orphaned process group with a stopped member). Continued, they end and let the stores go."""
    port = sorted(net.peers)[0]
    peer = net.peers[port]
    old = list(workers(peer.pid).values())
    old_scores = [score for pid in old for score in score_children(pid)]
    assert len(old) == 2 and len(old_scores) == 2
    try:
        for pid in old_scores:
            os.kill(pid, signal.SIGSTOP)
        peer.send_signal(signal.SIGKILL)
        peer.wait(30)
        for pid in old:
            os.kill(pid, signal.SIGSTOP)
        since = len(peer.log_text())
        net.start_peer(port, wait=False)
        new = net.peers[port]

        def new_workers_wait() -> bool:
            text = new.log_text()[since:]
            assert new.alive, f"the new peer ended ({new.returncode}):\n{text[-3000:]}"
            return all(
                any(
                    "waiting up to" in line and f"{os.sep}{channel}{os.sep}node" in line
                    for line in text.splitlines()
                )
                for channel in CHANNELS
            )

        wait_until(new_workers_wait, 60, "the new workers waiting for the old ones' stores")
    finally:
        for pid in old + old_scores:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    wait_until(lambda: not any(_alive(pid) for pid in old + old_scores), 30, "the old ones end")
    for channel in CHANNELS:
        committed(net, port, channel, f"after an at-once restart in {channel}", f"{channel} tx")
    assert new.alive and sorted(workers(new.pid)) == [ALPHA, BETA]


def _status_answer(net: LocalNetwork, port: int, channel: str) -> tuple[int, str, str | None]:
    """(HTTP status, message, Retry-After) of the peer's status in `channel` (deadline 30 s)."""
    url = f"{net.rest(port)}/api/v1/status/peer?channel={channel}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, "", response.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        return exc.code, str(body.get("message", "")), exc.headers.get("Retry-After")


def test_a_stopped_worker_is_refused_at_once_and_serves_again_when_continued(
    net: LocalNetwork,
) -> None:
    port = sorted(net.peers)[3]
    stopped = workers(net.peers[port].pid)[BETA]
    os.kill(stopped, signal.SIGSTOP)
    try:
        # after a call that runs out of time, the peer probes the worker and, while the probe
        # gets no answer either, refuses beta's calls at once: 503 with Retry-After, not 504s
        def refused() -> bool:
            status, message, retry = _status_answer(net, port, BETA)
            return status == 503 and "answered nothing" in message and retry == "1"

        wait_until(refused, 90, "beta's calls refused at once while its worker is stopped")
        assert _status_answer(net, port, ALPHA)[0] == 200, "alpha is served meanwhile"
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_until(lambda: _status_answer(net, port, BETA)[0] == 200, 30, "beta served again")
    committed(net, port, BETA, "after SIGCONT", "a beta tx through the continued worker")


def test_a_refusal_in_a_worker_names_the_caller_not_the_peers_socket(net: LocalNetwork) -> None:
    """A call the peer hands to a channel's worker and the worker refuses is logged with the
    address the peer took it from. Before, every such line read "from unix:" (the worker's
    socket): an operator could not tell who sent it."""
    port = sorted(net.peers)[2]
    peer = net.peers[port]
    since = len(peer.log_text())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.PeerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetBlock(pb.GetBlockRequest(channel=ALPHA, block_hash="not-a-hash"), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value

    def logged() -> str | None:
        lines = [
            line
            for line in peer.log_text()[since:].splitlines()
            if "refused a call from" in line and "INVALID_ARGUMENT" in line
        ]
        return lines[-1] if lines else None

    line = wait_until(logged, 30, "the worker's refusal in the peer's log")
    assert "from ipv4:127.0.0.1:" in line and "(through its peer)" in line, line
    assert "from unix:" not in line, line


def test_a_receipt_lookup_in_a_worker_carries_its_transaction(net: LocalNetwork) -> None:
    """GetTxResultBatch with with_tx (a v3 receipt in one lookup) goes to the channel's worker
    as it is: an executed transaction comes with its bytes, in either channel."""
    port = min(net.peers)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as link:
        stub = pb_grpc.PeerServiceStub(link)
        for channel in CHANNELS:
            tx_hash = committed(net, port, channel, f"receipt in {channel}", f"a tx of {channel}")

            def executed(channel: str = channel, tx_hash: str = tx_hash) -> pb.TxResultReply | None:
                request = pb.TxLookupBatchRequest(
                    channel=channel, tx_hashes=[tx_hash], with_tx=True
                )
                (entry,) = stub.GetTxResultBatch(request, timeout=30).results
                assert entry.code == 0, entry
                return entry.result if entry.result.executed else None

            found = wait_until(executed, 60, f"the transaction executed in {channel}")
            tx = Transaction.decode(found.tx)
            assert tx.hash.hex() == tx_hash and tx.body["data"]["data"] == f"receipt in {channel}"


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[LocalNetwork]:
    """A network of its own, not started: a test starts a RadioStation and one peer, its one
    validator; at the end every process is stopped."""
    network = LocalNetwork(
        tmp_path, {"LOOPCHAIN_DEFAULT_CHANNEL": ALPHA, "CHANNEL_WORKERS": "always"}
    )
    try:
        yield network
    finally:
        network.stop_all()


def started_workers(text: str, channel: str) -> list[int]:
    """The pids of the workers of `channel` a peer started, in order, from its log."""
    return [
        int(pid)
        for pid in re.findall(rf"started the worker of channel {channel} \(pid (\d+)\)", text)
    ]


def crash_only_problems(text: str, crash: str) -> None:
    """Fail unless the problem lines of the log `text` (LOG_PROBLEMS) are all in the one traceback
    that ends in `crash`."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if crash in line)
    start = max(i for i in range(end) if re.match(r"\d{4}-\d\d-\d\d ", lines[i])) + 1
    problems = [i for i, line in enumerate(lines) if is_problem_line(line)]
    assert problems and all(start <= i < end for i in problems), [lines[i] for i in problems]


def test_a_worker_that_crashes_is_started_again_and_its_peer_goes_on(lone: LocalNetwork) -> None:
    """An exception nothing catches in a worker (here raised by a fail point, as a bug would) ends
    that worker with status 1: its peer starts it again, without the fail point, and serves the
    other channel meanwhile. Before, status 1 counted as a storage failure: the whole peer
    stopped, telling the operator to free space or repair the storage."""
    crash = "FailPointCrash: fail point score-committed reached"
    with environment(failpoints.ENV, f"score-committed:raise@{BETA}"):
        lone.start_with_peers(1, channels=CHANNELS)
    (port,) = lone.peers
    peer = lone.peers[port]
    committed(lone, port, ALPHA, "before beta's crash", "an alpha tx before")
    # the first block of beta (made for this transaction): its worker raises once it is executed
    committed(lone, port, BETA, "beta's first", "a beta tx through its worker's crash")

    def restarted() -> bool:
        assert peer.alive, f"the peer stopped:\n{peer.log_text()[-2000:]}"
        return len(started_workers(peer.log_text(), BETA)) == 2

    wait_until(restarted, 30, "beta's worker started again")
    for channel in CHANNELS:
        committed(lone, port, channel, f"after the crash in {channel}", f"a {channel} tx after")
    text = peer.log_text()
    assert crash in text and "free space" not in text, text[-3000:]
    assert len(started_workers(text, ALPHA)) == 1, "alpha's worker was started again"
    assert workers(peer.pid) == {  # by channel: pids wrap (a flake review found their order did)
        ALPHA: started_workers(text, ALPHA)[0],
        BETA: started_workers(text, BETA)[1],
    }
    # beta's new worker executed blocks without raising: it runs without the fail point
    assert _restarts(lone, port) == {ALPHA: 0.0, BETA: 1.0}
    codes = lone.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert lone.problem_logs() == [peer.name], lone.problem_logs()
    crash_only_problems(peer.log_text(), crash)


def test_a_channel_whose_worker_crashes_for_good_stops_alone(lone: LocalNetwork) -> None:
    """A worker that crashes MAX_CRASHES times within CRASH_WINDOW is not started again. That
    stopped the whole peer, its other channels with it (review: one channel's failure took every
    channel of the peer down). Now that channel alone stops, answering why, and the others go
    on; a peer stops once none of its channels is left."""
    lone.start_with_peers(1, channels=CHANNELS)
    (port,) = lone.peers
    peer = lone.peers[port]
    for crash in range(1, MAX_CRASHES + 1):
        pid = workers(peer.pid)[BETA]
        os.kill(pid, signal.SIGSEGV)  # a crash's signal, as a C extension's fault would be

        def gone_or_started(pid: int = pid, crash: int = crash) -> bool:
            assert peer.alive, f"the peer stopped:\n{peer.log_text()[-2000:]}"
            if crash == MAX_CRASHES:
                return "channel beta stopped on this peer" in peer.log_text()
            return workers(peer.pid).get(BETA, pid) != pid

        wait_until(gone_or_started, 60, f"beta's worker after crash {crash}")
    committed(lone, port, ALPHA, "after beta stopped", "an alpha tx after beta stopped")
    status, body = http("GET", f"{lone.rest(port)}/api/v1/status/peer?channel={BETA}")
    assert status == 503 and "channel beta stopped on this peer" in body["message"], body
    assert f"crashed {MAX_CRASHES} times" in body["message"], body
    assert BETA not in workers(peer.pid) and peer.alive
    codes = lone.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_a_worker_started_again_runs_with_its_peers_settings_not_the_edited_files(
    lone: LocalNetwork,
) -> None:
    """A worker started again runs with the configuration and key its peer runs with, whatever
    became of their files since the peer started. Before, it read both again: a configuration
    file edited (for the next start) with a typo made it exit with status 2 and the whole peer
    stop; a key file moved away made it create a new key, a peer id of its own."""
    lone.start_with_peers(1, channels=CHANNELS)
    (port,) = lone.peers
    peer = lone.peers[port]
    before = committed(lone, port, BETA, "before the kill", "a beta tx before the kill")
    (peer_id,) = set(
        re.findall(r"\] loopchain\.peer\.node: peer id (hx[0-9a-f]+)", peer.log_text())
    )
    key = Path(str(lone.config_values["DEFAULT_STORAGE_PATH"])) / f"peer_{port}" / "peer_key"
    original = lone.config_path.read_text()
    lone.config_path.write_text(original.rstrip().rstrip("}") + ', "GRPC_TIMEOUT": }')
    key.rename(key.with_name("peer_key.moved"))
    try:
        os.kill(workers(peer.pid)[BETA], signal.SIGKILL)

        def restarted() -> bool:
            assert peer.alive, f"the peer stopped:\n{peer.log_text()[-2000:]}"
            return len(started_workers(peer.log_text(), BETA)) == 2

        wait_until(restarted, 30, "beta's worker started again")
        # its peer's storage (DEFAULT_STORAGE_PATH of the file as it was) and key: the chain it
        # had goes on, signed as before (the peer is the channel's one validator)
        committed(lone, port, BETA, "after the kill", "a beta tx through the new worker")
        assert final_everywhere(lone, BETA, before)
        committed(lone, port, ALPHA, "meanwhile", "an alpha tx")
        ids = re.findall(
            r"\[peer:\d+:beta\] loopchain\.peer\.node: peer id (hx[0-9a-f]+)", peer.log_text()
        )
        assert ids == [peer_id, peer_id], ids
        assert not key.exists(), "the worker made a key of its own"
        assert peer.alive and _restarts(lone, port) == {ALPHA: 0.0, BETA: 1.0}
    finally:
        lone.config_path.write_text(original)
        with contextlib.suppress(FileNotFoundError):
            key.with_name("peer_key.moved").rename(key)
    lone.stop_and_check()
