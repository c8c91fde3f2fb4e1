"""A proposal from another peer is refused before its transactions are made when it holds more
than MAX_BLOCK_TX_NUM or is not signed by the leader it names: a member's forgery of 10,000 tiny
transactions under a garbage signature held the event loop ~100 ms a message (review)."""

from __future__ import annotations

import dataclasses

import pytest

from loopchain.consensus import messages as m
from loopchain.p2p.peer_service import decode_consensus
from loopchain.protos import loopchain_pb2 as pb
from loopchain.types import transaction as transaction_module
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction

LEADER = Signer.generate()


def _proposal(count: int) -> Block:
    txs = [Transaction.create_v1("alpha", {"n": n}, 10**15 + n, LEADER) for n in range(count)]
    return Block.create(
        channel="alpha",
        height=1,
        round_=1,
        prev_hash=b"\0" * 32,
        prev_qc=None,
        transactions=txs,
        timestamp=1,
        leader=LEADER,
        next_leader=LEADER.address,
        validators_hash=b"\0" * 32,
    )


def _made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The transactions made from JSON from now on."""
    made: list[object] = []
    real = transaction_module.Transaction.from_json.__func__  # type: ignore[attr-defined]

    def counted(cls, value, **kwargs):  # type: ignore[no-untyped-def]
        made.append(value)
        return real(cls, value, **kwargs)

    monkeypatch.setattr(transaction_module.Transaction, "from_json", classmethod(counted))
    return made


def test_a_proposal_past_the_transaction_limit_makes_none_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = pb.ConsensusMessage(channel="alpha", proposal=_proposal(12).encode())
    made = _made(monkeypatch)
    with pytest.raises(EncodingError, match="12 transactions, limit 10"):
        decode_consensus(message, None, max_txs=10)
    assert made == []
    event = decode_consensus(message, None, max_txs=12)
    assert isinstance(event, m.ProposalReceived) and len(event.block.transactions) == 12
    assert event.block == Block.decode(message.proposal)
    assert event.block.signature_problem() is None


def test_a_proposal_not_signed_by_its_leader_makes_none_of_its_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = _proposal(5)
    forged = dataclasses.replace(block, signature=b"\2" * 65)
    other = dataclasses.replace(block, signature=Signer.generate().sign(block.header.hash))
    made = _made(monkeypatch)
    for bad in (forged, other):
        message = pb.ConsensusMessage(channel="alpha", proposal=bad.encode())
        with pytest.raises(EncodingError, match="not signed by the leader it names"):
            decode_consensus(message, None, max_txs=1000)
    assert made == []
