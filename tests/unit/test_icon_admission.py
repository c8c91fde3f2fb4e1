"""Client-signed ICON transactions hold their room in the pool while their senders' balances are
asked: batches that wait on the SCORE together take no more than the pool's count
(TX_POOL_ADMIT_MAX), its bytes (TX_POOL_MAX_BYTES) and the rate (TPS_LIMIT_PER_SEC) allow, the rest
refused as by a full pool (POOL_FULL: REST 503); those the balance check refuses, and those whose
client went away, give their room back at once. The channel services are the unit cluster's (in
memory); the SCORE's balance call is an in-memory stand-in that answers when the test lets it."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopchain.blockchain import coin
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.peer.channel_service import ChannelService
from loopchain.scoreservice.client import ScoreUnavailable
from loopchain.storage.abc import StorageError
from loopchain.types import canonical, icon_tx
from loopchain.types.crypto import Signer
from loopchain.types.icon_tx import make_params, sign_params
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Validator, ValidatorSet
from tests._recoveries import count_recoveries
from tests.unit.test_channel_services import CHANNEL, PEERS, Cluster

pytestmark = pytest.mark.asyncio

NID = 3  # ICON_NID's default, 0x3
BOB = "hx" + "b0" * 20
RICH = 10**30  # loop: pays for any transfer here
ROOM = 5  # transactions each limit below leaves room for
BATCH = 3  # transactions a batch sends: two batches want more than the room


class HeldBalances:
    """ScoreRuntime.balances's stand-in: each call waits until `answer()`; a `poor` address holds
    nothing, any other plenty."""

    def __init__(self, poor: frozenset[str] = frozenset()) -> None:
        self.poor = poor
        self.asked: set[str] = set()
        self.calls: list[list[str]] = []  # the addresses of each call
        self._answer = asyncio.Event()

    @property
    def asks(self) -> int:
        """Addresses asked, in all calls."""
        return sum(len(addresses) for addresses in self.calls)

    async def balances(
        self, addresses: list[str], *, current: bool = True
    ) -> list[tuple[int, int, int]]:
        self.asked.update(addresses)
        self.calls.append(list(addresses))
        await self._answer.wait()
        return [((0 if address in self.poor else RICH), RICH, 0) for address in addresses]

    def answer(self) -> None:
        self._answer.set()


_nonces = iter(range(1, 1 << 30))


def icon_batch(signer: Signer, count: int = BATCH) -> list[str]:
    """`count` distinct signed transfers from `signer`, as a client sends their params."""
    now_us = time.time_ns() // 1000
    texts = []
    for n in range(count):
        nonce = next(_nonces)
        params = make_params(
            sender=signer.address,
            to=BOB,
            value=1,
            step_limit=100_000,
            timestamp_us=now_us + n,
            nid=NID,
            nonce=nonce,
        )
        texts.append(json.dumps(sign_params(params, signer)))
    return texts


def tx_bytes(text: str) -> int:
    """The pooled size of the transaction a client sent as `text`."""
    checked = icon_tx.verify_send_params(canonical.parse(text))
    return Transaction.from_icon(checked, signature_verified=True).held_bytes


@dataclass(frozen=True)
class Limit:
    overrides: dict[str, object]
    refusal: str  # in the refusal's message
    refill: float = 0.0  # transactions a second the limit gives back with time


LIMITS = {
    "count": Limit({"TX_POOL_ADMIT_MAX": ROOM}, "intake limit is 5"),
    # room for ROOM transfers and half of another in a peer's share of the pool (1/PEERS: the
    # writers share it), their sizes differing by a few bytes
    "bytes": Limit(
        {
            "TX_POOL_MAX_BYTES": int(
                PEERS * (ROOM + 0.5) * tx_bytes(icon_batch(Signer.generate(), 1)[0])
            )
        },
        "bytes of memory with those on their way to the pool",
    ),
    "rate": Limit({"TPS_LIMIT_PER_SEC": ROOM}, "TPS_LIMIT_PER_SEC", refill=ROOM),
}


@pytest.fixture(params=list(LIMITS))
def limit(request: pytest.FixtureRequest) -> Limit:
    return LIMITS[request.param]


@pytest.fixture
async def cluster(tmp_path: Path, limit: Limit) -> AsyncIterator[Cluster]:
    """Four channel services under `limit`, stopped after the test."""
    made = Cluster(tmp_path, overrides=limit.overrides)
    yield made
    await made.stop()


def lone_peer(cluster: Cluster, balances: HeldBalances | Holding) -> ChannelService:
    """Peer 0 cut off from the others (it makes no block, so its pool only fills), its SCORE's
    balances answered by `balances`."""
    service = cluster.services[0]
    cluster.network.down.add(service.signer.address)
    service.score.balances = balances.balances  # type: ignore[method-assign]
    return service


async def admitted(
    cluster: Cluster, service: ChannelService, balances: HeldBalances, signer: Signer
) -> asyncio.Task[list[Transaction | RequestError]]:
    """A batch from `signer` submitted, returned once admission decided on it (its balances are
    being asked, or it is answered already)."""
    task = asyncio.create_task(service.create_icon_txs(icon_batch(signer)))

    def decided() -> bool:
        return task.done() or signer.address in balances.asked

    await cluster.wait(decided, f"the admission of {signer.address}'s batch")
    return task


def taken(outcomes: list[Transaction | RequestError]) -> list[Transaction]:
    return [o for o in outcomes if isinstance(o, Transaction)]


def allowance(limit: Limit, since: float) -> int:
    """What the limit may have given back since `since` (a rate refills with time)."""
    return math.ceil((time.monotonic() - since) * limit.refill)


async def test_batches_waiting_on_their_balances_together_take_no_more_than_the_room(
    cluster: Cluster, limit: Limit
) -> None:
    balances = HeldBalances()
    service = lone_peer(cluster, balances)
    began = time.monotonic()
    tasks = [await admitted(cluster, service, balances, Signer.generate()) for _ in range(3)]
    balances.answer()
    outcomes = [o for task in tasks for o in await task]
    accepted = taken(outcomes)
    assert 0 < len(accepted) <= ROOM + allowance(limit, began), outcomes
    assert all(tx.hash in service.consensus.pool for tx in accepted)
    assert len(service.consensus.pool) == len(accepted)
    refused = [o for o in outcomes if isinstance(o, RequestError)]
    assert len(refused) == len(outcomes) - len(accepted)
    for refusal in refused:  # RESOURCE_EXHAUSTED: REST 503 with Retry-After
        assert refusal.kind is ErrorKind.POOL_FULL, refusal
        assert limit.refusal in refusal.message, refusal


async def test_transactions_refused_for_their_balance_give_their_room_back_at_once(
    cluster: Cluster, limit: Limit
) -> None:
    poor, rich = Signer.generate(), Signer.generate()
    balances = HeldBalances(poor=frozenset({poor.address}))
    service = lone_peer(cluster, balances)
    began = time.monotonic()
    unpaid = await admitted(cluster, service, balances, poor)
    paid = await admitted(cluster, service, balances, rich)  # the room left beside `unpaid`
    balances.answer()
    for refusal in await unpaid:
        assert isinstance(refusal, RequestError), refusal
        assert refusal.kind is ErrorKind.INVALID and "out of balance" in refusal.message
    assert len(taken(await paid)) <= ROOM - BATCH + allowance(limit, began)
    later = await service.create_icon_txs(icon_batch(rich))  # the unpaid batch's room
    assert len(taken(later)) == BATCH, later
    assert len(service.consensus.pool) == len(taken(await paid)) + BATCH


async def test_a_batch_whose_client_went_away_during_its_balance_check_gives_its_room_back(
    cluster: Cluster,
) -> None:
    balances = HeldBalances()
    service = lone_peer(cluster, balances)
    gone = await admitted(cluster, service, balances, Signer.generate())
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert gone.cancelled()
    balances.answer()
    signer = Signer.generate()
    outcomes = await service.create_icon_txs(icon_batch(signer) + icon_batch(signer, 2))
    assert len(taken(outcomes)) == ROOM, outcomes
    assert len(service.consensus.pool) == ROOM


async def test_a_transaction_sent_again_is_known_before_its_signature_is_recovered(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a pooled or final transaction is refused as known by its hash: a client
    resending (or replaying) a batch cost a recovery per transaction first (~100 µs each)."""
    balances = HeldBalances()
    balances.answer()
    service = lone_peer(cluster, balances)
    texts = icon_batch(Signer.generate())
    assert len(taken(await service.create_icon_txs(texts))) == BATCH
    recovered = count_recoveries(monkeypatch, icon_tx)
    again = await service.create_icon_txs(texts)
    assert all(isinstance(o, RequestError) and "already known" in o.message for o in again)
    assert recovered == []
    assert len(taken(await service.create_icon_txs(icon_batch(Signer.generate(), 2)))) == 2
    assert len(recovered) == 2  # a new one is still checked


async def test_a_transaction_out_of_its_window_or_past_the_room_costs_no_recovery(
    cluster: Cluster, limit: Limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by its timestamp, or by the room the pool has left: its signature was recovered
    first (review: ~33 ms of the loop a batch of a thousand)."""
    balances = HeldBalances()
    balances.answer()
    service = lone_peer(cluster, balances)
    recovered = count_recoveries(monkeypatch, icon_tx)
    stale = []
    for n in range(3):
        params = make_params(
            sender=(signer := Signer.generate()).address,
            to=BOB,
            step_limit=100_000,
            timestamp_us=time.time_ns() // 1000 - 3_600_000_000 + n,
            nid=NID,
        )
        stale.append(json.dumps(sign_params(params, signer)))
    outcomes = await service.create_icon_txs(stale)
    assert all(isinstance(o, RequestError) and "timestamp" in o.message for o in outcomes)
    assert recovered == []
    outcomes = await service.create_icon_txs(icon_batch(Signer.generate(), ROOM + 3))
    assert len(taken(outcomes)) < ROOM + 3  # some past the room
    assert len(recovered) == len(taken(outcomes))  # those were not checked


async def test_a_transaction_sent_again_while_its_first_copy_is_being_taken_in_is_known(
    cluster: Cluster,
) -> None:
    """The same signed transactions sent in a second batch while the first waits on its balance
    check: the second copy is refused as known (before, both passed and held room twice)."""
    balances = HeldBalances()
    service = lone_peer(cluster, balances)
    signer = Signer.generate()
    texts = icon_batch(signer)
    first = asyncio.create_task(service.create_icon_txs(texts))
    await cluster.wait(lambda: balances.asks == BATCH, "the first batch's admission")
    assert balances.calls == [[signer.address] * BATCH]  # the batch's balances in one call
    second = asyncio.create_task(service.create_icon_txs(texts))
    await cluster.wait(lambda: second.done() or balances.asks > BATCH, "the second's admission")
    balances.answer()
    for refusal in await second:
        assert isinstance(refusal, RequestError), refusal
        assert refusal.kind is ErrorKind.INVALID and "is already known" in refusal.message
    assert len(taken(await first)) == BATCH
    assert len(service.consensus.pool) == BATCH
    again = await service.create_icon_txs(texts)  # pooled now: known there
    assert all(isinstance(o, RequestError) and "already known" in o.message for o in again)


async def test_a_batch_a_full_disk_refused_gives_its_room_back_at_once(
    cluster: Cluster, limit: Limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch admitted and then refused by a disk below its reserve (STORAGE_MIN_FREE_MB) gives
    back the room it held, its rate tokens too: the same number is admitted at once after (the
    peer's clock stands still meanwhile, so that no refill can hide lost tokens)."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    balances = HeldBalances()
    balances.answer()
    service = lone_peer(cluster, balances)
    assert service.intake is not None
    signer = Signer.generate()
    service.intake.min_free_bytes = 1 << 62  # more than any disk has
    refused = await service.create_icon_txs(icon_batch(signer, ROOM))
    for refusal in refused:
        assert isinstance(refusal, RequestError), refusal
        assert refusal.kind is ErrorKind.POOL_FULL and "MB free" in refusal.message, refusal
    service.intake.min_free_bytes = 0  # space is back
    outcomes = await service.create_icon_txs(icon_batch(signer, ROOM))
    assert len(taken(outcomes)) == ROOM, outcomes
    assert len(service.consensus.pool) == ROOM


def _relayed(texts: list[str]) -> list[Transaction]:
    """The transactions of `texts` as another peer relays them (decoded, signatures unchecked)."""
    made = [Transaction.from_icon(icon_tx.verify_send_params(canonical.parse(t))) for t in texts]
    return [Transaction.decode(tx.encode()) for tx in made]


async def test_relayed_transactions_whose_senders_cannot_pay_leave_the_pool(
    tmp_path: Path,
) -> None:
    """A v3 transaction relayed by another peer is pooled, and its sender's balance asked after
    (the relay goes on meanwhile): one whose sender cannot pay leaves the pool, as a client's is
    refused at intake. Relayed from accounts holding nothing, 40 were pooled past
    TX_POOL_ADMIT_MAX and every client of the peer was refused after (review). Those whose
    senders can pay stay; while the SCORE cannot say, they stay too."""
    cluster = Cluster(tmp_path, overrides={"TX_POOL_ADMIT_MAX": ROOM})
    try:
        poor, rich = Signer.generate(), Signer.generate()
        balances = HeldBalances(poor=frozenset({poor.address}))
        service = lone_peer(cluster, balances)
        unpaid, paid = _relayed(icon_batch(poor, 40)), _relayed(icon_batch(rich, 2))
        await service.receive_txs_in_turns(unpaid + paid)
        pool = service.consensus.pool
        assert all(tx.hash in pool for tx in unpaid + paid)  # pooled before the answer

        await cluster.wait(lambda: balances.asks >= 42, "their senders' balances asked")
        assert balances.asked == {poor.address, rich.address}
        balances.answer()
        await cluster.wait(lambda: not any(tx.hash in pool for tx in unpaid), "the unpaid gone")
        assert all(tx.hash in pool for tx in paid)
        taken = await service.create_icon_txs(icon_batch(Signer.generate(), 1))
        assert isinstance(taken[0], Transaction), taken  # a client is taken again
        # a sender seen able to pay is not asked again for a while (a busy sender sends many)
        asks = balances.asks
        more = _relayed(icon_batch(rich, 3))
        await service.receive_txs_in_turns(more)
        await cluster.wait(lambda: not service._payment_checks, "the checks made")
        assert balances.asks == asks and all(tx.hash in pool for tx in more)
        # the SCORE cannot say (down): they stay, asked again after a pause
        down: list[list[str]] = []

        async def unavailable(
            addresses: list[str], *, current: bool = True
        ) -> list[tuple[int, int, int]]:
            down.append(addresses)
            raise ScoreUnavailable("SCORE process exited")

        service.score.balances = unavailable  # type: ignore[method-assign]
        others = _relayed(icon_batch(poor, 2))
        await service.receive_txs_in_turns(others)
        await cluster.wait(lambda: len(down) >= 2, "the check asked again")
        assert all(tx.hash in pool for tx in others)
    finally:
        await cluster.stop()


@pytest.mark.parametrize("failure", ["deadline", "replaying"])
async def test_a_payment_check_the_score_could_not_make_is_made_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A payment check the SCORE could not make (its ask ran out of time while a long block
    executed, or its state is blocks behind the recorded results while it replays) is asked
    again after a pause, the transactions pooled meanwhile: kept unchecked, a flood relayed
    during a long replay stayed for good (review)."""
    cluster = Cluster(tmp_path, overrides={"TX_POOL_ADMIT_MAX": ROOM})
    try:
        poor = Signer.generate()
        service = lone_peer(cluster, HeldBalances())
        recorded = (10, b"\x00" * 32, b"\x00" * 32)
        monkeypatch.setattr(service.store, "executed", lambda: recorded)
        asks: list[int] = []

        async def slow(addresses: list[str], *, current: bool = True) -> list[tuple[int, int, int]]:
            asks.append(len(addresses))
            if len(asks) <= 2 and failure == "deadline":
                raise ScoreUnavailable(
                    "SCORE balance: no answer within 3 s", deadline_exceeded=True
                )
            height = 0 if len(asks) <= 2 else 10  # replaying: blocks behind, then caught up
            return [(0, RICH, height) for _ in addresses]

        service.score.balances = slow  # type: ignore[method-assign]
        unpaid = _relayed(icon_batch(poor, 3))
        await service.receive_txs_in_turns(unpaid)
        pool = service.consensus.pool
        await cluster.wait(lambda: len(asks) >= 2, "asked twice")
        assert all(tx.hash in pool for tx in unpaid)  # pooled while the SCORE cannot say
        await cluster.wait(lambda: not any(tx.hash in pool for tx in unpaid), "the unpaid gone")
        assert asks == [3, 3, 3]
    finally:
        await cluster.stop()


async def test_a_store_failing_under_a_payment_check_stops_the_channel_as_a_store_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block store failing as a payment check reads the recorded height stops the channel
    the way a store failure does (halted, its reason kept), not its task group by an exception
    of the background check."""
    cluster = Cluster(tmp_path)
    try:
        service = lone_peer(cluster, HeldBalances())

        def failing() -> None:
            raise StorageError("LevelDB store failed: Input/output error")

        monkeypatch.setattr(service.store, "executed", failing)
        await service.receive_txs_in_turns(_relayed(icon_batch(Signer.generate(), 2)))
        await cluster.wait(lambda: service.halted is not None, "the channel halted")
        assert "storage failed: LevelDB store failed: Input/output error" in service.halted
        assert not cluster.tasks[0].done()  # its tasks wind down as a halted channel's do
    finally:
        await cluster.stop()


class Holding:
    """ScoreRuntime.balances's stand-in: every address holds `loop`."""

    def __init__(self, loop: int) -> None:
        self.loop = loop

    async def balances(
        self, addresses: list[str], *, current: bool = True
    ) -> list[tuple[int, int, int]]:
        return [(self.loop, RICH, 0) for _ in addresses]


MOST = 100_000 * coin.STEP_PRICE + 1  # what an icon_batch transfer may cost at most


async def test_a_senders_balance_pays_for_its_pooled_transactions_first(tmp_path: Path) -> None:
    """Each transaction was checked alone against its sender's balance: an account holding one
    fee had 20 transfers taken (thousands, up to the pool's room) and executed for that fee
    (review). Its pooled ones are counted, then those of the batch in order."""
    cluster = Cluster(tmp_path)
    try:
        service = lone_peer(cluster, Holding(3 * MOST))
        sender = Signer.generate()
        first = await service.create_icon_txs(icon_batch(sender, 2))
        assert len(taken(first)) == 2, first
        second = await service.create_icon_txs(icon_batch(sender, 3))
        assert len(taken(second)) == 1, second  # the third fee only
        refused = [o for o in second if isinstance(o, RequestError)]
        promised = f"{3 * MOST} of it promised to its pooled transactions"
        assert len(refused) == 2 and all(promised in r.message for r in refused), refused
        assert service.consensus.pool.spend_of(sender.address) == 3 * MOST
        other = await service.create_icon_txs(icon_batch(Signer.generate(), 3))
        assert len(taken(other)) == 3  # another sender's balance is its own
    finally:
        await cluster.stop()


async def test_a_transaction_in_a_final_block_not_executed_yet_is_still_paid_for(
    tmp_path: Path,
) -> None:
    """A sender's balance is read at the executed height: a transaction of a final block not
    executed yet has left the pool, and its cost was counted nowhere, so a sender holding what
    one transfer may cost had a second taken, which failed unpaid (review: twice a balance
    admitted, the surplus in blocks for free). Its cost is counted until its block is executed,
    after a restart too."""
    cluster = Cluster(tmp_path)
    try:
        service = cluster.services[0]
        service.score.balances = Holding(MOST).balances  # type: ignore[method-assign]
        never = asyncio.Event()

        async def held(block: object, result: object) -> None:  # its blocks final, unexecuted
            await never.wait()

        service.score._record = held  # type: ignore[method-assign,assignment]
        sender = Signer.generate()
        first = taken(await service.create_icon_txs(icon_batch(sender, 1)))
        assert len(first) == 1
        hashes = [tx.hash for tx in first]
        await cluster.wait(lambda: cluster.final_everywhere(hashes, cluster.services), "final")
        pool = service.consensus.pool
        assert first[0].hash not in pool and pool.spend_of(sender.address) == MOST
        second = await service.create_icon_txs(icon_batch(sender, 1))
        assert isinstance(second[0], RequestError), second
        assert "not executed yet" in second[0].message, second[0]
        await cluster.crash(0)
        restarted = cluster.restart(0)  # its block still final and not executed on its disk
        restarted.score.balances = Holding(MOST).balances  # type: ignore[method-assign]
        pool = restarted.consensus.pool
        assert pool.spend_of(sender.address) == MOST
        await cluster.wait(lambda: pool.spend_of(sender.address) == 0, "executed: paid")
        third = await restarted.create_icon_txs(icon_batch(sender, 1))
        assert len(taken(third)) == 1, third
    finally:
        await cluster.stop()


async def test_a_transaction_whose_step_limit_is_below_every_transactions_steps_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v3 transaction whose stepLimit is below the steps every transaction uses (and its
    data's) fails out of step and pays what its limit allows: with stepLimit 0 and value 0, an account
    holding nothing had such transactions taken and put in blocks for free (review). Refused at
    intake (-32602), and dropped unchecked when relayed."""
    cluster = Cluster(tmp_path)
    try:
        service = lone_peer(cluster, Holding(0))
        poor = Signer.generate()

        def free(nonce: int) -> str:
            params = make_params(
                sender=poor.address,
                to=BOB,
                value=0,
                step_limit=0,
                timestamp_us=time.time_ns() // 1000,
                nid=NID,
                nonce=nonce,
            )
            return json.dumps(sign_params(params, poor))

        refused = await service.create_icon_txs([free(1)])
        assert isinstance(refused[0], RequestError), refused
        assert refused[0].kind is ErrorKind.INVALID and "stepLimit 0x0 is below" in str(refused[0])
        recoveries = count_recoveries(monkeypatch)
        relayed = _relayed([free(2)])
        await service.receive_txs_in_turns(relayed)
        assert recoveries == [] and relayed[0].hash not in service.consensus.pool
    finally:
        await cluster.stop()


async def test_relayed_transactions_past_their_senders_balance_leave_the_pool(
    tmp_path: Path,
) -> None:
    """Relayed ones too: those the sender's balance pays for (its other pooled ones first, then
    these in the order they came) stay; the rest leave."""
    cluster = Cluster(tmp_path)
    try:
        service = lone_peer(cluster, Holding(3 * MOST))
        sender = Signer.generate()
        relayed = _relayed(icon_batch(sender, 5))
        await service.receive_txs_in_turns(relayed)
        pool = service.consensus.pool
        await cluster.wait(lambda: sum(tx.hash in pool for tx in relayed) == 3, "two dropped")
        await cluster.wait(lambda: not service._payment_checks, "the checks made")
        assert [tx.hash in pool for tx in relayed] == [True, True, True, False, False]
        assert pool.spend_of(sender.address) == 3 * MOST
        more = _relayed(icon_batch(sender, 1))  # a known payer, but its balance is spent
        await service.receive_txs_in_turns(more)
        await cluster.wait(lambda: not service._payment_checks, "the check made")
        await cluster.wait(lambda: more[0].hash not in pool, "the one past the balance dropped")
    finally:
        await cluster.stop()


async def test_concurrent_requests_of_one_sender_share_its_balance(tmp_path: Path) -> None:
    """Each request's check saw the others' transactions (being taken in, not pooled yet) as
    costing nothing: 20 concurrent requests of a sender holding one transfer's cost were all
    taken (review). What a checked batch may cost counts at once; released as it is pooled or
    refused."""
    cluster = Cluster(tmp_path)
    try:
        service = lone_peer(cluster, Holding(2 * MOST))
        sender = Signer.generate()
        texts = icon_batch(sender, 20)
        outcomes = await asyncio.gather(*(service.create_icon_txs([t]) for t in texts))
        assert sum(len(taken(o)) for o in outcomes) == 2
        assert service.consensus.pool.spend_of(sender.address) == 2 * MOST
        assert not service._reserved_spend and not service._spend_shares  # all released
    finally:
        await cluster.stop()


async def test_a_validator_the_newest_set_makes_an_auditor_relays_v3_until_the_handover(
    tmp_path: Path,
) -> None:
    """The chain's set still names it (it takes its clients' transactions until the chain hands
    over): its v3 relays are taken. A peer neither set names a validator: dropped."""
    cluster = Cluster(tmp_path)
    try:
        first = await cluster.services[0].create_txs([{"n": 1}])
        await cluster.wait(
            lambda: cluster.final_everywhere([t.hash for t in first], cluster.services), "final"
        )
        x, y = cluster.services[0], cluster.services[1]
        stranger = Signer.generate()
        newer = ValidatorSet(
            CHANNEL,
            2,
            tuple(Validator(s.address) for s in cluster.signers[1:]),
            auditors=(x.signer.address, stranger.address),
        ).signed_by(cluster.issuer_signer)
        for service in cluster.services:
            service.consensus.latest_validators = newer  # as the RadioStation lists it now
        y.score.balances = Holding(10 * MOST).balances  # type: ignore[method-assign]
        assert not x.consensus.is_auditor and x.signer.address in y.auditor_ids()
        by_x, by_stranger = (
            _relayed(icon_batch(Signer.generate(), 1)),
            _relayed(icon_batch(Signer.generate(), 1)),
        )
        await y.receive_txs_in_turns(by_x, x.signer.address)
        await y.receive_txs_in_turns(by_stranger, stranger.address)
        pool = y.consensus.pool
        assert by_x[0].hash in pool and by_stranger[0].hash not in pool
    finally:
        await cluster.stop()


def _stamped(age_s: float) -> str:
    """A signed transfer stamped `age_s` seconds ago (negative: ahead)."""
    signer = Signer.generate()
    params = make_params(
        sender=signer.address,
        to=BOB,
        step_limit=100_000,
        timestamp_us=time.time_ns() // 1000 - int(age_s * 1_000_000),
        nid=NID,
        nonce=next(_nonces),
    )
    return json.dumps(sign_params(params, signer))


async def test_a_client_transaction_near_its_windows_edge_is_refused_not_acknowledged_and_lost(
    tmp_path: Path,
) -> None:
    """A client's transaction is taken within the window less the others' clock skew and its
    relay time: stamped 299 s ago it was acknowledged by this peer and dropped by the others
    (their clocks a little behind, or its relay a moment later), never final (clock review).
    The pools still take such a one relayed (another peer took it a moment before)."""
    cluster = Cluster(tmp_path)
    try:
        balances = HeldBalances()
        balances.answer()
        service = lone_peer(cluster, balances)
        window = float(service.config.TX_TIMESTAMP_WINDOW)
        edge = window - service.intake_margin
        assert 0 < edge < window - float(service.config.MAX_TIMESTAMP_SKEW)
        for age in (edge + 5, -(edge + 5), window - 1):
            refused = await service.create_icon_txs([_stamped(age)])
            assert isinstance(refused[0], RequestError), (age, refused)
            assert refused[0].kind is ErrorKind.INVALID
            assert f"a client's is taken within {edge:g} s" in refused[0].message
        both = await service.create_icon_txs([_stamped(edge - 5), _stamped(5 - edge)])
        assert len(taken(both)) == 2, both
        relayed = _stamped(window - 5)
        tx = Transaction.from_icon(icon_tx.verify_send_params(canonical.parse(relayed)))
        service.consensus.pool.check(tx, time.time())  # a relayed one: the whole window
    finally:
        await cluster.stop()
