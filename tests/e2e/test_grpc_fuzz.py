"""Property-based fuzzing of the gRPC services every outside caller reaches, over real processes:
the peer's PeerService and the RadioStation's service. Every method of each (taken from the
protobuf service descriptors, so a new method is fuzzed at once) gets requests whose fields carry
hostile values (see _grpc_fuzz: huge and negative integers, odd Unicode, empty and big strings and
bytes, known and unknown channels, real and nearly-real hex ids, random and mangled encodings in
bytes fields, malformed JSON in *_json fields, registrations and heartbeats signed by the key they
name), and raw bytes that are not its message (lone surrogates and other bytes that are not UTF-8
in string fields among them); a streaming method gets 1-4 such messages on one stream.

It runs against four set-ups (_grpc_fuzz_nets.SETUPS): `plain` (the channel in the peer's own
process, no TLS), `workers` (the channel in a worker process the peer forwards to), `tls` (mutual
TLS, the fuzz an insider: a member with its own certificate and key; the peer's plain loopback
port is fuzzed too, and must refuse every peer-to-peer method) and `tls-workers` (both).

Every call has a deadline, and must end OK or with a precise refusal (_grpc_fuzz.REFUSALS): never
UNKNOWN or INTERNAL, never past its deadline, and while it runs no node's log grows by more than
a few lines (refused input is logged rate-limited: one call must not flood a log). After the run
every process is alive (the nodes and every process below them, REST proxies, channel workers and
SCORE processes, the same ones as before), the peer answers GetStatus and finalises a fresh
transaction, the RadioStation still lists the peer, and no log holds a traceback
(tools.procs.LOG_PROBLEMS) or a line at level ERROR. What the fuzz changed (transactions it
created, heartbeats and registrations it made in the peer's name) is in no assertion: only that
the network still serves.

The default suite sends GRPC_FUZZ_SMOKE_EXAMPLES (25) requests per method and port to each
set-up, the same each run (SMOKE_SEED); the slow run (`./run_test.sh -m slow
tests/e2e/test_grpc_fuzz.py`) sends GRPC_FUZZ_EXAMPLES (300) in each set-up GRPC_FUZZ_SETUP names
(comma-separated; all by default) with a random seed, printed; GRPC_FUZZ_SEED replays one, and
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

from tests.e2e._fuzz_runs import failure_lines, network_problems
from tests.e2e._grpc_fuzz import call, describe, encoded, problems, requests_for
from tests.e2e._grpc_fuzz_nets import SETUPS, Endpoint, FuzzNet, fuzz_net, serving_problem

DEADLINE = float(os.environ.get("GRPC_FUZZ_DEADLINE", "20"))
SMOKE_SEED = 20261203
# The log lines a node may write while one call runs: refused input is logged rate-limited (a few
# lines a call, tens a second), so a call that makes a node write more floods its log
LOG_LINES_PER_CALL = 50
LOG_LINES_PER_SECOND = 50


class Fuzzer:
    """Sends drawn requests to every port a network under fuzz names, keeps the figures."""

    def __init__(self, fnet: FuzzNet) -> None:
        self.fnet = fnet
        self.known = fnet.known
        self.sent: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.by_method: dict[str, Counter[str]] = {}
        self.failures: list[tuple[str, str]] = []  # (what kind of failure, the reproducer)
        self.stopped = ""
        fnet.log_growth()  # from here on

    def run(self, examples: int, seed_value: int) -> None:
        """`examples` drawn calls of each method of each port (fewer when hypothesis runs out of
        new ones)."""
        index = 0
        for endpoint in self.fnet.endpoints:
            for method in endpoint.methods():
                if self.stopped:
                    return
                self.fuzz_method(endpoint, method, examples, seed_value + index)
                index += 1

    def fuzz_method(
        self, endpoint: Endpoint, method: d.MethodDescriptor, examples: int, seed_value: int
    ) -> None:
        name = endpoint.name_of(method)
        refused = method.name in endpoint.refused

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
            outcome = call(endpoint.channel, method, encoded(requests), DEADLINE)
            self.sent[name] += 1
            self.codes[outcome.code.name] += 1
            self.by_method.setdefault(name, Counter())[outcome.code.name] += 1
            shown = f"{endpoint.label}{describe(method, requests)}"
            for problem in problems(method, outcome, refused):
                self.failures.append((f"{name}: {problem}", shown))
            self._check_logs(name, outcome.seconds, shown)
            if outcome.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._still_serving(shown)

        one()

    def _check_logs(self, name: str, seconds: float, shown: str) -> None:
        """A failure for each node whose log grew by more lines during the call than refusals
        (rate-limited) and the node's own work could write (a line written after the call
        returned is counted with the next one)."""
        allowed = LOG_LINES_PER_CALL + LOG_LINES_PER_SECOND * seconds
        for node, lines in self.fnet.log_growth().items():
            if lines > allowed:
                self.failures.append(
                    (f"{name}: a flood of lines in the log of {node}", f"{lines} lines: {shown}")
                )

    def _still_serving(self, after: str) -> None:
        """After an unanswered call: a process that ended is a failure (the call is its
        reproducer); stop the run when a node no longer serves."""
        for line in self.fnet.gone():
            self.failures.append((f"a process ended: {line[:120]}", after))
        self.fnet.record_processes()  # each ended one reported once
        reason = serving_problem(self.fnet, DEADLINE)
        if reason:
            self.failures.append((f"a node stopped serving: {reason}", after))
            self.stopped = reason

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def report(self, seconds: float, seed_value: int, examples: int) -> str:
        lines = [
            f"gRPC fuzz ({self.fnet.setup}): {self.total} calls to {len(self.sent)} methods in "
            f"{seconds:.0f} s (seed {seed_value}, {examples} examples a method)",
            f"answers by status: {dict(sorted(self.codes.items()))}",
            "by method: "
            + "; ".join(
                f"{name} {dict(sorted(codes.items()))}" for name, codes in self.by_method.items()
            ),
        ]
        return "\n".join(lines + failure_lines(self.failures))


def _aftermath(fnet: FuzzNet) -> list[str]:
    """What is wrong after the run: processes that ended (or were replaced), a node that does
    not serve, a fresh transaction that does not become final, a log with a problem or an ERROR
    line."""
    gone = fnet.gone()
    if gone:
        return [f"processes ended during the run: {gone}"]
    found = network_problems(fnet.net, fnet.port)
    reason = serving_problem(fnet, DEADLINE)
    if reason:
        found.insert(0, f"a node does not serve after the run: {reason}")
    return found


def _fuzz(fnet: FuzzNet, examples: int, seed_value: int) -> None:
    fuzzer = Fuzzer(fnet)
    started = time.monotonic()
    fuzzer.run(examples, seed_value)
    report = fuzzer.report(time.monotonic() - started, seed_value, examples)
    after = _aftermath(fnet)
    report += "".join(f"\nafter the run: {problem}" for problem in after)
    print(f"\n{report}\n(logs in {fnet.net.workdir})")
    assert not fuzzer.failures and not after, report
    every = {e.name_of(m) for e in fnet.endpoints for m in e.methods()}
    assert set(fuzzer.sent) == every, report


@pytest.fixture
def smoke_net(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FuzzNet]:
    with fuzz_net(request.param, tmp_path) as fnet:
        yield fnet


@pytest.mark.parametrize("smoke_net", SETUPS, indirect=True)
def test_a_short_grpc_fuzz_run_finds_nothing(smoke_net: FuzzNet) -> None:
    examples = int(os.environ.get("GRPC_FUZZ_SMOKE_EXAMPLES", "25"))
    _fuzz(smoke_net, examples, int(os.environ.get("GRPC_FUZZ_SEED") or SMOKE_SEED))


def _long_setups() -> list[str]:
    chosen = [s.strip() for s in os.environ.get("GRPC_FUZZ_SETUP", "").split(",") if s.strip()]
    unknown = set(chosen) - set(SETUPS)
    assert not unknown, f"GRPC_FUZZ_SETUP names {sorted(unknown)}; set-ups are {SETUPS}"
    return chosen or list(SETUPS)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("setup", _long_setups())
def test_a_long_grpc_fuzz_run_finds_nothing(setup: str, tmp_path: Path) -> None:
    examples = int(os.environ.get("GRPC_FUZZ_EXAMPLES", "300"))
    with fuzz_net(setup, tmp_path) as fnet:
        _fuzz(fnet, examples, int(os.environ.get("GRPC_FUZZ_SEED") or random.randrange(2**32)))
