"""loopchain.p2p.turns: signatures recovered a slice of the event loop at a time, or beside it in
the worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from loopchain.p2p import turns
from loopchain.p2p.turns import aside, check_signatures, check_signatures_aside
from loopchain.types import transaction as transaction_module
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


async def test_beside_the_loop_a_bad_signature_stops_it_in_its_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turns, "ASIDE_PIECE", 2)  # several pieces
    bad = _forged()
    txs = _fresh(3)
    rest = _fresh(8, 3)
    assert await check_signatures_aside(txs)
    assert all(tx.signature_checked for tx in txs)
    assert not await check_signatures_aside([*txs, bad, *rest])
    assert not bad.signature_checked
    assert not any(tx.signature_checked for tx in rest)  # its block is refused whole


async def test_beside_the_loop_every_key_is_recovered_in_the_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turns, "ASIDE_PIECE", 4)
    threads: list[threading.Thread] = []
    real = transaction_module.recover_address

    def counted(digest: bytes, signature: bytes) -> str:
        threads.append(threading.current_thread())
        return real(digest, signature)

    monkeypatch.setattr(transaction_module, "recover_address", counted)
    txs = _fresh(10)
    assert await check_signatures_aside(txs)
    assert len(threads) == len(txs)
    assert threading.main_thread() not in threads  # the event loop's thread recovered none
    assert len(set(threads)) == 1  # one worker a process, not one per piece


async def test_a_caller_cancelled_waits_for_its_piece_beside_the_loop() -> None:
    """A piece may be reading a store that its owner closes once the caller's task has ended:
    cancelled, the caller ends only after its piece has."""
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def piece() -> str:
        started.set()
        release.wait(60)
        ended.set()
        return "done"

    assert await aside(lambda: "answer") == "answer"
    caller = asyncio.create_task(aside(piece))
    assert await asyncio.to_thread(started.wait, 60)
    caller.cancel()
    for _ in range(20):  # turns of the loop in which the caller could end
        await asyncio.sleep(0)
    assert not caller.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended.is_set()


async def test_a_bad_signature_is_recovered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is kept on the object, bad ones too: the check ahead and the consensus's own
    check after it recover a forged relayed transaction's key once."""
    bad = _forged()
    recovered = count_recoveries(monkeypatch)
    assert not await check_signatures([bad], until_bad=False)
    assert not bad.verify_signature()
    assert recovered == [bad.hash]
