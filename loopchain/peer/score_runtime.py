"""A channel's SCORE on the peer side: resolve its package, supervise its process, execute final
blocks in order and record their results.

Order of one execution, so a crash anywhere repeats exactly the missing work: (1) the SCORE stages
the block and returns results and roots, (2) the peer writes results, roots and its executed
pointer in ONE batch, (3) the SCORE commits its state. On start the peer replays into the SCORE
every block the peer recorded but the SCORE did not commit, checking the roots match, then goes on
with the blocks nobody executed yet. A package that cannot be loaded gives every transaction result
9100 and leaves the state root unchanged, so the chain keeps finalising.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loopchain import failpoints, monitor_log
from loopchain.blockchain import execution
from loopchain.blockchain.block_store import BlockStore, StoreDamaged
from loopchain.blockchain.execution import InvokeResult, TxResult
from loopchain.configure import Config
from loopchain.consensus import messages as m
from loopchain.lifecycle import CRASH_SIGNALS
from loopchain.peer.metrics import ChannelMetrics
from loopchain.scoreservice import STOPPED_EXIT, STORE_FAILED_EXIT
from loopchain.scoreservice.client import ScoreClient, ScoreRejected, ScoreUnavailable
from loopchain.scoreservice.packages import (
    PackageError,
    ScorePackage,
    peer_independent,
    resolve_package,
)
from loopchain.scoreservice.supervisor import ScoreSupervisor
from loopchain.storage.abc import StorageError
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.hashing import EMPTY_ROOT
from loopchain.types.icon_address import channel_score_address

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAY = 0.5
READY_TOLD_AFTER_S = 60.0  # a SCORE process not ready this long for a replay is said (again)
GIVEN_UP_META = "score_given_up"  # the block store's record of a SCORE given up (JSON)
IDLE_CHECK = 1.0
STALE_RETRY = 0.1  # seconds before a query answered from a state not yet replayed asks again
MAX_TIMEOUTS_PER_BLOCK = 3  # tries of one block that end its SCORE before it is given up
PROCESS_END_WAIT = 5.0  # seconds a failed invoke's process is watched for its end
DIVERGED_WARN_S = 600.0  # seconds between the lines saying this peer's state still differs
CHAIN_LOOKBACK = 64  # final blocks looked back for the root the chain carried before a height


def invoke_deadlines(timeout: float) -> list[float]:
    """The deadlines of the tries of one block: SCORE_INVOKE_TIMEOUT, doubled on each try. A
    block's work is bounded by the step limit, its time is not: a machine 3x slower than the
    others finishes on a later try instead of giving up a SCORE the others keep (and recording
    results no other peer records)."""
    return [timeout * 2**k for k in range(MAX_TIMEOUTS_PER_BLOCK)]


@dataclass(frozen=True)
class ScoreInfo:
    """What /api/v1/status/score reports."""

    id: str
    version: str
    all_versions: tuple[str, ...]
    status: int  # 0 running, -1 not available
    message: str
    address: str = ""  # the SCORE's "cx…" address in JSON-RPC v3
    api_json: str = "[]"  # its API as ICON's icx_getScoreApi describes one (package.json "api")


def score_api_json(info: Mapping[str, Any]) -> str:
    """The package's "api" (ICON's icx_getScoreApi list) as canonical JSON, "[]" when it states
    none or states something that is not a list of objects."""
    api = info.get("api", [])
    if not isinstance(api, list) or not all(isinstance(item, dict) for item in api):
        return "[]"
    try:
        return canonical.encode(api).decode()
    except EncodingError:
        return "[]"


def resolve_channel_package(
    config: Config, name: str, work_dir: Path
) -> tuple[ScorePackage | None, str | None]:
    """The channel's package (its path absolute), or the reason it cannot be used (naming the
    repository and `work_dir` absolutely, as peer_independent needs)."""
    try:
        package = resolve_package(
            Path(config.DEFAULT_SCORE_REPOSITORY_PATH).absolute(),
            name,
            branch=str(config.DEFAULT_SCORE_BRANCH),
            allow_develop=bool(config.ALLOW_LOAD_SCORE_IN_DEVELOP),
            work_dir=work_dir.absolute(),
        )
    except PackageError as exc:
        return None, f"SCORE package {name!r} cannot be loaded: {exc}"
    return package, None


class ScoreStateMismatch(StoreDamaged):
    """The SCORE's state and the peer's recorded results cannot be brought together (a state
    ahead of the block store, a replay giving other roots): execution stops, the channel with
    it. Its words say what to do (not the block store's damage advice)."""


class ScoreRuntime:
    """Executes a channel's final blocks with its SCORE, strictly in order."""

    def __init__(
        self,
        *,
        config: Config,
        channel: str,
        store: BlockStore,
        package_name: str,
        storage_dir: Path,
        port: int,
        on_executed: Callable[[m.BlockExecuted], None],
        score_settings: Mapping[str, Any] | None = None,
        on_storage_error: Callable[[StorageError | StoreDamaged], None] | None = None,
        metrics: ChannelMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.on_storage_error = on_storage_error
        self.channel = channel
        self.store = store
        self.package_name = package_name
        self.on_executed = on_executed
        self._wake = asyncio.Event()
        # set while the SCORE's committed state holds every block whose results the peer recorded
        # (cleared from a block's recording to its commit, and while a start replays)
        self._state_current = asyncio.Event()
        self._state_current.set()
        self._replayed_after = 0  # the SCORE process restarts its state was last replayed after
        self._diverged = 0  # heights whose state here differs from the one the chain carries
        self._diverged_at = -1  # the latest of them
        self._diverged_from: int | None = None  # the first of them (status/score says it)
        self._diverged_told: float | None = None  # when that was last logged (monotonic)
        self._committing: int | None = None  # the block recorded or being, not yet committed
        # a block recorded whose commit goes with the next block's invoke (the next was final
        # already: a peer catching up saves a call a block); None when none waits
        self._uncommitted: Block | None = None
        self._recording: asyncio.Future[None] | None = None  # a block's results being written
        self.package, self.package_error = resolve_channel_package(
            config, package_name, storage_dir / "score_work"
        )
        storage = storage_dir.absolute()
        self._own_folders = {  # named in reasons the package cannot be used: see _result_message
            Path(config.DEFAULT_SCORE_REPOSITORY_PATH).absolute(): "<repository>",
            storage / "score_work": "<score work>",
            storage: "<channel storage>",
        }
        if self.package is not None and score_settings:
            self.package = dataclasses.replace(self.package, settings=dict(score_settings))
        self.supervisor: ScoreSupervisor | None = None
        self.disabled: str | None = None  # why the SCORE is no longer used (results carry 9100)
        self._given_up_at: int | None = None  # the block it was given up at, kept over restarts
        self._state_replaced = False  # a state ahead of the store was made anew (_replace_state)
        given_up = store.get_meta(GIVEN_UP_META)
        if given_up is not None:
            record = canonical.parse(given_up.decode())
            self.disabled, self._given_up_at = str(record["reason"]), int(record["height"])
        if self.package is not None:
            self.supervisor = ScoreSupervisor(
                config,
                channel,
                storage_dir / "score_cwd",
                storage_dir / "score_state",
                self.package,
                None,
            )
        else:
            log.error("channel %s: %s; results will carry 9100", channel, self.package_error)
            monitor_log.event(
                "Error",
                channel=channel,
                kind="score_package",
                message=str(self.package_error)[:500],
            )

    # ------------------------------------------------------------ queries

    def info(self) -> ScoreInfo:
        """What /api/v1/status/score says; its message also says where this peer's state came
        to differ from the chain's (_compare_with_chain), as its log does."""
        info = self._info()
        if self._diverged_from is None:
            return info
        said = f"this peer's state differs from the chain's from height {self._diverged_from}"
        return dataclasses.replace(
            info, message=f"{info.message}; {said}" if info.message else said
        )

    def _info(self) -> ScoreInfo:
        address = channel_score_address(self.channel)
        if self.supervisor is None or self.package is None:
            reason = self.package_error or "not loaded"
            return ScoreInfo(self.package_name, "", (), -1, reason, address)
        api = score_api_json(self.package.info)
        if self.disabled:
            return ScoreInfo(
                self.package.id,
                self.package.version,
                tuple(self.package.all_versions),
                -1,
                self.disabled,
                address,
                api,
            )
        status = self.supervisor.status()
        return ScoreInfo(
            self.package.id,
            self.package.version,
            tuple(self.package.all_versions),
            int(status.status),
            str(status.message),
            address,
            api,
        )

    async def query(self, params_json: str) -> str:
        """The SCORE's answer to a query (ScoreUnavailable / ScoreRejected on failure), from a
        state that holds every block whose results were recorded."""
        answer, _height = await self._in_query_time(
            "query", lambda client: client.query_at(params_json), lambda answer: answer[1]
        )
        return answer

    async def balance(self, address: str) -> tuple[int, int, int]:
        """(ICX balance, total supply, executed height) (ScoreUnavailable / ScoreRejected), as
        `query`."""
        return await self._in_query_time(
            "balance", lambda client: client.balance(address), lambda answer: answer[2]
        )

    async def balances(
        self, addresses: list[str], *, current: bool = True
    ) -> list[tuple[int, int, int]]:
        """`balance` of each address, asked together: in one call when they fit in one. Unless
        `current`, from the state the SCORE holds now, however far behind the recorded blocks
        (a check that may be a block late, asked often: no wait for the commits)."""
        if not addresses:
            return []
        if not current:
            if self.supervisor is None:
                raise ScoreUnavailable(self.package_error or "no SCORE")
            client = self.supervisor.client
            try:
                async with asyncio.timeout(client.query_timeout):
                    return await client.balances(addresses)
            except TimeoutError:
                raise ScoreUnavailable(
                    f"SCORE balance: no answer within {client.query_timeout:g} s",
                    deadline_exceeded=True,
                ) from None
        return await self._in_query_time(
            "balance",
            lambda client: client.balances(addresses),
            lambda answers: min(answer[2] for answer in answers),
        )

    async def _in_query_time(
        self, what: str, ask: Callable[[ScoreClient], Awaitable[T]], height_of: Callable[[T], int]
    ) -> T:
        """`ask` the SCORE once its state holds every recorded block, all within one
        SCORE_QUERY_TIMEOUT: the wait for the state takes at most half of it, and past it the
        answer is a deadline error (a query once waited the whole timeout for the state, then
        as long again for its call: longer than the proxy waits for the peer, so a 504).

        An answer is taken only from a state that holds the blocks recorded when it was asked, or
        lacks only the one then being committed (`_least_height`). Any other comes from a SCORE
        process started again and not yet replayed (it may have met the query while it loaded:
        the peer's wait for the replay cannot hold back a query already on its way), and is asked
        again once the replay the execution loop is woken for has run; still behind at the
        deadline, the SCORE is down for now (catching up), not late.

        A peer whose state differs from the one the chain carries (_compare_with_chain) answers
        no query until it is started again: its answers would not be the chain's (before, it
        gave them as if they were). A results hash alone that differs counts too: the state
        roots agree where a SCORE that is not the validators' failed every transaction, and its
        answers are its own (a test saw it). Nor is it lifted by a later block that agrees: an
        empty one does whatever the SCORE. At the start the newest final block is compared."""
        if self._diverged_from is not None:
            raise ScoreUnavailable(
                "this peer's state differs from the chain's from height "
                f"{self._diverged_from}, its answers would not be the chain's: ask another peer"
            )
        if self.supervisor is None:
            raise ScoreUnavailable(self.package_error or "no SCORE")
        client = self.supervisor.client
        seconds = client.query_timeout
        behind: tuple[int, int] | None = None
        try:
            async with asyncio.timeout(seconds):
                await self._state_caught_up(seconds / 2)
                while True:
                    least, recorded = self._least_height()  # before: blocks may come meanwhile
                    answer = await ask(client)
                    height = height_of(answer)
                    if height >= least:
                        return answer
                    behind = (height, recorded)
                    self._wake.set()  # the execution loop replays a SCORE started again
                    if not await self._state_caught_up(seconds):
                        await asyncio.sleep(STALE_RETRY)  # no replay is known yet: look again
        except TimeoutError:
            if behind is not None:
                raise ScoreUnavailable(
                    f"SCORE {what}: the SCORE is catching up (its state holds block "
                    f"{behind[0]} of {behind[1]})"
                ) from None
            raise ScoreUnavailable(
                f"SCORE {what}: no answer within {seconds:g} s", deadline_exceeded=True
            ) from None

    def _least_height(self) -> tuple[int, int]:
        """(the least height of a state an answer may be read from now, the recorded height): the
        recorded one, or the one before while the newest recorded block is being committed
        (blocks from the one the SCORE was given up at are not its)."""
        executed = self.store.executed()
        recorded = executed[0] if executed else -1
        if self._given_up_at is not None:
            recorded = min(recorded, self._given_up_at - 1)
        committing = self._committing == recorded or (
            self._uncommitted is not None and self._uncommitted.height == recorded
        )
        return (recorded - 1 if committing else recorded), recorded

    async def _state_caught_up(self, seconds: float) -> bool:
        """Wait until the SCORE has committed the blocks whose results the peer recorded, so a
        client that read a transaction's result reads the state it made (the results are
        recorded, then the SCORE commits: a query in between read the state before the block).
        After `seconds` (a SCORE stuck committing) the query goes on with the state there is.
        False when the state was current already (nothing to wait for)."""
        if self._restarted_score_ready():  # replayed first by the execution loop, woken now
            self._state_current.clear()
            self._wake.set()
        if self._state_current.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._state_current.wait()
        return True

    def block_final(self) -> None:
        """A block became final: execute it soon."""
        self._wake.set()

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Supervise the SCORE process and execute final blocks until cancelled."""
        async with asyncio.TaskGroup() as group:
            if self.supervisor is not None:
                group.create_task(self.supervisor.run(), name=f"score:{self.channel}")
            group.create_task(self._execute_loop(), name=f"execute:{self.channel}")

    async def stop(self) -> None:
        recording, self._recording = self._recording, None
        if recording is not None:  # cancelled during a write, which goes on in its thread
            await asyncio.wait([recording])  # the store closes after it
            failure = None if recording.cancelled() else recording.exception()
            if failure is not None:
                log.warning(
                    "channel %s: a block's results were not recorded (%s); the block is "
                    "executed again at the next start",
                    self.channel,
                    failure,
                )
        if self.supervisor is not None:
            await self.supervisor.stop()

    async def _execute_loop(self) -> None:
        replay = self.supervisor is not None  # at the start, and after the SCORE started again
        compared = False
        while True:
            try:  # every read and write of the store here, replays' included
                if not compared:
                    compared = True
                    self._compare_with_tip()
                if replay or self._restarted_score_ready():
                    replay = False
                    await self._replay_restarted()
                executed = self.store.executed()
                height = (executed[0] if executed else -1) + 1
                if height > self.store.tip_height():  # not final yet
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_CHECK):
                            await self._wake.wait()
                    continue
                block = self.store.block_by_height(height)  # final: the store holds it
                if block is None:
                    raise StoreDamaged(f"final block {height} is missing from the store")
                await self._execute_final(block, executed)
            except (StorageError, StoreDamaged) as exc:  # a store damaged where it reads
                self._storage_failed(exc)
                return  # executes no further: the peer is stopping

    async def _execute_final(self, block: Block, executed: tuple[int, bytes, bytes] | None) -> None:
        self._compare_with_chain(block)
        result = await self._execute(block, executed)  # 1. stage in the SCORE
        self._state_current.clear()
        self._committing = block.height
        waits = False
        try:
            await self._record(block, result)  # 2. record on the peer
            failpoints.hit("score-recorded")
            if self.supervisor is not None and not self.disabled and not self.supervisor.load_error:
                # 3. commit in the SCORE; when the next block is final already (catching up),
                # with its invoke, one call fewer a block (the state is not current meanwhile)
                waits = self.store.tip_height() > block.height
                if waits:
                    self._uncommitted = block
                else:
                    await self._commit(block)
                    failpoints.hit("score-committed")
        finally:
            self._committing = None
            if not waits:
                self._state_current.set()

    def _restarted_score_ready(self) -> bool:
        """Whether a SCORE process started again since the state was last replayed, and is loaded:
        its state may lack blocks whose results the peer recorded (one that moved a damaged store
        aside holds none), and no block may come soon to make the SCORE refuse one and be
        replayed (an idle channel): queries would read a state that lacks them."""
        supervisor = self.supervisor
        return (
            supervisor is not None
            and supervisor.restarts != self._replayed_after
            and supervisor.status().loaded
        )

    async def _replay_restarted(self) -> None:
        """Bring a SCORE process (started again) up to the recorded blocks, queries waiting."""
        assert self.supervisor is not None
        self._replayed_after = self.supervisor.restarts
        self._state_current.clear()
        try:
            await self._replay_uncommitted()
        finally:
            self._state_current.set()

    def _storage_failed(self, exc: StorageError | StoreDamaged) -> None:
        """The store failed a read or write of the execution loop: the peer is told (it stops the
        channel), or, without a handler, the error goes on."""
        if self.on_storage_error is None:
            raise exc
        self.on_storage_error(exc)

    async def _execute(
        self, block: Block, executed: tuple[int, bytes, bytes] | None
    ) -> InvokeResult:
        if self.supervisor is None or self._given_up_at is not None:
            await self._commit_waiting()
            return self._unavailable(block, executed, self.package_error or self._given_up())
        deadlines = invoke_deadlines(float(self.config.SCORE_INVOKE_TIMEOUT))
        timeouts = tries = 0
        while True:
            if self.supervisor.load_error:
                self._uncommitted = None  # a SCORE that cannot load commits nothing
                return self._unavailable(block, executed, self.supervisor.load_error)
            if timeouts >= len(deadlines):
                tried = ", ".join(f"{d:g}" for d in deadlines[:-1]) + f" and {deadlines[-1]:g}"
                self.disabled = (
                    f"SCORE did not finish block {block.height} within {tried} s "
                    "(SCORE_INVOKE_TIMEOUT, doubled on each try), or its process ended in the try"
                )
                self._given_up_at = block.height  # kept with its results (see _record)
                log.error(
                    "channel %s: %s; SCORE disabled, results carry 9100",
                    self.channel,
                    self.disabled,
                )
                monitor_log.event(
                    "Error", channel=self.channel, kind="score_disabled", message=self.disabled
                )
                await self._commit_waiting()
                return self._unavailable(block, executed, self._given_up())
            pid = None
            try:
                if await self.supervisor.wait_ready(float(self.config.SCORE_INVOKE_TIMEOUT)):
                    pid = self.supervisor.pid
                if self._uncommitted is not None and tries:  # its own call, off this block's
                    await self._commit(self._uncommitted)  # deadline (a try failed: a slow disk?)
                    self._waiting_committed()
                tries += 1
                started = time.monotonic()
                result = await self.supervisor.client.invoke_block(
                    block, deadlines[timeouts], commit_first=self._uncommitted
                )
                if self._uncommitted is not None:  # committed: queries may read its state
                    self._waiting_committed()
                self._invoked(block, result, time.monotonic() - started)
                return result
            except ScoreUnavailable as exc:
                # a try ends the block's chances when it missed its deadline, or when the
                # process it ran in crashed meanwhile (os._exit, a crash in C): a transaction
                # that ends the process would otherwise be tried for good, and no block executed
                # again. A process that ended for this machine's reasons (its store failed, the
                # OOM killer, an operator) or a query's (past the query limit) does not count.
                if exc.deadline_exceeded or (pid is not None and await self._crashed(pid)):
                    timeouts += 1
                log.warning(
                    "channel %s: SCORE unavailable at block %d: %s", self.channel, block.height, exc
                )
            except ScoreRejected as exc:
                log.warning(
                    "channel %s: SCORE refused block %d: %s", self.channel, block.height, exc
                )
                await self._replay_uncommitted()
            await asyncio.sleep(RETRY_DELAY)

    async def _crashed(self, pid: int) -> bool:
        """The SCORE process `pid` has ended (or does within PROCESS_END_WAIT seconds) by a
        crash: a crash's signal (CRASH_SIGNALS), or an exit status of its own (os._exit, 0
        included; an exception nothing caught) other than STORE_FAILED_EXIT and STOPPED_EXIT."""
        assert self.supervisor is not None
        code = await self.supervisor.exit_status(pid, PROCESS_END_WAIT)
        if code is None:
            return False
        return -code in CRASH_SIGNALS if code < 0 else code not in (STORE_FAILED_EXIT, STOPPED_EXIT)

    def _given_up(self) -> str:
        """Why the SCORE was given up, as results record it: worded alike on every peer that gave
        it up at that block (`disabled` names this peer's deadlines, which its configuration sets)."""
        return (
            f"SCORE did not finish block {self._given_up_at} in {MAX_TIMEOUTS_PER_BLOCK} tries, "
            "each with twice the deadline of the one before"
        )

    def _invoked(self, block: Block, result: InvokeResult, elapsed: float) -> None:
        """A block the SCORE executed: time it, tell the monitor."""
        if self.metrics is not None:
            self.metrics.score_execution.observe(elapsed)
        if not monitor_log.enabled():
            return
        ok = sum(1 for r in result.results if r.code == execution.SUCCESS)
        monitor_log.event(
            "InvokeResult",
            channel=self.channel,
            height=block.height,
            ok=ok,
            failed=len(result.results) - ok,
            elapsed=round(elapsed, 6),
        )

    def _unavailable(
        self, block: Block, executed: tuple[int, bytes, bytes] | None, reason: str | None
    ) -> InvokeResult:
        message = self._result_message(reason or "SCORE is not available")
        results = [
            TxResult(tx.hash_hex, execution.SCORE_UNREACHABLE, message) for tx in block.transactions
        ]
        state_root = executed[1] if executed else EMPTY_ROOT
        return InvokeResult(block.height, results, state_root, execution.results_hash(results))

    def _result_message(self, reason: str) -> str:
        """`reason` as 9100 results record it: worded alike on every peer (results_hash covers
        it), without this peer's folders (logged in full where the reason arose)."""
        package = self.package.path if self.package is not None else None
        text = peer_independent(reason, package, self._own_folders)
        return execution.clip_message(execution.valid_text(text))

    async def _record(self, block: Block, result: InvokeResult) -> None:
        """Write the block's results (a synced write) in a thread: its disk sync would hold the
        event loop, which serves every channel of this process, for 1-10 ms a block and up to
        ~100 ms on a busy disk. The write goes on to its end when this task is cancelled; `stop`
        waits for it, so the store closes after it."""
        given_up = self._given_up_at == block.height
        record = {"height": block.height, "reason": self.disabled}

        def write() -> None:
            if given_up:
                # kept before the block's results: after a restart that block is not tried again
                # (every peer gave it up alike; trying again would hold execution for good)
                self.store.put_meta(GIVEN_UP_META, canonical.encode(record))
            self.store.save_results(
                block.height, result.results, result.state_root, result.results_hash
            )

        recording = self._recording = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            await asyncio.shield(recording)
        finally:
            if recording.done():  # else cancelled mid-write: stop() waits for it, tells a failure
                self._recording = None
        self.on_executed(m.BlockExecuted(block.height, result.state_root, result.results_hash))

    def _waiting_committed(self) -> None:
        """The block whose commit waited for the next invoke is committed: queries may read the
        state."""
        self._uncommitted = None
        self._state_current.set()

    async def _commit_waiting(self) -> None:
        """Commit the block whose commit waited for the next invoke, when none comes (the SCORE
        given up from the next block on): one try, which a SCORE down or not loaded may fail
        (execution goes on with 9100 results whatever it does; a replay at the next start
        commits it)."""
        waiting, self._uncommitted = self._uncommitted, None
        supervisor = self.supervisor
        if waiting is None or supervisor is None:
            return
        if not supervisor.load_error:
            try:
                await supervisor.client.commit_block(waiting.height, waiting.hash.hex())
            except (ScoreUnavailable, ScoreRejected) as exc:
                log.warning(
                    "channel %s: SCORE commit of %d failed (%s); it is replayed at the next start",
                    self.channel,
                    waiting.height,
                    exc,
                )
        self._state_current.set()

    async def _commit(self, block: Block) -> None:
        assert self.supervisor is not None
        try:
            await self.supervisor.client.commit_block(block.height, block.hash.hex())
        except (ScoreUnavailable, ScoreRejected) as exc:
            log.warning(
                "channel %s: SCORE commit of %d failed (%s); replaying",
                self.channel,
                block.height,
                exc,
            )
            await self._replay_uncommitted()

    async def _replay_uncommitted(self) -> None:
        """Bring the SCORE's committed state up to the peer's executed pointer. A package that
        cannot load replays nothing: blocks go on with 9100 results (see _execute). A peer
        started again with such a package asked for a replay from block 0, refused "not loaded",
        for good, and executed nothing more (review)."""
        assert self.supervisor is not None
        loop = asyncio.get_running_loop()
        since = loop.time()  # the wait for the process to be ready began
        while True:
            if self.supervisor.load_error:
                return
            try:
                if not await self.supervisor.wait_ready(float(self.config.SCORE_INVOKE_TIMEOUT)):
                    if self.supervisor.load_error:
                        return
                    # a slow start (a machine starting many at once) is said once it is long,
                    # not as the missing socket of a process still starting (review: 25 of 40
                    # channel workers said that, and all then loaded)
                    if loop.time() - since >= READY_TOLD_AFTER_S:
                        log.warning(
                            "channel %s: SCORE replay waits: its process is not ready after "
                            "%.0f s (%s)",
                            self.channel,
                            loop.time() - since,
                            self.supervisor.status().message or "starting",
                        )
                        since = loop.time()
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if self.supervisor.load_error:
                    return
                status = await self.supervisor.client.status()
                target = self.store.executed()
                target_height = target[0] if target else -1
                if self._given_up_at is not None:  # the blocks from there on are not its
                    target_height = min(target_height, self._given_up_at - 1)
                if status.executed_height > target_height:
                    await self._replace_state(int(status.executed_height), target_height)
                    continue
                for height in range(int(status.executed_height) + 1, target_height + 1):
                    await self._replay(height)
                self._waiting_committed()  # by the replay, or by the call that failed
                return
            except (ScoreUnavailable, ScoreRejected) as exc:
                log.warning("channel %s: SCORE replay waits: %s", self.channel, exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _replace_state(self, committed: int, recorded: int) -> None:
        """The SCORE committed blocks this peer has no results of: a SCORE commits a block only
        once the peer recorded its results, so the peer's store is older than the state (the
        two restored from backups made one after the other while the peer ran, or the store
        from an older one). The SCORE would refuse every block this peer executes next, for
        good: its state is moved aside and made anew from the chain, as a corrupt one is (the
        state is made only from the chain; before, the channel stopped, for the operator to move
        it aside). Once only: a state ahead again is told (ScoreStateMismatch), the channel stops."""
        assert self.supervisor is not None
        ahead = (
            f"the SCORE state {self.supervisor.state_path} holds blocks through height "
            f"{committed}, but this peer's block store holds results only through height "
            f"{recorded}: the block store is older than the SCORE state (the two restored from "
            "backups made at different times?)"
        )
        advice = (
            "Restore both from the same backup, or move the SCORE state aside to have it "
            "replayed from the chain"
        )
        if self._state_replaced:
            raise ScoreStateMismatch(f"{ahead}, after it was made anew. {advice}")
        self._state_replaced = True
        try:
            await self.supervisor.replace_state(ahead)
        except OSError as exc:
            raise ScoreStateMismatch(
                f"{ahead}; it cannot be marked to be made anew ({exc}): free space or repair the "
                f"storage and start the peer again. Or: {advice}"
            ) from None

    def _recorded_unexecuted(self, height: int) -> bool:
        """The block at `height` was recorded while the SCORE was unavailable (9100 results): its
        recorded state root is the one before it, which a block the SCORE executed, even an
        empty one, never keeps (next_state_root hashes the root before it)."""
        recorded = self.store.roots_at(height)
        return recorded is not None and recorded[0] == self._root_before(height)

    def _root_before(self, height: int) -> bytes:
        """The state root this peer recorded before the block at `height`."""
        before = self.store.roots_at(height - 1) if height > 0 else None
        return before[0] if before is not None else execution.GENESIS_STATE_ROOT

    def _chain_root_before(self, block: Block) -> bytes | None:
        """The state root the final blocks before `block` carry for the nearest height below the
        one it carries (the genesis state's before any), None when none of the CHAIN_LOOKBACK
        blocks before it says. Equal to the root `block` carries, the chain recorded the heights
        between unexecuted (the validators gave their SCORE up, or have none), while this peer's
        root before them may have moved on (review: it executed them, and every later height was
        counted as differing, for good)."""
        state_height = block.header.state_height
        for height in range(block.height - 1, max(block.height - 1 - CHAIN_LOOKBACK, -1), -1):
            earlier = self.store.block_by_height(height)
            if earlier is None:
                return None
            if earlier.header.state_height < 0:
                return execution.GENESIS_STATE_ROOT
            if earlier.header.state_height < state_height:
                return earlier.header.state_root
        return None

    def _compare_with_tip(self) -> None:
        """At the start, compare with the roots the newest final block carries: what a state
        that differs from the chain's makes refused (queries) lived in memory only, and a peer
        started again answered from it until its next block came (review), which on an idle
        channel may be long."""
        tip = self.store.tip_height()
        block = self.store.block_by_height(tip) if tip >= 0 else None
        if block is not None:
            self._compare_with_chain(block)

    def _compare_with_chain(self, block: Block) -> None:
        """Say when the roots the final `block` carries (of an earlier height, which a quorum of
        validators checked against their own) differ from this peer's: its results and queries
        differ from theirs from there on. Before, a peer whose SCORE package was not theirs (a
        package changed after blocks were made, which a peer that syncs replays history with;
        another repository; a SCORE that is not deterministic) said nothing of it, and one that
        does not vote (an auditor, a peer catching up) served its own results without a word.
        A height either side recorded without executing it (9100: its SCORE was unavailable or
        given up, which is said where it happens) is not counted."""
        height = block.header.state_height
        carried = (block.header.state_root, block.header.results_hash)
        mine = self.store.roots_at(height) if height >= 0 else None
        if mine is None or mine == carried:
            return
        root_before = self._root_before(height)
        if root_before in (mine[0], carried[0]) or carried[0] == self._chain_root_before(block):
            return
        if height > self._diverged_at:
            self._diverged, self._diverged_at = self._diverged + 1, height
        if self._diverged_from is None:
            self._diverged_from = height
        now = time.monotonic()
        if self._diverged_told is not None and now - self._diverged_told < DIVERGED_WARN_S:
            return
        self._diverged_told = now
        if self._diverged > 1:
            log.error(
                "channel %s: this peer's state still differs from the chain's (at %d heights so "
                "far, the latest %d)",
                self.channel,
                self._diverged,
                height,
            )
            return
        package = self.package
        named = (
            f"{package.id} version {package.version}" if package is not None else self.package_name
        )
        message = (
            f"the state this peer executed to at height {height} differs from the one the chain "
            f"carries (block {block.height}: state root {carried[0].hex()[:16]}..., results "
            f"hash {carried[1].hex()[:16]}...; here {mine[0].hex()[:16]}..., "
            f"{mine[1].hex()[:16]}...): its transaction results and queries differ from the "
            f"validators' from there on. Is its SCORE package ({named}, from "
            "DEFAULT_SCORE_REPOSITORY_PATH) the very one the others ran? A package changed after "
            "blocks were made executes history otherwise, and a SCORE that is not deterministic "
            "differs too (see score/README.md)"
        )
        log.error("channel %s: %s", self.channel, message)
        monitor_log.event(
            "Error", channel=self.channel, kind="state_diverged", message=message[:500]
        )

    async def _replay(self, height: int) -> None:
        assert self.supervisor is not None
        block = self.store.block_by_height(height)
        if block is None:
            raise StoreDamaged(f"executed block {height} is missing from the store")
        longest = invoke_deadlines(float(self.config.SCORE_INVOKE_TIMEOUT))[-1]
        result = await self.supervisor.client.invoke_block(block, longest)  # it finished before
        recorded = self.store.roots_at(height)
        differs = recorded is not None and recorded != (result.state_root, result.results_hash)
        if differs and self._recorded_unexecuted(height):
            log.warning(
                "channel %s: block %d, recorded while the SCORE was unavailable (9100), is "
                "executed now",
                self.channel,
                height,
            )
        elif differs:
            # committed, its state would differ from the network's from here on, every later
            # block's roots with it, and queries would answer from it: the channel stops instead
            # (before, it was logged and committed)
            message = f"re-executing block {height} gave other roots than recorded"
            monitor_log.event(
                "Error", channel=self.channel, kind="score_nondeterministic", message=message
            )
            raise ScoreStateMismatch(
                f"{message} when it was executed: this peer cannot reproduce the state it "
                "recorded, and its state would differ from the network's from there on, so "
                "nothing was committed. Either the SCORE is not deterministic (its results depend "
                "on something besides the chain: see score/README.md), or a transaction came near "
                "SCORE_MEMORY_LIMIT_MB (how near it may come depends on the process's history): "
                "raise SCORE_MEMORY_LIMIT_MB and start the peer again, or give this peer a copy "
                "of another peer's storage"
            )
        await self.supervisor.client.commit_block(height, block.hash.hex())
