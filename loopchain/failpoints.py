"""Fail points for crash tests: `LOOPCHAIN_FAILPOINTS=name,...` makes a process kill itself with
SIGKILL (as kill -9 would) when it reaches a named point, so a test can crash a peer at exactly
the instruction whose recovery it wants to prove.

`name` fires at the first hit, `name:N` at the N-th. `name:raise` (or `name:N:raise`) raises
FailPointCrash there instead, as a programming error would. `name@channel` arms the point only in
the worker process of that channel (set_channel), not in its peer or the other channels' workers.
Unset (the normal case), `hit` costs one dict lookup. The points are listed in POINTS; an unknown
name stops the process at start-up, so a misspelt test cannot pass by never crashing (`check`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from dataclasses import dataclass

ENV = "LOOPCHAIN_FAILPOINTS"

POINTS = {
    "vote-persisted": "after a vote is recorded on disk, before it is sent",
    "block-store-batch": "inside a block-store write batch, before it is committed",
    "block-saved": "after a final block is saved, before the SCORE executes it",
    "score-recorded": "after a block's results are recorded, before the SCORE commits its state",
    "score-committed": "after the SCORE commits a block's state on its own (the newest final "
    "block; one with a final block after it is committed with that one's invoke), before the next",
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


class FailPointCrash(RuntimeError):
    """Raised at a fail point armed with `raise`: an error nothing expects, as a bug would be."""


@dataclass(frozen=True)
class Armed:
    """A fail point armed: at which hit it fires, what it does then, and in which channel's worker
    only (None: in every process)."""

    hit: int = 1
    action: str = "kill"  # or "raise"
    channel: str | None = None


def parse(text: str) -> dict[str, Armed]:
    """{point: how it is armed} from `name,name:N,name:N:raise@channel,...`."""
    armed: dict[str, Armed] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, at, channel = item.partition("@")
        name, *rest = point.split(":")
        if name not in POINTS:
            raise FailPointError(f"{ENV}: unknown fail point {name!r} (known: {', '.join(POINTS)})")
        if at and not re.fullmatch(r"[A-Za-z0-9_.\-]+", channel):  # (a bottom layer: no types)
            raise FailPointError(f"{ENV}: {item!r}: '@' must be followed by a channel's name")
        action = "raise" if rest and rest[-1] == "raise" else "kill"
        counts = rest[:-1] if action == "raise" else rest
        if len(counts) > 1 or any(not c.isdigit() or int(c) < 1 for c in counts):
            raise FailPointError(f"{ENV}: {item!r}: the hit count must be a positive integer")
        armed[name] = Armed(int(counts[0]) if counts else 1, action, channel or None)
    return armed


def _load() -> tuple[dict[str, Armed], FailPointError | None]:
    try:
        return parse(os.environ.get(ENV, "")), None
    except FailPointError as exc:
        return {}, exc


_armed, _error = _load()
_hits: dict[str, int] = {}
_channel: str | None = None  # the channel this process is the worker of (set_channel)


def check() -> dict[str, Armed]:
    """The armed points; FailPointError when the environment names a wrong one (processes call
    this at start-up and refuse to run)."""
    if _error is not None:
        raise _error
    return dict(_armed)


def set_channel(channel: str) -> None:
    """This process is the worker of `channel`: the points armed `@channel` fire here."""
    global _channel
    _channel = channel


def hit(name: str) -> None:
    """Pass fail point `name`: if it is armed for this hit (and this process), kill this process
    with SIGKILL, or raise FailPointCrash when it is armed with `raise`."""
    armed = _armed.get(name)
    if armed is None or (armed.channel is not None and armed.channel != _channel):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != armed.hit:
        return
    if armed.action == "raise":
        raise FailPointCrash(f"fail point {name} reached (hit {_hits[name]})")
    log.critical("fail point %s reached (hit %d): killing this process", name, _hits[name])
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
