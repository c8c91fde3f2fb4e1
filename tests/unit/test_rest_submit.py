"""The REST proxy's submission batcher: every waiting submission is answered, whatever happens."""

from __future__ import annotations

import asyncio

import pytest

from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest.errors import RestError
from loopchain.rest.submit import TxSubmitter


async def test_a_failing_batch_answers_its_submitters_and_the_next_one_goes_out() -> None:
    calls: list[list[str]] = []

    async def call(channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        assert channel == "c"
        calls.append(texts)
        if len(calls) == 1:
            raise ValueError("a defect somewhere below")
        results = [pb.CreateTxResult(tx_hash=f"{i:064x}") for i in range(len(texts))]
        return pb.CreateTxBatchReply(results=results)

    submitter = TxSubmitter(call, lambda: ("127.0.0.1:1", 1.0))
    with pytest.raises(RestError) as failed:
        await asyncio.wait_for(submitter.submit("c", '{"a": 1}'), 5)
    assert failed.value.status == 500 and "ValueError" in failed.value.message
    # the channel is not left busy: the next submission is sent and answered
    assert await asyncio.wait_for(submitter.submit("c", '{"b": 2}'), 5) == f"{0:064x}"
    assert calls == [['{"a": 1}'], ['{"b": 2}']]
    await submitter.close()
