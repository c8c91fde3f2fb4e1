"""The real PeerServicer over test_batch_stream's channel, alone in a process, so that a test can
kill -9 it (`python -m tests.integration._batch_peer PORT`; prints "ready" once it serves)."""

from __future__ import annotations

import asyncio
import sys

from loopchain.p2p import grpc_util
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from tests.integration._one_channel import OneChannelBackend
from tests.integration.test_batch_stream import CONFIG, Channel, CountingServicer


async def main(port: int) -> None:
    server = grpc_util.create_server(CONFIG, None)
    pb_grpc.add_PeerServiceServicer_to_server(
        CountingServicer(OneChannelBackend(Channel())), server
    )
    grpc_util.bind(server, "127.0.0.1", port)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
