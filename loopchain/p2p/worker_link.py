"""The peer's calls into its channel workers.

A channel worker serves the PeerService of its one channel on a unix socket that only the peer's
user can reach. The peer's public server hands it every call naming that channel: a unary call
as it came (within what is left of the caller's deadline), a message of another peer's gossip or
consensus stream onto a stream of its own per caller (a mutual-TLS caller's peer id; without TLS,
no one is named: the connection it comes from, at most LINKS_PER_HOST of a host, as
grpc_util.call_source names hosts), so that each caller's messages stay in order and one
caller's never wait behind another's. What waits to go to a worker, and what is being
sent to it, is bounded by bytes (see loopchain.p2p.lanes): a caller whose lane is full loses its
oldest messages (a flood costs its sender's own), each lane's small messages pass within its
reserve while others fill the worker's budget, and nothing waits for a worker, so that one
channel's slow worker never holds the messages of another channel on the same stream. Who called
travels in the call's metadata, which the worker trusts because only this process can reach its
socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import grpc

from loopchain.configure import Config
from loopchain.p2p.grpc_util import FORWARDED_FROM_KEY, NEVER_SENT, address_source, open_channel
from loopchain.p2p.lanes import ByteBudget
from loopchain.p2p.peer_client import Outbound, PeerLink
from loopchain.p2p.peer_health import PeerHealth
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc

CALLER_KEY = "x-loopchain-caller"  # metadata: the peer id of the peer's own mutual-TLS caller
MAX_CALLER_LINKS = 128  # callers with streams into one worker (beyond: the least recent closes)
# of those, callers not named (connections) of one host: beyond, its least recent one idle for
# LINK_IDLE_S is closed, or (none idle) the others share one stream of the host
LINKS_PER_HOST = 8
LINK_IDLE_S = 10.0
CALLER_LANE_BYTES = 8 << 20  # what one caller's lane (consensus, or gossip) holds for the worker
# what all callers' lanes hold for one worker beyond their reserves (and one message: p2p.lanes)
WORKER_QUEUE_BYTES = 64 << 20
# what each lane holds whatever the others do (votes, certificates, small batches): all lanes'
# reserves come to 2 * MAX_CALLER_LINKS * CALLER_RESERVE_BYTES (8 MiB) beyond WORKER_QUEUE_BYTES
CALLER_RESERVE_BYTES = 32 << 10
# calls that take transactions in: one whose worker went away while it had the request may have
# taken them (answered UNKNOWN, not UNAVAILABLE: sending them again is not known to be safe)
SUBMISSIONS = frozenset({"CreateTx", "CreateTxBatch", "CreateIconTx", "CreateIconTxBatch"})
# the most a forwarded call waits (a streamed batch waits GRPC_TIMEOUT: `batch_deadline`)
MAX_DEADLINE_S = 30.0
FORWARD_MARGIN_S = 0.2  # of a caller's deadline, left for the peer to pass on the worker's answer


class WorkerRefusal(Exception):
    """A channel worker's error answer to a forwarded call, to be passed on to the caller as it
    is (the worker counted and logged it)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ForwardedCallers:
    """The caller check of a worker behind a peer over mutual TLS: the peer id the peer found
    for the call, from its metadata (None: a plain local caller, as on the peer)."""

    def generation(self) -> object:
        """Constant: the peer checks the certificates."""
        return None

    def peer_id(self, context: Any) -> str | None:
        for key, value in context.invocation_metadata() or ():
            if key == CALLER_KEY:
                return str(value)
        return None


def _metadata(caller: str | None, forwarded_from: str = "") -> tuple[tuple[str, str], ...]:
    pairs = []
    if caller:
        pairs.append((CALLER_KEY, caller))
    if forwarded_from:
        pairs.append((FORWARDED_FROM_KEY, forwarded_from))
    return tuple(pairs)


class WorkerLink:
    """The peer's connection to the worker of `channel` listening on `socket_path`."""

    def __init__(self, channel: str, socket_path: Path, config: Config) -> None:
        self.channel = channel
        self.target = f"unix:{socket_path}"
        self._config = config
        self._grpc = open_channel(self.target, config)
        self.stub = pb_grpc.PeerServiceStub(self._grpc)
        self._links: OrderedDict[str, PeerLink] = OrderedDict()  # least recent first
        self._hosts: dict[str, str] = {}  # the key of a caller not named -> its host
        self._used: dict[str, float] = {}  # a caller's key -> when it last pushed (monotonic)
        # what the links hold together
        self.budget = ByteBudget(WORKER_QUEUE_BYTES, CALLER_RESERVE_BYTES)
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stopped: str | None = None  # why its worker is not started again (stop_serving)
        # a worker that stops answering (stopped, its loop stuck) is probed after the first call
        # that runs out of time, and while it does not answer its calls are refused at once
        self.health = PeerHealth(
            self._probe,
            self.target,
            float(config.GRPC_TIMEOUT),
            name=f"the worker of channel {channel}",
        )

    async def _probe(self, timeout: float) -> None:
        await self.stub.GetStatus(pb.ChannelRequest(channel=self.channel), timeout=timeout)

    @property
    def batch_deadline(self) -> float:
        """Seconds a batch of a client's submission stream may take (GRPC_TIMEOUT, as a call's;
        not what is left of the stream's own long deadline): a worker that does not answer is
        then seen to run out of time (and probed) before the client gives up on the batch and
        drops the stream, which only cancels the forward."""
        return float(self._config.GRPC_TIMEOUT)

    async def call(
        self,
        method: str,
        request: Any,
        caller: str | None,
        deadline: float | None,
        forwarded_from: str = "",
    ) -> Any:
        """The worker's answer to `request` by `method`; WorkerRefusal with its status when it
        refuses, or when it cannot be reached (UNAVAILABLE: it is starting or restarting).
        `forwarded_from`: the address the call came from, for the worker's log lines."""
        # a little less than the caller's deadline: the call ends here first, so a worker that
        # does not answer is seen to run out of time (and probed), not just cancelled by the caller
        given = MAX_DEADLINE_S if deadline is None else deadline - FORWARD_MARGIN_S
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        if self._closed:
            raise WorkerRefusal(grpc.StatusCode.UNAVAILABLE, self._stopping)
        if self.stopped is not None:
            raise WorkerRefusal(
                grpc.StatusCode.UNAVAILABLE,
                f"channel {self.channel} stopped on this peer: {self.stopped}",
            )
        try:
            await self.health.admit()
        except grpc.aio.AioRpcError as exc:  # taken as stalled: refused without waiting
            message = f"channel {self.channel}: its worker process is not answering: "
            raise WorkerRefusal(grpc.StatusCode.UNAVAILABLE, message + str(exc.details())) from None
        began = loop.time()
        # what is left of the caller's time once admitted (a call that waited for a probe was
        # sent with the whole of it, and its caller gave up first: review)
        timeout = min(given - (began - arrived), MAX_DEADLINE_S)
        if timeout <= 0:
            raise WorkerRefusal(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"channel {self.channel}: the caller's time ran out while its worker process "
                "was being probed; not sent to it",
            )
        try:
            reply = await getattr(self.stub, method)(
                request, timeout=timeout, metadata=_metadata(caller, forwarded_from)
            )
            self.health.observe(None, loop.time() - began, timeout)
            return reply
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            self.health.observe(code, loop.time() - began, timeout)
            message = exc.details() or code.name
            if code is grpc.StatusCode.DEADLINE_EXCEEDED and method in SUBMISSIONS:
                raise WorkerRefusal(
                    code,
                    f"channel {self.channel}: its worker process did not answer within "
                    f"{timeout:.1f} s while it had the transactions: whether it took them is "
                    "unknown; look them up before sending them again",
                ) from None
            if (
                code is grpc.StatusCode.UNAVAILABLE
                and method in SUBMISSIONS
                and not message.startswith((NEVER_SENT, "channel"))
            ):
                raise WorkerRefusal(
                    grpc.StatusCode.UNKNOWN,
                    f"channel {self.channel}: its worker process went away while it had the "
                    f"transactions ({message}): whether it took them is unknown; look them up "
                    "before sending them again",
                ) from None
            if code is grpc.StatusCode.UNAVAILABLE and not message.startswith("channel"):
                message = f"channel {self.channel}: its worker process is not answering ({message})"
            raise WorkerRefusal(code, message) from None
        except grpc.aio.UsageError:  # closed meanwhile: the peer is stopping
            raise WorkerRefusal(grpc.StatusCode.UNAVAILABLE, self._stopping) from None

    def stop_serving(self, why: str) -> None:
        """Its worker is not started again, for `why`: calls are refused at once, saying so, and
        the gossip and consensus messages pushed to it dropped."""
        self.stopped = why

    @property
    def _stopping(self) -> str:
        return f"channel {self.channel}: this peer is stopping"

    async def exposition(self) -> bytes:
        """The worker's metrics in the Prometheus text format (WorkerRefusal when it cannot say)."""
        reply = await self.call(
            "GetMetrics", pb.MetricsRequest(), None, float(self._config.GRPC_TIMEOUT)
        )
        return bytes(reply.text)

    def push(self, message: Outbound, caller: str | None, source: str) -> None:
        """Hand a gossip or consensus message of `caller` (a peer id; None without TLS: the
        connection `source` it came from names it) to the worker, in order after the
        caller's earlier ones; when the caller's lane is full (CALLER_LANE_BYTES; or, beyond its
        CALLER_RESERVE_BYTES, no room is left of the WORKER_QUEUE_BYTES all callers share), its
        oldest messages are dropped, and the message itself when that makes no room. It never
        waits: one stream carries a caller's messages of every channel, and waiting for one
        channel's slow worker held the others' votes (a message lost is fetched or sent again).
        A stream carries one caller's name only: with MAX_CALLER_LINKS callers' streams open, the
        least recently used one is closed for a new caller (members come and go over a life).
        A host's connections beyond LINKS_PER_HOST share one stream (see _connection_key), so
        that one host can neither hold more lanes for the worker nor close other hosts'."""
        if self._closed or self.stopped is not None:
            return
        now = time.monotonic()
        key, named = (caller, "") if caller is not None else self._connection_key(source, now)
        link = self._links.get(key)
        if link is None:
            if len(self._links) >= MAX_CALLER_LINKS:
                self._retire(next(iter(self._links)))
            link = PeerLink(
                self.target,
                self._config,
                lane_bytes=CALLER_LANE_BYTES,
                budget=self.budget,
                metadata=_metadata(caller, named),
                keep_ready=False,  # one a caller, up to MAX_CALLER_LINKS: opened when used
            )
            link.start()
            self._links[key] = link
        else:
            self._links.move_to_end(key)
        self._used[key] = now
        link.send(message)

    def _connection_key(self, source: str, now: float) -> tuple[str, str]:
        """The key and the name of a caller not named, coming from the connection `source`: its
        own, unless its host has LINKS_PER_HOST of them already, none idle for LINK_IDLE_S (the
        least recent idle one is closed for it): then the host's one shared by the rest."""
        key = f"from {source}"
        if key in self._links:
            return key, source
        host = address_source(source)
        own = [k for k in self._links if self._hosts.get(k) == host]  # least recent first
        if len(own) >= LINKS_PER_HOST:
            if now - self._used.get(own[0], now) < LINK_IDLE_S:
                return f"from {host}", host  # all busy: no churn of the others' streams
            self._retire(own[0])
        self._hosts[key] = host
        return key, source

    def _retire(self, key: str) -> None:
        """Close the stream of caller `key` (what it queued is dropped)."""
        self._hosts.pop(key, None)
        self._used.pop(key, None)
        retiring = asyncio.create_task(self._links.pop(key).close())
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        self._closed = True
        await self.health.close()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.close()
        self._links.clear()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._grpc.close()
