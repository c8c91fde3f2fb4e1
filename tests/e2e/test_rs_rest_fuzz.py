"""Property-based fuzzing of the RadioStation's REST API (port + 1900) over real processes (the real
radiostation.py and a peer): every route (taken from the app's router, so a new one is fuzzed at
once) gets requests with its own method and others (HEAD, PUT, PATCH, ...), with, without and
with a wrong operator token, hostile values in the path, the query (odd Unicode, '..', NUL, very
long, bytes that are not UTF-8) and each field of its body (wrong JSON types, huge values), whole
hostile bodies and malformed HTTP (tests.e2e._rest_fuzz), and odd framing (chunked, absurd or
wrong Content-Length, compressed bodies).

Every request must be answered within DEADLINE, never with a 5xx but a 503 with Retry-After, and,
when not a 2xx, with the JSON error body. A write without the operator token is 401/403; a write
with it that is refused is a 4xx whose message names the hostile field and does not echo pages
of input. Nothing changes (the RadioStation's files, the channel file, the configuration, the
channels, the registered peers) but by a write answered 2xx, and such a write is checked: what it
made is well-formed and served, and only what it may change changed; a configuration value set
is put back, a channel entry naming the live peer is taken out again, a removed peer registers
again. After the run every process lives, the peer finalises a fresh transaction, the
RadioStation lists it, and no log holds a traceback, a problem line or an ERROR line.

The default suite makes RS_REST_FUZZ_SMOKE_REQUESTS (700) requests, the same each run
(SMOKE_SEED); the slow run (`./run_test.sh -m slow -n0 -s tests/e2e/test_rs_rest_fuzz.py`) makes
RS_REST_FUZZ_REQUESTS (3000) with a random seed, printed; RS_REST_FUZZ_SEED replays one, and
RS_REST_FUZZ_DEADLINE is each answer's deadline (20 s). The figures and reproducers of failures
are printed (pytest -s shows them); every failure is kept in RS_REST_FUZZ_FAILURES (a file name;
fuzz_failures.txt beside the logs by default).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import strategies as st

from loopchain.protos import loopchain_pb2 as pb
from loopchain.radiostation.channels import ChannelSpec, load_channels
from loopchain.types import certificates as pki
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import load_or_create_key
from loopchain.types.package_name import is_package_name
from loopchain.types.validators import Group, Validator, ValidatorSet
from tests.e2e._fuzz_runs import Stop, draw_rounds, failure_lines, network_problems
from tests.e2e._grpc_fuzz import channel_to
from tests.e2e._rest_fuzz import Answer, RawRequest, problems, send_raw
from tests.e2e._rs_rest_fuzz import (
    ROUTES,
    Known,
    Route,
    RsRequest,
    changes,
    refusal_problems,
    rs_requests,
    snapshot,
)
from tests.integration._rs_helpers import bare_app
from tools.procs import REST_DIFF, LocalNetwork, http, running_network, wait_until

CHANNEL = "loopchain_default"
DEADLINE = float(os.environ.get("RS_REST_FUZZ_DEADLINE", "20"))
SMOKE_SEED = 20261204
BODY_TIMEOUT = 1.0  # REST_BODY_TIMEOUT of the network: a withheld body is answered 408 soon


class Fuzzer:
    """Sends drawn requests to the RadioStation's REST port, checks each, keeps the figures."""

    def __init__(self, net: LocalNetwork, known: Known, exclude: frozenset[str]) -> None:
        self.net = net
        self.known = known
        self.exclude = exclude
        self.rest = net.rs_rest
        self.port = net.rs_port + REST_DIFF
        self.grpc = channel_to(f"127.0.0.1:{net.rs_port}")
        self.before = snapshot(self.rest, known)
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.by_route: dict[str, Counter[str]] = {}
        self.written: Counter[str] = Counter()  # writes answered 2xx, by route
        self.failures: list[tuple[str, str]] = []  # (what kind of failure, the reproducer)
        self.stopped = False

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def run(self, count: int, seed_value: int) -> None:
        """Make `count` requests (hypothesis may end a run early: then another one goes on)."""
        draw_rounds(count, seed_value, lambda: self.total, self.send_drawn)

    def send_drawn(self, data: st.DataObject) -> None:
        if self.stopped:
            raise Stop
        self.send(data.draw(rs_requests(self.known, self.exclude), label="request"))

    def send(self, request: RsRequest) -> None:
        raw = request.raw
        answer = send_raw(self.port, raw, DEADLINE)
        label = f"{request.route.method} {request.route.path}" if request.route else "other"
        status = str(answer.status) if answer.status is not None else "no answer"
        self.sent[label] += 1
        self.statuses[status] += 1
        self.by_route.setdefault(label, Counter())[status] += 1
        found = problems(answer, raw.method)
        if answer.status is not None:
            found += refusal_problems(request, answer.status, answer.body)
        for problem in found:
            self._fail(f"{problem} on {label}", raw, answer)
        if answer.status is None:
            self._still_serving(raw)
        after = snapshot(self.rest, self.known)
        route = request.route
        if route is not None and route.write and answer.status in (200, 201):
            self.written[label] += 1
            self._check_write(route, request, answer, after)
        else:
            changed = changes(self.before, after)
            if changed:
                self._fail(f"{status} on {label} changed {'; '.join(changed)}", raw, answer)
            self.before = after

    # -- writes that succeeded

    def _check_write(
        self, route: Route, request: RsRequest, answer: Answer, after: dict[str, Any]
    ) -> None:
        """A write answered 2xx: what it made is well-formed and served, and it changed only what
        it may; then what it did to the live channel is undone, and the snapshot taken anew."""
        raw = request.raw
        label = f"{route.method} {route.path}"
        try:
            data = json.loads(answer.body)["data"]
            wrong = self._written_wrong(route, data, after)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            wrong = [f"the answer or what it made is not as it should be: {exc!r}"]
        allowed = _ALLOWED[route.path]
        stray = [c for c in changes(self.before, after) if not allowed(c)]
        wrong += [f"it changed {c}" for c in stray]
        for problem in wrong:
            self._fail(f"a write answered {answer.status} on {label}: {problem}", raw, answer)
        self.before = snapshot(self.rest, self.known)

    def _written_wrong(self, route: Route, data: Any, after: dict[str, Any]) -> list[str]:
        written = data.get("channel", CHANNEL) if isinstance(data, dict) else CHANNEL
        wrong = self._channel_file_problems(after, str(written))
        if route.path == "/api/v1/conf":
            (entry,) = data
            name = entry["name"]
            served = self._get(f"/api/v1/conf?name={name}")["data"][0]["value"]
            if served != entry["value"]:
                wrong.append(f"{name} is served as {served!r}, not as set ({entry['value']!r})")
            old = {e["name"]: e["value"] for e in self.before["conf"]["data"]}[name]
            self._undo("POST", "/api/v1/conf", json.dumps({"name": name, "value": old}).encode())
            if self._get("/api/v1/conf") != self.before["conf"]:
                wrong.append(f"the configuration is not as before once {name} is put back")
        elif route.path.startswith("/api/v1/cert/issue/"):
            cert = pki.certificate_from_pem(data["cert_pem"].encode())
            serials = {c["serial_number"] for c in self._get("/api/v1/cert/list/peer")["data"]} | {
                self._get("/api/v1/cert/list/ca")["data"]["serial_number"]
            }
            if data["serial_number"] not in serials:
                wrong.append(f"certificate {data['serial_number']} is not listed")
            if route.path.endswith("/ca") != pki.is_ca(cert):
                wrong.append("the certificate is not of the kind asked for")
        elif route.path == "/api/v1/peer":
            if data["peer_id"] == self.known.peer_id:  # it registers again at its heartbeat
                wait_until(self._lists_the_peer, 30, "the removed peer to register again")
        elif route.path == "/api/v1/channel/peer" and route.method == "POST":
            entry = data[data["channel"]]["peers"]
            live = [e for e in entry if self._names_live_peer(e)]
            for e in live:
                key = "peer_id" if "peer_id" in e else "peer_target"
                query = f"?channel={data['channel']}&{key}={e[key]}"
                self._undo("DELETE", f"/api/v1/channel/peer{query}", b"")
        return wrong

    def _channel_file_problems(self, after: dict[str, Any], written: str) -> list[str]:
        """The channel file parses as at start and is what GET /api/v1/channel/data serves; the
        `written` channel and the default one name a package peers can load and are served to
        peers (GetPeerList, with a validator set that decodes)."""
        path = self.known.channel_file
        if not path.exists():
            return []
        channels = load_channels(path, CHANNEL, "loopchain/default")
        wrong = []
        if json.loads(path.read_text()) != after["channels"].get("data"):
            wrong.append("channel_manage_data.json is not what GET /api/v1/channel/data serves")
        for name in sorted({written, CHANNEL} & set(channels)):
            package = channels[name].score_package
            if not is_package_name(package):
                wrong.append(f"channel {name!r} has a package no peer can load: {package[:60]!r}")
            try:
                ValidatorSet.decode(_listed_set(channels[name]).encode())
            except EncodingError as exc:
                wrong.append(f"channel {name!r} cannot be served once its peers register: {exc}")
            try:
                reply = pb.PeerListReply.FromString(
                    self.grpc.unary_unary("/loopchain.RadioStation/GetPeerList")(
                        pb.ChannelRequest(channel=name).SerializeToString(), timeout=DEADLINE
                    )
                )
                ValidatorSet.decode(reply.validator_set)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
                wrong.append(f"GetPeerList of channel {name!r} answers {code.name}: {details}")
            except EncodingError as exc:
                wrong.append(f"the validator set of channel {name!r} does not decode: {exc}")
        return wrong

    def _names_live_peer(self, entry: dict[str, Any]) -> bool:
        return (
            entry.get("peer_id") == self.known.peer_id
            or entry.get("peer_target") == self.known.peer_target
        )

    def _undo(self, method: str, path: str, body: bytes) -> None:
        headers = [(b"Authorization", f"Bearer {self.known.token}".encode())]
        answer = send_raw(self.port, RawRequest(method, path.encode(), headers, body), DEADLINE)
        if answer.status != 200:
            raise AssertionError(f"undoing with {method} {path} answered {answer.status}")

    def _get(self, path: str) -> Any:
        status, body = http("GET", f"{self.rest}{path}", timeout=DEADLINE)
        if status != 200:
            raise AssertionError(f"GET {path} answered {status}: {body}")
        return body

    def _lists_the_peer(self) -> bool:
        listed = self._get("/api/v1/peer/list")["data"]["registered_peer_list"]
        return any(p["peer_id"] == self.known.peer_id for p in listed)

    def _still_serving(self, raw: RawRequest) -> None:
        """After an unanswered request: stop the run when the RadioStation serves no more."""
        try:
            self._get("/api/v1/peer/list")
        except (OSError, ValueError, AssertionError) as exc:
            self._fail(f"the RadioStation serves no more after this ({exc!r})", raw)
            self.stopped = True
            raise Stop from None

    def _fail(self, signature: str, raw: RawRequest, answer: Answer | None = None) -> None:
        got = "" if answer is None else f"\n      → {answer.status} {answer.body[:300]!r}"
        self.failures.append((signature, f"{raw.describe()}{got}"))

    def report(self, seconds: float, seed_value: int) -> str:
        lines = [
            f"RadioStation REST fuzz: {self.total} requests in {seconds:.0f} s (seed {seed_value})",
            f"answers by status: {dict(sorted(self.statuses.items()))}",
            "by route: "
            + "; ".join(f"{k} {dict(sorted(v.items()))}" for k, v in sorted(self.by_route.items())),
            f"writes answered 2xx: {dict(sorted(self.written.items()))}",
        ]
        return "\n".join(lines + failure_lines(self.failures))


def _listed_set(spec: ChannelSpec) -> ValidatorSet:
    """The validator set of a channel once every peer it lists has registered (as
    Station.validator_set makes it): what the channel's peers must be able to take."""
    members = [m for m in spec.members or () if m.peer_id and m.role == "validator"]
    validators = tuple(Validator(m.peer_id, m.weight, m.group_id) for m in members)
    used = {m.group_id for m in members if m.group_id}
    groups = tuple(Group(g, w) for g, w in spec.groups.items() if g in used)
    return ValidatorSet(spec.name, 1, validators, groups=groups, score_package=spec.score_package)


def _under(*prefixes: str) -> Callable[[str], bool]:
    """A change (as `changes` names it) only of files under `prefixes`, or of the channels."""

    def allowed(change: str) -> bool:
        key, _, names = change.partition(": ")
        if key == "channels" and "channel_manage_data.json" in prefixes:
            return True
        if key != "files":
            return False
        listed = [n.strip(" '[]") for n in names.split(",") if n.strip(" '[]")]
        return all(n.startswith(prefixes) for n in listed)

    return allowed


_CHANNEL_WRITE = _under("registry.json", "channel_manage_data.json")
_ALLOWED: dict[str, Callable[[str], bool]] = {
    "/api/v1/conf": lambda change: change.startswith("conf"),  # one key, then put back
    "/api/v1/cert/issue/ca": _under("ca/"),
    "/api/v1/cert/issue/peer": _under("ca/"),
    "/api/v1/peer": lambda change: change == "peers" or _under("registry.json")(change),
    "/api/v1/channel": _CHANNEL_WRITE,
    "/api/v1/channel/peer": _CHANNEL_WRITE,
}


def _known(net: LocalNetwork) -> Known:
    (port,) = net.peers
    storage = Path(str(net.config_values["DEFAULT_STORAGE_PATH"]))
    rs_dir = storage / f"radiostation_{net.rs_port}"
    return Known(
        channel=CHANNEL,
        peer_id=load_or_create_key(storage / f"peer_{port}" / "peer_key").address,
        peer_target=f"127.0.0.1:{port}",
        token=(rs_dir / "admin_token").read_text().strip(),
        rs_dir=rs_dir,
        channel_file=Path(str(net.config_values["CHANNEL_MANAGE_DATA_PATH"])),
    )


def _aftermath(net: LocalNetwork, known: Known) -> list[str]:
    """What is wrong after the run: dead processes, a fresh transaction that does not become
    final, a RadioStation that no longer lists the peer, a log with a problem or an ERROR."""
    found = network_problems(net)
    if found and found[0].startswith("processes died"):
        return found
    status, body = http("GET", f"{net.rs_rest}/api/v1/peer/list", timeout=DEADLINE)
    listed = body.get("data", {}).get("registered_peer_list", []) if status == 200 else []
    if known.peer_id not in {p.get("peer_id") for p in listed}:
        found.append(f"the RadioStation does not list the peer ({status} {str(body)[:200]})")
    return found


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    with running_network(tmp_path, 1, {"REST_BODY_TIMEOUT": BODY_TIMEOUT}) as network:
        yield network


def _fuzz(net: LocalNetwork, count: int, seed_value: int) -> None:
    known = _known(net)
    fuzzer = Fuzzer(net, known, frozenset())
    started = time.monotonic()
    try:
        fuzzer.run(count, seed_value)
    finally:
        fuzzer.grpc.close()
    report = fuzzer.report(time.monotonic() - started, seed_value)
    after = _aftermath(net, known)
    report += "".join(f"\nafter the run: {problem}" for problem in after)
    lines = [f"{signature}: {example}" for signature, example in fuzzer.failures] + after
    saved = Path(os.environ.get("RS_REST_FUZZ_FAILURES") or net.workdir / "fuzz_failures.txt")
    saved.write_text("\n".join(lines))
    print(f"\n{report}\n(all failures in {saved}, logs in {net.workdir})")
    assert not fuzzer.failures and not after, report
    assert fuzzer.total >= count, report


def test_every_route_of_the_app_is_fuzzed(tmp_path: Path) -> None:
    """The fuzz's route table is the app's: a route added to the app is fuzzed at once."""
    app = bare_app(tmp_path)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == {(route.method, route.path) for route in ROUTES}
    assert {r.path for r in ROUTES if r.write} == set(_ALLOWED)


def test_a_short_radiostation_rest_fuzz_run_finds_nothing(net: LocalNetwork) -> None:
    count = int(os.environ.get("RS_REST_FUZZ_SMOKE_REQUESTS", "700"))
    _fuzz(net, count, int(os.environ.get("RS_REST_FUZZ_SEED") or SMOKE_SEED))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_long_radiostation_rest_fuzz_run_finds_nothing(net: LocalNetwork) -> None:
    count = int(os.environ.get("RS_REST_FUZZ_REQUESTS", "3000"))
    _fuzz(net, count, int(os.environ.get("RS_REST_FUZZ_SEED") or random.randrange(2**32)))
