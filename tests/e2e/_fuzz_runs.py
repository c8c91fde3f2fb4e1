"""What the fuzz runs over live processes share: drawing requests in rounds of hypothesis runs, each
seeded from the run's seed (so a run replays), and the checks of a network after a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

from tools.procs import LocalNetwork, error_lines, wait_until

SHOWN_KINDS = 30  # kinds of failure a report shows, each with its first reproducer


class Stop(Exception):
    """A node under fuzz stopped serving: the rest of the run would only time out."""


def draw_rounds(
    count: int,
    seed_value: int,
    made: Callable[[], int],
    send_one: Callable[[st.DataObject], None],
) -> None:
    """Call `send_one` with hypothesis data until `made()` reaches `count`: hypothesis may end a
    run early, then another one (seeded `seed_value` + its number) goes on. Stop, raised by
    `send_one`, ends it all."""
    round_ = 0
    while made() < count:

        @settings(
            max_examples=count - made(),
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @seed(seed_value + round_)
        @given(data=st.data())
        def one(data: st.DataObject) -> None:
            send_one(data)

        before = made()
        try:
            one()
        except Stop:
            return
        assert made() > before, "hypothesis drew no request in a whole run"
        round_ += 1


def network_problems(net: LocalNetwork, port: int | None = None) -> list[str]:
    """What is wrong with a network after a run: a dead process, a fresh transaction that does
    not become final at `port` (its one peer by default), a log with a problem
    (tools.procs.LOG_PROBLEMS) or an ERROR line."""
    dead = [proc.name for proc in net.procs if not proc.alive]
    if dead:
        return [f"processes died during the run: {dead}"]
    found = []
    if port is None:
        (port,) = net.peers
    try:
        tx_hash = net.submit(port, {"data": "after the fuzz"})
        wait_until(lambda: net.final_on(port, tx_hash), 60, "a fresh transaction final")
    except (OSError, ValueError, AssertionError) as exc:
        found.append(f"the peer does not finalise a fresh transaction: {exc!r}")
    for name in net.problem_logs():
        found.append(f"a problem (tools.procs.LOG_PROBLEMS) in the log of {name}")
    for proc in net.procs:
        lines = error_lines(proc.log_text())
        if lines:
            found.append(f"{len(lines)} ERROR line(s) in the log of {proc.name}: {lines[:3]}")
    return found


def failure_lines(failures: list[tuple[str, str]]) -> list[str]:
    """A report's lines on `failures` ((kind, reproducer) pairs): how many there are, and the
    SHOWN_KINDS most frequent kinds, each with its count and first reproducer."""
    lines = [f"failures: {len(failures)}, of {len({s for s, _ in failures})} kinds:"]
    first: dict[str, str] = {}
    for signature, example in failures:
        first.setdefault(signature, example)
    for signature, n in Counter(s for s, _ in failures).most_common(SHOWN_KINDS):
        lines.append(f"  {n} × {signature}\n    e.g. {first[signature]}")
    return lines
