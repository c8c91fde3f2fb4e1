"""The transaction pool: order, bounds, duplicates, and the queueing delay admission control uses."""

from __future__ import annotations

import pytest

from loopchain.blockchain.mempool import PoolFullError, TxPool
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


def test_bounded_and_first_in_first_out() -> None:
    pool = TxPool(3)
    txs = [tx(n) for n in range(3)]
    for item in txs:
        pool.add(item, now=1.0)
    with pytest.raises(PoolFullError):
        pool.add(tx(9), now=1.0)
    assert pool.take(2, 1 << 20) == txs[:2]
    assert pool.take(5, 1 << 20, exclude={txs[0].hash}) == txs[1:]
    one_byte_budget = pool.take(5, 1)
    assert one_byte_budget == txs[:1]  # the first always fits, so a block is never empty
