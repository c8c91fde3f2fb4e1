"""One channel of a peer: block store, transaction pool, consensus state machine and its I/O."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from loopchain import failpoints, monitor_log
from loopchain.blockchain import coin, execution
from loopchain.blockchain.block_store import (
    BlockStore,
    BlockStoreError,
    StoreDamaged,
    StoredBlock,
)
from loopchain.blockchain.chain import OFF_THIS_CLOCK, Limits
from loopchain.blockchain.intake_journal import IntakeJournal
from loopchain.blockchain.mempool import TxPool, TxRefused, max_cost, writer_of
from loopchain.blockchain.restore import restore_tip
from loopchain.configure import Config, RefusalLog
from loopchain.consensus import messages as m
from loopchain.consensus.rules import SafetyRules, turn_for
from loopchain.consensus.state import ChannelConsensus, ConsensusConfig
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.grpc_util import max_proposal_bytes
from loopchain.p2p.peer_service import BlockRangeResult, TxLookup, TxOutcome, range_reply_bytes
from loopchain.p2p.transport import ConsensusPayload, PeerTransport
from loopchain.p2p.turns import aside, check_signatures
from loopchain.peer.catchup import CatchUp
from loopchain.peer.intake import MB, IntakeLog, IntakeRefused, RateLimit
from loopchain.peer.metrics import ChannelGauges, ChannelMetrics, PeerMetrics
from loopchain.peer.relay import TxRelay
from loopchain.peer.score_runtime import ScoreInfo, ScoreRuntime, ScoreStateMismatch
from loopchain.safe_text import without_paths
from loopchain.scoreservice.client import ScoreRejected, ScoreUnavailable
from loopchain.storage.abc import StorageCorrupt, StorageError, StorageReplaced, StoreLocked
from loopchain.types import canonical, icon_tx
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisData
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import MAX_DATA_DEPTH, V1, V3, Transaction
from loopchain.types.validators import JointSet, ValidatorSet, ratio_from_config

log = logging.getLogger(__name__)
# what other peers send that is refused or rejected (a relayed transaction dropped, a message of
# another channel, a vote or complaint the consensus rejects): one call may carry a thousand of
# them, a stream any number, so their warnings are rate-limited rather than one an item
REFUSALS = RefusalLog(log)

# final blocks not executed yet whose v3 transactions a start counts against their senders' balances
# (see ChannelService._note_unexecuted)
UNEXECUTED_NOTED_MAX = 64

# A round timer this peer's own event loop runs late (the peer was busy or stalled: a full CPU, a
# slow disk) waits that long again before it counts, up to TIMER_DEFERRALS times: the messages that
# came meanwhile (the proposal or certificate it waited for) are handled first, so a peer's own
# overload does not make it complain about a leader that kept time.
TIMER_LATE_S = 0.1
TIMER_DEFERRALS = 3
# A round cannot succeed when its leader, or the next round's leader (its votes go there to be
# certified), cannot be reached from here (the transport's last message to it found no
# connection: a crashed peer): this peer complains after this much rather than after the whole
# round timeout, which has doubled by the second of those rounds, and a round timer armed
# earlier fires within this much of the transport finding its leader gone. With one of four
# validators down, its turns cost ~0.6 s, not 3 s. A peer that is merely slow gets the whole
# timeout, and so does the round after HASTENED_FAILURES failed in a row: a peer cut off from
# every other (or a channel without a quorum) goes back to the growing timeout, not a
# complaint and a re-gossip four times a second.
UNREACHABLE_WAIT_S = 0.25
HASTENED_FAILURES = 3
# The consensus messages this peer broadcast last (and those it could not send: no address known
# for the peer yet) are sent again to a member it learns of later, so a proposal, vote or complaint
# made while the member list was still filling (at start-up) does not cost a round.
RESEND_RECENT = 8
BACK_RESEND_S = 2.0  # a member back from a cut is sent what it missed at most this often
# A member still without an address this long after a message to it was kept is worth a warning;
# at start-up the member list fills within a heartbeat or two, and what waited is sent then.
MISSING_MEMBER_GRACE_S = 10.0
# a client's v3 transaction is taken within TX_TIMESTAMP_WINDOW less MAX_TIMESTAMP_SKEW and this
# (at most half the window): stamped at its edge, the other pools (their clocks up to the skew
# behind or ahead, and it relayed a moment later) dropped it, acknowledged (clock review)
RELAY_TIME_S = 10.0
REFUSED_FOR_TIME_KEPT = 64  # blocks refused for their time kept, to see whether they become final
INTAKE_SWEEP_S = 60.0  # seconds between two sweeps of the intake log for what expired
# relayed v3 transactions pooled whose senders' balances are still to be asked (see
# _check_relayed_payments); past it, relayed v3 transactions are not pooled (their senders'
# peers hold them)
MAX_PAYMENT_CHECKS = 10_000
MAX_SENDERS_ASKED = 500  # senders whose balances one ask of the SCORE names
# senders seen able to pay, kept this long (seconds) and this many, so that a sender's next
# relayed transactions are not asked again (a busy sender sends many)
PAYER_KEPT_S = 10.0
PAYERS_KEPT = 4096
# blocks the SCORE's state may lag the recorded results for a payment check to be made (a block
# being committed, and the next one's results being recorded)
PAYMENT_STATE_LAG = 2
PAYMENT_RETRY_S = 0.5  # the pause before a payment check the SCORE could not make is asked again
T = TypeVar("T")
NOT_INVOKED_TEXT = "not invoked yet"  # the message of code 2 while a transaction waits
MONITORED_HASHES = 8  # transaction hashes a CreateTx monitoring event names at most
_REFUSAL_REASONS = {  # refusals by their kind, as the metrics count them
    ErrorKind.POOL_FULL: "pool_full",
    ErrorKind.DENIED: "denied",
    ErrorKind.UNAVAILABLE: "unavailable",
}


@dataclass(frozen=True)
class ChannelSettings:
    """What a channel service needs to know about its place in the network."""

    name: str
    score_package: str
    issuer: str  # address of the RadioStation that signs validator sets
    my_target: str
    storage_dir: Path  # this channel's directory (block store, SCORE state)
    port: int
    score_settings: Mapping[str, Any] = field(default_factory=dict)  # over its package.json


def consensus_config(config: Config) -> ConsensusConfig:
    """Consensus timing and limits from configuration."""
    ratio: Fraction = ratio_from_config(config.VOTING_RATIO)
    return ConsensusConfig(
        interval=float(config.INTERVAL_BLOCKGENERATION),
        round_timeout=float(config.TIMEOUT_FOR_LEADER_COMPLAIN),
        max_round_timeout=float(config.MAX_TIMEOUT_FOR_LEADER_COMPLAIN),
        blocks_per_leader=turn_for(int(config.LEADER_BLOCK_CREATION_LIMIT)),
        limits=Limits(
            max_block_txs=int(config.MAX_BLOCK_TX_NUM),
            max_block_bytes=int(config.MAX_BLOCK_KBYTES) * 1024,
            max_skew_us=int(float(config.MAX_TIMESTAMP_SKEW) * 1_000_000),
            ratio=ratio,
        ),
    )


STORAGE_ADVICE = (
    "What is stored is whole; free space or repair the storage, then start the peer again"
)
DAMAGED_STORE_ADVICE = (
    "Restore the store from a backup, or move it aside: the peer then syncs the chain from the "
    "others (the transactions it acknowledged are kept apart, in its intake journal)"
)


def storage_advice(exc: BaseException) -> str:
    """What the operator does next after the storage failure `exc`: a store found damaged is
    restored or moved aside (what it holds is not whole; "free space or repair the storage"
    told them to start it again as it was); one whose folder was removed or replaced, a SCORE
    state that cannot be brought to the recorded results, and a store another process holds
    say it themselves; a write that failed (full or read-only disk) leaves a whole store."""
    if isinstance(exc, (StorageReplaced, ScoreStateMismatch, StoreLocked)):
        return ""
    if isinstance(exc, (StorageCorrupt, StoreDamaged)):
        return DAMAGED_STORE_ADVICE
    return STORAGE_ADVICE


def with_storage_advice(exc: StorageError | BlockStoreError) -> StorageError | BlockStoreError:
    """`exc` saying what to do next (storage_advice) as well, of its own type."""
    advice = storage_advice(exc)
    if not advice:
        return exc
    try:
        return type(exc)(f"{exc}. {advice}")
    except TypeError:  # (a type made otherwise: its words alone)
        return exc


class ChannelService:
    """Runs one channel: feeds events to the consensus state machine and carries out its actions."""

    def __init__(
        self,
        *,
        settings: ChannelSettings,
        config: Config,
        signer: Signer,
        store: BlockStore,
        transport: PeerTransport,
        on_fatal: Callable[[str], None] | None = None,
        metrics: ChannelMetrics | None = None,
        on_members_wanted: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # wall-clock seconds: block timestamps, transaction windows, timers
        # on its own (tests), a channel keeps its figures in a registry of its own
        self.metrics = metrics or PeerMetrics(lambda: {self.name: self.gauges}).channel(
            settings.name
        )
        self.on_fatal = on_fatal
        # called when a validator has no address here yet (the peer asks the RadioStation again)
        self.on_members_wanted = on_members_wanted
        self.halted: str | None = None  # why this channel stopped (its storage failed)
        window = float(config.TX_TIMESTAMP_WINDOW)
        skew = float(config.MAX_TIMESTAMP_SKEW)
        # how much narrower than the pools' window a client's transaction is taken (RELAY_TIME_S)
        self.intake_margin = min(skew + RELAY_TIME_S, window / 2) if math.isfinite(window) else 0.0
        self._skew_us = skew * 1_000_000  # a block final "on time here" (_judge_own_clock)
        self._clock_off: str | None = None  # this peer's clock off the RadioStation's (its node)
        # blocks refused for their time (OFF_THIS_CLOCK), the latest REFUSED_FOR_TIME_KEPT, and
        # whether one of them became final all the same since a final block was last on time here
        self._refused_for_time: dict[bytes, None] = {}
        self._behind_the_quorum = False
        self.name = settings.name
        self.config = config
        self.signer = signer
        self.store = store
        self.transport = transport
        transport.when_back(self._peer_back)
        self.members: dict[str, PeerInfo] = {}
        self._listed: set[str] | None = None  # who the RadioStation listed last (set_members)
        # the genesis data its chain states (stated_genesis): fixed once the genesis block is
        # stored, read before from the newest validator set (`_genesis_read_of`)
        self._genesis: GenesisData | None = None
        self._genesis_known = False
        self._genesis_edit_warned = -1  # the newest set version whose genesis edit was warned of
        self._stale_set_warned: tuple[int, bytes] | None = None  # the stale set warned of last
        # peers that took transactions in the channel and when they were last seen to (_signers)
        self._writers_seen: dict[str, float] = {}
        self._genesis_read_of: object = None
        # relayed v3 transactions pooled, their senders' balances to be asked (in order)
        self._payment_checks: dict[bytes, Transaction] = {}
        self._payments_due = asyncio.Event()
        # senders seen able to pay: their balance then, and when (monotonic seconds)
        self._payers: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._config_nid = int(str(config.ICON_NID), 16)
        # (to, message) last broadcast (to None) or not sent (no address known yet)
        self._recent: collections.deque[tuple[str | None, ConsensusPayload]] = collections.deque(
            maxlen=RESEND_RECENT
        )
        # validators a message waited for (no address yet): since when, and whether warned (only
        # validators are sent to, so these hold at most the validator sets this peer has seen)
        self._missing_since: dict[str, float] = {}
        self._back_sent: dict[str, float] = {}  # member -> when `_peer_back` last sent to it
        self._missing_warned: set[str] = set()
        tip, tip_qc = restore_tip(store, settings.name)
        self.consensus = ChannelConsensus(
            config=consensus_config(config),
            signer=signer,
            issuer=settings.issuer,
            tip=tip,
            tip_certificate=tip_qc,
            pool=TxPool(
                int(config.TX_POOL_MAX),
                max_bytes=int(config.TX_POOL_MAX_BYTES),
                max_tx_bytes=int(config.MAX_TX_BYTES),
                window=float(config.TX_TIMESTAMP_WINDOW),
            ),
            is_committed=store.has_transaction,
            network_id=lambda: self.stated_nid,
            safety=SafetyRules(*record) if (record := store.safety_record()) else None,
            roots_at=store.roots_at,
            executed_height=executed[0] if (executed := store.executed()) else -1,
            stated_turn=lambda: self.stated_turn,
        )
        self._final_sets = self._chain_sets()  # (set, pending set) versions, for fail points
        self._judge_chain_issuer(settings.issuer)
        self._note_unexecuted(store)
        self.score = ScoreRuntime(
            config=config,
            channel=settings.name,
            store=store,
            package_name=settings.score_package,
            storage_dir=settings.storage_dir,
            port=settings.port,
            on_executed=self.receive,
            score_settings=settings.score_settings,
            on_storage_error=self.storage_failed,
            metrics=self.metrics,
        )
        self._admit_max = min(int(config.TX_POOL_ADMIT_MAX), int(config.TX_POOL_MAX))
        self._admit_wait = float(config.TX_POOL_ADMIT_WAIT)
        self._admit_backlog = int(config.TX_POOL_ADMIT_BACKLOG)
        self.journal = IntakeJournal(settings.storage_dir / "intake")
        self._journaled = self.journal.replay()  # before any client's append; pooled by run()
        self.intake = (
            IntakeLog(self.journal, int(config.STORAGE_MIN_FREE_MB) * MB)
            if config.INTAKE_LOG
            else None
        )
        limit = float(config.TPS_LIMIT_PER_SEC)
        self._rate = RateLimit(limit, self.clock()) if limit > 0 else None
        # client transactions admitted and not pooled yet (their balances being asked, their
        # intake write under way), their bytes and hashes: room held for them (see _reserve)
        self._reserved = 0
        self._reserved_bytes = 0
        # what the reserved v3 transactions found payable may cost their senders (by sender, and
        # each's share): counted as the pool's spend is while they are being taken in
        self._reserved_spend: collections.Counter[str] = collections.Counter()
        self._spend_shares: dict[bytes, tuple[str, int]] = {}
        self._reserved_hashes: set[bytes] = set()
        self._taking: set[asyncio.Future[list[Transaction | RequestError]]] = set()
        self._next_intake_sweep = 0.0
        self.relay = TxRelay(
            self.name, config, transport, self._other_peers, self.consensus.still_to_gossip
        )
        self.catchup = CatchUp(
            self.name,
            transport,
            self._other_peers,
            lambda: self.consensus.tip.height,
            self._dispatch,
            int(config.SYNC_BATCH_BLOCKS),
            self.pooled_transaction,
            screen=self.consensus.header_problem,
            would_check=self.consensus.would_check,
            held=self._holds_block,
        )
        self._timers: set[asyncio.TimerHandle] = set()

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run the channel's background work until cancelled."""
        log.info(
            "channel %s: tip height %d, peer %s",
            self.name,
            self.consensus.tip.height,
            self.signer.address,
        )
        self._execute(self.consensus.start(self.clock()))
        for block in self.store.pending_blocks():  # what this node voted for before it stopped
            self._dispatch(m.BlockFetched(block))
        self._vote_again()  # its last vote, again: the certificate it made was in memory only
        self._replay_intake()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.relay.run(), name=f"relay:{self.name}")
                group.create_task(self.catchup.run(), name=f"catchup:{self.name}")
                group.create_task(self.score.run(), name=f"score-runtime:{self.name}")
                group.create_task(self._load_tx_filter(), name=f"tx-filter:{self.name}")
                group.create_task(self._check_relayed_payments(), name=f"payments:{self.name}")
        finally:
            # the peer's server may still deliver messages until it stops: they are ignored now,
            # so no timer outlives this channel and nothing touches its store once it closes
            self.halted = self.halted or f"channel {self.name} is stopping"
            for handle in self._timers:
                handle.cancel()
            self._timers.clear()
            try:
                if self._taking:  # acknowledged or not, what is being written is pooled or refused
                    await asyncio.gather(*self._taking, return_exceptions=True)
                if self.intake is not None:
                    await self.intake.drain()
                self.journal.close()
            finally:  # its results write, if one is under way, ends before the store closes
                await self.score.stop()

    async def _load_tx_filter(self) -> None:
        """Load the store's filter of transaction hashes in the worker thread beside the event
        loop, a slice a piece (on a long chain it takes seconds, and in the loop's slices it
        slowed the turns of everything else); from then on a lookup of a transaction not in the
        chain reads nothing. A store it cannot read leaves the filter unloaded (every lookup
        reads the store, as before) and the reads that need the damaged part report it."""
        started, loading = time.monotonic(), self.store.load_tx_filter()
        try:
            while await aside(lambda: next(loading, None)) is not None:
                pass
        except (StorageError, StoreDamaged, MemoryError) as exc:
            log.error("channel %s: transaction filter not loaded: %r", self.name, exc)
            return
        log.info(
            "channel %s: transaction filter loaded: %d hashes, %d KiB, %.1f s",
            self.name,
            self.store.tx_filter.added,
            self.store.tx_filter.size_bytes // 1024,
            time.monotonic() - started,
        )

    def _note_unexecuted(self, store: BlockStore) -> None:
        """Have the pool count what the v3 transactions of the final blocks not executed yet
        may cost their senders (TxPool.note_final), as it counts those made final while it
        runs: a sender's balance is read at the executed height. The newest
        UNEXECUTED_NOTED_MAX of them (a SCORE down for long leaves many, read at every start)."""
        executed = self.consensus.executed_height
        tip = store.tip_height()
        for height in range(max(executed + 1, tip - UNEXECUTED_NOTED_MAX + 1), tip + 1):
            block = store.block_by_height(height)
            if block is not None:
                self.consensus.pool.note_final(height, block.transactions)

    def _replay_intake(self) -> None:
        """Pool (and gossip) what this peer acknowledged before it stopped and no block holds:
        the intake journal's transactions, and those an earlier version kept in the block
        store's intake log (moved to the journal first, synced, then dropped from the store)."""
        logged, self._journaled = self._journaled, []
        legacy: list[Transaction] = []
        for raw in self.store.legacy_intake():
            try:
                legacy.append(Transaction.decode(raw))
            except EncodingError as exc:
                log.error("channel %s: an intake log entry is unreadable (%s)", self.name, exc)
        txs: list[Transaction] = []
        dead: list[Transaction] = []
        for tx in logged + legacy:
            (dead if self.store.has_transaction(tx.hash, tx.timestamp) else txs).append(tx)
        self.journal.settle(tx.hash for tx in dead)
        if legacy:
            live = {tx.hash for tx in txs}
            self.journal.append([tx for tx in legacy if tx.hash in live])
        self.store.drop_legacy_intake()
        if not logged and not legacy:
            return
        if txs:
            self._dispatch(m.TxsReceived(tuple(txs), gossip=True))
        expired = sum(1 for tx in txs if self.consensus.pool.expired(tx.hash))
        log.log(
            logging.WARNING if expired else logging.INFO,
            "channel %s: intake log: %d acknowledged transactions pooled again, %d already "
            "final, %d expired (older than TX_TIMESTAMP_WINDOW: dropped)",
            self.name,
            len(txs) - expired,
            len(dead),
            expired,
        )

    def member_ids(self) -> set[str]:
        """Who may call this channel over TLS: its parties (validators and auditors, as the
        RadioStation lists them, or as the newest validator set it signed names them, and the
        chain's voters) and the RadioStation itself (it asks for peer status). The signed set
        counts while the list lacks a party: at start-up the first peers registered are listed
        before the others, which already send them their proposals and votes."""
        named: set[str] = set()
        latest = self.consensus.latest_validators
        if latest is not None:
            named.update(latest.peer_ids, latest.auditors)
        return {*self.members, *named, *self._chain_voters(), self.settings.issuer}

    @property
    def nid(self) -> int:
        """The channel's ICON network id: the one its genesis data states (genesis_data.nid in
        channel_manage_data.json, recorded in its genesis block), else ICON_NID. A v3
        transaction names its network and no channel: channels with one nid each take no v3
        transaction signed for another (a review replayed one from a channel into another)."""
        stated = self.stated_nid
        return stated if stated is not None else self._config_nid

    @property
    def stated_nid(self) -> int | None:
        """The nid the channel's genesis data states; None when it states none (each peer then
        takes its own ICON_NID, which proposals are not judged by: peers whose ICON_NID differ
        would refuse each other's blocks)."""
        genesis = self.stated_genesis
        return genesis.nid if genesis is not None else None

    @property
    def stated_turn(self) -> int | None:
        """The leader turn the channel's genesis data states (leader_block_creation_limit), in
        place of each peer's LEADER_BLOCK_CREATION_LIMIT; None when it states none."""
        genesis = self.stated_genesis
        return genesis.leader_block_creation_limit if genesis is not None else None

    @property
    def stated_genesis(self) -> GenesisData | None:
        """The channel's genesis data (None when its validator sets carry none). Fixed by the
        genesis block once there is one; before, the newest validator set's, read once per set
        (the nid it states is asked per transaction)."""
        if self._genesis_known:
            return self._genesis
        stored = self.store.block_by_height(0) if self.store.tip_height() >= 0 else None
        update = stored.validator_update if stored is not None else self.consensus.latest_validators
        if stored is None and update is self._genesis_read_of:
            return self._genesis
        self._genesis = update.genesis_data() if update is not None else None
        self._genesis_read_of = update
        self._genesis_known = stored is not None
        return self._genesis

    def auditor_ids(self) -> set[str]:
        """The parties that audit this channel (the newest validator set it signed names them):
        they read it and take no transactions, neither from clients nor as their signers."""
        latest = self.consensus.latest_validators
        return set(latest.auditors) if latest is not None else set()

    def set_members(self, peers: list[PeerInfo]) -> None:
        """The channel's peers as the RadioStation lists them, and those it no longer lists that
        the chain still counts as validators: unlisted or removed together, they vote (and lead
        in their turns) until the chain hands over to the set that drops them, so they must hear
        the others. Dropped from this list, they no longer did, and a channel whose removed peers
        held a third of the weight halted."""
        known = {*self.members, self.signer.address}
        listed = {p.peer_id: p for p in peers}
        self._listed = set(listed)
        voters = self._chain_voters()
        kept = {i: p for i, p in self.members.items() if i not in listed and i in voters}
        self.members = {**listed, **kept}
        for peer_id in [p for p in self._missing_since if p in self.members]:
            del self._missing_since[peer_id]
            self._missing_warned.discard(peer_id)
        newcomers = [p for p in self.members.values() if p.peer_id not in known]
        self.keep_members_ready()
        for peer in newcomers if not self.halted else ():
            self._send_recent(peer, list(self._recent))

    def keep_members_ready(self) -> None:
        """The links to the other members ready, their first message going at once (called at
        each heartbeat too: an idle channel's links to its members are kept, where those to
        peers talked to no more are closed in time)."""
        for peer in self._other_peers() if not self.halted else ():
            self.transport.connect(peer)

    def _peer_back(self, peer: PeerInfo) -> None:
        """A member that could not be reached (cut off, or down) takes messages again: what this
        peer broadcast while it was away goes to it now, not at the next complaint (up to
        MAX_TIMEOUT_FOR_LEADER_COMPLAIN later: a healed partition waited that long for a round
        to move). Of the proposals only the newest goes: they are the big ones."""
        member = self.members.get(peer.peer_id)
        if self.halted or member is None or member.target != peer.target:
            return
        now = time.monotonic()
        for gone in [p for p in self._back_sent if p not in self.members]:
            del self._back_sent[gone]
        if now - self._back_sent.get(peer.peer_id, -BACK_RESEND_S) < BACK_RESEND_S:
            return  # a link flapping under loss: its rounds' messages go on as they are sent
        self._back_sent[peer.peer_id] = now
        recent = list(self._recent)
        newest = next((p for _, p in reversed(recent) if isinstance(p, Block)), None)
        self._send_recent(
            peer, [(to, p) for to, p in recent if not isinstance(p, Block) or p is newest]
        )

    def _send_recent(
        self, peer: PeerInfo, recent: list[tuple[str | None, ConsensusPayload]]
    ) -> None:
        """The messages of `recent` broadcast, or kept for `peer`, sent to `peer`, each once (a
        complaint is broadcast again at each timeout while its round stays). Not a proposal
        stamped further back than twice MAX_TIMESTAMP_SKEW (a margin for this clock's own
        offset): its receiver would refuse it for its time and complain about its round at once
        (review: a peer restarted in a network of idle channels was sent each one's last
        proposal, minutes old, and warned of the leader's clock in each); the votes sent with it
        have the block fetched if it is wanted."""
        stale = self.clock() * 1_000_000 - 2 * self._skew_us
        sent: list[ConsensusPayload] = []
        for to, payload in recent:
            if isinstance(payload, Block) and payload.header.timestamp < stale:
                continue
            if (to is None or to == peer.peer_id) and payload not in sent:
                sent.append(payload)
                self.transport.send_consensus(peer, self.name, self.signer.address, payload)

    def _vote_again(self) -> None:
        """Send again the vote this node cast last (ChannelConsensus.vote_again), as its safety
        record names it (BlockStore.last_vote: none when it only complained in that round),
        kept among the messages a member gets when it is back (its leader may not be up yet: a
        whole network starting again)."""
        if self.halted:
            return
        try:
            last = self.store.last_vote()
            if last is None:
                return
            actions = self.consensus.vote_again(last[1], self.clock())
            for action in actions:
                if isinstance(action, m.SendVote):
                    self._recent.append((action.to, action.vote))
            self._execute(actions)
        except (StorageError, BlockStoreError) as exc:
            self.storage_failed(exc)

    # ------------------------------------------------------------ backend API (called by the servicer)

    async def create_tx(self, data: dict[str, Any]) -> Transaction:
        """Wrap a client's JSON in a transaction signed by this peer and pool it."""
        outcome = (await self.create_txs([data]))[0]
        if isinstance(outcome, RequestError):
            raise outcome
        return outcome

    async def create_txs(self, items: list[dict[str, Any]]) -> list[Transaction | RequestError]:
        """Wrap each client's JSON in a transaction signed by this peer, record them in the
        intake log and pool them together (one synced write, one consensus event and one gossip
        batch); each item gets its transaction or its refusal. Returns once they are on disk."""
        return await self._take_in(self._new_txs(items))

    async def create_icon_tx(self, params_json: str) -> Transaction:
        """Check a client-signed v3 transaction and pool it (create_icon_txs of one)."""
        outcome = (await self.create_icon_txs([params_json]))[0]
        if isinstance(outcome, RequestError):
            raise outcome
        return outcome

    async def create_icon_txs(self, texts: list[str]) -> list[Transaction | RequestError]:
        """Check client-signed v3 transactions (params as sent: shape, signature, network id,
        time, size, not known yet, the sender able to pay value + stepLimit x STEP_PRICE at the
        last executed block; their balances asked together) and pool those that pass like
        create_txs does; one outcome per transaction, in order."""
        refused = self._refusal_for_all()
        if refused is not None:
            self._count_refusals([refused] * len(texts))
            return [refused] * len(texts)
        outcomes = self._new_icon_txs(texts)
        made = [o for o in outcomes if isinstance(o, Transaction)]
        try:
            checked = await self._check_payable(made)
        except BaseException:  # the client went away (or the check failed): none is pooled
            self._release(made, pooled=False)
            raise
        unpaid = [tx for tx, c in zip(made, checked, strict=True) if c is not tx]
        self._release(unpaid, pooled=False)  # their room is free again at once
        paying = iter(checked)
        outcomes = [next(paying) if isinstance(o, Transaction) else o for o in outcomes]
        refusals = [o for o in outcomes if isinstance(o, RequestError)]
        if refusals:
            self._count_refusals(refusals)
        return await self._take_in(outcomes)

    def _new_icon_txs(self, texts: list[str]) -> list[Transaction | RequestError]:
        """Each text's checked transaction (its room reserved) or its refusal."""
        room, refusal = self._admission(self.clock())
        outcomes: list[Transaction | RequestError] = []
        seen: set[bytes] = set()
        taken_bytes = 0  # of the transactions taken so far in this batch
        for text in texts:
            try:
                tx = self._new_icon_tx(text, room, refusal, taken_bytes)
                if tx.hash in seen:
                    raise RequestError(
                        ErrorKind.INVALID, f"transaction {tx.hash_hex} is already known"
                    )
                seen.add(tx.hash)
                outcomes.append(tx)
                room -= 1
                taken_bytes += tx.held_bytes
            except RequestError as exc:
                outcomes.append(exc)
        self._reserve([o for o in outcomes if isinstance(o, Transaction)])
        return outcomes

    async def _check_payable(self, txs: list[Transaction]) -> list[Transaction | RequestError]:
        """Each transaction, or why its sender cannot pay for it: their senders' balances asked
        together (a failed ask refuses them all)."""
        if not txs:
            return []
        try:
            held = await self._ask_score(self.score.balances([tx.icon().sender for tx in txs]))
        except RequestError as exc:
            return [exc] * len(txs)
        # a sender's balance pays for its pooled transactions and those other batches are taking
        # in first (concurrent requests each saw the others' as nothing: review), then for these
        # in order; what these may cost is counted at once, in the same step
        pool, reserved = self.consensus.pool, self._reserved_spend
        outcomes: list[Transaction | RequestError] = []
        for tx, (balance, _, _) in zip(txs, held, strict=True):
            sender, cost = tx.icon().sender, _max_cost(tx)
            outcome = _payable(tx, balance, pool.spend_of(sender) + reserved[sender])
            if outcome is tx:
                reserved[sender] += cost
                self._spend_shares[tx.hash] = (sender, cost)
            outcomes.append(outcome)
        return outcomes

    def _new_icon_tx(
        self, params_json: str, room: int, refusal: str, taken_bytes: int
    ) -> Transaction:
        limit = int(self.config.MAX_TX_BYTES)
        if len(params_json) > limit:
            raise RequestError(
                ErrorKind.INVALID, f"transaction is {len(params_json)} characters, limit {limit}"
            )
        return self._checked_icon(params_json, room, refusal, taken_bytes)

    def _checked_icon(
        self, params_json: str, room: int, refusal: str, taken_bytes: int
    ) -> Transaction:
        try:
            params = canonical.parse(params_json)
            checked = icon_tx.parse_send_params(params)
            icon_tx.check_nid(checked, self.nid)
            short = _steps_short(checked)
        except EncodingError as exc:
            raise RequestError(ErrorKind.INVALID, f"transaction refused: {exc}") from None
        except icon_tx.InvalidTransaction as exc:
            raise RequestError(ErrorKind.INVALID, exc.message) from None
        if short is not None:
            raise RequestError(ErrorKind.INVALID, short)
        # the cheap refusals first: a transaction sent again, or replayed, costs no recovery
        if (
            checked.hash in self.consensus.pool
            or checked.hash in self._reserved_hashes  # sent in another batch being taken in
            or self.store.has_transaction(checked.hash, checked.timestamp)
        ):
            raise RequestError(ErrorKind.INVALID, f"transaction {checked.tx_hash} is already known")
        # ... and one out of its time window, or past the pool's room (a recovery, ~33 us, each);
        # (marked checked, as it is below: it goes nowhere unless its signature is good)
        tx = Transaction.from_icon(checked, signature_verified=True)
        try:
            self.consensus.pool.check(tx, self.clock(), self.intake_margin)
        except TxRefused as exc:
            raise RequestError(ErrorKind.INVALID, f"transaction refused: {exc}") from None
        if room <= 0:
            raise RequestError(ErrorKind.POOL_FULL, refusal)
        self._check_pool_bytes(tx, taken_bytes)
        try:
            checked.verify_signature()
        except icon_tx.InvalidTransaction as exc:
            raise RequestError(ErrorKind.INVALID, exc.message) from None
        return tx

    async def balance(self, address: str) -> tuple[int, int, int]:
        """(ICX balance of `address`, total supply, executed height), in loop."""
        try:
            icon_tx.check_address(address, "address")
        except icon_tx.InvalidTransaction as exc:
            raise RequestError(ErrorKind.INVALID, exc.message) from None
        return await self._ask_score(self.score.balance(address))

    async def _take_in(
        self, outcomes: list[Transaction | RequestError]
    ) -> list[Transaction | RequestError]:
        """Record the new transactions among `outcomes` (their room reserved) in the intake log,
        then pool and relay them together (one synced write, one consensus event and one gossip
        batch). Once begun this ends even when the caller goes away: what is on disk is pooled."""
        created = [tx for tx in outcomes if isinstance(tx, Transaction)]
        if not created:
            return outcomes
        taking = asyncio.ensure_future(self._record_and_pool(created, outcomes))
        self._taking.add(taking)  # awaited by run() before the journal closes
        taking.add_done_callback(self._taking.discard)
        return await asyncio.shield(taking)

    async def _record_and_pool(
        self, created: list[Transaction], outcomes: list[Transaction | RequestError]
    ) -> list[Transaction | RequestError]:
        pooled = False
        try:
            if self.intake is not None:
                await self.intake.write(created)
                failpoints.hit("intake-appended")
            self._dispatch(m.TxsReceived(tuple(created), gossip=True))
            pooled = True
        except IntakeRefused as exc:
            refused = RequestError(ErrorKind.POOL_FULL, str(exc))
            self.metrics.refused("pool_full", len(created))
            return [refused if isinstance(o, Transaction) else o for o in outcomes]
        finally:
            self._release(created, pooled=pooled)
        self.metrics.accepted(len(created), (tx.hash for tx in created))
        if monitor_log.enabled():
            monitor_log.event(
                "CreateTx",
                channel=self.name,
                count=len(created),
                tx_hashes=[tx.hash_hex for tx in created[:MONITORED_HASHES]],
            )
        return outcomes

    def _count_refusals(self, refusals: list[RequestError]) -> None:
        """Count refused client inputs by reason (once per reason of a batch)."""
        counts: dict[str, int] = {}
        for refusal in refusals:
            reason = _REFUSAL_REASONS.get(refusal.kind, "invalid")
            counts[reason] = counts.get(reason, 0) + 1
        for reason, count in counts.items():
            self.metrics.refused(reason, count)

    def _refusal_for_all(self) -> RequestError | None:
        """Why this channel takes no transaction now (halted, or an auditor), else None."""
        if self.halted:
            return RequestError(ErrorKind.UNAVAILABLE, self.halted)
        if self.consensus.is_auditor:
            return RequestError(
                ErrorKind.DENIED,
                f"this peer audits channel {self.name}: it serves its data but takes no transactions",
            )
        if self.clock_off is not None and self._behind_the_quorum:
            return RequestError(
                ErrorKind.UNAVAILABLE,
                f"{self.clock_off}, and blocks of channel {self.name} it refused for their time "
                "became final all the same: what it took would not be. Set its clock right "
                "(NTP), or send to another peer",
            )
        return None

    @property
    def clock_off(self) -> str | None:
        """How this peer's clock is off the RadioStation's, as its node was told (None: it is
        not). With `_behind_the_quorum` (a block this peer refused for its time became final
        all the same, and none was final on time here since) the two together say that it is
        this peer's clock that is wrong, not the RadioStation's: client transactions are
        refused. A block one leader stamped wrong, or anyone forged, never becomes final (the
        others refuse it too), so it is no evidence (review). The evidence lasts while no block
        is final on time here: it lasted a minute, and a channel idle longer took (and lost)
        transactions again (clock review)."""
        return self._clock_off

    @clock_off.setter
    def clock_off(self, off: str | None) -> None:
        self._clock_off = off
        if off is None:
            self._behind_the_quorum = False

    def _new_txs(self, items: list[dict[str, Any]]) -> list[Transaction | RequestError]:
        refused = self._refusal_for_all()
        if refused is not None:
            self._count_refusals([refused] * len(items))
            return [refused] * len(items)
        outcomes: list[Transaction | RequestError] = []
        now_us = int(self.clock() * 1_000_000)
        room, refusal = self._admission(now_us / 1_000_000)
        refusals: list[RequestError] = []
        taken_bytes = 0  # of the transactions taken so far in this batch
        for index, data in enumerate(items):
            try:  # one microsecond apart: equal submissions in one batch stay distinct
                tx = self._new_tx(data, now_us + index, room, refusal, taken_bytes)
                outcomes.append(tx)
                room -= 1
                taken_bytes += tx.held_bytes
            except RequestError as exc:
                outcomes.append(exc)
                refusals.append(exc)
        if refusals:
            self._count_refusals(refusals)
        self._reserve([o for o in outcomes if isinstance(o, Transaction)])
        return outcomes

    def _reserve(self, txs: list[Transaction]) -> None:
        """Hold the room admission gave `txs` (the pool's count and bytes, the rate's tokens)
        until they are pooled or refused, so that the batches admitted meanwhile (while their
        balances are asked, while the intake log is written) do not take the same room."""
        self._reserved += len(txs)
        self._reserved_bytes += sum(tx.held_bytes for tx in txs)
        self._reserved_hashes.update(tx.hash for tx in txs)
        if self._rate is not None:
            self._rate.take(len(txs))

    def _release(self, txs: list[Transaction], *, pooled: bool) -> None:
        """End the reservation of `txs`: pooled, the pool counts them now; refused (balance,
        disk) or given up by their client, they give their rate tokens back as well (the rate
        counts the transactions a peer takes)."""
        self._reserved -= len(txs)
        self._reserved_bytes -= sum(tx.held_bytes for tx in txs)
        self._reserved_hashes.difference_update(tx.hash for tx in txs)
        for tx in txs:
            share = self._spend_shares.pop(tx.hash, None)
            if share is not None:
                left = self._reserved_spend[share[0]] - share[1]
                if left > 0:
                    self._reserved_spend[share[0]] = left
                else:
                    del self._reserved_spend[share[0]]
        if self._rate is not None and not pooled:
            self._rate.give_back(len(txs))

    def _admission(self, now: float) -> tuple[int, str]:
        """How many client transactions the pool takes now, and why it takes no more: none while
        a backlog builds up (at least TX_POOL_ADMIT_BACKLOG transactions wait for a block, the
        oldest of them for TX_POOL_ADMIT_WAIT seconds or more, or as long as a certified round
        takes here if that is longer), else up to the intake limit. Both count this peer's own
        transactions only (the pool's share this peer writes, mempool.writer_of): what the
        others relay takes a share of its own, and a validator relaying a flood of its own
        refused every client of the others (review)."""
        pool, me = self.consensus.pool, self.signer.address
        self._signers()  # the writers sharing the pool, as they are now
        held = pool.count_of(me) + self._reserved
        if held >= self._admit_backlog:
            count, waited = self.consensus.backlog(now, me)
            # a healthy wait is a round: longer than TX_POOL_ADMIT_WAIT where rounds take longer
            # (peers far apart refused clients at loads they carried, review), but no longer
            # than a round may last (one certified after a long stall is timed from its start)
            pace = min(self.consensus.round_pace(), self.consensus.config.max_round_timeout)
            limit = max(self._admit_wait, pace)
            if count >= self._admit_backlog and waited >= limit:
                return 0, (
                    f"{count} transactions wait for a block, the oldest for {waited:.1f} s "
                    f"(limit {limit:.1f} s); the channel is at capacity, try again shortly"
                )
        limit = min(self._admit_max, pool.share_size(me))
        refusal = (
            f"the transaction pool holds {held} transactions of this peer, the intake limit is "
            f"{limit}; try again shortly"
        )
        room = limit - held
        if self._rate is not None and (allowed := self._rate.available(now)) < room:
            room, refusal = (
                allowed,
                (
                    f"this peer takes {self._rate.rate:g} transactions a second "
                    "(TPS_LIMIT_PER_SEC); try again shortly"
                ),
            )
        return room, refusal

    def _new_tx(
        self, data: dict[str, Any], now_us: int, room: int, refusal: str, taken_bytes: int
    ) -> Transaction:
        try:
            raw = canonical.encode(data, max_depth=MAX_DATA_DEPTH)
        except EncodingError as exc:  # floats, lone surrogates, nesting, huge integers
            raise RequestError(ErrorKind.INVALID, f"transaction data refused: {exc}") from None
        limit = int(self.config.MAX_TX_BYTES)
        if len(raw) > limit:
            raise RequestError(
                ErrorKind.INVALID, f"transaction data is {len(raw)} bytes, limit {limit}"
            )
        if room <= 0:
            raise RequestError(ErrorKind.POOL_FULL, refusal)
        tx = Transaction.create_v1(self.name, data, now_us, self.signer, checked=True)
        if len(tx.encode()) > limit:  # the signed envelope adds a few hundred bytes
            raise RequestError(
                ErrorKind.INVALID, f"transaction is {len(tx.encode())} bytes, limit {limit}"
            )
        self._check_pool_bytes(tx, taken_bytes)
        return tx

    def _check_pool_bytes(self, tx: Transaction, taken_bytes: int) -> None:
        """POOL_FULL unless `tx` fits this peer's share of the pool beside what it holds there,
        what is reserved on its way to it and `taken_bytes` taken before it in the same batch."""
        pool = self.consensus.pool
        held = pool.bytes_of(self.signer.address) + self._reserved_bytes + taken_bytes
        share = pool.share_bytes(self.signer.address)
        if held + tx.held_bytes > share:
            raise RequestError(
                ErrorKind.POOL_FULL,
                f"this peer's transactions hold {held} bytes of memory with those on their way "
                f"to the pool, its share is {share} (1/{max(1, pool.writers)} of "
                f"TX_POOL_MAX_BYTES {pool.max_bytes}); try again shortly",
            )

    def pooled_transaction(self, signature: bytes) -> Transaction | None:
        """The pooled transaction with this signature (a proposal's are taken from the pool when
        their bytes are the same, instead of being decoded and hashed again)."""
        return self.consensus.pool.by_signature(signature)

    async def receive_txs_in_turns(
        self, txs: list[Transaction], relayer: str | None = None
    ) -> None:
        """`receive_txs`, the signatures it would recover checked first a slice of the event loop
        at a time (loopchain.p2p.turns): a relayed batch holds up to a thousand. A batch with a
        forged signature is dropped from the first one on: a peer relays only transactions it
        checked, so its sender is faulty, and judging the rest one by one let it replay a batch
        of a thousand forgeries built once, each time costing this peer a thousand recoveries
        (~100x the CPU it cost the sender). Those checked before the forgery are taken.
        `relayer` (a peer over TLS): its v3 transactions are taken while it takes transactions
        from clients, or were stamped before it stopped (an auditor takes none from clients, and
        those it relayed made its operator's accounts write through it: review)."""
        if relayer is not None:
            txs = self._relayed_by_a_writer(txs, relayer)
        if self.consensus.far_behind:
            # syncing far behind, this peer could neither propose them nor tell the final ones
            # apart: they come in the synced blocks, or stay in their sender's pool until then.
            # Pooled, they cost a recovery each and filled the pool (~2 KB each in memory, kept
            # by the allocator after: a peer synced 30,000 blocks under load with 150 MB more)
            self.metrics.refused("relayed_syncing", len(txs))
            return
        now, parties = self.clock(), self._signers()
        # those in final blocks are left out first (an index read each): a batch of final
        # transactions replayed, which anyone who can read blocks may send, cost a thousand
        # recoveries each time, only for the pool to refuse them after
        consensus, kept, worth = self.consensus, [], []
        coming = _Coming(consensus.pool)
        for tx in txs:
            held = consensus.known_transaction(tx.hash) is not None
            if not held and consensus.is_final(tx):
                continue
            kept.append(tx)
            if not held and self._worth_checking(tx, now, parties, relayer, coming):
                worth.append(tx)
        txs = kept
        if await check_signatures(worth):
            self.receive_txs(txs, relayer)
            return
        forged = next(tx for tx in worth if not tx.signature_checked and not tx.verify_signature())
        # those checked before it are good and pooled: the same batch replayed then costs one
        # recovery, not as many as it holds (one forgery put last made each replay cost them all)
        self.receive_txs([tx for tx in worth if tx.signature_checked], relayer)
        self.metrics.refused("relayed_invalid", len(txs))
        REFUSALS.refused(
            "channel %s: dropped relayed transaction %s: its signature is not its sender's (%d "
            "of its batch dropped with it: a peer relays only transactions it checked)",
            self.name,
            forged.hash_hex,
            len(txs) - 1,
        )

    def _relayed_by_a_writer(self, txs: list[Transaction], relayer: str) -> list[Transaction]:
        """`txs` less the v3 transactions `relayer` could not have taken from a client (see
        receive_txs_in_turns; a v1 one is judged by its signer, _signer_problem)."""
        if all(tx.version == V1 for tx in txs):
            return txs
        until = self._signers().get(relayer)
        kept = [
            tx
            for tx in txs
            if tx.version == V1 or (until is not None and tx.timestamp / 1_000_000 <= until)
        ]
        if len(kept) < len(txs):
            self.metrics.refused("relayed_invalid", len(txs) - len(kept))
            REFUSALS.refused(
                "channel %s: dropped %d v3 transactions peer %s relayed: it takes none from "
                "clients (it audits the channel)",
                self.name,
                len(txs) - len(kept),
                relayer,
            )
        return kept

    def _signers(self) -> dict[str, float]:
        """Who may sign a relayed v1 transaction, and until when (the clock's seconds; inf: now
        too): the parties that take transactions from clients, so not the auditors (a review
        had an auditor's own transaction made final by relaying it: its REST refuses to take
        one). A validator that has become an auditor signed its clients' transactions until
        then: those it acknowledged before the handover still reach a block (it gossips them),
        while it signs none after. Those it signed are bounded by TX_TIMESTAMP_WINDOW, as is
        what is kept of it here."""
        now = self.clock()
        # (a validator the newest set makes an auditor takes its clients' transactions until the
        # chain hands over: it is no auditor to itself while the chain's set names it)
        writers = (self.member_ids() - self.auditor_ids()) | self._chain_voters()
        seen = self._writers_seen
        for writer in writers:
            seen[writer] = now
        window = float(self.config.TX_TIMESTAMP_WINDOW)
        for peer, at in list(seen.items()):
            if now - at > window and peer not in writers:
                del seen[peer]
        # they share the pool (the RadioStation, a member to call the channel, takes none)
        self.consensus.pool.writers = len(seen.keys() - {self.settings.issuer})
        return {**seen, **dict.fromkeys(writers, math.inf)}

    def _worth_checking(
        self,
        relayed: Transaction,
        now: float,
        parties: dict[str, float],
        relayer: str | None,
        coming: _Coming,
    ) -> bool:
        """Whether `receive_txs` would recover the signature of `relayed`, one this peer does not
        hold: of this channel, signed by whom it must be, that the pool would ever take, of a
        writer whose share of the pool has room beside those `coming` (counted here)."""
        if not relayed.belongs_to(self.name) or _signer_problem(relayed, parties):
            return False
        writer = writer_of(relayed, relayer)
        if not coming.fits(writer, relayed):
            return False
        if _network_problem(relayed, self.nid):
            return False
        try:
            self.consensus.pool.check(relayed, now)
        except TxRefused:
            return False
        coming.add(writer, relayed)
        return True

    def receive_txs(self, txs: list[Transaction], relayer: str | None = None) -> None:
        """Transactions relayed by another peer (`relayer`, when known: TLS), each checked; a bad
        one is dropped, counted, and the batch's drops logged in one line. One this peer already
        holds, pooled or in a proposed block, is taken as held: its signature is not recovered a
        second time (a proposal often comes before the gossip). One whose writer holds its share
        of the pool is dropped unchecked (its own peer holds it)."""
        good = []
        dropped: list[tuple[Transaction, str]] = []
        now, parties = self.clock(), self._signers()
        full, coming = 0, _Coming(self.consensus.pool)
        for relayed in txs:
            known = self.consensus.known_transaction(relayed.hash)
            tx = relayed if known is None else known
            problem: str | None = None
            writer = writer_of(tx, relayer)
            if known is None and not coming.fits(writer, tx):
                full += 1
                continue
            if not tx.belongs_to(self.name):
                problem = f"it belongs to channel {tx.channel!r}"
            elif (problem := _network_problem(tx, self.nid)) is not None:
                pass
            else:
                try:
                    self.consensus.pool.check(tx, now)
                except TxRefused as exc:
                    problem = str(exc)
                else:
                    if known is None:  # (one held was taken: its signer was a party then)
                        problem = _signer_problem(tx, parties)
                    if problem is None and not tx.verify_signature():
                        problem = "its signature is not its sender's"
            if problem is not None:
                dropped.append((tx, problem))
                continue
            good.append(tx)
            if known is None:
                coming.add(writer, tx)
        if dropped:
            self.metrics.refused("relayed_invalid", len(dropped))
            first, problem = dropped[0]
            more = f" ({len(dropped) - 1} more of its batch dropped)" if len(dropped) > 1 else ""
            REFUSALS.refused(
                "channel %s: dropped relayed transaction %s: %s%s",
                self.name,
                first.hash_hex,
                problem,
                more,
            )
        if full:
            self.metrics.refused("relayed_pool_full", full)
        good = self._note_payment_checks(good)
        if good:
            self._dispatch(m.TxsReceived(tuple(good), relayer=relayer))

    def _note_payment_checks(self, good: list[Transaction]) -> list[Transaction]:
        """`good` (relayed), with its v3 transactions new here noted for their senders'
        balances to be asked (_check_relayed_payments); those past MAX_PAYMENT_CHECKS left out
        (their senders' peers hold them)."""
        kept = []
        checks = self._payment_checks
        for tx in good:
            if tx.version == V3 and tx.hash not in checks and tx.hash not in self.consensus.pool:
                if len(checks) >= MAX_PAYMENT_CHECKS:
                    self.metrics.refused("relayed_unchecked")
                    continue
                checks[tx.hash] = tx
                self._payments_due.set()
            kept.append(tx)
        return kept

    def _known_payer(self, tx: Transaction) -> bool:
        """Whether `tx`'s sender (pooled) was seen, within PAYER_KEPT_S, holding what its pooled
        transactions may cost."""
        sender = tx.icon().sender
        seen = self._payers.get(sender)
        if seen is None or time.monotonic() - seen[1] > PAYER_KEPT_S:
            return False
        return seen[0] >= self.consensus.pool.spend_of(sender)

    def _unpaid(
        self, asked: list[Transaction], held: list[tuple[int, int, int]]
    ) -> tuple[bytes, ...]:
        """Of `asked` (pooled), those their senders holding `held` cannot pay for: a sender's
        balance pays for its other pooled transactions first, then for these in order. A sender
        that can pay for some is kept as a payer (`_known_payer`)."""
        pool = self.consensus.pool
        asked_cost: collections.Counter[str] = collections.Counter()
        for tx in asked:
            asked_cost[tx.icon().sender] += _max_cost(tx)
        left: dict[str, int] = {}
        unpaid = []
        for tx, (balance, _, _) in zip(asked, held, strict=True):
            sender, cost = tx.icon().sender, _max_cost(tx)
            if sender not in left:
                left[sender] = balance - (pool.spend_of(sender) - asked_cost[sender])
                self._payers[sender] = (balance, time.monotonic())
                self._payers.move_to_end(sender)
            if left[sender] >= cost:
                left[sender] -= cost
            else:
                unpaid.append(tx.hash)
        while len(self._payers) > PAYERS_KEPT:
            self._payers.popitem(last=False)
        return tuple(unpaid)

    async def _balances_now(self, txs: list[Transaction]) -> list[tuple[int, int, int]] | None:
        """The balances of `txs`' senders from the state the SCORE holds, not waiting for its
        commits; None when it cannot say now: down, busy past SCORE_QUERY_TIMEOUT (a long block
        executing), or its state more than PAYMENT_STATE_LAG blocks behind the recorded results
        (a SCORE replaying from an empty state answered 0 for all)."""
        try:
            executed = self.store.executed()
            held = await self._ask_score(
                self.score.balances([tx.icon().sender for tx in txs], current=False)
            )
        except RequestError:
            return None
        except (StorageError, BlockStoreError) as exc:
            self.storage_failed(exc)
            return None
        recorded = executed[0] if executed is not None else -1
        if min(answer[2] for answer in held) < recorded - PAYMENT_STATE_LAG:
            return None
        return held

    async def _check_relayed_payments(self) -> None:
        """Drop from the pool the relayed v3 transactions whose senders cannot pay for them, as
        a client's are refused at intake: their senders' balances asked together, once they are
        pooled (the relay goes on meanwhile). Relayed from accounts holding nothing, they were
        pooled up to TX_POOL_MAX, past the admission limits, refusing every client of this peer
        after, and filled blocks at no fee (review). When the SCORE cannot say, they stay."""
        checks = self._payment_checks
        while True:
            await self._payments_due.wait()
            self._payments_due.clear()
            while checks:
                batch = [checks.pop(h) for h in list(itertools.islice(checks, MAX_SENDERS_ASKED))]
                pooled = [tx for tx in batch if tx.hash in self.consensus.pool]
                asked = [tx for tx in pooled if not self._known_payer(tx)]
                if not asked or self.score.disabled:
                    continue  # a SCORE given up (its state is not the chain's): they stay
                held = await self._balances_now(asked)
                if held is None:  # the SCORE cannot say yet: asked again after a pause (kept
                    # unchecked, a long replay let a flood relayed meanwhile stay for good)
                    for tx in asked:
                        checks.setdefault(tx.hash, tx)
                    await asyncio.sleep(PAYMENT_RETRY_S)
                    continue
                unpaid = self._unpaid(asked, held)
                if unpaid:
                    self.metrics.refused("relayed_unpaid", len(unpaid))
                    REFUSALS.refused(
                        "channel %s: dropped %d relayed transactions from the pool (%s first): "
                        "their senders cannot pay for them",
                        self.name,
                        len(unpaid),
                        unpaid[0].hex(),
                    )
                    self._dispatch(m.TxsUnpaid(unpaid))

    async def receive_in_turns(self, event: m.Event) -> None:
        """`receive`, the signatures of a proposal that this peer would check (not pooled) checked
        first a slice of the event loop at a time (loopchain.p2p.turns)."""
        self._check_channel(event)
        if isinstance(event, m.ProposalReceived) and self.consensus.would_check(event.block):
            await check_signatures(event.block.transactions)
        self._dispatch(event)

    def receive(self, event: m.Event) -> None:
        """A consensus message from another peer (refused when it names another channel)."""
        self._check_channel(event)
        self._dispatch(event)
        if isinstance(event, m.ValidatorsChanged):
            self._judge_genesis_edit(event.validators)

    def take_newest_set(self, validators: ValidatorSet) -> None:
        """The set the RadioStation just answered is its newest (`receive`), judged against the
        one this peer holds (`_judge_set_version`). Not a set from elsewhere: the grant of a
        cached registration, or the one a restarted channel worker was started with, is older
        than the chain's after any set change (review: it was warned of as a RadioStation
        restored from an older registry)."""
        held = self.consensus.latest_validators
        self.receive(m.ValidatorsChanged(validators))
        self._judge_set_version(validators, held)

    def _judge_chain_issuer(self, issuer: str) -> None:
        """An ERROR when the stored chain's validator sets were signed by another RadioStation
        than the one this peer registered with: the store is another network's (put in place of
        this one's: the peer ran on the other chain, its REST serving it, and refused this
        network's blocks and complaints as "not a validator", with only INFO lines), or that
        RadioStation lost its key (its sets are refused then). Said once, at open."""
        chain = self.consensus.tip.next_validators
        if chain is None or not chain.issuer or chain.issuer == issuer:
            return
        log.error(
            "channel %s: this peer's store holds a chain (height %d) whose validator sets "
            "RadioStation %s signed, but the RadioStation it registered with signs as %s: the "
            "store is another network's (move the channel's store aside: the peer syncs this "
            "network's chain then), or that RadioStation lost its key (put its radiostation_key "
            "back from a backup, and restart it and this peer). Until then this peer cannot "
            "follow this network's validator sets",
            self.name,
            self.consensus.tip.height,
            chain.issuer,
            issuer,
        )

    def _judge_set_version(self, newest: ValidatorSet, held: ValidatorSet | None) -> None:
        """Warn (once a version and content) when the RadioStation's newest set is older than
        the one this peer holds, or other content under its version: a RadioStation restored
        from an older copy of its registry (or whose registry was lost, or a standby behind the
        one that issued it) serves versions the peers hold already, which they ignore, and
        nothing said so: a validator "unlisted (channel version 5)" by the operator kept voting
        (operator review)."""
        if held is None or held.channel != newest.channel:
            return
        if newest.version > held.version or (
            newest.version == held.version and newest.hash == held.hash
        ):
            return
        if not newest.verify_issuer(self.consensus.issuer):
            return  # (refused as not the RadioStation's, said apart)
        seen = (newest.version, newest.hash)
        if seen == self._stale_set_warned:
            return
        self._stale_set_warned = seen
        log.warning(
            "channel %s: the RadioStation serves validator set version %d, %s version %d this "
            "peer holds: it was restored from an older copy of its registry, lost it, or is "
            "behind the RadioStation that issued it. Its changes are not taken (peers ignore a "
            "version they hold) until it serves a version above %d: restore its newest "
            "registry.json",
            self.name,
            newest.version,
            "older than" if newest.version < held.version else "with other content than",
            held.version,
            held.version,
        )

    def _judge_genesis_edit(self, newest: ValidatorSet) -> None:
        """Warn (once a set version) when the RadioStation's newest set states other genesis
        data than this chain's genesis block: the chain keeps its own (its nid, score_step_limit
        and leader_block_creation_limit), but a peer starting from an empty store takes the
        newest set's until it holds block 0, and with another leader turn it may jump rounds
        far from the others' (review: a stated turn of 0xffff added later kept such a validator
        out of the votes for 65,535 rounds). Editing the file after the chain exists was said
        nowhere before."""
        if newest.version <= self._genesis_edit_warned:
            return
        chain = self.stated_genesis  # the genesis block's once it is stored (read once)
        if not self._genesis_known or newest.genesis == (chain.encoded() if chain else ""):
            return
        self._genesis_edit_warned = newest.version
        log.warning(
            "channel %s: the RadioStation's validator set version %d states other genesis_data "
            "than this chain's genesis block: the chain keeps its own (nid, score_step_limit, "
            "leader_block_creation_limit), but a peer starting from an empty store follows the "
            "newer one until it holds block 0 and may take other leader turns meanwhile. State "
            "the chain's genesis_data again in channel_manage_data.json (the RadioStation keeps "
            'the genesis it gave as the channel\'s "genesis" in its registry.json: if it keeps '
            "another, remove that while it is stopped), or start a new channel",
            self.name,
            newest.version,
        )

    def _check_channel(self, event: m.Event) -> None:
        named = _channel_of(event)
        if named is not None and named != self.name:
            kind = type(event).__name__.removesuffix("Received").removesuffix("Fetched").lower()
            REFUSALS.refused("channel %s: refused a %s of channel %s", self.name, kind, named)
            self.metrics.refused("wrong_channel")
            raise RequestError(
                ErrorKind.INVALID, f"message belongs to channel {named!r}, not {self.name!r}"
            )

    def find_tx(self, tx_hash: bytes) -> TxLookup | None:
        # the pool first: a pooled transaction is in no final block (none enters the pool once
        # final, and each leaves it as its block becomes final), and a client polling for its
        # own waiting one costs no read that misses (the store's filter knows no timestamp)
        pooled = self.consensus.pool.get(tx_hash)
        if pooled is not None:
            return TxLookup(pooled, -1, b"")
        found = self.store.find_transaction(tx_hash)
        if found is None:
            return None
        tx, place = found
        return TxLookup(tx, place.height, place.block_hash, place.tx_index)

    def last_block_hash(self) -> bytes:
        """The hash of the last final block (what get_block(-1, b"") serves), b"" for none."""
        return self.store.tip_hash()

    def get_block(self, height: int, block_hash: bytes) -> StoredBlock | None:
        """A block by hash (final, in the tree, or voted for before a restart), or the final one
        at `height` (-1: the last), as served: final blocks as stored, not decoded."""
        if not block_hash:
            return self.store.stored_block(height)
        stored = self.store.stored_block_by_hash(block_hash)
        if stored is not None:
            return stored
        node = self.consensus.tree.get(block_hash)
        if node is not None:
            return StoredBlock.of(node.block, node.certificate)
        pending = self.store.pending_block(block_hash)  # voted for before a restart
        return StoredBlock.of(pending, None) if pending is not None else None

    def dropped(self, tx_hash: bytes) -> str | None:
        """Why a transaction this peer does not hold was dropped, when it knows (NOT_FOUND's
        answer says so): an acknowledged transaction is final unless the chain makes no block
        for longer than TX_TIMESTAMP_WINDOW, when it leaves the pools with its timestamp. That
        it will not be final is said once this peer's final chain has a block stamped past its
        window (a block holds no transaction stamped further from its own timestamp, and blocks
        after it are stamped later); before, a block not final yet may still hold it (it was
        said "send it again", and then made final with the one sent again, review)."""
        for_good = self.consensus.expired_for_good(tx_hash)
        stamp = self.consensus.pool.expired_stamp(tx_hash)
        if for_good is None or stamp is None:
            return None
        window = float(self.config.TX_TIMESTAMP_WINDOW)
        expired = (
            f"it expired here: this peer saw no block take it within {window:g} s of its "
            "timestamp (TX_TIMESTAMP_WINDOW) and dropped it"
        )
        if for_good:
            return f"{expired}; it will not be final: send it again"
        past = stamp + (self.consensus.block_window_us() or 0)
        when = datetime.fromtimestamp(past / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"{expired}; a block not final yet may still hold it: ask again once a block "
            f"stamped after {when} is final"
        )

    def tx_result(self, tx_hash: bytes) -> TxOutcome | None:
        """A transaction's SCORE result (code 2, not executed, while it waits) and its place."""
        if tx_hash in self.consensus.pool:  # waiting for a block (see find_tx)
            return TxOutcome(execution.NOT_INVOKED, NOT_INVOKED_TEXT, executed=False)
        place = self.store.transaction_place(tx_hash)
        if place is None:
            return None
        recorded = self.store.tx_result(tx_hash, place.height)
        code, message = recorded[:2] if recorded else (execution.NOT_INVOKED, NOT_INVOKED_TEXT)
        return TxOutcome(
            code,
            message,
            executed=recorded is not None,
            block_height=place.height,
            block_hash=place.block_hash,
            tx_index=place.tx_index,
            steps=recorded.steps if recorded else 0,
            cumulative_steps=recorded.cumulative_steps if recorded else 0,
            events_json=recorded.events_json if recorded else "",
        )

    async def query(self, params_json: str) -> str:
        """The SCORE's answer to a query."""
        started = time.monotonic()
        ok = False
        try:
            answer = await self._ask_score(self.score.query(params_json))
            ok = True
            return answer
        finally:
            elapsed = round(time.monotonic() - started, 6)
            monitor_log.event("Query", channel=self.name, elapsed=elapsed, ok=ok)

    async def _ask_score(self, call: Awaitable[T]) -> T:
        """A read of the SCORE process, its failures as the client's errors, told without this
        machine's paths (a SCORE's failure names its store, its socket, its package's folder:
        the SCORE status and the logs keep them for the operator)."""
        try:
            return await call
        except ScoreUnavailable as exc:
            reason = without_paths(str(exc))
            if exc.deadline_exceeded:  # REST -900 (504): the SCORE took too long, it is not down
                raise RequestError(
                    ErrorKind.TIMEOUT, f"SCORE of {self.name} did not answer in time: {reason}"
                ) from None
            raise RequestError(
                ErrorKind.SCORE_DOWN, f"SCORE of {self.name} unavailable: {reason}"
            ) from None
        except ScoreRejected as exc:
            raise RequestError(
                ErrorKind.INVALID, f"SCORE refused the query: {without_paths(str(exc))}"
            ) from None

    def score_status(self) -> ScoreInfo:
        """The SCORE's status as /api/v1/status/score shows it, its reason without this machine's
        paths (gRPC names the SCORE's socket, a failed store its folder: the logs keep them)."""
        info = self.score.info()
        return dataclasses.replace(info, message=without_paths(info.message))

    def block_range(
        self, from_height: int, max_blocks: int, max_bytes: int = 0
    ) -> BlockRangeResult:
        """Final blocks from `from_height` on: at most `max_blocks`, and at most `max_bytes` of
        them (0: this peer's own bound, range_reply_bytes). One block always goes, and two
        within this peer's bound whatever `max_bytes` says: a range proves its blocks final but
        the last (by the next one's certificate; the last by the proof when it is the tip), so
        one block alone proved nothing, and a caller asking for fewer bytes synced none."""
        tip = self.store.tip_height()
        last = min(tip, from_height + max_blocks - 1)
        blocks: list[tuple[bytes, bytes]] = []
        largest = max_proposal_bytes(int(self.config.MAX_BLOCK_KBYTES))
        size = 0
        bound = min(int(self.config.GRPC_MAX_MESSAGE_BYTES) // 2, range_reply_bytes(largest))
        asked = min(max_bytes, bound) if max_bytes > 0 else bound
        for height in range(max(0, from_height), last + 1):
            encoded = self.store.encoded_at(height)
            if encoded is None:
                break
            size += len(encoded[0]) + len(encoded[1])
            if (blocks and size > bound) or (len(blocks) >= 2 and size > asked):  # next call
                last = height - 1
                break
            blocks.append(encoded)
        proof = None
        if blocks and last == tip:
            proof = self.store.commit_proof()
        return BlockRangeResult(blocks, tip, proof)

    def gauges(self) -> ChannelGauges:
        """The channel's figures as a scrape reads them."""
        state = self.consensus
        executed = self.store.executed()
        return ChannelGauges(
            height=state.tip.height,
            executed_height=executed[0] if executed else -1,
            round=state.round,
            view_changes=state.view_changes,
            complaints=state.complaint_count,
            pool_size=len(state.pool),
            pool_bytes=state.pool.size_bytes,
            is_leader=state.is_leader,
            round_timeout=state.paced_timeout(),
        )

    def status(self) -> dict[str, Any]:
        """`validator_count` counts the set in force; while a new set is pending (voted jointly
        until the chain hands over to it) `pending_validator_count` counts that one. A quorum
        needs each set's, so until the handover the network tolerates the faults the set in
        force tolerates: one of three stopped halts a channel going from three validators to
        four (a benchmark that took the union of both for the set in force killed a leader
        then and waited for good). StorageError when the store's folder was removed or replaced
        (BlockStore.check_in_place: the heartbeat, asking this, stops the channel then)."""
        self.store.check_in_place()
        state = self.consensus
        voting = state.voting_set
        in_force, pending = (
            (voting.old, voting.new) if isinstance(voting, JointSet) else (voting, None)
        )
        held = state.latest_validators
        if held is not None and held.issuer != state.issuer:
            held = None  # (another RadioStation's numbering: a store of another network)
        return {
            "channel": self.name,
            "peer_id": self.signer.address,
            "peer_target": self.settings.my_target,
            "peer_type": 1 if state.is_leader else 0,
            "role": "auditor" if state.is_auditor else "validator",
            "nid": hex(self.nid),
            "leader_id": state.leader or "",
            "block_height": state.tip.height,
            "block_hash": state.tip.block_hash.hex(),
            "total_tx": self.store.total_tx(),
            "made_block_count": state.made_block_count,
            "leader_complaint": state.complaint_count,
            "audience_count": max(0, len(self.members) - 1),
            "consensus": "LFT",
            "tx_pool_size": len(state.pool),
            "round": state.round,
            "validator_count": len(in_force.validators) if in_force else 0,
            # the newest set held (the heartbeat says it: the RadioStation warns when it is behind
            # or its own set of that version has other content)
            "set_version": held.version if held is not None else 0,
            "set_hash": held.hash.hex() if held is not None else "",
            "pending_validator_count": len(pending.validators) if pending else 0,
            "executed_height": executed[0] if (executed := self.store.executed()) else -1,
            "state_root": executed[1].hex() if executed else "",
            "score_id": self.score.info().id,
            "score_version": self.score.info().version,
        }

    # ------------------------------------------------------------ consensus I/O

    def _dispatch(self, event: m.Event) -> list[m.Action]:
        if self.halted:
            return []
        try:
            actions = self.consensus.handle(event, self.clock())
            self._execute(actions)
        except (StorageError, BlockStoreError) as exc:
            self.storage_failed(exc)
            return []
        return actions

    def storage_failed(self, exc: StorageError | BlockStoreError) -> None:
        """A write to the store failed (disk full, read-only, failing) or was refused (the
        consensus made final what the store will not hold: a transaction final twice, a height
        out of order), or a read the channel cannot go on without found it damaged: this channel
        stops here, before it acts on what it could not record (the peer's other channels go on;
        the peer stops once none is left). What is on disk is whole (every write is one batch),
        so a restart once the storage is fixed goes on."""
        if self.halted:
            return
        failed = "refused" if type(exc) is BlockStoreError else "failed"
        self.halted = f"channel {self.name}: storage {failed}: {exc}"
        log.critical("%s; stopping so that nothing is torn", self.halted)
        monitor_log.event("Error", channel=self.name, kind="storage", message=self.halted[:500])
        if self.on_fatal is not None:
            advice = storage_advice(exc)
            self.on_fatal(f"{self.halted}. {advice}" if advice else self.halted)

    def _execute(self, actions: list[m.Action]) -> None:
        # what these actions write goes to disk first, in one synced batch: the blocks made final
        # and the vote record of the same event cost one sync of the loop, not one each
        commits = [
            (a.block, a.certificate, a.proof) for a in actions if isinstance(a, m.CommitBlock)
        ]
        votes = [
            (a.highest_vote_round, a.high_qc, a.voted)
            for a in actions
            if isinstance(a, m.PersistSafety)
        ]
        if commits or votes:
            self.store.save(commits, votes)
        if commits:
            self._judge_own_clock([block for block, _, _ in commits])
        sets_before = self._final_sets
        if commits:
            self._final_sets = self._chain_sets()
        saved = 0
        for action in actions:
            match action:
                case m.PersistSafety():
                    failpoints.hit("vote-persisted")
                case m.CommitBlock(block):
                    if saved:  # several final blocks at once: catching up
                        failpoints.hit("sync-write")
                    self._committed(block)
                    saved += 1
                case (
                    m.BroadcastProposal(payload)
                    | m.BroadcastCertificate(payload)
                    | m.BroadcastComplaint(payload)
                ):
                    self._recent.append((None, payload))
                    self._want_missing_validators()
                    for peer in self._other_peers():
                        self.transport.send_consensus(peer, self.name, self.signer.address, payload)
                case m.SendVote(to, vote):
                    self._send(to, vote)  # its block was kept with the vote record before
                case m.SendCertificate(to, payload):
                    self._send(to, payload)
                case m.GossipTxs(txs):
                    self.relay.queue(txs)
                case m.ScheduleTimeout(delay, kind, round_):
                    if kind == "round" and delay > UNREACHABLE_WAIT_S and self._hastened(round_):
                        delay = UNREACHABLE_WAIT_S
                    self._schedule(delay, kind, round_)
                case m.RequestSync():
                    self.catchup.want_sync()
                case m.FetchBlock(block_hash, vouched):
                    self.catchup.want_block(block_hash, vouched)
                case m.Rejected(reason, block_hash):
                    REFUSALS.refused("channel %s: rejected %s", self.name, reason)
                    if OFF_THIS_CLOCK in reason and block_hash:
                        self._refused_for_time[block_hash] = None
                        while len(self._refused_for_time) > REFUSED_FOR_TIME_KEPT:
                            del self._refused_for_time[next(iter(self._refused_for_time))]
        if commits:
            self._on_set_changes(sets_before)

    def _judge_own_clock(self, final: list[Block]) -> None:
        """A block this peer refused for its time is final: a quorum's clocks disagree with its.
        A block final on time here (within MAX_TIMESTAMP_SKEW of this clock) says they agree
        again (a clock set right before the RadioStation's next word)."""
        if abs(final[-1].header.timestamp - self.clock() * 1_000_000) <= self._skew_us:
            self._behind_the_quorum = False
        elif any(block.hash in self._refused_for_time for block in final):
            self._behind_the_quorum = True  # (a later one of the same batch is off time too)

    def _chain_sets(self) -> tuple[int | None, int | None]:
        """The versions of the final chain's validator set and of the one pending."""
        tip = self.consensus.tip
        chain_set, pending = tip.next_validators, tip.pending
        return (
            None if chain_set is None else chain_set.version,
            None if pending is None else pending.version,
        )

    def _on_set_changes(self, before: tuple[int | None, int | None]) -> None:
        """A validator set the final chain carries now, or handed over to (after the blocks
        are saved): its fail point, and a line in the log with this peer's role after a
        handover (an operator who unlisted a validator learnt of neither but by polling its
        status: operator review)."""
        (chain_before, pending_before), (chain_now, pending_now) = before, self._final_sets
        tip = self.consensus.tip
        if pending_now is not None and pending_now != pending_before:
            failpoints.hit("set-carried")
            log.info(
                "channel %s: the chain carries validator set version %d (validators: %d); it is "
                "voted on jointly with the set in force until the chain hands over to it",
                self.name,
                pending_now,
                len(tip.pending.validators) if tip.pending else 0,
            )
        if chain_before is not None and chain_now != chain_before:
            failpoints.hit("set-handed-over")
            self._drop_former_members()
            voters = tip.next_validators
            role = "a validator" if voters and self.signer.address in voters else "an auditor"
            log.info(
                "channel %s: the chain handed over to validator set version %s (validators: %d): "
                "this peer is %s",
                self.name,
                chain_now,
                len(voters.validators) if voters else 0,
                role,
            )

    def _committed(self, block: Block) -> None:
        """What follows a final block saved: its transactions leave the intake journal, the SCORE
        is told, and it is counted and logged."""
        self.journal.settle(tx.hash for tx in block.transactions)
        failpoints.hit("block-saved")
        self.score.block_final()
        self.metrics.committed(block)
        monitor_log.event(
            "AddBlock",
            channel=self.name,
            height=block.height,
            hash=block.hash.hex(),
            tx_count=len(block.transactions),
            round=block.header.round,
        )
        now = self.clock()
        # entries no pool would take any more; a clock set back since the last sweep sweeps now
        if not now < self._next_intake_sweep <= now + INTAKE_SWEEP_S:
            self._next_intake_sweep = now + INTAKE_SWEEP_S
            window = float(self.config.TX_TIMESTAMP_WINDOW)
            self.journal.drop_before(int((now - window) * 1_000_000))
        log.info(
            "channel %s: block %d round %d final (%d txs) %s",
            self.name,
            block.height,
            block.header.round,
            len(block.transactions),
            block.hash.hex()[:16],
        )

    def _send(self, peer_id: str, payload: ConsensusPayload) -> None:
        peer = self.members.get(peer_id)
        if peer is None:
            self._note_missing(peer_id)
            self._recent.append((peer_id, payload))  # sent once the member list names it
            if self.on_members_wanted is not None:
                self.on_members_wanted()
            return
        self.transport.send_consensus(peer, self.name, self.signer.address, payload)

    def _note_missing(self, peer_id: str) -> None:
        """Log a message kept for a member without an address: at INFO while the member list may
        still be filling, once at WARNING when it has lacked the member for the grace period."""
        now = time.monotonic()
        waited = now - self._missing_since.setdefault(peer_id, now)
        if waited < MISSING_MEMBER_GRACE_S or peer_id in self._missing_warned:
            log.info(
                "channel %s: no address known yet for peer %s; the message waits for the "
                "member list to name it",
                self.name,
                peer_id,
            )
            return
        self._missing_warned.add(peer_id)
        log.warning(
            "channel %s: no address known for peer %s for %.0f s (the RadioStation does not list "
            "it): messages to it wait until it registers",
            self.name,
            peer_id,
            waited,
        )

    def _want_missing_validators(self) -> None:
        """Ask for the member list again when a validator of the channel has no address here."""
        voting = self.consensus.voting_set
        if self.on_members_wanted is None or voting is None:
            return
        me = self.signer.address
        if any(v.peer_id not in self.members and v.peer_id != me for v in voting.validators):
            self.on_members_wanted()

    def _drop_former_members(self) -> None:
        """After a handover: the members the RadioStation no longer lists, kept while the chain
        counted them as voters (set_members), that it counts no more. They are parties no
        longer: sent nothing, their links let go, their calls refused over TLS. The list is
        asked again only when the RadioStation's version changes, which it did when they were
        unlisted, before the handover: a removed peer was sent the channel's transactions and
        blocks, and answered, for good (review)."""
        if self._listed is None:
            return
        voters = self._chain_voters()
        former = [i for i in self.members if i not in self._listed and i not in voters]
        for peer_id in former:
            del self.members[peer_id]
        if former:
            log.info(
                "channel %s: %s no longer a member (unlisted, and not in the validator set the "
                "chain handed over to)",
                self.name,
                ", ".join(former),
            )

    def _chain_voters(self) -> set[str]:
        """The validators of the chain's final set and of the set its next block would have."""
        state = self.consensus
        sets = (state.tip.next_validators, state.voting_set)
        return {peer_id for voting in sets if voting is not None for peer_id in voting.peer_ids}

    def _hastened(self, round_: int) -> bool:
        """The timer of `round_` waits only UNREACHABLE_WAIT_S: the round is doomed, and fewer
        than HASTENED_FAILURES rounds failed in a row before it."""
        return self.consensus.failed_rounds < HASTENED_FAILURES and self._doomed(round_)

    def _doomed(self, round_: int) -> bool:
        """The leader of `round_` or of the round after it (which certifies its block) is
        another peer that the transport found unreachable, or that gave up `round_` or the next
        by a complaint (it is syncing far behind: ChannelConsensus._give_up)."""
        state = self.consensus
        for leader in state.round_leaders(round_):
            if state.gave_up(leader, round_):
                return True
            peer = self.members.get(leader)
            if peer is not None and self.transport.unreachable(peer):
                return True
        return False

    def _holds_block(self, block_hash: bytes) -> bool:
        """Whether this peer holds block `block_hash`: final, or in the consensus tree."""
        return self.consensus.tree.point(block_hash) is not None or self.store.has_block(block_hash)

    def _other_peers(self) -> list[PeerInfo]:
        return [p for p in self.members.values() if p.peer_id != self.signer.address]

    def _schedule(
        self,
        delay: float,
        kind: str,
        round_: int,
        *,
        since: float | None = None,
        deferrals: int = 0,
    ) -> None:
        if self.halted:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now + max(0.0, delay)
        armed = now if since is None else since

        def fire(hastened: bool = False) -> None:
            self._timers.discard(handle)
            late = 0.0 if hastened else loop.time() - due
            if (
                kind == "round"
                and round_ == self.consensus.round
                and deferrals < TIMER_DEFERRALS
                and late > max(TIMER_LATE_S, delay / 4)
            ):
                # this peer's own loop ran the timer late: what came meanwhile goes first
                self._schedule(min(late, delay), kind, round_, since=armed, deferrals=deferrals + 1)
                return
            complaints = self.consensus.complaint_count
            self._dispatch(m.TimeoutFired(kind, round_))
            if self.consensus.complaint_count > complaints:
                self._log_complaint(round_, loop.time() - armed, late, deferrals)

        handle = loop.call_at(due, fire)
        self._timers.add(handle)
        if kind == "round" and delay > UNREACHABLE_WAIT_S:
            self._watch_leaders(round_, handle, fire)

    def _watch_leaders(
        self, round_: int, timer: asyncio.TimerHandle, fire: Callable[[bool], None]
    ) -> None:
        """Until the round timer `timer` fires, look every UNREACHABLE_WAIT_S whether its round
        has become hastened (its leader crashed after the timer was armed): it fires then."""

        def look() -> None:
            self._timers.discard(probe)
            if timer not in self._timers or round_ != self.consensus.round:
                return  # fired, cancelled, or the round is over
            if self._hastened(round_):
                timer.cancel()
                fire(True)
            else:
                self._watch_leaders(round_, timer, fire)

        probe = asyncio.get_running_loop().call_later(UNREACHABLE_WAIT_S, look)
        self._timers.add(probe)

    def _log_complaint(self, round_: int, waited: float, late: float, deferrals: int) -> None:
        """Why the leader is about to change: the round, how long it waited and how late this
        peer's own event loop ran the timer (a busy or stalled peer shows here, not its leader)."""
        state = self.consensus
        log.info(
            "channel %s: no progress in round %d for %.2f s (timer %.0f ms late, deferred %d "
            "times; leader %s, height %d, %d pooled%s): complaining",
            self.name,
            round_,
            waited,
            late * 1000,
            deferrals,
            state.leader_of_round(round_),
            state.tip.height,
            len(state.pool),
            "; it or the next leader is unreachable or gave the round up"
            if self._doomed(round_)
            else "",
        )


def _channel_of(event: m.Event) -> str | None:
    """The channel a consensus message names inside its signed content."""
    match event:
        case m.ProposalReceived(block) | m.BlockFetched(block):
            return block.header.channel
        case m.VoteReceived(vote):
            return vote.channel
        case m.CertificateReceived(qc):
            return qc.channel
        case m.ComplaintReceived(complaint):
            return complaint.channel
    return None


def _max_cost(tx: Transaction) -> int:
    """What the v3 transaction `tx` may cost its sender at most."""
    owed = max_cost(tx)
    return owed[1] if owed is not None else 0


def _payable(tx: Transaction, held: int, owed: int = 0) -> Transaction | RequestError:
    """The v3 transaction, or why a sender holding `held` loop, `owed` of it to its pooled
    transactions (and those of final blocks not executed yet), cannot pay for it."""
    icon, needed = tx.icon(), _max_cost(tx)
    if held - owed < needed:
        pooled = (
            f", {owed} of it promised to its pooled transactions (or those of final blocks not "
            "executed yet)"
            if owed
            else ""
        )
        return RequestError(
            ErrorKind.INVALID,
            f"out of balance: {icon.sender} holds {held} loop{pooled}; the transaction may need "
            f"{needed} (value {icon.value} + stepLimit {icon.step_limit} x step price "
            f"{coin.STEP_PRICE})",
        )
    return tx


class _Coming:
    """What a relayed batch brings to each writer's share of the pool, counted as its
    transactions are screened: a batch's transactions past the share have no signature
    recovered (a writer holding a few bytes short of its share had every batch checked)."""

    def __init__(self, pool: TxPool) -> None:
        self.pool = pool
        self.count: collections.Counter[str] = collections.Counter()
        self.size: collections.Counter[str] = collections.Counter()

    def fits(self, writer: str, tx: Transaction) -> bool:
        """Whether `tx` fits its writer's share beside those of the batch before it."""
        size = self.size[writer] + tx.held_bytes
        return self.pool.has_room_for(writer, self.count[writer] + 1, size)

    def add(self, writer: str, tx: Transaction) -> None:
        self.count[writer] += 1
        self.size[writer] += tx.held_bytes


def _steps_short(icon: icon_tx.IconTransaction) -> str | None:
    """Why a v3 transaction's stepLimit is below the steps it must cover to be taken
    (coin.intake_steps: every transaction's and its data's, as ICON's nodes refuse it): None when
    it is not. Taken, one of stepLimit 0 from an account holding nothing was in blocks for free,
    failing out of step (review). A call whose limit covers those but not its call still fails
    out of step in its block, and pays its whole stepLimit."""
    needed = coin.intake_steps(icon.data)
    if icon.step_limit >= needed:
        return None
    return (
        f"stepLimit {icon.step_limit:#x} is below the {needed:#x} steps the transaction and its "
        "data use"
    )


def _network_problem(relayed: Transaction, nid: int) -> str | None:
    """Why a relayed v3 transaction is not for this channel: it names another network id (one
    signed for another channel, replayed; a peer checks the nid at intake, so its sender is
    faulty), or its stepLimit is short of its steps (_steps_short)."""
    problem = relayed.network_problem(nid)
    if problem is None and relayed.version == V3:
        try:
            return _steps_short(relayed.icon())
        except (EncodingError, icon_tx.InvalidTransaction) as exc:
            return f"it is not a valid v3 transaction ({exc})"
    return None if problem is None else f"it {problem}"


def _signer_problem(relayed: Transaction, signers: dict[str, float]) -> str | None:
    """Why a relayed transaction cannot be taken for its signer: a v1 transaction is signed by
    the peer that took it from its client, so by a party of the channel that takes transactions
    (`signers`, with until when: ChannelService._signers; a v3 one by its client's account).
    Anyone else's, relayed, skipped that peer's admission, and showed the SCORE a sender no peer
    of the channel is."""
    if relayed.version != V1:
        return None
    until = signers.get(relayed.sender)
    if until is None:
        return (
            f"a v1 transaction signed by {relayed.sender}, who is not a party of the channel "
            "that takes transactions"
        )
    if relayed.timestamp / 1_000_000 > until:
        return (
            f"a v1 transaction signed by {relayed.sender} after it stopped taking transactions "
            "in the channel (it audits it now)"
        )
    return None
