"""The proxy's kept last blocks (`LastBlocks`) when concurrent polls' replies come back in
another order than they were asked: what is kept never goes back to an older block, and a poll
the peer answered "unchanged" is answered the block it named or a newer one."""

from __future__ import annotations

from loopchain.rest.handlers import MAX_LAST_BLOCKS, LastBlocks


def test_a_reply_overtaken_by_another_polls_does_not_bring_an_older_block_back() -> None:
    kept: LastBlocks[str] = LastBlocks()
    kept.keep("c", "", "h3", "block 3")
    # polls A and B both name block 3; A's reply (block 4) comes back after B's (block 5)
    a_named = b_named = kept.hash_of("c")
    kept.keep("c", b_named, "h5", "block 5")
    c_named = kept.hash_of("c")  # poll C names block 5; the peer says it is unchanged
    kept.keep("c", a_named, "h4", "block 4")  # A's reply, late: block 5 stays
    assert kept.unchanged("c", True) == "block 5" and c_named == "h5"
    assert kept.hash_of("c") == "h5"
    kept.keep("c", "h5", "h6", "block 6")  # a poll that named block 5 moves it on
    assert kept.hash_of("c") == "h6" and kept.unchanged("c", True) == "block 6"


def test_unchanged_needs_the_peer_to_say_so_and_channels_are_apart() -> None:
    kept: LastBlocks[str] = LastBlocks()
    assert kept.unchanged("c", True) is None and kept.hash_of("c") == ""
    kept.keep("c", "", "h1", "block 1")
    kept.keep("", "", "d1", "default 1")
    assert kept.unchanged("c", False) is None  # the peer sent a block: it is answered
    assert kept.unchanged("", True) == "default 1" and kept.unchanged("c", True) == "block 1"


def test_at_most_max_last_blocks_channels_are_kept() -> None:
    kept: LastBlocks[int] = LastBlocks()
    for n in range(MAX_LAST_BLOCKS + 10):
        kept.keep(f"c{n}", "", f"h{n}", n)
    assert kept.hash_of(f"c{MAX_LAST_BLOCKS - 1}") == f"h{MAX_LAST_BLOCKS - 1}"
    assert kept.hash_of(f"c{MAX_LAST_BLOCKS}") == ""
    kept.keep("c0", "h0", "h0b", 0)  # a kept channel still moves on
    assert kept.hash_of("c0") == "h0b"
