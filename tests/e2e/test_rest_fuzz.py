"""Property-based fuzzing of the peer REST API against a live network: schemathesis cases drawn
from the OpenAPI document (valid and invalid by it) and hostile raw requests (arbitrary JSON, deep
nesting, huge integers, lone surrogates, bytes that are not UTF-8, wrong content types, huge query
strings). Every answer must come in time, be no 5xx but a 503 with Retry-After, and, when not a
2xx, carry the JSON error body; documented operations must also answer as documented. After the
run every process is alive, no log holds a traceback, and a fresh transaction becomes final.

The slow run makes REST_FUZZ_REQUESTS requests (10,000 unless set) over REST_FUZZ_PEERS peers (2).
REST_FUZZ_SEED replays a run, REST_FUZZ_FAILURES names a file to keep every failure in, and
REST_FUZZ_EXCLUDE (comma-separated) leaves families of hostile requests out (_rest_fuzz.FAMILIES).
The short run of the default suite draws the same requests each time (SMOKE_SEED), of every
family. A request after which a proxy no longer takes a plain transaction ends the run (what
follows would only time out). The figures are printed at the end (pytest -s shows them), and so
are reproducers of what failed.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from loopchain.rest.app import OPENAPI_PATH
from tests.e2e._fuzz_runs import Stop, draw_rounds, failure_lines
from tests.e2e._rest_fuzz import (
    FAMILIES,
    Answer,
    RawRequest,
    hostile_requests,
    problems,
    send_raw,
)
from tools.procs import REST_DIFF, LocalNetwork, get, post_json, running_network, wait_until

ANSWER_TIMEOUT = float(os.environ.get("REST_FUZZ_ANSWER_TIMEOUT", "20"))
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
KINDS = ["positive"] * 5 + ["negative"] * 2 + ["hostile"] * 3  # weights of the three sources
SMOKE_SEED = 20261130


class Fuzzer:
    """Sends drawn requests round-robin to the peers' proxies and keeps the figures."""

    def __init__(self, net: LocalNetwork, exclude: frozenset[str]) -> None:
        self.ports = sorted(net.peers)
        self.exclude = exclude
        self.schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()))
        operations = [result.ok() for result in self.schema.get_all_operations()]
        self.strategies = {
            mode: [op.as_strategy(generation_mode=mode) for op in operations]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        }
        self.session = requests.Session()
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []  # (what kind of failure, the reproducer)
        self.stopped = False

    def run(self, count: int, seed_value: int) -> None:
        """Make `count` requests (hypothesis may stop a run early: then another one goes on)."""
        draw_rounds(count, seed_value, lambda: self.total, self.send_drawn)

    def send_drawn(self, data: st.DataObject) -> None:
        if self.stopped:
            raise Stop
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        if kind == "hostile":
            self.send_hostile(data.draw(hostile_requests(self.exclude), label="request"))
        else:
            mode = GenerationMode(kind)
            case = data.draw(st.sampled_from(self.strategies[mode]).flatmap(lambda s: s))
            if kind == "positive" and data.draw(st.booleans(), label="default channel"):
                _drop_channel(case)
            self.send_case(kind, case)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def _port(self) -> int:
        return self.ports[self.total % len(self.ports)] + REST_DIFF

    def send_hostile(self, request: RawRequest) -> None:
        port = self._port()
        answer = send_raw(port, request, ANSWER_TIMEOUT)
        self._count("hostile", answer.status)
        for problem in problems(answer, request.method):
            self._fail(f"{problem} ({_gist(answer)})", request.describe(), answer)
        self._still_serving(port, answer, request.describe())

    def _still_serving(self, port: int, answer: Answer, request: str) -> None:
        """After an unanswered request: stop the run when the proxy takes no transaction now."""
        if answer.status is not None:
            return
        probe = RawRequest("POST", b"/api/v1/transactions", body=b'{"data": "probe"}')
        status = send_raw(port, probe, ANSWER_TIMEOUT).status
        if status not in (200, 503):
            self._fail(f"the proxy takes no transaction after this (probe → {status})", request)
            self.stopped = True
            raise Stop

    def send_case(self, kind: str, case: Any) -> None:
        port = self._port()
        curl = case.as_curl_command(base_url=f"http://127.0.0.1:{port}")
        try:
            response = case.call(
                base_url=f"http://127.0.0.1:{port}", session=self.session, timeout=ANSWER_TIMEOUT
            )
        except requests.RequestException as exc:
            self._count(kind, None)
            self._fail(f"no answer ({type(exc).__name__})", curl)
            self._still_serving(port, Answer(None, {}, b""), curl)
            return
        answer = Answer(response.status_code, dict(response.headers), response.content)
        self._count(kind, answer.status)
        where = f"{case.method} {case.path}"
        for problem in problems(answer, case.method):
            self._fail(f"{problem} on {where} ({_gist(answer)})", curl, answer)
        checks = CHECKS
        if kind == "negative" and _array_answer(answer):  # 200 with a result per element
            checks = [check for check in CHECKS if check is not negative_data_rejection]
            if _body_negated(case) and not any(_is_error(i) for i in json.loads(answer.body)):
                self._fail(f"an invalid array fully accepted on {where}", curl, answer)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            titles = "; ".join(sorted({failure.title for failure in group.exceptions}))
            self._fail(f"not as documented on {where}: {titles}", curl, answer)

    def _count(self, kind: str, status: int | None) -> None:
        self.sent[kind] += 1
        self.statuses[str(status) if status is not None else "no answer"] += 1

    def _fail(self, signature: str, request: str, answer: Answer | None = None) -> None:
        got = "" if answer is None else f"\n      → {answer.status} {answer.body[:300]!r}"
        self.failures.append((signature, f"{request}{got}"))

    def report(self, seconds: float, seed_value: int) -> str:
        excluded = ",".join(sorted(self.exclude)) or "none"
        lines = [
            f"REST fuzz: {self.total} requests in {seconds:.0f} s (seed {seed_value}, families "
            f"left out: {excluded}), by source {dict(sorted(self.sent.items()))}",
            f"answers by status: {dict(sorted(self.statuses.items()))}",
        ]
        return "\n".join(lines + failure_lines(self.failures))


def _gist(answer: Answer) -> str:
    """The kind of an answer's body, to tell failures apart."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return f"body {answer.body[:26]!r}"
    return f"response_code {body.get('response_code')}" if isinstance(body, dict) else "JSON"


def _body_negated(case: Any) -> bool:
    """Whether the body of a negative case is what breaks the schema (else its query does)."""
    component = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    return component is not None and component.mode.is_negative


def _array_answer(answer: Answer) -> bool:
    try:
        return answer.status == 200 and isinstance(json.loads(answer.body), list)
    except ValueError:
        return False


def _is_error(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("response_code"), int)
        and (item["response_code"] < 0)
    )


def _drop_channel(case: Any) -> None:
    """Send a drawn case to the default channel (a drawn channel is almost never served)."""
    if isinstance(case.query, dict):
        case.query.pop("channel", None)
    bodies = case.body if isinstance(case.body, list) else [case.body]
    for body in bodies:
        if isinstance(body, dict):
            body.pop("channel", None)


@pytest.fixture
def net(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalNetwork]:
    with running_network(tmp_path, request.param) as network:
        yield network


def _final_everywhere(net: LocalNetwork, hashes: list[str]) -> bool:
    for port in net.peers:
        for tx_hash in hashes:
            reply = get(f"{net.rest(port)}/api/v1/transactions?hash={tx_hash}")
            if int(reply["block_height"]) < 0:
                return False
    return True


def _aftermath(net: LocalNetwork) -> list[str]:
    """What is wrong with the network after the run: dead processes, a proxy that takes no
    transaction, a fresh transaction (one through each proxy) that does not become final."""
    dead = [proc.name for proc in net.procs if not proc.alive]
    if dead:
        return [f"processes died during the run: {dead}"]
    try:
        hashes = [
            post_json(f"{net.rest(port)}/api/v1/transactions", {"data": f"after, via {port}"})[
                "tx_hash"
            ]
            for port in sorted(net.peers)
        ]
        wait_until(lambda: _final_everywhere(net, hashes), 120, "fresh transactions to be final")
    except (OSError, ValueError, AssertionError) as exc:
        return [f"the network does not finalise a fresh transaction: {exc!r}"]
    return []


def _exclude(default: str) -> frozenset[str]:
    names = os.environ.get("REST_FUZZ_EXCLUDE", default)
    exclude = frozenset(name.strip() for name in names.split(",") if name.strip())
    assert exclude <= set(FAMILIES), f"REST_FUZZ_EXCLUDE names no family of {FAMILIES}"
    return exclude


def _fuzz(
    net: LocalNetwork, count: int, tmp_path: Path, exclude: frozenset[str], seed_value: int
) -> None:
    fuzzer = Fuzzer(net, exclude)
    started = time.monotonic()
    fuzzer.run(count, seed_value)
    report = fuzzer.report(time.monotonic() - started, seed_value)
    after = _aftermath(net)
    after += [
        f"a problem (tools.procs.LOG_PROBLEMS) in the log of {name}" for name in net.problem_logs()
    ]
    report += "".join(f"\nafter the run: {problem}" for problem in after)
    lines = [f"{signature}: {example}" for signature, example in fuzzer.failures] + after
    saved = Path(os.environ.get("REST_FUZZ_FAILURES") or tmp_path / "fuzz_failures.txt")
    saved.write_text("\n".join(lines))
    print(f"\n{report}\n(all failures in {saved}, logs in {tmp_path})")
    assert not fuzzer.failures and not after, report
    assert fuzzer.total >= count


@pytest.mark.parametrize("net", [1], indirect=True)
def test_a_short_fuzz_run_finds_nothing(net: LocalNetwork, tmp_path: Path) -> None:
    count = int(os.environ.get("REST_FUZZ_SMOKE_REQUESTS", "200"))
    seed_value = int(os.environ.get("REST_FUZZ_SEED") or SMOKE_SEED)  # the same requests each run
    _fuzz(net, count, tmp_path, _exclude(""), seed_value)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("net", [int(os.environ.get("REST_FUZZ_PEERS", "2"))], indirect=True)
def test_a_long_fuzz_run_finds_nothing(net: LocalNetwork, tmp_path: Path) -> None:
    count = int(os.environ.get("REST_FUZZ_REQUESTS", "10000"))
    seed_value = int(os.environ.get("REST_FUZZ_SEED") or random.randrange(2**32))
    _fuzz(net, count, tmp_path, _exclude(""), seed_value)
