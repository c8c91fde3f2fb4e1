"""Property-based fuzzing of the gRPC services every outside caller reaches, over real processes:
the peer's PeerService and the RadioStation's service. Every method of each (taken from the
protobuf service descriptors, so a new method is fuzzed at once) gets requests whose fields carry
hostile values (see _grpc_fuzz: huge and negative integers, odd Unicode, empty and big strings and
bytes, known and unknown channels, real and nearly-real hex ids, random and mangled encodings in
bytes fields, malformed JSON in *_json fields, registrations and heartbeats signed by the key they
name), and raw bytes that are not its message (lone surrogates and other bytes that are not UTF-8
in string fields among them); a streaming method gets 1-4 such messages on one stream.

Every call has a deadline, and must end OK or with a precise refusal (_grpc_fuzz.REFUSALS): never
UNKNOWN or INTERNAL, never past its deadline. After the run every process is alive, the peer
answers GetStatus and finalises a fresh transaction, the RadioStation still lists the peer, and
no log holds a traceback (tools.procs.LOG_PROBLEMS) or a line at level ERROR. What the fuzz
changed (transactions it created, heartbeats and registrations it made in the peer's name) is in
no assertion: only that the network still serves.

The default suite sends GRPC_FUZZ_SMOKE_EXAMPLES (25) requests per method, the same each run
(SMOKE_SEED); the slow run (`./run_test.sh -m slow tests/e2e/test_grpc_fuzz.py`) sends
GRPC_FUZZ_EXAMPLES (300) per method with a random seed, printed; GRPC_FUZZ_SEED replays one, and
GRPC_FUZZ_DEADLINE is each call's deadline (20 s). The figures and the reproducers of failures
are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import load_or_create_key
from tests.e2e._fuzz_runs import failure_lines, network_problems
from tests.e2e._grpc_fuzz import (
    Known,
    call,
    channel_to,
    describe,
    encoded,
    iter_methods,
    problems,
    requests_for,
)
from tools.procs import LocalNetwork, error_lines, running_network, wait_until

CHANNEL = "loopchain_default"
DEADLINE = float(os.environ.get("GRPC_FUZZ_DEADLINE", "20"))
SMOKE_SEED = 20261203


class Fuzzer:
    """Sends drawn requests to the peer's and the RadioStation's gRPC ports, keeps the figures."""

    def __init__(self, net: LocalNetwork, known: Known) -> None:
        self.net = net
        self.known = known
        self.peer = channel_to(known.peer_target)
        self.rs = channel_to(known.rs_target)
        self.sent: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.by_method: dict[str, Counter[str]] = {}
        self.failures: list[tuple[str, str]] = []  # (what kind of failure, the reproducer)
        self.stopped = ""

    def close(self) -> None:
        self.peer.close()
        self.rs.close()

    def run(self, examples: int, seed_value: int) -> None:
        """`examples` drawn calls of each method (fewer when hypothesis runs out of new ones)."""
        for index, method in enumerate(iter_methods()):
            if self.stopped:
                return
            self.fuzz_method(method, examples, seed_value + index)

    def fuzz_method(self, method: d.MethodDescriptor, examples: int, seed_value: int) -> None:
        channel = self.peer if method.containing_service.name == "PeerService" else self.rs

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @seed(seed_value)
        @given(requests=requests_for(method, self.known))
        def one(requests: list[Any]) -> None:
            if self.stopped:
                return
            outcome = call(channel, method, encoded(requests), DEADLINE)
            self.sent[method.name] += 1
            self.codes[outcome.code.name] += 1
            self.by_method.setdefault(method.name, Counter())[outcome.code.name] += 1
            for problem in problems(method, outcome):
                self.failures.append((f"{method.name}: {problem}", describe(method, requests)))
            if outcome.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._still_serving(describe(method, requests))

        one()

    def _still_serving(self, after: str) -> None:
        """After an unanswered call: stop the run when a node no longer serves."""
        reason = serving_problem(self.peer, self.rs, self.known)
        if reason:
            self.failures.append((f"a node stopped serving: {reason}", after))
            self.stopped = reason

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def report(self, seconds: float, seed_value: int, examples: int) -> str:
        lines = [
            f"gRPC fuzz: {self.total} calls to {len(self.sent)} methods in {seconds:.0f} s "
            f"(seed {seed_value}, {examples} examples a method)",
            f"answers by status: {dict(sorted(self.codes.items()))}",
            "by method: "
            + "; ".join(
                f"{name} {dict(sorted(codes.items()))}" for name, codes in self.by_method.items()
            ),
        ]
        return "\n".join(lines + failure_lines(self.failures))


def serving_problem(peer: grpc.Channel, rs: grpc.Channel, known: Known) -> str:
    """Why the peer or the RadioStation does not serve now ("" when both do): the peer answers
    GetStatus of its channel, the RadioStation lists the peer."""
    try:
        status = pb.PeerStatusReply.FromString(
            peer.unary_unary("/loopchain.PeerService/GetStatus")(
                pb.ChannelRequest(channel=CHANNEL).SerializeToString(), timeout=DEADLINE
            )
        )
        listed = pb.PeerListReply.FromString(
            rs.unary_unary("/loopchain.RadioStation/GetPeerList")(
                pb.ChannelRequest(channel=CHANNEL).SerializeToString(), timeout=DEADLINE
            )
        )
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    if status.peer_id != known.peer_id:
        return f"the peer answers GetStatus as {status.peer_id!r}"
    if known.peer_id not in {entry.peer_id for entry in listed.peers}:
        return "the RadioStation no longer lists the peer"
    return ""


def _known(net: LocalNetwork) -> Known:
    """What the fuzz draws among hostile values: the network's channel, its peer's id, target
    and key, a final transaction and the hashes of its first blocks."""
    (port,) = net.peers
    signer = load_or_create_key(
        Path(str(net.config_values["DEFAULT_STORAGE_PATH"])) / f"peer_{port}" / "peer_key"
    )
    tx_hash = net.submit(port, {"data": "before the fuzz"})
    wait_until(lambda: net.final_on(port, tx_hash), 60, "a transaction final before the fuzz")
    blocks = [net.block_hash_at(port, height).removeprefix("0x") for height in (0, 1)]
    return Known(
        channels=[CHANNEL],
        peer_id=signer.address,
        peer_target=f"127.0.0.1:{port}",
        peer_signer=signer,
        rs_target=f"127.0.0.1:{net.rs_port}",
        tx_hashes=[tx_hash.removeprefix("0x")],
        block_hashes=blocks,
    )


def _aftermath(net: LocalNetwork, fuzzer: Fuzzer) -> list[str]:
    """What is wrong after the run: dead processes, a node that does not serve, a fresh
    transaction that does not become final, a log with a problem or an ERROR line."""
    found = network_problems(net)
    if found and found[0].startswith("processes died"):
        return found
    reason = serving_problem(fuzzer.peer, fuzzer.rs, fuzzer.known)
    if reason:
        found.insert(0, f"a node does not serve after the run: {reason}")
    return found


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    with running_network(tmp_path, 1) as network:
        yield network


def _fuzz(net: LocalNetwork, examples: int, seed_value: int) -> None:
    fuzzer = Fuzzer(net, _known(net))
    started = time.monotonic()
    try:
        fuzzer.run(examples, seed_value)
        report = fuzzer.report(time.monotonic() - started, seed_value, examples)
        after = _aftermath(net, fuzzer)
    finally:
        fuzzer.close()
    report += "".join(f"\nafter the run: {problem}" for problem in after)
    print(f"\n{report}\n(logs in {net.workdir})")
    assert not fuzzer.failures and not after, report
    assert set(fuzzer.sent) == {method.name for method in iter_methods()}, report


def test_a_short_grpc_fuzz_run_finds_nothing(net: LocalNetwork) -> None:
    examples = int(os.environ.get("GRPC_FUZZ_SMOKE_EXAMPLES", "25"))
    _fuzz(net, examples, int(os.environ.get("GRPC_FUZZ_SEED") or SMOKE_SEED))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_long_grpc_fuzz_run_finds_nothing(net: LocalNetwork) -> None:
    examples = int(os.environ.get("GRPC_FUZZ_EXAMPLES", "300"))
    _fuzz(net, examples, int(os.environ.get("GRPC_FUZZ_SEED") or random.randrange(2**32)))
