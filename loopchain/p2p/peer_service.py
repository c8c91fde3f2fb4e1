"""The gRPC PeerService servicer: decodes requests and hands domain values to a backend."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from loopchain.blockchain.block_store import StoreDamaged, StoredBlock
from loopchain.configure import DEFAULTS, RefusalLog
from loopchain.consensus import messages as m
from loopchain.p2p.errors import TX_NOT_FOUND_BECAUSE, ErrorKind, RequestError
from loopchain.p2p.grpc_util import MAX_RANGE_REPLY_BYTES as MAX_RANGE_REPLY_BYTES  # (its home)
from loopchain.p2p.grpc_util import (
    STREAM_ACCEPTED,
    CallsBySource,
    Tls,
    call_source,
    caller_address,
    first_source,
    max_proposal_bytes,
    range_reply_bytes,
    refuse,
)
from loopchain.p2p.unsent import UnsentReplies
from loopchain.p2p.worker_link import WorkerLink, WorkerRefusal
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.safe_text import status_details
from loopchain.storage.abc import StorageCorrupt
from loopchain.types import canonical
from loopchain.types.block import Block, Pooled
from loopchain.types.canonical import EncodingError
from loopchain.types.peer import IDENTIFY_CHALLENGE_BYTES
from loopchain.types.transaction import V1, Transaction
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)
# reads that found the store damaged: the operator must restore it, each told (at most one a second)
DAMAGE = RefusalLog(log, per_second=1.0, level=logging.ERROR)
T = TypeVar("T")
R = TypeVar("R")
Relayed = TypeVar("Relayed", pb.TxBatch, pb.ConsensusMessage)  # what peers stream to each other


@dataclass(frozen=True)
class TxLookup:
    """A transaction and where it is: block height and index -1 while it is only pooled."""

    tx: Transaction
    block_height: int
    block_hash: bytes
    tx_index: int = -1


@dataclass(frozen=True)
class TxOutcome:
    """A transaction's result code and message, whether the SCORE ran it (a code of 2 without
    `executed` means not yet), and where it is: block height and index -1 while only pooled."""

    code: int
    message: str
    executed: bool
    block_height: int = -1
    block_hash: bytes = b""
    tx_index: int = -1
    steps: int = 0  # what a v3 transaction used, and the block's steps up to and including it
    cumulative_steps: int = 0
    events_json: str = ""  # its SCORE's event logs, canonical JSON ("" for none)


@dataclass(frozen=True)
class BlockRangeResult:
    """Encoded final blocks with certificates, the tip height, and the tip's commit proof."""

    blocks: list[tuple[bytes, bytes]]
    tip_height: int
    proof: tuple[bytes, bytes] | None


class ScoreStatusView(Protocol):
    """The SCORE facts /api/v1/status/score reports."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def all_versions(self) -> tuple[str, ...]: ...
    @property
    def status(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def api_json(self) -> str: ...


class ChannelBackend(Protocol):
    """What the servicer needs from one channel of the peer."""

    async def create_tx(self, data: dict[str, Any]) -> Transaction: ...
    async def create_txs(self, items: list[dict[str, Any]]) -> list[Transaction | RequestError]: ...
    async def create_icon_tx(self, params_json: str) -> Transaction: ...
    async def create_icon_txs(self, texts: list[str]) -> list[Transaction | RequestError]: ...
    async def balance(self, address: str) -> tuple[int, int, int]: ...
    def find_tx(self, tx_hash: bytes) -> TxLookup | None: ...
    def get_block(self, height: int, block_hash: bytes) -> StoredBlock | None: ...
    def last_block_hash(self) -> bytes: ...
    def status(self) -> dict[str, Any]: ...
    def member_ids(self) -> set[str]: ...
    def auditor_ids(self) -> set[str]: ...
    def tx_result(self, tx_hash: bytes) -> TxOutcome | None: ...
    def dropped(self, tx_hash: bytes) -> str | None: ...
    async def query(self, params_json: str) -> str: ...
    def score_status(self) -> ScoreStatusView: ...
    def receive_txs(self, txs: list[Transaction], relayer: str | None = None) -> None: ...
    def receive(self, event: m.Event) -> None: ...
    async def receive_txs_in_turns(
        self, txs: list[Transaction], relayer: str | None = None
    ) -> None:
        """`receive_txs`, its signature checks spread over turns of the event loop."""
        ...

    async def receive_in_turns(self, event: m.Event) -> None:
        """`receive`, the signature checks of a block it carries spread over turns."""
        ...

    def pooled_transaction(self, signature: bytes) -> Transaction | None: ...
    def block_range(
        self, from_height: int, max_blocks: int, max_bytes: int = 0
    ) -> BlockRangeResult: ...


class Callers(Protocol):
    """Who calls: a peer id, None for a plain local caller (RequestError when refused)."""

    def peer_id(self, context: Any) -> str | None: ...

    def generation(self) -> object:
        """What the answers depend on besides the call: another object once they may differ
        (the revocation lists changed)."""
        ...


class ServiceMonitor(Protocol):
    """Where the servicer counts the errors it answers and finds the peer's metrics."""

    def rpc_error(self, method: str, code: str) -> None: ...
    def exposition(self) -> bytes | Awaitable[bytes]: ...


class PeerBackend(Protocol):
    """The peer: its channels by name (empty name: the default channel), and its identity."""

    def channel(self, name: str) -> ChannelBackend: ...
    def identify(self, challenge: bytes) -> tuple[str, bytes]:
        """This peer's id and its signature of `identify_digest(challenge)`."""
        ...


def _check_batch_size(count: int) -> None:
    if count > MAX_SUBMISSIONS_PER_CALL:
        raise RequestError(
            ErrorKind.INVALID,
            f"{count} transactions in one call, limit {MAX_SUBMISSIONS_PER_CALL}",
        )


def _batch_reply(outcomes: Sequence[Transaction | RequestError]) -> pb.CreateTxBatchReply:
    """One result per submission, in order: the hash, or the refusal's status code and words."""
    results = []
    for outcome in outcomes:
        if isinstance(outcome, RequestError):
            code = outcome.kind.value.value[0]
            results.append(pb.CreateTxResult(code=code, message=outcome.message))
        else:
            results.append(pb.CreateTxResult(tx_hash=outcome.hash_hex))
    return pb.CreateTxBatchReply(results=results)


class _Sized(Protocol):
    """A result of a batch reply (a protobuf message: an answer, or a refusal of its own)."""

    def ByteSize(self) -> int: ...


Result = TypeVar("Result", bound=_Sized)
Entry = TypeVar("Entry", pb.TxEntry, pb.TxResultEntry)


class _BatchReply(Generic[Result]):
    """The results of a batch reply (QueryBatch, GetTxBatch, GetTxResultBatch, GetBalanceBatch),
    in order, up to `max_bytes`; `refusal` makes the result refusing, with these words, one too
    large for a reply alone (a `what`)."""

    def __init__(
        self, max_bytes: int, refusal: Callable[[grpc.StatusCode, str], Result], what: str
    ) -> None:
        self.results: list[Result] = []
        self._what = what
        self._size = _REPLY_OVERHEAD
        self._max_bytes = max_bytes
        self._refusal = refusal

    def add(self, result: Result) -> bool:
        """Add `result` if it fits; False (nothing added) when the reply is full. The first
        always goes, refused when it is larger than a reply on its own."""
        self._size += result.ByteSize() + _RESULT_OVERHEAD
        if self._size <= self._max_bytes:
            self.results.append(result)
            return True
        if self.results:
            return False
        self.results.append(
            self._refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._what} of {result.ByteSize()} bytes is larger than a reply may be "
                f"({self._max_bytes} bytes)",
            )
        )
        return False


def _query_refusal(code: grpc.StatusCode, message: str) -> pb.QueryResult:
    return pb.QueryResult(code=code.value[0], message=message)


def _result_refusal(code: grpc.StatusCode, message: str) -> pb.TxResultEntry:
    return pb.TxResultEntry(code=code.value[0], message=message)


def _tx_refusal(code: grpc.StatusCode, message: str) -> pb.TxEntry:
    return pb.TxEntry(code=code.value[0], message=message)


def _balance_refusal(code: grpc.StatusCode, message: str) -> pb.BalanceEntry:
    return pb.BalanceEntry(code=code.value[0], message=message)


def decode_consensus(message: pb.ConsensusMessage, pooled: Pooled | None, max_txs: int) -> m.Event:
    """The consensus event carried by a Deliver message (`pooled`: the channel's transactions by
    signature, which a proposal's need not be decoded again; `max_txs`: a proposal holding more
    transactions, or not signed by its leader, is refused before they are made)."""
    kind = message.WhichOneof("body")
    if kind == "proposal":
        return m.ProposalReceived(Block.decode_proposal(message.proposal, max_txs, pooled))
    if kind == "vote":
        return m.VoteReceived(Vote.decode(message.vote))
    if kind == "certificate":
        return m.CertificateReceived(QuorumCertificate.decode(message.certificate))
    if kind == "complaint":
        return m.ComplaintReceived(Complaint.decode(message.complaint))
    raise EncodingError(f"unsupported consensus message {kind!r}")


def _refused(context: Any, status: grpc.StatusCode, message: str) -> None:
    """A warning (rate-limited) for a call refused for what it carries or who made it."""
    REFUSALS.refused(
        "refused a call from %s: %s %s", caller_address(context), status.name, message[:200]
    )


MAX_SUBMISSIONS_PER_CALL = 1000  # client transactions in one CreateTxBatch
MAX_QUERIES_PER_CALL = 1000  # client queries in one QueryBatch
MAX_LOOKUPS_PER_CALL = 1000  # hashes in one GetTxBatch or GetTxResultBatch, addresses in one
# GetBalanceBatch
# A lookup batch's reply holds at most this many bytes of entries (its caller asks the rest
# again): a GetTx entry carries its transaction, up to MAX_TX_BYTES
MAX_LOOKUP_REPLY_BYTES = 4 << 20
# A lookup batch lets the event loop run other work after this many lookups: a GetTx lookup reads
# its whole block (~1.2 ms for a 0.9 MB block), so 1000 of them took the loop for over a second
LOOKUPS_PER_TURN = 16
# A batch reply's bytes beside its results, and each result's beside its own, counted generously
_REPLY_OVERHEAD = 64
_RESULT_OVERHEAD = 8
NON_PARTY_TOLD_EVERY_S = 600.0  # a refused non-party's calls are logged once in this long
MAX_NON_PARTIES_KEPT = 1024  # callers and channels whose refusals are remembered (oldest go)
MAX_TXS_PER_BATCH = 1000  # relayed transactions in one AddTxBatch (each is size-checked)
MAX_INBOUND_STREAMS = 512  # open link streams (each peer's link holds two; senders fall back)
# open link streams of one peer (over TLS, where its certificate names it): its links' two lanes,
# one link a process (the peer and each channel worker), and their successors while replaced:
# 4 a process, so a peer of 31 channel workers. One member holding every slot had each other
# peer's messages sent by a call each (review); without TLS callers are addresses, peers on one
# host share one, and the bound is the server's. Once this peer knows the channels it serves,
# a peer's bound is what it may need of them (link_streams_a_peer).
LINK_STREAMS_A_PEER = MAX_INBOUND_STREAMS // 4
STREAMS_A_LINK_PROCESS = 4  # a link's two lanes, and their successors while replaced


def link_streams_a_peer(channels: int) -> int:
    """The link streams one peer may hold open to a peer serving `channels` channels: a link
    from each of its processes that serves one of them (a channel worker each, or its one
    process) and one more (its main process), STREAMS_A_LINK_PROCESS each. With the bound of
    31 channel workers, four certified peers that are parties of none of this peer's channels
    held all MAX_INBOUND_STREAMS (review); a peer of one channel now takes 8 from each."""
    return min(LINK_STREAMS_A_PEER, STREAMS_A_LINK_PROCESS * (max(1, channels) + 1))


# open batch streams of REST proxies (one a channel each; a proxy falls back to calls): bounded
# apart, so that clients, whom no certificate names without TLS, never take the links' share
MAX_CLIENT_STREAMS = 64
# A link stream is ended by its peer this long after it opened, idle or not: a sender replaces
# its streams after STREAM_ROTATE_S (60 s), so only a stream left open (a stalled or hostile
# sender) lives this long, and its slot comes free.
STREAM_MAX_AGE_S = 300.0
MAX_RANGE_BLOCKS = 500  # blocks in one GetBlockRange reply (and at most max_bytes of them)
RANGE_BUILDERS = 2  # GetBlockRange replies built at once (the others wait their turn)
# GetBlockRange calls of one caller (a peer over TLS, else a host) in one channel being built or
# waiting: a peer syncing asks one range of a server at a time a channel (peers sharing a host
# without TLS ask one each); more from one caller (a flood) waited for the builders ahead of
# every other caller's, each up to 16 MiB to build
RANGES_A_CALLER = 8
# Replies made and not yet read by their callers (see p2p.unsent) are bounded by what ranges of
# blocks take: UNSENT_RANGES_A_CALLER to one caller, UNSENT_RANGES in all; past that, a reply of
# SMALL_REPLY_BYTES or more is refused RESOURCE_EXHAUSTED (smaller ones are not counted: their
# number is bounded by the calls a server takes at once)
UNSENT_RANGES_A_CALLER = 2
UNSENT_RANGES = 4
SMALL_REPLY_BYTES = 64 << 10
# any consensus message but a proposal: a vote, a certificate, a complaint
MAX_OTHER_CONSENSUS_BYTES = 1 << 20


def _client_object(text: str) -> dict[str, Any]:
    """A client's transaction: a JSON object within the limits (RequestError when it is not)."""
    try:
        data = canonical.parse(text, floats=True)  # floats are refused with their path later
    except EncodingError as exc:
        raise RequestError(ErrorKind.INVALID, f"transaction is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(ErrorKind.INVALID, "transaction must be a JSON object")
    return data


def _hash_arg(text: str) -> bytes:
    value = text[2:] if text.startswith("0x") else text
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise RequestError(ErrorKind.INVALID, f"hash must be 64 hex characters, got {text!r}")
    return raw


def _names(text: str, block_hash: bytes) -> bool:
    """Whether `text` is `block_hash` as a hash argument (GetBlockRequest.unless_hash: a hint,
    not an argument to refuse, so a malformed one names no block)."""
    try:
        return _hash_arg(text) == block_hash
    except RequestError:
        return False


def damaged(method: str, exc: StorageCorrupt | StoreDamaged) -> RequestError:
    """The answer to a read that met a damaged store: logged with the store's words (at most
    one line a second), told to the caller without this machine's paths."""
    DAMAGE.refused("%s: the store cannot serve it: %s", method, exc)
    return RequestError(
        ErrorKind.DAMAGED,
        "the peer's store is corrupt where this read goes (its log names the store); "
        "its operator restores it",
    )


def _tx_not_found(channel: ChannelBackend, tx_hash: bytes) -> RequestError:
    why = channel.dropped(tx_hash)
    if why is None:
        return RequestError(ErrorKind.NOT_FOUND, f"transaction {tx_hash.hex()} not found")
    return RequestError(
        ErrorKind.NOT_FOUND, f"transaction {tx_hash.hex()}{TX_NOT_FOUND_BECAUSE}{why}"
    )


def _tx_result(channel: ChannelBackend, tx_hash: bytes, with_tx: bool = False) -> pb.TxResultReply:
    """GetTxResult's answer about one transaction of `channel` (NOT_FOUND when unknown);
    `with_tx`: an executed one's bytes too (a receipt that names them in one lookup)."""
    found = channel.tx_result(tx_hash)
    if found is None:
        raise _tx_not_found(channel, tx_hash)
    located = channel.find_tx(tx_hash) if with_tx and found.executed else None
    return pb.TxResultReply(
        tx=located.tx.encode() if located is not None else b"",
        code=found.code,
        message=found.message,
        executed=found.executed,
        block_height=found.block_height,
        block_hash=found.block_hash.hex(),
        tx_index=found.tx_index,
        steps=found.steps,
        cumulative_steps=found.cumulative_steps,
        events_json=found.events_json,
    )


class PeerServicer(pb_grpc.PeerServiceServicer):
    """Adapter between gRPC and the peer backend."""

    def __init__(
        self,
        backend: PeerBackend,
        peer_id: str,
        tls: Tls | None = None,
        monitor: ServiceMonitor | None = None,
        *,
        workers: Callable[[str], WorkerLink | None] | None = None,
        callers: Callers | None = None,
        max_proposal: int = max_proposal_bytes(1024),
        max_reply: int = int(DEFAULTS["GRPC_MAX_MESSAGE_BYTES"]),
        max_proposal_txs: int = int(DEFAULTS["MAX_BLOCK_TX_NUM"]),
    ) -> None:
        """`workers`: the link to the worker process serving a channel (None for a channel this
        process serves); `callers`: who calls, when not found from a TLS certificate (a channel
        worker's caller, named by its peer); `max_proposal`: see max_proposal_bytes;
        `max_reply`: the bytes a reply may take (GRPC_MAX_MESSAGE_BYTES)."""
        self.backend = backend
        self.max_proposal = max_proposal
        self.max_proposal_txs = max_proposal_txs  # MAX_BLOCK_TX_NUM
        self.max_reply = max_reply
        range_bytes = range_reply_bytes(max_proposal)
        self.unsent = UnsentReplies(
            UNSENT_RANGES * range_bytes, UNSENT_RANGES_A_CALLER * range_bytes
        )
        self.peer_id = peer_id
        self.monitor = monitor
        self._workers = workers
        self._streams: set[asyncio.Task[Any]] = set()  # inbound link streams being read
        self._client_streams: set[asyncio.Task[Any]] = set()  # proxies' batch streams
        self._closing = False
        # block ranges are read and built here, RANGE_BUILDERS at once, beside the event loop and
        # apart from the default executor (a flood of ranges must not hold up its other work)
        self._range_builder = ThreadPoolExecutor(RANGE_BUILDERS, thread_name_prefix="range")
        self._ranges = CallsBySource(RANGES_A_CALLER, "block ranges")
        self._peer_streams = CallsBySource(LINK_STREAMS_A_PEER, "link streams")
        # (caller, channel) -> (when last told, refusals since) of calls refused to non-parties
        self._non_parties: dict[tuple[str, str], tuple[float, int]] = {}
        self.callers: Callers | None = callers
        if tls is not None and callers is None:  # the certificate library loads only with TLS
            from loopchain.p2p.callers import CallerCheck

            self.callers = CallerCheck(tls)

    def _worker(self, channel: str) -> WorkerLink | None:
        return self._workers(channel) if self._workers is not None else None

    async def _forwarded(
        self,
        context: Any,
        method: str,
        request: Any,
        *,
        p2p: bool = False,
        streamed: bool = False,
    ) -> Any | None:
        """The answer of the worker process serving `request.channel` (WorkerRefusal when it
        refuses), or None when this process serves the channel (or no one does). `streamed`:
        one batch of a client's stream, given the worker link's `batch_deadline` (within what
        is left of the stream's), not the whole stream's remaining time."""
        link = self._worker(request.channel)
        if link is None:
            return None
        if p2p:
            caller = self._peer_caller(context)
        else:
            caller = self.callers.peer_id(context) if self.callers is not None else None
        remaining = context.time_remaining()
        if streamed:
            remaining = (
                link.batch_deadline if remaining is None else min(link.batch_deadline, remaining)
            )
        return await link.call(method, request, caller, remaining, forwarded_from=context.peer())

    def _channel(self, context: Any, name: str) -> ChannelBackend:
        """The channel `name`, refused to a calling node that is not one of its parties."""
        caller = self.callers.peer_id(context) if self.callers is not None else None
        return self._party_channel(name, caller)

    def _writer_channel(self, context: Any, name: str) -> ChannelBackend:
        """The channel `name` for a call that gives it transactions, refused to a calling node
        that is not one of its parties, or audits it (an auditor takes no transactions, so none
        through another peer either)."""
        caller = self.callers.peer_id(context) if self.callers is not None else None
        channel = self._party_channel(name, caller)
        if caller is not None and caller in channel.auditor_ids():
            REFUSALS.refused("refused peer %s: it audits channel %s", caller, name)
            raise RequestError(
                ErrorKind.DENIED,
                f"peer {caller} audits this channel: an auditor takes no transactions",
            )
        return channel

    def _party_channel(self, name: str, caller: str | None) -> ChannelBackend:
        """The channel `name`, refused to `caller` (a peer id; None: not a node over TLS) when
        it is not one of its parties."""
        channel = self.backend.channel(name)
        if caller is not None and caller not in channel.member_ids():
            self._tell_non_party(caller, name)
            raise RequestError(ErrorKind.DENIED, f"peer {caller} is not a party of this channel")
        return channel

    def _tell_non_party(self, caller: str, channel: str) -> None:
        """Log a refusal of `caller` in `channel` once every NON_PARTY_TOLD_EVERY_S, with the
        count refused since: a peer removed from a channel and not stopped asks its former
        members every 2 s until it is, and each of them wrote a WARNING each time (review)."""
        now = time.monotonic()
        key = (caller, channel)
        told = self._non_parties.pop(key, None)
        if told is not None and now - told[0] < NON_PARTY_TOLD_EVERY_S:
            self._non_parties[key] = (told[0], told[1] + 1)
            return
        untold = REFUSALS.take()  # (the refusals' shared limit: a caller not told is not marked)
        if untold is None:
            if told is not None:
                self._non_parties[key] = (told[0] - NON_PARTY_TOLD_EVERY_S, told[1] + 1)
            return
        while len(self._non_parties) >= MAX_NON_PARTIES_KEPT:
            del self._non_parties[next(iter(self._non_parties))]
        self._non_parties[key] = (now, 0)
        since = f" ({told[1]} more of its calls refused since)" if told and told[1] else ""
        more = f" ({untold} more refusals not logged)" if untold else ""
        REFUSALS.logger.log(
            REFUSALS.level,
            "refused peer %s: not a party of channel %s%s (logged once in %.0f s at most)%s",
            caller,
            channel,
            since,
            NON_PARTY_TOLD_EVERY_S,
            more,
        )

    def _peer_caller(self, context: Any) -> str | None:
        """Who calls a peer-to-peer method: its peer id with TLS on (None without TLS). With TLS
        they are served only to a caller with a valid certificate, never on the plain local
        port kept for the REST proxy."""
        if self.callers is None:
            return None
        caller = self.callers.peer_id(context)
        if caller is None:
            REFUSALS.refused(
                "refused a peer-to-peer call on the local port from %s", caller_address(context)
            )
            raise RequestError(
                ErrorKind.DENIED,
                "peer-to-peer methods are served only over mutual TLS, not on the local port",
            )
        return caller

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        work: Callable[[], T | Awaitable[T]],
        request: Any = None,
        *,
        p2p: bool = False,
    ) -> T:
        """`work`'s answer, or the answer of the worker process serving `request.channel` (a
        peer-to-peer method's caller is checked first when `p2p`), counted as unsent until its
        call is done."""
        try:
            if request is not None and self._workers is not None:
                forwarded = await self._forwarded(context, method, request, p2p=p2p)
                if forwarded is not None:
                    return self._unsent(context, forwarded)
            result = work()
            if inspect.isawaitable(result):
                result = await result
            return self._unsent(context, result)
        except (RequestError, EncodingError) as exc:
            return refuse(context, *self._refusal(context, method, exc))
        except WorkerRefusal as exc:  # counted and logged by the worker
            return refuse(context, exc.code, exc.message)
        except (StorageCorrupt, StoreDamaged) as exc:  # a read of a damaged store
            return refuse(context, *self._refusal(context, method, damaged(method, exc)))

    def _unsent(self, context: grpc.aio.ServicerContext, reply: T) -> T:
        """`reply`, its bytes counted as unsent until its call is done (sent, cancelled, or its
        connection gone); RequestError RESOURCE_EXHAUSTED when too many bytes of replies to its
        caller, or to all, are not read yet."""
        size = reply.ByteSize() if isinstance(reply, Message) else 0
        if size < SMALL_REPLY_BYTES:
            return reply
        caller = call_source(context)  # a host's connections share its bound
        refusal = self.unsent.take(caller, size)
        if refusal is not None:
            raise RequestError(ErrorKind.POOL_FULL, refusal)
        context.add_done_callback(lambda _: self.unsent.give_back(caller, size))
        return reply

    def _refusal(
        self, context: Any, method: str, exc: RequestError | EncodingError
    ) -> tuple[grpc.StatusCode, str]:
        """The status and words refusing a request, counted (and logged when it is about what
        the request carries: refusals by identity log their own warning)."""
        if isinstance(exc, EncodingError):
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {exc}"
        else:
            code, message = exc.kind.value, exc.message
        if isinstance(exc, EncodingError) or exc.kind is ErrorKind.INVALID:
            _refused(context, code, message)
        self._count_error(method, code)
        return code, message

    async def _stream(
        self,
        requests: AsyncIterator[Relayed],
        context: grpc.aio.ServicerContext,
        method: str,
        handle: Callable[[Relayed, str | None], Awaitable[None]],
        check: Callable[[Relayed], None],
    ) -> pb.Ack:
        """Each message of a stream handled as its one-call twin handles it, or passed on to the
        worker process of its channel (which judges it, told its caller's name) once `check`, the
        twin's check of its size, took it (see WorkerLink.push); a refused message
        is counted and skipped (one channel's refusals do not cut off the others' messages). Who
        calls is checked first, and again at the next message when the revocation lists changed
        (a certificate that expires meanwhile is met at the stream's replacement or its
        STREAM_MAX_AGE_S): a caller refused ends the stream with the refusal. `end_streams` ends
        the stream (the server's stop would wait for it)."""
        checked = self._callers_generation()
        try:
            caller = self._peer_caller(context)
        except RequestError as exc:
            return refuse(context, *self._refusal(context, method, exc))
        refusal = self._stream_refusal(method, self._streams, MAX_INBOUND_STREAMS)
        if refusal is None and caller is not None:
            held = self._peer_streams.take(caller)
            if held is not None:
                self._count_error(method, grpc.StatusCode.RESOURCE_EXHAUSTED)
                refusal = grpc.StatusCode.RESOURCE_EXHAUSTED, held
        if refusal is not None:
            return refuse(context, *refusal)
        try:
            return await self._read_stream(
                requests, context, method, (handle, check), caller, checked
            )
        finally:
            if caller is not None:
                self._peer_streams.give(caller)

    async def _read_stream(
        self,
        requests: AsyncIterator[Relayed],
        context: grpc.aio.ServicerContext,
        method: str,
        work: tuple[Callable[[Relayed, str | None], Awaitable[None]], Callable[[Relayed], None]],
        caller: str | None,
        checked: object,
    ) -> pb.Ack:
        """The messages of a stream `_stream` took from `caller` (checked at the callers'
        generation `checked`), until it ends; `work`: `_stream`'s handle and check."""
        handle, check = work
        handled = refused = passed = 0
        ended = ""
        async with self._inbound_stream(context, self._streams):
            try:
                async with asyncio.timeout(STREAM_MAX_AGE_S):
                    async for request in requests:
                        # a revocation may name the caller now
                        if self._callers_generation() is not checked:
                            checked = self._callers_generation()
                            try:
                                caller = self._peer_caller(context)
                            except RequestError as exc:
                                return refuse(context, *self._refusal(context, method, exc))
                        try:
                            link = self._worker(request.channel)
                            if link is not None:
                                check(request)
                                link.push(request, caller, context.peer())
                                passed += 1
                            else:  # in order: the stream's next message waits for it
                                await handle(request, caller)
                                handled += 1
                        except (RequestError, EncodingError) as exc:
                            self._refusal(context, method, exc)
                            refused += 1
                        except (StorageCorrupt, StoreDamaged) as exc:
                            self._refusal(context, method, damaged(method, exc))
                            refused += 1
            except TimeoutError:  # a sender replaces its streams well before: this one is left
                ended = f"; ended after {STREAM_MAX_AGE_S:g} s"
        if passed:  # the worker judges them: its refusals are in its metrics and log
            ended = f", {passed} passed to the channel's worker{ended}"
        return pb.Ack(code=0, message=f"{handled} handled, {refused} refused{ended}")

    def _callers_generation(self) -> object:
        """What the caller checks depend on now (another object once the revocation lists
        changed); None without TLS."""
        return self.callers.generation() if self.callers is not None else None

    def _stream_refusal(
        self, method: str, open_ones: set[asyncio.Task[Any]], limit: int
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why a new inbound stream is refused (this peer stops, or holds `limit` of its kind,
        `open_ones`), or None when it is taken."""
        if self._closing:
            return grpc.StatusCode.UNAVAILABLE, "this peer is stopping"
        if len(open_ones) >= limit:
            self._count_error(method, grpc.StatusCode.RESOURCE_EXHAUSTED)
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(open_ones)} streams of this kind are open to this peer, limit {limit}",
            )
        return None

    @contextlib.asynccontextmanager
    async def _inbound_stream(
        self, context: grpc.aio.ServicerContext, open_ones: set[asyncio.Task[Any]]
    ) -> AsyncIterator[None]:
        """An inbound stream `_stream_refusal` took: accepted (STREAM_ACCEPTED), held in
        `open_ones` until it ends or `end_streams` ends it."""
        task = asyncio.current_task()
        if task is not None:
            open_ones.add(task)
        try:
            await context.send_initial_metadata((STREAM_ACCEPTED,))
            yield
        except asyncio.CancelledError:
            if self._closing:  # ended by end_streams: answered, so that the call is over at once
                try:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "this peer is stopping")
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    # cancelled while its acceptance was being sent, the call's operations broke
                    # off and grpc's core refuses the status too (ExecuteBatchError, which grpc
                    # logs at ERROR with a traceback when a handler raises it): it ends cancelled
                    pass
            raise
        finally:
            open_ones.discard(task)  # type: ignore[arg-type]

    def serving_channels(self, count: int) -> None:
        """This peer serves `count` channels (known once it registered): each other peer may
        hold link_streams_a_peer(count) link streams from now on."""
        self._peer_streams.limit = link_streams_a_peer(count)

    async def end_streams(self, deadline: float) -> None:
        """End every inbound stream, waiting up to `deadline` seconds for them to end (before
        stopping the server: they never end by themselves); streams opened from now on are
        refused as UNAVAILABLE."""
        self._closing = True
        tasks = [*self._streams, *self._client_streams]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=deadline)

    def _count_error(self, method: str, code: grpc.StatusCode) -> None:
        if self.monitor is not None:
            self.monitor.rpc_error(method, code.name)

    # ------------------------------------------------------------ client facing

    async def CreateTx(self, request: pb.CreateTxRequest, context: Any) -> pb.CreateTxReply:
        async def work() -> pb.CreateTxReply:
            data = _client_object(request.data_json)
            channel = self._writer_channel(context, request.channel)
            tx = await channel.create_tx(data)
            return pb.CreateTxReply(tx_hash=tx.hash_hex, channel=tx.channel)

        return await self._serve(context, "CreateTx", work, request)

    async def CreateTxBatch(
        self, request: pb.CreateTxBatchRequest, context: Any
    ) -> pb.CreateTxBatchReply:
        return await self._serve(
            context, "CreateTxBatch", lambda: self._tx_batch(request, context), request
        )

    async def _tx_batch(
        self, request: pb.CreateTxBatchRequest, context: Any
    ) -> pb.CreateTxBatchReply:
        _check_batch_size(len(request.data_json))
        channel = self._writer_channel(context, request.channel)
        parsed: list[dict[str, Any] | RequestError] = []
        for text in request.data_json:
            try:
                parsed.append(_client_object(text))
            except RequestError as exc:
                parsed.append(exc)
        created = iter(await channel.create_txs([p for p in parsed if isinstance(p, dict)]))
        return _batch_reply([p if isinstance(p, RequestError) else next(created) for p in parsed])

    async def CreateTxStream(
        self, requests: AsyncIterator[pb.CreateTxBatchRequest], context: Any
    ) -> None:
        await self._batch_stream(
            requests, context, "CreateTxStream", self._tx_batch, "CreateTxBatch"
        )

    async def CreateIconTxStream(
        self, requests: AsyncIterator[pb.IconTxBatchRequest], context: Any
    ) -> None:
        await self._batch_stream(
            requests, context, "CreateIconTxStream", self._icon_tx_batch, "CreateIconTxBatch"
        )

    async def _batch_stream(
        self,
        requests: AsyncIterator[R],
        context: grpc.aio.ServicerContext,
        method: str,
        answer: Callable[[R, Any], Awaitable[pb.CreateTxBatchReply]],
        twin: str,
    ) -> None:
        """Each batch of a client's stream answered in order as its one-call twin answers it;
        one refused as a whole gets the refusal in the reply's code and message, and the stream
        goes on. Ended by this peer after STREAM_MAX_AGE_S (the proxy replaces it before)."""
        refusal = self._stream_refusal(method, self._client_streams, MAX_CLIENT_STREAMS)
        if refusal is not None:
            refuse(context, *refusal)
            return
        async with self._inbound_stream(context, self._client_streams):
            # its age bounds the wait for a batch, never a batch being taken in: a stream ended
            # under one left its client not knowing whether it was taken (and told to retry)
            ends = asyncio.get_running_loop().time() + STREAM_MAX_AGE_S
            batches = aiter(requests)
            while True:
                try:
                    async with asyncio.timeout_at(ends):
                        request = await anext(batches)
                except (TimeoutError, StopAsyncIteration):
                    return
                try:
                    reply = await self._forwarded(context, twin, request, streamed=True)
                    if reply is None:
                        reply = await answer(request, context)
                except (RequestError, EncodingError) as exc:
                    code, message = self._refusal(context, method, exc)
                    reply = pb.CreateTxBatchReply(code=code.value[0], message=message)
                except (StorageCorrupt, StoreDamaged) as exc:
                    code, message = self._refusal(context, method, damaged(method, exc))
                    reply = pb.CreateTxBatchReply(code=code.value[0], message=message)
                except WorkerRefusal as exc:  # counted by the worker
                    reply = pb.CreateTxBatchReply(code=exc.code.value[0], message=exc.message)
                await context.write(reply)

    async def CreateIconTx(self, request: pb.IconTxRequest, context: Any) -> pb.CreateTxReply:
        async def work() -> pb.CreateTxReply:
            channel = self._writer_channel(context, request.channel)
            tx = await channel.create_icon_tx(request.params_json)
            return pb.CreateTxReply(tx_hash=tx.hash_hex, channel=request.channel)

        return await self._serve(context, "CreateIconTx", work, request)

    async def CreateIconTxBatch(
        self, request: pb.IconTxBatchRequest, context: Any
    ) -> pb.CreateTxBatchReply:
        return await self._serve(
            context, "CreateIconTxBatch", lambda: self._icon_tx_batch(request, context), request
        )

    async def _icon_tx_batch(
        self, request: pb.IconTxBatchRequest, context: Any
    ) -> pb.CreateTxBatchReply:
        _check_batch_size(len(request.params_json))
        channel = self._writer_channel(context, request.channel)
        return _batch_reply(await channel.create_icon_txs(list(request.params_json)))

    async def GetBalance(self, request: pb.BalanceRequest, context: Any) -> pb.BalanceReply:
        async def work() -> pb.BalanceReply:
            channel = self._channel(context, request.channel)
            balance, supply, height = await channel.balance(request.address)
            return pb.BalanceReply(balance=str(balance), total_supply=str(supply), height=height)

        return await self._serve(context, "GetBalance", work, request)

    async def GetTx(self, request: pb.GetTxRequest, context: Any) -> pb.GetTxReply:
        def work() -> pb.GetTxReply:
            tx_hash = _hash_arg(request.tx_hash)
            channel = self._channel(context, request.channel)
            return self._tx(channel, tx_hash, channel.status)

        return await self._serve(context, "GetTx", work, request)

    def _tx(
        self, channel: ChannelBackend, tx_hash: bytes, status: Callable[[], dict[str, Any]]
    ) -> pb.GetTxReply:
        """GetTx's answer about one transaction of `channel` (NOT_FOUND when unknown);
        `status`: the channel's, for its SCORE's id and version."""
        found = channel.find_tx(tx_hash)
        if found is None:
            raise _tx_not_found(channel, tx_hash)
        score = status()
        return pb.GetTxReply(
            tx=found.tx.encode(),
            # a v3 transaction names no channel: the one it was found in (REST meta.channel_name)
            channel=found.tx.channel or str(score.get("channel", "")),
            block_height=found.block_height,
            block_hash=found.block_hash.hex(),
            # the peer that took it from its client (a v1 one's signer), as loopchain's meta
            # said; a v3 one names none (its client signed it): the peer answering
            peer_id=found.tx.sender if found.tx.version == V1 else self.peer_id,
            score_id=score.get("score_id", ""),
            score_version=score.get("score_version", ""),
            tx_index=found.tx_index,
        )

    async def GetTxBatch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.GetTxBatchReply:
        return await self._serve(
            context, "GetTxBatch", lambda: self._tx_lookup_batch(request, context), request
        )

    async def _tx_lookup_batch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.GetTxBatchReply:
        channel = self._channel(context, request.channel)
        status = functools.cache(channel.status)  # asked once a call, if at all
        entries = await self._lookups(
            request,
            "GetTx",
            lambda tx_hash: pb.TxEntry(tx=self._tx(channel, tx_hash, status)),
            _tx_refusal,
        )
        return pb.GetTxBatchReply(results=entries)

    async def GetTxResult(self, request: pb.GetTxRequest, context: Any) -> pb.TxResultReply:
        def work() -> pb.TxResultReply:
            tx_hash = _hash_arg(request.tx_hash)
            return _tx_result(self._channel(context, request.channel), tx_hash)

        return await self._serve(context, "GetTxResult", work, request)

    async def GetTxResultBatch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.TxResultBatchReply:
        return await self._serve(
            context, "GetTxResultBatch", lambda: self._tx_result_batch(request, context), request
        )

    async def _tx_result_batch(
        self, request: pb.TxLookupBatchRequest, context: Any
    ) -> pb.TxResultBatchReply:
        channel = self._channel(context, request.channel)
        entries = await self._lookups(
            request,
            "GetTxResult",
            lambda tx_hash: pb.TxResultEntry(result=_tx_result(channel, tx_hash, request.with_tx)),
            _result_refusal,
        )
        return pb.TxResultBatchReply(results=entries)

    async def _lookups(
        self,
        request: pb.TxLookupBatchRequest,
        method: str,
        lookup: Callable[[bytes], Entry],
        refusal: Callable[[grpc.StatusCode, str], Entry],
    ) -> list[Entry]:
        """Each hash of `request` looked up as `method` looks one up, a refusal (an unknown
        transaction too) in its own entry; the entries that fit in a reply (its caller asks the
        rest again). Refusals are counted as `method`'s, one a lookup, once their reply goes."""
        if len(request.tx_hashes) > MAX_LOOKUPS_PER_CALL:
            raise RequestError(
                ErrorKind.INVALID,
                f"{len(request.tx_hashes)} transaction hashes in one call, "
                f"limit {MAX_LOOKUPS_PER_CALL}",
            )
        reply = _BatchReply(
            min(self.max_reply, MAX_LOOKUP_REPLY_BYTES), refusal, f"a {method} answer"
        )
        for index, text in enumerate(request.tx_hashes):
            if index and index % LOOKUPS_PER_TURN == 0:
                await asyncio.sleep(0)  # others' turn (consensus, other calls)
            refused: grpc.StatusCode | None = None
            try:
                entry = lookup(_hash_arg(text))
            except (StorageCorrupt, StoreDamaged) as exc:
                refused = ErrorKind.DAMAGED.value
                entry = refusal(refused, damaged(method, exc).message)
            except RequestError as exc:  # bounded as a call's refusal is (it may quote the hash)
                refused = exc.kind.value
                entry = refusal(refused, status_details(exc.message))
            if not reply.add(entry):
                break
            if refused is not None:
                self._count_error(method, refused)
        return reply.results

    async def GetBlock(self, request: pb.GetBlockRequest, context: Any) -> pb.BlockReply:
        def work() -> pb.BlockReply:
            channel = self._channel(context, request.channel)
            block_hash = _hash_arg(request.block_hash) if request.block_hash else b""
            last = not block_hash and request.height < 0
            if last and _names(request.unless_hash, channel.last_block_hash()):
                # a poll of the last block, which the caller has: no block sent
                return pb.BlockReply(channel=request.channel, unchanged=True)
            found = channel.get_block(request.height, block_hash)
            if found is None:
                if block_hash or request.height >= 0:
                    what = block_hash.hex() if block_hash else f"at height {request.height}"
                    raise RequestError(ErrorKind.NOT_FOUND, f"block {what} not found")
                return pb.BlockReply(channel=request.channel)
            return pb.BlockReply(
                channel=found.channel,
                block=found.block,
                certificate=found.certificate,
                tx_hashes=found.tx_hashes,
            )

        return await self._serve(context, "GetBlock", work, request)

    async def GetStatus(self, request: pb.ChannelRequest, context: Any) -> pb.PeerStatusReply:
        def work() -> pb.PeerStatusReply:
            status = self._channel(context, request.channel).status()
            fields = {
                k: v for k, v in status.items() if k in pb.PeerStatusReply.DESCRIPTOR.fields_by_name
            }
            return pb.PeerStatusReply(**fields)

        return await self._serve(context, "GetStatus", work, request)

    async def Query(self, request: pb.QueryRequest, context: Any) -> pb.QueryReply:
        try:
            forwarded = await self._forwarded(context, "Query", request)
            if forwarded is not None:
                return self._unsent(context, forwarded)
            try:
                canonical.parse(request.params_json, floats=True)
            except EncodingError as exc:
                raise RequestError(ErrorKind.INVALID, f"query is not valid JSON: {exc}") from None
            channel = self._channel(context, request.channel)
            reply = pb.QueryReply(response_json=await channel.query(request.params_json))
            return self._unsent(context, reply)
        except RequestError as exc:
            self._count_error("Query", exc.kind.value)
            return refuse(context, exc.kind.value, exc.message)
        except WorkerRefusal as exc:
            return refuse(context, exc.code, exc.message)

    async def QueryBatch(self, request: pb.QueryBatchRequest, context: Any) -> pb.QueryBatchReply:
        return await self._serve(
            context, "QueryBatch", lambda: self._query_batch(request, context), request
        )

    async def _query_batch(self, request: pb.QueryBatchRequest, context: Any) -> pb.QueryBatchReply:
        """Each query answered as Query answers it, a refusal in its own result; the reply holds
        the answers that fit in a message (its caller asks the rest again). Refusals are
        counted as Query's, one a query, as when each query was its own call."""
        if len(request.params_json) > MAX_QUERIES_PER_CALL:
            raise RequestError(
                ErrorKind.INVALID,
                f"{len(request.params_json)} queries in one call, limit {MAX_QUERIES_PER_CALL}",
            )
        channel = self._channel(context, request.channel)

        async def answer(text: str) -> tuple[pb.QueryResult, grpc.StatusCode | None]:
            try:
                canonical.parse(text, floats=True)
            except EncodingError as exc:
                refusal = RequestError(ErrorKind.INVALID, f"query is not valid JSON: {exc}")
            else:
                try:
                    return pb.QueryResult(response_json=await channel.query(text)), None
                except RequestError as exc:
                    refusal = exc
            # bounded as a call's refusal is (it may quote the query)
            message = status_details(refusal.message)
            code = refusal.kind.value
            return pb.QueryResult(code=code.value[0], message=message), code

        results = await self._asked_together(
            request.params_json,
            answer,
            _BatchReply(self.max_reply, _query_refusal, "query answer"),
            "Query",
        )
        return pb.QueryBatchReply(results=results)

    async def GetBalanceBatch(
        self, request: pb.BalanceBatchRequest, context: Any
    ) -> pb.BalanceBatchReply:
        return await self._serve(
            context, "GetBalanceBatch", lambda: self._balance_batch(request, context), request
        )

    async def _balance_batch(
        self, request: pb.BalanceBatchRequest, context: Any
    ) -> pb.BalanceBatchReply:
        """Each address's balance as GetBalance answers it, a refusal in its own entry; the
        reply holds the entries that fit in a message (its caller asks the rest again);
        refusals counted as GetBalance's, one an address."""
        if len(request.addresses) > MAX_LOOKUPS_PER_CALL:
            raise RequestError(
                ErrorKind.INVALID,
                f"{len(request.addresses)} addresses in one call, limit {MAX_LOOKUPS_PER_CALL}",
            )
        channel = self._channel(context, request.channel)

        async def answer(address: str) -> tuple[pb.BalanceEntry, grpc.StatusCode | None]:
            try:
                balance, supply, height = await channel.balance(address)
            except RequestError as exc:  # bounded as a call's refusal is (it may quote it)
                code = exc.kind.value
                return _balance_refusal(code, status_details(exc.message)), code
            found = pb.BalanceReply(balance=str(balance), total_supply=str(supply), height=height)
            return pb.BalanceEntry(balance=found), None

        reply = _BatchReply(
            min(self.max_reply, MAX_LOOKUP_REPLY_BYTES), _balance_refusal, "a GetBalance answer"
        )
        results = await self._asked_together(request.addresses, answer, reply, "GetBalance")
        return pb.BalanceBatchReply(results=results)

    async def _asked_together(
        self,
        items: Sequence[str],
        answer: Callable[[str], Awaitable[tuple[Result, grpc.StatusCode | None]]],
        reply: _BatchReply[Result],
        method: str,
    ) -> list[Result]:
        """`answer` of every item, all asked at once (so that they share the SCORE's calls),
        taken in order into `reply` until it is full: the rest are cancelled, never sent to the
        SCORE or held here. A refusal (its code beside the result) is counted as `method`'s
        once its reply goes (an item asked again is not counted again)."""
        tasks = [asyncio.ensure_future(answer(item)) for item in items]
        try:
            for task in tasks:
                result, refused = await task
                if not reply.add(result):
                    break
                if refused is not None:
                    self._count_error(method, refused)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return reply.results

    async def GetScoreStatus(self, request: pb.ChannelRequest, context: Any) -> pb.ScoreStatusReply:
        def work() -> pb.ScoreStatusReply:
            info = self._channel(context, request.channel).score_status()
            return pb.ScoreStatusReply(
                id=info.id,
                version=info.version,
                all_version=list(info.all_versions),
                status=info.status,
                message=info.message,
                score_address=info.address,
                api_json=info.api_json,
            )

        return await self._serve(context, "GetScoreStatus", work, request)

    # ------------------------------------------------------------ peer to peer

    @staticmethod
    def _check_tx_batch(request: pb.TxBatch) -> None:
        """RequestError for a relayed batch of more transactions than one may hold."""
        if len(request.txs) > MAX_TXS_PER_BATCH:
            raise RequestError(
                ErrorKind.INVALID,
                f"{len(request.txs)} transactions in one batch, limit {MAX_TXS_PER_BATCH}",
            )

    def _check_consensus(self, request: pb.ConsensusMessage) -> None:
        """RequestError for a consensus message larger than its kind may be."""
        kind = request.WhichOneof("body")
        if kind is not None:
            size = len(getattr(request, kind))
            limit = self.max_proposal if kind == "proposal" else MAX_OTHER_CONSENSUS_BYTES
            if size > limit:
                raise RequestError(
                    ErrorKind.INVALID,
                    f"a {kind} of {size} bytes, limit {limit}"
                    + (" (twice MAX_BLOCK_KBYTES and 1 MiB)" if kind == "proposal" else ""),
                )

    async def _add_txs(self, request: pb.TxBatch, caller: str | None) -> None:
        self._check_tx_batch(request)
        channel = self._party_channel(request.channel, caller)
        txs = [Transaction.decode(raw) for raw in request.txs]
        await channel.receive_txs_in_turns(txs, caller)  # judged by who relays them too

    async def _deliver(self, request: pb.ConsensusMessage, caller: str | None) -> None:
        channel = self._party_channel(request.channel, caller)
        self._check_consensus(request)
        event = decode_consensus(request, channel.pooled_transaction, self.max_proposal_txs)
        await channel.receive_in_turns(event)

    async def AddTxBatch(self, request: pb.TxBatch, context: Any) -> pb.Ack:
        async def work() -> pb.Ack:
            await self._add_txs(request, self._peer_caller(context))
            return pb.Ack(code=0)

        return await self._serve(context, "AddTxBatch", work, request, p2p=True)

    async def Deliver(self, request: pb.ConsensusMessage, context: Any) -> pb.Ack:
        async def work() -> pb.Ack:
            await self._deliver(request, self._peer_caller(context))
            return pb.Ack(code=0)

        return await self._serve(context, "Deliver", work, request, p2p=True)

    async def AddTxStream(self, requests: AsyncIterator[pb.TxBatch], context: Any) -> pb.Ack:
        return await self._stream(
            requests, context, "AddTxStream", self._add_txs, self._check_tx_batch
        )

    async def DeliverStream(
        self, requests: AsyncIterator[pb.ConsensusMessage], context: Any
    ) -> pb.Ack:
        return await self._stream(
            requests, context, "DeliverStream", self._deliver, self._check_consensus
        )

    async def Identify(self, request: pb.IdentifyRequest, context: Any) -> pb.IdentifyReply:
        def work() -> pb.IdentifyReply:
            if len(request.challenge) != IDENTIFY_CHALLENGE_BYTES:
                raise RequestError(
                    ErrorKind.INVALID, f"challenge must be {IDENTIFY_CHALLENGE_BYTES} bytes"
                )
            peer_id, signature = self.backend.identify(request.challenge)
            return pb.IdentifyReply(peer_id=peer_id, signature=signature)

        return await self._serve(context, "Identify", work)

    async def GetBlockRange(self, request: pb.BlockRangeRequest, context: Any) -> pb.BlockRange:
        async def work() -> pb.BlockRange:
            caller = self._peer_caller(context)
            channel = self._party_channel(request.channel, caller)
            source = f"{caller or first_source(context)} in channel {request.channel!r}"
            refusal = self._ranges.take(source)
            if refusal is not None:
                raise RequestError(ErrorKind.POOL_FULL, f"{refusal}: ask one after another")
            try:
                return await built(channel)
            finally:
                self._ranges.give(source)

        async def built(channel: ChannelBackend) -> pb.BlockRange:
            limit = max(1, min(request.max_blocks or 100, MAX_RANGE_BLOCKS))

            def build() -> pb.BlockRange:
                found = channel.block_range(request.from_height, limit, max(0, request.max_bytes))
                reply = pb.BlockRange(
                    channel=request.channel,
                    blocks=[pb.FinalBlock(block=b, certificate=c) for b, c in found.blocks],
                    tip_height=found.tip_height,
                )
                if found.proof is not None:
                    reply.commit_proof.block, reply.commit_proof.certificate = found.proof
                return reply

            # read and built beside the event loop: a reply of up to 16 MiB took one turn of it,
            # and two callers asking a dozen a second held this peer's votes (a review measured
            # failed rounds on every round it led); the store's reads are safe from a thread
            return await asyncio.get_running_loop().run_in_executor(self._range_builder, build)

        return await self._serve(context, "GetBlockRange", work, request, p2p=True)

    # ------------------------------------------------------------ operations

    async def GetMetrics(self, request: pb.MetricsRequest, context: Any) -> pb.MetricsReply:
        async def work() -> pb.MetricsReply:
            if self.callers is not None and self.callers.peer_id(context) is not None:
                # they cover every channel of this peer, whatever the caller is a party of
                raise RequestError(
                    ErrorKind.DENIED,
                    "metrics are served on the local port (to this peer's REST proxy and tools), "
                    "not to other nodes",
                )
            if self.monitor is None:
                raise RequestError(ErrorKind.UNIMPLEMENTED, "this peer keeps no metrics")
            try:
                text = self.monitor.exposition()
                return pb.MetricsReply(text=await text if inspect.isawaitable(text) else text)
            except OverflowError as exc:
                raise RequestError(ErrorKind.POOL_FULL, str(exc)) from None

        return await self._serve(context, "GetMetrics", work)
