"""A process whose gRPC server sees CALLS calls cancelled before their handlers take a step, as
happens when a caller goes away or the server stops just as calls arrive; with the process's
logging set up as every loopchain process does. Used by test_grpc_logging.py.

Usage: python -m tests.integration._cancelled_rpcs CALLS [bench_sync]
(with bench_sync, the logging is set up as tools/bench_sync.py, which serves in-process, does)
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from loopchain.configure import load_config, setup_logging

METHOD = "/probe.Probe/Wait"
DEADLINE = 2.0  # s: a call whose handler task was cancelled before its first step is never
# answered (grpc sends no status for it); its caller sees this deadline pass


async def _wait(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(30)
    return request


async def _cancel_new_handlers() -> None:
    """Cancel every call's handler task as soon as it is seen: on the loop's turn after the one
    that created it, mostly before the task's first step (what grpc meets at a caller's cancel)."""
    while True:
        for task in asyncio.all_tasks():
            if task.get_name().startswith("HandleExceptions"):
                task.cancel()
        await asyncio.sleep(0)


async def main(calls: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_wait)
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service, {method: handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    canceller = asyncio.create_task(_cancel_new_handlers())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        answers = await asyncio.gather(
            *(call(b"x", timeout=DEADLINE) for _ in range(calls)), return_exceptions=True
        )
    canceller.cancel()
    await server.stop(None)
    refused = sum(isinstance(a, grpc.RpcError) for a in answers)
    print(f"{refused} of {calls} calls refused", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[2:] == ["bench_sync"]:
        from tools.bench_sync import set_up_logging

        set_up_logging()
    else:
        overrides = {"LOOPCHAIN_LOG_LEVEL": "INFO"}
        setup_logging(load_config(environ={}, overrides=overrides), debug=False, process="probe")
    asyncio.run(main(int(sys.argv[1])))
