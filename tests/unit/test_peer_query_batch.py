"""How much of a QueryBatch's answers its reply carries (`peer_service._fitting`); the calls
themselves, against a real network, are in tests/e2e/test_hostile.py."""

from __future__ import annotations

import grpc

from loopchain.p2p.peer_service import _fitting
from loopchain.protos import loopchain_pb2 as pb


def _answers(*sizes: int) -> list[pb.QueryResult]:
    return [pb.QueryResult(response_json="x" * size) for size in sizes]


def test_a_reply_carries_the_answers_that_fit_in_a_message_in_order() -> None:
    results = _answers(300, 300, 300, 10)
    assert _fitting(results, 10_000) == results
    fitted = _fitting(results, 800)
    assert fitted == results[:2]  # the third would pass the limit: asked again
    reply = pb.QueryBatchReply(results=fitted)
    assert reply.ByteSize() <= 800
    assert _fitting(results[2:], 800) == results[2:]


def test_an_answer_larger_than_a_message_alone_is_refused_with_its_size() -> None:
    (refused,) = _fitting(_answers(5_000, 10), 1_000)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert not refused.response_json
    assert "5003 bytes is larger than a reply may be (1000 bytes)" in refused.message
    assert _fitting([], 1_000) == []
