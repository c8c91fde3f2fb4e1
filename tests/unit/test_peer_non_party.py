"""A peer refusing a caller that is not a party of a channel says so once in a while per caller
and channel, with the count refused since: a peer removed from a channel and left running asks
its former members every 2 s, and each of them wrote a WARNING each time, for good (review)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from loopchain.p2p import peer_service
from loopchain.p2p.errors import RequestError
from loopchain.p2p.peer_service import MAX_NON_PARTIES_KEPT, NON_PARTY_TOLD_EVERY_S, PeerServicer

MEMBER, FORMER, OTHER = "hx" + "a" * 40, "hx" + "b" * 40, "hx" + "c" * 40


class Channel:
    def member_ids(self) -> set[str]:
        return {MEMBER}


class Backend:
    def channel(self, name: str) -> Any:
        return Channel()


def _told(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not a party of channel" in r.getMessage()]


def test_a_non_party_is_told_once_in_a_while_with_the_count_refused_since(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(peer_service, "time", SimpleNamespace(monotonic=lambda: now[0]))
    servicer = PeerServicer(Backend(), "peer")  # type: ignore[arg-type]

    def refused(caller: str) -> None:
        with pytest.raises(RequestError, match=f"peer {caller} is not a party of this channel"):
            servicer._party_channel("alpha", caller)

    assert servicer._party_channel("alpha", MEMBER) is not None
    with caplog.at_level(logging.WARNING, logger=peer_service.log.name):
        for _ in range(5):  # every 2 s, as a removed peer asks
            refused(FORMER)
            now[0] += 2.0
        assert _told(caplog) == [
            f"refused peer {FORMER}: not a party of channel alpha (logged once in 600 s at most)"
        ]
        refused(OTHER)  # another caller is told apart
        assert len(_told(caplog)) == 2 and OTHER in _told(caplog)[1]
        now[0] += NON_PARTY_TOLD_EVERY_S
        refused(FORMER)
        assert _told(caplog)[2] == (
            f"refused peer {FORMER}: not a party of channel alpha (4 more of its calls refused "
            "since) (logged once in 600 s at most)"
        )
    granted: list[int | None] = [None]  # the refusals' shared limit says no line now
    monkeypatch.setattr(peer_service.REFUSALS, "take", lambda: granted[0])
    with caplog.at_level(logging.WARNING, logger=peer_service.log.name):
        caplog.clear()
        refused(MEMBER + "0")  # not logged: not marked as told either (review)
        granted[0] = 0
        refused(MEMBER + "0")
        assert len(_told(caplog)) == 1, _told(caplog)
    for number in range(MAX_NON_PARTIES_KEPT + 10):  # what is remembered is bounded
        refused(f"hx{number:040x}")
    assert len(servicer._non_parties) == MAX_NON_PARTIES_KEPT
