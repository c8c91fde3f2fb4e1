"""A channel worker that takes a batch of transactions in and never answers, alone in a process
so that a test can kill -9 it while it holds the batch (`python -m tests.integration._dying_worker
SOCKET`; prints "ready" once it serves, "holding" once it has a batch)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc


class Holding(pb_grpc.PeerServiceServicer):
    async def CreateTxBatch(self, request: pb.CreateTxBatchRequest, context: Any) -> Any:
        print("holding", flush=True)
        await asyncio.Event().wait()


async def main(socket: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_PeerServiceServicer_to_server(Holding(), server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
