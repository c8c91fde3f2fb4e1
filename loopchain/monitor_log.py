"""Monitoring events (CreateTx, AddBlock, InvokeResult, Query, Error, ...) for the log collector.

Code anywhere in the node calls `event("AddBlock", channel="loopchain_default", height=12, ...)`.
Nothing happens unless a process has installed a sink (MONITOR_LOG on: the fluentd forward shipping
sets one at start-up), so an event costs one global read on the hot path when monitoring is off.
A sink must never block or raise: it is called on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Sink = Callable[[str, Mapping[str, Any]], None]

_sink: Sink | None = None


def event(name: str, **fields: Any) -> None:
    """Hand one monitoring event to the installed sink, if any."""
    sink = _sink
    if sink is not None:
        sink(name, fields)


def set_sink(sink: Sink | None) -> Sink | None:
    """Install `sink` (None removes it); returns the one it replaces."""
    global _sink
    previous, _sink = _sink, sink
    return previous
