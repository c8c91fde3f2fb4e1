"""The count of replies made and not yet sent (loopchain.p2p.unsent)."""

from __future__ import annotations

from loopchain.p2p.unsent import CEILING_TIMES_LIMIT, UnsentReplies


def test_replies_past_a_callers_share_or_the_whole_bound_are_refused_until_given_back() -> None:
    unsent = UnsentReplies(limit=100, per_caller=60)
    assert unsent.take("a", 150) is None  # it holds none: even one past the bounds goes
    assert unsent.take("b", 1) is None  # it holds none either, whatever the others hold
    refusal = unsent.take("b", 1)
    assert refusal is not None and "by their callers" in refusal
    unsent.give_back("a", 150)
    unsent.give_back("b", 1)
    assert unsent.take("a", 40) is None
    refusal = unsent.take("a", 30)
    assert refusal is not None and "to this caller" in refusal
    assert unsent.take("b", 50) is None
    assert unsent.take("c", 20) is None  # its first: it goes
    refusal = unsent.take("c", 20)
    assert refusal is not None and "by their callers" in refusal
    unsent.give_back("a", 40)
    assert unsent.take("c", 5) is None
    unsent.give_back("b", 50)
    unsent.give_back("c", 25)
    assert unsent.held == 0 and unsent.take("a", 60) is None


def test_callers_that_hold_the_whole_bound_keep_no_other_from_its_reply() -> None:
    """Replies its callers never read are held for as long as their connections last: callers
    holding the whole bound refused every other caller's reply (a peer's sync served no one)."""
    unsent = UnsentReplies(limit=100, per_caller=50)
    assert unsent.take("stranger 1", 50) is None and unsent.take("stranger 2", 50) is None
    assert unsent.take("stranger 1", 1) is not None and unsent.take("stranger 3", 1) is None
    assert unsent.take("honest", 40) is None


def test_first_replies_of_many_callers_stop_at_the_ceiling() -> None:
    """A reply to a caller holding none goes past the bound, up to CEILING_TIMES_LIMIT times it:
    512 callers each holding one unread 16 MiB range reply held 8 GiB (review)."""
    unsent = UnsentReplies(limit=100, per_caller=50)
    assert unsent.ceiling == CEILING_TIMES_LIMIT * 100
    taken = [caller for caller in range(40) if unsent.take(f"caller {caller}", 50) is None]
    assert len(taken) == unsent.ceiling // 50
    refusal = unsent.take("one more", 50)
    assert refusal is not None and f"the ceiling of {unsent.ceiling}" in refusal
    unsent.give_back("caller 0", 50)
    assert unsent.take("one more", 50) is None
