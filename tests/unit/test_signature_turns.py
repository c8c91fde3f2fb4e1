"""loopchain.p2p.turns: signatures recovered a slice of the event loop at a time."""

from __future__ import annotations

import time

import pytest

from loopchain.p2p import turns
from loopchain.p2p.turns import check_signatures
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from tests._recoveries import count_recoveries
from tests._ticks import Ticks

pytestmark = pytest.mark.asyncio


def _fresh(count: int, start: int = 0) -> list[Transaction]:
    """New objects (no signature known good on them), as decoded from the network."""
    signer = Signer.generate()
    now = time.time_ns() // 1000
    made = [Transaction.create_v1("c", {"n": n}, now + n, signer) for n in range(start, count)]
    return [Transaction.decode(tx.encode()) for tx in made]


def _forged() -> Transaction:
    """A transaction whose signature is another's: well formed, not its sender's."""
    one, two = _fresh(2)
    body = one.to_json()
    body["signature"] = two.signature.hex()
    return Transaction.from_json(body)


async def test_it_gives_the_event_loop_turns_past_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turns, "TURN_BUDGET_S", 0.0)  # a turn after every signature
    txs = _fresh(20)
    async with Ticks().running() as ticks:
        started = ticks.count
        assert await check_signatures(txs)
        assert ticks.count - started >= len(txs) - 1  # the ticker ran between the signatures
    assert all(tx.signature_checked for tx in txs)


async def test_those_known_good_are_not_recovered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    txs = _fresh(10)
    assert await check_signatures(txs[:6])
    recovered = count_recoveries(monkeypatch)
    assert await check_signatures(txs)
    assert recovered == [tx.hash for tx in txs[6:]]


async def test_a_bad_signature_stops_it_or_not() -> None:
    bad = _forged()
    txs = _fresh(2)
    rest = _fresh(5, 2)
    assert not await check_signatures([*txs, bad, *rest])
    assert all(tx.signature_checked for tx in txs)
    assert not bad.signature_checked
    assert not any(tx.signature_checked for tx in rest)  # a block with a bad one is refused
    assert not await check_signatures([bad, *rest], until_bad=False)
    assert all(tx.signature_checked for tx in rest)  # relayed ones are judged one by one


async def test_a_bad_signature_is_recovered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is kept on the object, bad ones too: the check ahead and the consensus's own
    check after it recover a forged relayed transaction's key once."""
    bad = _forged()
    recovered = count_recoveries(monkeypatch)
    assert not await check_signatures([bad], until_bad=False)
    assert not bad.verify_signature()
    assert recovered == [bad.hash]
