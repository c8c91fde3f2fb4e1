"""loopchain.peer.turns: signatures recovered a slice of the event loop at a time."""

from __future__ import annotations

import asyncio
import time

import pytest

from loopchain.peer.turns import SIGNATURES_PER_TURN, check_signatures
from loopchain.types import transaction as transaction_module
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction

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


async def test_it_yields_to_the_event_loop_every_slice_of_recoveries() -> None:
    txs = _fresh(3 * SIGNATURES_PER_TURN + 1)
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = turns
    assert await check_signatures(txs)
    ticking.cancel()
    assert turns - started >= 3  # the ticker ran between the slices
    assert all(tx.signature_checked for tx in txs)


async def test_those_known_good_are_not_recovered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    txs = _fresh(10)
    assert await check_signatures(txs[:6])
    recovered: list[bytes] = []
    real = transaction_module.recover_address

    def counted(digest: bytes, signature: bytes) -> str:
        recovered.append(digest)
        return real(digest, signature)

    monkeypatch.setattr(transaction_module, "recover_address", counted)
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
