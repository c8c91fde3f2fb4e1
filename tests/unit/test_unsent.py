"""The count of replies made and not yet sent (loopchain.p2p.unsent)."""

from __future__ import annotations

from loopchain.p2p.unsent import UnsentReplies


def test_replies_past_a_callers_share_or_the_whole_bound_are_refused_until_given_back() -> None:
    unsent = UnsentReplies(limit=100, per_caller=60)
    assert unsent.take("a", 150) is None  # nothing held: even one past the bounds goes
    assert unsent.take("b", 1) is not None
    unsent.give_back("a", 150)
    assert unsent.take("a", 40) is None
    refusal = unsent.take("a", 30)
    assert refusal is not None and "to this caller" in refusal
    assert unsent.take("b", 50) is None
    refusal = unsent.take("c", 20)
    assert refusal is not None and "by their callers" in refusal
    unsent.give_back("a", 40)
    assert unsent.take("c", 20) is None
    unsent.give_back("b", 50)
    unsent.give_back("c", 20)
    assert unsent.held == 0 and unsent.take("a", 60) is None
