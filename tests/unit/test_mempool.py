"""The transaction pool: order, bounds, duplicates, and the queueing delay admission control uses."""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.blockchain import coin, mempool
from loopchain.blockchain.mempool import PoolFullError, TxPool, TxRefused
from loopchain.types import icon_tx
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction

SIGNER = Signer(bytes([3]) * 32)


def tx(n: int) -> Transaction:
    return Transaction.create_v1("pool_channel", {"n": n}, n, SIGNER)


def test_arrival_times_are_kept_until_removal() -> None:
    pool = TxPool(10)
    first, second = tx(1), tx(2)
    assert pool.add(first, now=10.0) and pool.add(second, now=12.0)
    assert not pool.add(first, now=20.0)  # a duplicate keeps its first arrival
    assert (pool.arrival(first.hash), pool.arrival(second.hash)) == (10.0, 12.0)
    assert list(pool.hashes()) == [first.hash, second.hash]
    pool.remove([first.hash])
    assert list(pool.hashes()) == [second.hash]
    with pytest.raises(KeyError):
        pool.arrival(first.hash)


def test_pooled_transactions_are_found_by_signature_until_they_leave() -> None:
    pool = TxPool(10)
    first, second = tx(1), tx(2)
    pool.add(first)
    pool.add(second)
    assert pool.by_signature(first.signature) is first
    assert pool.by_signature(bytes(65)) is None
    pool.remove([first.hash])
    assert pool.by_signature(first.signature) is None
    assert pool.by_signature(second.signature) is second
    pool.expire(10**9)  # an unbounded window keeps it
    assert pool.by_signature(second.signature) is second


def test_bounded_and_first_in_first_out() -> None:
    pool = TxPool(3)
    txs = [tx(n) for n in range(3)]
    for item in txs:
        pool.add(item, now=1.0)
    with pytest.raises(PoolFullError):
        pool.add(tx(9), now=1.0)
    assert pool.take(2, 1 << 20) == txs[:2]
    assert pool.take(5, 1 << 20, exclude={txs[0].hash}) == txs[1:]
    assert pool.take(5, 1) == []  # nothing fits one byte; no transaction is forced in


def test_a_transaction_that_fits_no_block_is_passed_over() -> None:
    pool = TxPool(10)
    big = Transaction.create_v1("pool_channel", {"blob": "x" * 5000}, 1, SIGNER)
    small = [tx(n) for n in range(2, 5)]
    pool.add(big, now=1.0)
    for item in small:
        pool.add(item, now=1.0)
    budget = sum(len(t.encode()) for t in small)
    assert pool.take(10, budget) == small  # the oldest, too large for any block, holds nothing up


def test_bounded_by_bytes_and_by_transaction_size() -> None:
    one = tx(1).held_bytes
    pool = TxPool(100, max_bytes=2 * one + 1, max_tx_bytes=len(tx(1).encode()) + 5)
    pool.add(tx(1), now=0.0)
    pool.add(tx(2), now=0.0)
    assert pool.size_bytes == tx(1).held_bytes + tx(2).held_bytes
    with pytest.raises(PoolFullError, match="bytes"):
        pool.add(tx(3), now=0.0)
    pool.remove([tx(1).hash])
    assert pool.add(tx(3), now=0.0) and len(pool) == 2
    big = Transaction.create_v1("pool_channel", {"blob": "x" * 100}, 1, SIGNER)
    with pytest.raises(TxRefused, match="bytes, limit"):
        pool.add(big, now=0.0)
    assert big.hash not in pool


def test_timestamp_window_at_intake_and_expiry() -> None:
    pool = TxPool(10, window=60.0)
    now = 1_000_000.0
    fresh = Transaction.create_v1("pool_channel", {"n": 1}, int((now - 30) * 1e6), SIGNER)
    old = Transaction.create_v1("pool_channel", {"n": 2}, int((now - 61) * 1e6), SIGNER)
    future = Transaction.create_v1("pool_channel", {"n": 3}, int((now + 61) * 1e6), SIGNER)
    assert pool.add(fresh, now)
    with pytest.raises(TxRefused, match="old"):
        pool.add(old, now)
    with pytest.raises(TxRefused, match="future"):
        pool.add(future, now)
    assert pool.expire(now + 10) == []  # still inside the window
    assert pool.expire(now + 10.5) == []  # swept less than a second ago: no sweep yet
    assert pool.expire(now + 40) == [fresh]
    assert len(pool) == 0 and pool.size_bytes == 0


def test_a_clock_set_back_does_not_hold_the_sweeps() -> None:
    """The clock set back two minutes after a sweep: the next sweep comes within a second of
    the clock's new time, not once it has passed the old one again."""
    pool = TxPool(10, window=60.0)
    now = 1_000_000.0
    assert pool.expire(now) == []
    back = now - 120
    stale = Transaction.create_v1("pool_channel", {"n": 1}, int((back - 59.5) * 1e6), SIGNER)
    assert pool.add(stale, back)
    assert pool.expire(back) == []  # swept now (nothing expired yet), the next within a second
    assert pool.expire(back + 1.0) == [stale]


def test_expired_transactions_are_remembered_to_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """An acknowledged transaction that expires (the chain made no block for longer than the
    window) was answered "not found" like one never sent: the pool remembers the latest expired
    hashes, and an acknowledged one that comes back too old (from the intake journal at start),
    so a lookup can say it expired. Relayed ones refused too old were never here."""
    monkeypatch.setattr(mempool, "EXPIRED_MEMORY", 2)
    pool = TxPool(10, window=60.0)
    now = 1_000_000.0
    pooled = [_stamped(n, now - 30 + n) for n in range(3)]
    for one in pooled:
        pool.add(one, now)
    assert not any(pool.expired(one.hash) for one in pooled)
    assert pool.expire(now + 40) == pooled
    assert [pool.expired(one.hash) for one in pooled] == [False, True, True]  # the latest 2
    replayed, relayed = _stamped(10, now - 61), _stamped(11, now - 61)
    with pytest.raises(TxRefused, match="old"):
        pool.add(replayed, now, beyond_limits=True)
    with pytest.raises(TxRefused, match="old"):
        pool.add(relayed, now)
    assert pool.expired(replayed.hash) and not pool.expired(relayed.hash)
    assert pool.add(pooled[2], now + 40 - 30)  # taken again (inside the window of that time)
    assert not pool.expired(pooled[2].hash)


def _stamped(n: int, seconds: float) -> Transaction:
    return Transaction.create_v1("pool_channel", {"n": n}, int(seconds * 1e6), SIGNER)


def test_expiry_follows_timestamps_not_arrival() -> None:
    pool = TxPool(10, window=60.0)
    now = 1_000_000.0
    newer, older = _stamped(1, now + 20), _stamped(2, now - 50)  # the older arrives last
    assert pool.add(newer, now) and pool.add(older, now)
    assert pool.expire(now + 11) == [older]
    assert list(pool.hashes()) == [newer.hash]
    assert pool.expire(now + 81) == [newer]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "sweep"]),
            st.integers(0, 40),  # which transaction
            st.floats(-55, 55),  # its timestamp, from the time of its arrival
            st.floats(0, 30),  # time passing before the step
        ),
        max_size=120,
    )
)
def test_each_sweep_expires_exactly_the_pooled_transactions_out_of_the_window(
    steps: list[tuple[str, int, float, float]],
) -> None:
    """Against a model (the pooled transactions and their timestamps): every sweep takes out
    exactly those older than the window, whatever order they arrived and left in, and what the
    sweep keeps to find them stays within a bound of the pool's size."""
    pool = TxPool(100, window=60.0)
    now, model = 1_000_000.0, dict[bytes, Transaction]()
    made: dict[int, Transaction] = {}
    for op, n, offset, elapsed in steps:
        now += elapsed
        if op == "add":
            tx = made.setdefault(n, _stamped(n, now + offset))
            try:
                if pool.add(tx, now):
                    model[tx.hash] = tx
            except TxRefused:
                assert abs(tx.timestamp / 1e6 - now) > 60.0
        elif op == "remove" and n in made:
            pool.remove([made[n].hash])
            model.pop(made[n].hash, None)
        else:
            pool._next_sweep = 0.0  # a sweep now, whenever the last one was
            expired = pool.expire(now)
            out = {h for h, tx in model.items() if tx.timestamp < (now - 60.0) * 1_000_000}
            assert {tx.hash for tx in expired} == out
            for h in out:
                del model[h]
            assert len(pool._by_time) <= 2 * len(pool) + 1024
        assert set(pool.hashes()) == set(model)


def test_the_pool_counts_what_each_senders_pooled_v3_transactions_may_cost() -> None:
    """value + stepLimit x STEP_PRICE of each, by sender, back to nothing as they leave."""
    alice, bob = Signer.generate(), Signer.generate()
    now = 1_700_000_000.0

    def transfer(signer: Signer, value: int, n: int, step_limit: int = 1_000) -> Transaction:
        params = icon_tx.make_params(
            sender=signer.address,
            to="hx" + "b0" * 20,
            value=value,
            step_limit=step_limit,
            timestamp_us=int(now * 1_000_000) + n,
            nid=3,
        )
        signed = icon_tx.verify_send_params(icon_tx.sign_params(params, signer))
        return Transaction.from_icon(signed, signature_verified=True)

    pool = TxPool(100, window=10.0)
    a1, a2, b1 = transfer(alice, 5, 1), transfer(alice, 7, 2), transfer(bob, 1, 3)
    for tx in (a1, a2, b1):
        pool.add(tx, now)
    fee = 1_000 * coin.STEP_PRICE
    assert pool.spend_of(alice.address) == 12 + 2 * fee
    assert pool.spend_of(bob.address) == 1 + fee
    pool.remove([a1.hash, a1.hash])  # twice: counted once
    assert pool.spend_of(alice.address) == 7 + fee
    assert pool.expire(now + 20.0) and pool.spend_of(alice.address) == 0
    assert pool.spend_of(bob.address) == 0 and pool._spend == {}
    # those of final blocks count until their block is executed (a balance read shows them)
    pool.note_final(5, [a1, b1, Transaction.create_v1("pool_channel", {"v": 1}, 1, SIGNER)])
    pool.note_final(5, [a1, b1])  # a block noted again counts once
    pool.note_final(6, [a2])
    assert pool.spend_of(alice.address) == 12 + 2 * fee and pool.spend_of(bob.address) == 1 + fee
    pool.note_executed(5)
    assert pool.spend_of(alice.address) == 7 + fee and pool.spend_of(bob.address) == 0
    pool.note_executed(9)
    assert pool.spend_of(alice.address) == 0 and pool._unexecuted_spend == {}
    # a transaction of no cost (value 0, stepLimit 0: admitted from any account) owes nothing;
    # noted, it stopped the channel when its block was executed after the sender's earlier one
    free = transfer(alice, 0, 9, step_limit=0)
    pool.note_final(20, [a1])
    pool.note_final(21, [free])
    pool.note_executed(20)
    pool.note_executed(21)
    assert pool.spend_of(alice.address) == 0 and pool._unexecuted == {}
    # a peer syncing far ahead of its SCORE kept every final block's senders (review): the
    # newest UNEXECUTED_HEIGHTS_KEPT heights are
    kept = mempool.UNEXECUTED_HEIGHTS_KEPT
    for height in range(100, 100 + kept + 10):
        pool.note_final(height, [a1])
    assert len(pool._unexecuted) == kept and min(pool._unexecuted) == 110
    assert pool.spend_of(alice.address) == kept * (5 + fee)
    pool.note_executed(100 + kept)
    assert pool.spend_of(alice.address) == 9 * (5 + fee)
    pool.note_executed(100 + kept + 9)
    assert pool.spend_of(alice.address) == 0 and pool._unexecuted_spend == {}


@pytest.mark.parametrize(
    "data",
    [
        {"x": [[] for _ in range(15_000)]},
        {"x": [{} for _ in range(15_000)]},
        {"x": [{"a": 0} for _ in range(6_000)]},
        {"x": ["ab"] * 9_000},
        {"x": [1000 + n for n in range(9_000)]},
        {"method": "transfer", "params": {"to": "hx" + "1" * 40, "value": 1000}},
        "hello",
        "a" * 30_000 + "\U0001f600",
    ],
    ids=[
        "lists",
        "objects",
        "one-entry objects",
        "strings",
        "integers",
        "ordinary",
        "text",
        "text with an emoji",
    ],
)
def test_the_pool_is_bounded_by_the_memory_its_transactions_hold(data: object) -> None:
    """A pool bounded by its transactions' bytes held up to 25 times that (a body of empty lists
    or objects is a Python object every 3 bytes): 64 MiB of them held 1.4 GB (review). What a
    transaction holds, parsed as a peer keeps it, is counted at three quarters of it at least."""
    encoded = Transaction.create_v1("pool_channel", data, 1, SIGNER).encode()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [Transaction.decode(encoded) for _ in range(10)]  # as relayed, or in a block
        gc.collect()
        used = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert held[0].held_bytes >= 0.75 * used, (held[0].held_bytes, used, len(encoded))
    pool = TxPool(100, max_bytes=3 * held[0].held_bytes)
    pool.add(held[0], now=0.0)
    assert pool.size_bytes == held[0].held_bytes


def test_each_writer_holds_at_most_its_share_and_a_clients_past_it_only_when_promised() -> None:
    """The writers (the peers that take transactions from clients) share the pool: a relayed
    transaction of a writer holding its share of the count or of the memory is refused, while
    the others' are taken; a transaction promised to a client (`beyond_limits`) is taken past
    it. Each writer's figures go back to nothing as its transactions leave."""
    pool = TxPool(8, max_bytes=100 * tx(0).held_bytes)
    pool.writers = 4  # a share of 2 transactions each
    flood = [tx(n) for n in range(3)]
    assert pool.add(flood[0], writer="byzantine") and pool.add(flood[1], writer="byzantine")
    assert not pool.has_room_for("byzantine", 1, 0) and pool.has_room_for("honest", 2, 0)
    assert not pool.has_room_for("honest", 3, 0)
    assert not pool.has_room_for("honest", 1, 100 * tx(0).held_bytes // 4 + 1)  # the bytes too
    with pytest.raises(PoolFullError, match="share of writer byzantine"):
        pool.add(flood[2], writer="byzantine")
    assert pool.add(tx(10), writer="honest")
    assert pool.add(flood[2], writer="byzantine", beyond_limits=True)
    assert (pool.count_of("byzantine"), pool.count_of("honest"), len(pool)) == (3, 1, 4)
    assert list(pool.hashes("byzantine")) == [t.hash for t in flood]
    assert pool.writer(tx(10).hash) == "honest" and pool.writer(tx(99).hash) is None
    assert pool.bytes_of("byzantine") == sum(t.held_bytes for t in flood)
    pool.remove(t.hash for t in flood)
    assert pool.count_of("byzantine") == pool.bytes_of("byzantine") == 0
    assert list(pool.hashes("byzantine")) == [] and pool._queues.keys() == {"honest"}
    by_bytes = TxPool(100, max_bytes=4 * tx(0).held_bytes + 3)
    by_bytes.writers = 2  # a share of two transactions' memory
    by_bytes.add(tx(1), writer="a")
    by_bytes.add(tx(2), writer="a")
    with pytest.raises(PoolFullError, match="share of writer a"):
        by_bytes.add(tx(3), writer="a")
    assert by_bytes.add(tx(3), writer="b")


def test_the_unknown_writer_shares_what_the_other_peers_would_hold() -> None:
    """v3 transactions relayed over plain gRPC name no writer (no certificate says who sent
    them): together they may hold what every writer but this peer would, as before the shares."""
    pool = TxPool(8, max_bytes=1000)
    pool.writers = 4
    assert (pool.share_size(mempool.UNKNOWN_WRITER), pool.share_bytes(mempool.UNKNOWN_WRITER)) == (
        6,
        750,
    )
    assert (pool.share_size("a peer"), pool.share_bytes("a peer")) == (2, 250)
    pool.writers = 1  # a peer alone: its share is the pool, and so is the unknown writer's
    assert pool.share_size(mempool.UNKNOWN_WRITER) == pool.share_size("a peer") == 8


def test_blocks_take_the_oldest_of_each_writer_in_turn() -> None:
    """A writer with a hundred waiting takes no more of a block than one with two while both
    have some; within a writer, first in, first out; what is left of the block is the
    flood's."""
    pool = TxPool(1000)
    flood = [tx(n) for n in range(100)]
    clients = [tx(1000 + n) for n in range(2)]
    for item in flood:
        pool.add(item, writer="byzantine")
    for item in clients:
        pool.add(item, writer="honest")
    assert pool.take(4, 1 << 20) == [flood[0], clients[0], flood[1], clients[1]]
    taken = pool.take(10, 1 << 20, exclude={flood[0].hash, clients[0].hash})
    assert taken == [flood[1], clients[1], *flood[2:10]]
    one = len(tx(0).encode())
    # the bytes end a writer's turns when its oldest does not fit, not the others'
    big = Transaction.create_v1("pool_channel", {"blob": "x" * 300}, 5, SIGNER)
    mixed = TxPool(10)
    mixed.add(tx(1), writer="a")
    mixed.add(big, writer="a")
    mixed.add(tx(2), writer="b")
    mixed.add(tx(3), writer="b")
    assert mixed.take(10, 3 * one + 10) == [tx(1), tx(2), tx(3)]


def test_a_writer_takes_no_more_of_a_block_by_making_its_transactions_large_or_small() -> None:
    """Turns go to the writer that has taken the least of the block, by the part of the count
    or of the bytes it took more of: a flood of transactions near MAX_TX_BYTES took the bytes
    of every block one a turn (16 of them a block, and 15 clients' of thousands: review), and a
    flood of tiny ones would take the count against large ones."""
    signer = Signer.generate()
    large = [
        Transaction.create_v1("c", {"pad": "x" * 50_000, "n": n}, n, signer) for n in range(40)
    ]
    small = [tx(n) for n in range(500)]
    block_bytes, block_count = 1 << 20, 1000
    pool = TxPool(10_000)
    for item in large:
        pool.add(item, writer="byzantine")
    for item in small:
        pool.add(item, writer="honest")
    taken = pool.take(block_count, block_bytes)
    assert [t for t in taken if t in small] == small  # all 500: far less than half of either
    assert sum(len(t.encode()) for t in taken) <= block_bytes
    # and the other way round: a flood of tiny ones against a writer's large ones
    pool = TxPool(10_000)
    for item in small:
        pool.add(item, writer="byzantine")
    for item in large:
        pool.add(item, writer="honest")
    taken = pool.take(100, block_bytes)  # 100 a block: each tiny one takes 1/100 of it
    large_taken = [t for t in taken if t in large]
    assert large_taken == large[: len(large_taken)]
    # each took as much of its dominant part (the large ones of the bytes, the tiny ones of the
    # count), within one transaction's: ~0.85 each (first in, first out: 100 tiny ones)
    large_part = sum(len(t.encode()) for t in large_taken) / block_bytes
    small_part = (len(taken) - len(large_taken)) / 100
    assert abs(large_part - small_part) <= 50_100 / block_bytes, (large_part, small_part)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 40), st.sampled_from("abc")),
        max_size=80,
    ),
    st.integers(1, 30),
)
def test_the_writers_figures_and_turns_follow_any_sequence(
    steps: list[tuple[str, int, str]], count: int
) -> None:
    """Any adds and removes: each writer's count, memory and order are those of its pooled
    transactions, and a block takes from each writer as many as it can while the others with
    some left take as many (one more at most, for those served first in a turn)."""
    pool = TxPool(1000)
    model: dict[bytes, tuple[str, Transaction]] = {}
    for action, n, writer in steps:
        item = tx(n)
        if action == "add":
            if pool.add(item, writer=writer):
                model[item.hash] = (writer, item)
        else:
            pool.remove([item.hash])
            model.pop(item.hash, None)
    for writer in "abc":
        mine = [t for w, t in model.values() if w == writer]
        assert list(pool.hashes(writer)) == [t.hash for t in mine]
        assert pool.count_of(writer) == len(mine)
        assert pool.bytes_of(writer) == sum(t.held_bytes for t in mine)
    taken = pool.take(count, 1 << 30)
    assert len(taken) == min(count, len(model))
    per_writer = Counter(model[t.hash][0] for t in taken)
    for writer in "abc":
        mine = [t for w, t in model.values() if w == writer]
        assert [t for t in taken if model[t.hash][0] == writer] == mine[: per_writer[writer]]
        if per_writer[writer] < len(mine):  # left some: none took two more than it
            assert all(took <= per_writer[writer] + 1 for took in per_writer.values())
