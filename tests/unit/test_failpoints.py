"""Fail points' syntax, and the `raise` action and `@channel` scope a test arms a channel's
worker with (test_channel_workers.py crashes one so)."""

from __future__ import annotations

import pytest

from loopchain import failpoints
from loopchain.failpoints import Armed, FailPointCrash, FailPointError


def test_a_point_is_armed_at_a_hit_with_an_action_in_a_channel() -> None:
    assert failpoints.parse("block-saved, vote-persisted:3") == {
        "block-saved": Armed(1, "kill", None),
        "vote-persisted": Armed(3, "kill", None),
    }
    assert failpoints.parse("score-committed:raise@beta,sync-write:2:raise") == {
        "score-committed": Armed(1, "raise", "beta"),
        "sync-write": Armed(2, "raise", None),
    }


@pytest.mark.parametrize(
    "text",
    [
        "nowhere",
        "block-saved:0",
        "block-saved:x",
        "block-saved:1:2",
        "block-saved@",
        "block-saved@beta:2",  # the count goes before the channel
    ],
)
def test_a_misspelt_point_is_refused(text: str) -> None:
    with pytest.raises(FailPointError):
        failpoints.parse(text)


def test_a_point_armed_to_raise_raises_at_its_hit_in_its_channel_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(failpoints, "_armed", failpoints.parse("block-saved:2:raise@beta"))
    monkeypatch.setattr(failpoints, "_hits", {})
    monkeypatch.setattr(failpoints, "_channel", None)
    for channel in (None, "alpha"):  # the peer's own process, another channel's worker
        if channel is not None:
            failpoints.set_channel(channel)
        for _ in range(3):
            failpoints.hit("block-saved")
    failpoints.set_channel("beta")
    failpoints.hit("block-saved")
    with pytest.raises(FailPointCrash, match="block-saved reached \\(hit 2\\)"):
        failpoints.hit("block-saved")
    failpoints.hit("block-saved")  # it fires once
