"""Fail points for crash tests: `LOOPCHAIN_FAILPOINTS=name,...` makes a process kill itself with
SIGKILL (as kill -9 would) when it reaches a named point, so a test can crash a peer at exactly
the instruction whose recovery it wants to prove.

`name` fires at the first hit, `name:N` at the N-th. Unset (the normal case), `hit` costs one
set lookup. The points are listed in POINTS; an unknown name stops the process at start-up, so a
misspelt test cannot pass by never crashing (`check`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

ENV = "LOOPCHAIN_FAILPOINTS"

POINTS = {
    "vote-persisted": "after a vote is recorded on disk, before it is sent",
    "block-store-batch": "inside a block-store write batch, before it is committed",
    "block-saved": "after a final block is saved, before the SCORE executes it",
    "score-recorded": "after a block's results are recorded, before the SCORE commits its state",
    "score-committed": "after the SCORE commits a block's state, before the next block",
    "proposal-broadcast": "after a proposal is handed to every other peer's link",
    "sync-write": "between two final blocks saved in one batch (catching up), the second not yet "
    "executed",
    "intake-appended": "after client transactions are synced to the intake log, before the answer",
    "set-carried": "once the final block that carries a new validator set is saved and what made "
    "it final is handled (the set is pending: blocks are voted by the old set and the new one "
    "together)",
    "set-handed-over": "once the final block that hands the chain over to the pending validator "
    "set is saved and what made it final is handled",
}

log = logging.getLogger(__name__)


class FailPointError(ValueError):
    """LOOPCHAIN_FAILPOINTS names a point that does not exist or a count that is not positive."""


def parse(text: str) -> dict[str, int]:
    """{point: hit that fires} from `name,name:N,...`."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise FailPointError(f"{ENV}: unknown fail point {name!r} (known: {', '.join(POINTS)})")
        if count and (not count.isdigit() or int(count) < 1):
            raise FailPointError(f"{ENV}: {item!r}: the hit count must be a positive integer")
        armed[name] = int(count or 1)
    return armed


def _load() -> tuple[dict[str, int], FailPointError | None]:
    try:
        return parse(os.environ.get(ENV, "")), None
    except FailPointError as exc:
        return {}, exc


_armed, _error = _load()
_hits: dict[str, int] = {}


def check() -> dict[str, int]:
    """The armed points; FailPointError when the environment names a wrong one (processes call
    this at start-up and refuse to run)."""
    if _error is not None:
        raise _error
    return dict(_armed)


def hit(name: str) -> None:
    """Pass fail point `name`: kill this process with SIGKILL if it is armed for this hit."""
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        log.critical("fail point %s reached (hit %d): killing this process", name, _hits[name])
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
