"""MONITOR_LOG with the real processes: every kind of process (RadioStation, peer, its REST proxy,
its SCORE process) ships its records, and the peer its events, to a forward-protocol receiver the
test runs; a collector that is down or never reads costs counted records, never a block, an answer
or the exit. tools/log_parser.py then reads what the receiver got, written as fluent.conf writes it."""

from __future__ import annotations

import datetime
import json
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests._forward_receiver import Entry, ForwardReceiver
from tools import log_parser
from tools.procs import LocalNetwork, http, running_network, wait_until

KINDS = ("radiostation", "peer", "rest_proxy", "score")
NOT_DELIVERED = "records and events were not delivered to the collector"


def monitor_config(port: int, **more: object) -> dict[str, object]:
    return {"MONITOR_LOG": True, "MONITOR_LOG_HOST": "127.0.0.1", "MONITOR_LOG_PORT": port, **more}


def dead_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commit_transactions(network: LocalNetwork, count: int, deadline: float = 60.0) -> None:
    """Submit `count` transactions to the first peer and wait until each is final."""
    port = min(network.peers)
    hashes = [network.submit(port, {"data": f"collector test {i}"}) for i in range(count)]
    for tx in hashes:
        wait_until(lambda tx=tx: network.final_on(port, tx), deadline, f"transaction {tx} final")


def kinds_seen(entries: list[Entry]) -> set[str]:
    return {e.tag.removeprefix("loopchain.") for e in entries if e.tag.count(".") == 1}


def fluent_file_line(entry: Entry) -> str:
    """An entry as fluent.conf's file output writes it: the record with `tag` and `time` injected."""
    when = datetime.datetime.fromtimestamp(entry.time, datetime.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"
    record = {k: v for k, v in entry.record.items() if not isinstance(v, bytes)}
    return json.dumps({**record, "tag": entry.tag, "time": stamp})


def test_every_process_ships_records_and_the_peer_its_events(tmp_path: Path, capsys) -> None:
    (tmp_path / "net").mkdir()
    with ForwardReceiver() as collector:
        with running_network(tmp_path / "net", 1, monitor_config(collector.port)) as network:
            peer = min(network.peers)
            commit_transactions(network, 3)
            what = f"records of {KINDS} and the peer's AddBlock events"

            def all_arrived() -> bool:
                added = [
                    e
                    for e in collector.tagged("loopchain.peer.event")
                    if e.record["event"] == "AddBlock"
                ]
                return kinds_seen(collector.entries) >= set(KINDS) and bool(added)

            wait_until(all_arrived, 60, what)
        entries = collector.entries
        assert collector.errors == []
    labels = {e.tag: e.record["process"] for e in entries if "process" in e.record}
    assert labels["loopchain.peer"] == f"peer:{peer}"
    assert labels["loopchain.rest_proxy"] == f"rest:{peer}"
    assert labels["loopchain.radiostation"] == f"radiostation:{network.rs_port}"
    assert labels["loopchain.score"] == "score:loopchain_default"
    events = {e.record["event"] for e in entries if e.tag == "loopchain.peer.event"}
    assert {"AddBlock", "CreateTx"} <= events, events
    for entry in entries:
        assert {"process", "pid"} <= set(entry.record), entry
        assert entry.tag.endswith(".event") or {"level", "logger", "message"} <= set(entry.record)

    # tools/log_parser.py on the receiver's entries written in fluent.conf's file format
    logs = tmp_path / "fluentd"
    logs.mkdir()
    for tag in {e.tag for e in entries}:
        lines = [fluent_file_line(e) for e in entries if e.tag == tag]
        (logs / f"{tag}.20250101.log").write_text("\n".join(lines) + "\n")
    with (logs / "loopchain.peer.20250101.log").open("a") as file:
        file.write("{not json\n")
    out = tmp_path / "all.log"
    assert log_parser.main([str(logs), str(out)]) == 0
    report = capsys.readouterr().out
    written = out.read_text().splitlines()
    assert len(written) == len(entries)
    assert any(f"peer:{peer} INFO" in line for line in written)
    assert any("rest:" in line for line in written) and any("score:" in line for line in written)
    assert "1 malformed line" in report
    records = sum(1 for e in entries if e.record.get("process") == f"peer:{peer}")
    assert f"peer:{peer}: {records} records" in report


def run_network_against(
    tmp_path: Path, config: dict[str, object], check: Callable[[LocalNetwork], None]
) -> LocalNetwork:
    """A RadioStation and one peer with `config`; commit transactions and run `check` while up,
    then stop every process, timing each stop: none may be held up by the collector."""
    network = LocalNetwork(tmp_path, config).start_with_peers(1)
    try:
        commit_transactions(network, 5)
        check(network)
    finally:
        codes = {}
        for proc in reversed(network.procs):
            start = time.monotonic()
            codes[proc.name] = proc.stop(timeout=15)
            took = time.monotonic() - start
            assert took < 12, f"{proc.name} took {took:.1f} s to stop"
    network.check(codes)
    return network


def dropped_figures(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if "_monitor_log_" in family.name
    }


def undelivered(figures: dict[str, float], namespace: str) -> float:
    """Entries dropped plus bytes kept: either grows while the collector is dead."""
    dropped = figures.get(f"{namespace}_monitor_log_dropped", 0)
    return dropped + figures.get(f"{namespace}_monitor_log_pending_bytes", 0)


def drops_on_metrics(network: LocalNetwork) -> None:
    """/metrics shows every process's drops: the proxy's and its peer's on the peer's REST port,
    the RadioStation's on its own."""
    peer_url = f"{network.rest(min(network.peers))}/metrics"
    wait_until(
        lambda: all(
            undelivered(dropped_figures(peer_url), n) > 0 for n in ("loopchain_rest", "loopchain")
        ),
        60,
        f"drops of the proxy and the peer at {peer_url}",
    )
    rs_url = f"{network.rs_rest}/metrics"
    wait_until(
        lambda: undelivered(dropped_figures(rs_url), "loopchain_radiostation") > 0,
        60,
        f"the RadioStation's drops at {rs_url}",
    )


def test_a_dead_collector_blocks_nothing_and_every_process_counts_its_drops(
    tmp_path: Path,
) -> None:
    network = run_network_against(tmp_path, monitor_config(dead_port()), drops_on_metrics)
    for proc in network.procs:  # the RadioStation and the peer (whose log has its proxy's too)
        text = proc.log_text()
        assert NOT_DELIVERED in text, f"{proc.name} reports no drops:\n{text[-2000:]}"
    peer_log = network.peers[min(network.peers)].log_text()
    counts = [line for line in peer_log.splitlines() if NOT_DELIVERED in line]
    assert any("[rest:" in line for line in counts) and any("[peer:" in line for line in counts)


def test_a_collector_that_never_reads_holds_up_no_block_no_answer_and_no_exit(
    tmp_path: Path,
) -> None:
    def answers_in_time(network: LocalNetwork) -> None:
        port = min(network.peers)
        for _ in range(20):
            start = time.monotonic()
            status, _ = http("GET", f"{network.rest(port)}/api/v1/status/peer", timeout=5)
            assert status == 200 and time.monotonic() - start < 5

    with ForwardReceiver(read=False) as stalled:
        config = monitor_config(stalled.port, LOOPCHAIN_LOG_LEVEL="DEBUG")
        run_network_against(tmp_path, config, answers_in_time)
        assert stalled.connections >= 3  # the RadioStation, the peer, its proxy (and SCORE)
