"""The SCORE process: serves ScoreService on a unix socket for one channel's SCORE package.

Run as `python -m loopchain.scoreservice.process --socket PATH [--step-limit N] [--memory-mb N] [-d]`.
Every SCORE call (import, constructor, invoke, query) runs in a worker thread under a deterministic
step limit; the address space is limited by --memory-mb. The process keeps serving when the
package cannot be loaded (Status says why) and exits 0 on SIGTERM.

With --log-records (as its supervisor starts it) its log records go to stderr as lines of JSON,
for the supervisor to log as its own (output.py).

A query call that runs past --query-limit seconds ends the process (SIGALRM, after a dump of its
threads' stacks on stderr): a SCORE's query can spend time without steps (one line of C work, such
as a huge `sum(range(n))` or a regular expression that backtracks), holding the GIL, and with it
every call after it. The blocks waiting behind it would run into their deadline, which counts
towards giving the SCORE up on this peer alone; a process that ended is started again instead.

Before it serves, the process gives up what SCORE code must not have: every capability (a SCORE
run by root cannot read its non-dumpable peer's memory or environment either), the means to gain
privileges through exec (no_new_privs), and files others could read (umask 077).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import faulthandler
import logging
import os
import queue
import re
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any, TypeVar

import grpc

from loopchain.blockchain import coin
from loopchain.blockchain.coin import Ledger
from loopchain.blockchain.execution import (
    BLOCK_RESULTS_FULL,
    MAX_BLOCK_RESULTS_BYTES,
    MAX_RESULT_CODE,
    MIN_RESULT_CODE,
    SCORE_ERROR,
    SUCCESS,
    TxResult,
    clip_message,
    events_json,
    is_valid_text,
    result_bytes,
    valid_text,
)
from loopchain.blockchain.score_base import (
    BlockView,
    EventLog,
    EventLogs,
    ScoreBase,
    ScoreContext,
    TransactionView,
)
from loopchain.configure import (
    DEFAULTS,
    Config,
    RefusalLog,
    install_crash_hooks,
    setup_logging,
)
from loopchain.durable import sync_directory, write_atomic
from loopchain.lifecycle import die_with_parent, stop_on_signals
from loopchain.memory import start_giving_back
from loopchain.monitor_log import start_shipping
from loopchain.protos import score_pb2 as pb
from loopchain.protos import score_pb2_grpc as pb_grpc
from loopchain.safe_text import status_details
from loopchain.scoreservice import (
    ENGINE_FAILED_EXIT,
    MAX_BALANCE_ADDRESSES,
    MAX_QUERIES,
    STOPPED_EXIT,
    STORE_FAILED_EXIT,
    score_link_bytes,
)
from loopchain.scoreservice.output import RecordLines
from loopchain.scoreservice.packages import (
    PackageError,
    PackageUnreadable,
    ScorePackage,
    exception_name,
    exception_slot,
    exception_text,
    load_score_class,
    merge_settings,
    read_package_json,
    unreadable_package_file,
)
from loopchain.scoreservice.state import (
    MAX_BLOCK_WRITE_BYTES,
    BlockGate,
    NoState,
    ReadOnlyState,
    ScoreState,
    StateConflict,
    StateProxy,
    TxOverlay,
    damage_marker,
)
from loopchain.storage import open_store
from loopchain.storage.abc import KeyValueStore, StorageCorrupt, StorageError
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.icon_address import channel_score_address
from loopchain.types.icon_tx import IconTransaction
from loopchain.types.transaction import V3, Transaction
from loopchain.types.validators import ValidatorSet

log = logging.getLogger("loopchain.score")
# a transaction failed (its result says why): at most RefusalLog's lines a second, as anyone may
# send transactions that fail (one INFO line each: ~210 bytes on every peer; log review)
_FAILED = RefusalLog(log, level=logging.INFO)
T = TypeVar("T")

STEP_LIMIT_MESSAGE = "step limit exceeded"
MEMORY_LIMIT_MESSAGE = "memory limit exceeded"
NOT_LOADED = "SCORE not loaded"
CONSTRUCTOR_READS = (
    "a SCORE's constructor cannot read state or blocks (each peer starts its SCORE at another "
    "height): read them in invoke or query"
)
MAX_MESSAGE_BYTES = int(DEFAULTS["GRPC_MAX_MESSAGE_BYTES"])
# A Query reply's bytes beside its answers (the height), and each answer's beside its own (its
# field's tag and length), counted generously
_REPLY_OVERHEAD = 64
_ANSWER_OVERHEAD = 8
# How long one Query call answers queries before it replies with those answered (the peer asks
# the rest again): less than one step-limited query takes (~0.15 s here), so that blocks to
# execute and other calls get their turn between batches as they would between single queries
QUERY_TURN_S = 0.05
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


_metering = threading.local()  # .meter: the StepMeter running SCORE code in this thread


class StepLimitExceeded(BaseException):
    """Raised inside SCORE code that ran more line events than its step limit."""

    def __del__(self) -> None:
        # SCORE code that caught and dropped the exception runs on: trace it again, so its next
        # line raises once more (raising from a trace function switches tracing off).
        meter = getattr(_metering, "meter", None)
        if meter is not None and meter.tripped:
            meter.resume()


class StepMeter:
    """Counts line events in the package's own code and stops a call that exceeds the limit.

    Past the limit every further line of SCORE code raises StepLimitExceeded, and the call counts
    as failed even if the SCORE swallows the exception and returns.

    A module of the package imported in a call (not at load) counts no steps for its top level,
    nor for what that calls: a process imports a module once, so its steps would count in the
    first such call of each process only, and a peer whose SCORE process had been started again
    (kill -9, a missed deadline) recorded "step limit exceeded" where the others recorded
    success. At load (`run(..., imports=True)`) they count.
    """

    def __init__(self, limit: int, roots: list[str]) -> None:
        self.limit = limit
        self._roots = tuple(root.rstrip(os.sep) + os.sep for root in roots)
        self._is_user_file: dict[str, bool] = {}
        self.count = 0
        self.tripped = False
        self._count_imports = True
        self._importing = 0  # module bodies being run uncounted, nested

    def _user_code(self, filename: str) -> bool:
        known = self._is_user_file.get(filename)
        if known is None:
            if len(self._is_user_file) > 10_000:
                self._is_user_file.clear()
            known = self._is_user_file[filename] = filename.startswith(self._roots)
        return known

    def _on_line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.count += 1
            if self.count > self.limit:
                self.tripped = True
                raise StepLimitExceeded(STEP_LIMIT_MESSAGE)
        return self._on_line

    def _on_call(self, frame: Any, event: str, arg: Any) -> Any:
        if self._importing or not self._user_code(frame.f_code.co_filename):
            return None
        if frame.f_code.co_name == "<module>" and not self._count_imports:
            self._importing += 1
            return self._on_module_line
        return self._on_line

    def _on_module_line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "return":  # (also when the module raised)
            self._importing -= 1
        return self._on_module_line

    def resume(self) -> None:
        """Trace this thread again, including the SCORE frames already running."""
        sys.settrace(self._on_call)
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if self._user_code(frame.f_code.co_filename):
                frame.f_trace = self._on_line
            frame = frame.f_back

    def run(self, fn: Callable[[], T], *, imports: bool = False) -> T:
        """fn() with the step limit; raises StepLimitExceeded when it ran past the limit.
        `imports`: the top level of the package's modules imported counts too (at load)."""
        self.count, self.tripped = 0, False
        self._count_imports, self._importing = imports, 0
        _metering.meter = self
        try:
            sys.settrace(self._on_call)
            value = fn()
        except BaseException:
            if self.tripped:
                raise StepLimitExceeded(STEP_LIMIT_MESSAGE) from None
            raise
        finally:
            _metering.meter = None
            sys.settrace(None)
        if self.tripped:
            raise StepLimitExceeded(STEP_LIMIT_MESSAGE)
        return value


class Refused(Exception):
    """A request the process refuses, with the gRPC status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refusal(exc: Refused) -> pb.ScoreQueryAnswer:
    """One query's refusal, as its answer in a Query reply."""
    return pb.ScoreQueryAnswer(code=exc.code.value[0], message=status_details(exc.message))


# an object's address as a repr shows it ("<Item object at 0x7f3a9c2b5d10>"): at least 8 hex
# digits, so a SCORE's own "at 0x10" stays as written
_OBJECT_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{8,}\b")


class MachineWords:
    """What differs between peers in the text of a SCORE's exception, and only that: an object's
    address; the package's folder (a SCORE naming its own file, `__file__`), a path inside it
    being its path within it; and the absolute paths an exception states as its own fields
    (OSError's file names, SyntaxError's, ImportError's module path), by their last part, on
    every peer alike (it may be a client's path as well as this machine's). The rest of the text
    is left as written: it often repeats a client's input, and a first version rewrote this
    machine's folders (temporary, home, Python's) anywhere in it, so a transaction naming "/tmp/x"
    was recorded as "<tmp>/x" on a peer and as written on one whose TMPDIR differs, and the peers'
    results differed (review); 7ab676d shortened every absolute path, and "ratio must be 1 / 2"
    became "1 .../ 2". Left: a client's text naming a peer's package folder exactly is worded on
    that peer as the package's."""

    def __init__(self, package: Path) -> None:
        # the package's folder as a whole path component ("/srv/pkg" in "/srv/pkg2" is not it)
        packages = sorted({str(package), str(package.resolve())}, key=len, reverse=True)
        self._package = re.compile(
            "|".join(f"{re.escape(p)}(?:/|(?![\\w.-]))" for p in packages if len(p) > 1)
        )

    def __call__(self, text: str, exc: BaseException | None = None) -> str:
        for path in _stated_paths(exc):
            text = text.replace(path, PurePosixPath(path).name or path)
        if self._package.pattern:
            text = self._package.sub(lambda found: "" if found[0][-1] == "/" else "<package>", text)
        return _OBJECT_ADDRESS.sub("at 0x...", text)


def _stated_paths(exc: BaseException | None) -> list[str]:
    """The absolute paths `exc` states as fields (its message is made of them), longest first;
    the built-in fields only (exception_slot: a SCORE's property of that name is not run)."""
    if exc is None:
        return []
    fields = [
        exception_slot(OSError, "filename", exc),
        exception_slot(OSError, "filename2", exc),
        exception_slot(SyntaxError, "filename", exc),
        exception_slot(ImportError, "path", exc),
    ]
    paths = {f for f in fields if type(f) is str and f.startswith("/") and len(f) > 1}
    return sorted(paths, key=len, reverse=True)


def describe_error(
    exc: BaseException,
    meter: StepMeter,
    words: Callable[[str, BaseException], str] = lambda text, exc: text,
) -> str:
    """The result message of a SCORE exception: "Type: message" (its str() is step-limited too),
    worded alike on every peer by `words` (MachineWords: results_hash covers it). Before, a
    message naming an object ("<Item object at 0x7f...> is not in list") differed between SCORE
    processes, so the peers' results hashes differed and the chain halted. Nothing of `exc`
    but its str() (metered) is SCORE code the engine runs: its class is tested by `type`, its
    name and fields read as the built-in types store them (a SCORE exception's property that
    raised stalled its block for good, uncounted: review)."""
    if issubclass(type(exc), StepLimitExceeded):
        return STEP_LIMIT_MESSAGE
    if issubclass(type(exc), MemoryError):
        return MEMORY_LIMIT_MESSAGE
    try:
        text = meter.run(lambda: exception_text(exc))
    except BaseException:  # the step limit, or memory
        text = "(message unavailable)"
    name = exception_name(exc)
    return clip_message(valid_text(words(f"{name}: {text}" if text else name, exc)))


def _returned_result(returned: object) -> tuple[int, str]:
    """(code, message) of what invoke returned; raises (failing the transaction) when it is not
    None or {"code": MIN_RESULT_CODE..MAX_RESULT_CODE (int32), "message": valid Unicode text}."""
    if returned is None:
        return SUCCESS, ""
    if type(returned) is dict:
        code, message = returned.get("code"), returned.get("message", "")
        if type(code) is int and type(message) is str:
            if not MIN_RESULT_CODE <= code <= MAX_RESULT_CODE:
                raise ValueError(
                    f"invoke returned code {code}; a result code is {MIN_RESULT_CODE} to "
                    f"{MAX_RESULT_CODE}"
                )
            message = clip_message(message)
            if not is_valid_text(message):
                raise ValueError("invoke returned a message that is not valid Unicode text")
            return code, message
    raise TypeError(
        "invoke must return None or {'code': int, 'message': str}, "
        f"not a {type(returned).__name__} of that shape"
    )


# corrupt state stores moved aside and kept for inspection, newest first: a failing disk that
# corrupts the state at every start would otherwise fill itself with copies of the whole state
KEPT_CORRUPT_COPIES = 2


def _aside_name(path: Path) -> Path:
    """A free name for the store at `path` moved aside: `<name>.corrupt-<time>`, the time in UTC
    to the microsecond, so that the names sort in the order the copies were made while the
    clock goes forward (numbered should two moves meet in one microsecond: a rename onto a kept
    copy would fail)."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    return aside


def _drop_old_copies(path: Path, made: Path) -> None:
    """Removes all but the KEPT_CORRUPT_COPIES newest corrupt copies of the store at `path`, the
    one just `made` always kept (a clock set back would name it older than the others); best
    effort: one that cannot be removed is logged and left."""
    others = [c for c in path.parent.glob(f"{path.name}.corrupt-*") if c.name != made.name]
    for old in sorted(others, reverse=True)[KEPT_CORRUPT_COPIES - 1 :]:  # newest first by name
        try:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        except OSError as exc:
            log.warning("cannot remove the old corrupt state copy %s: %s", old, exc)
        else:
            log.warning(
                "removed the old corrupt state copy %s (the newest %d are kept)",
                old,
                KEPT_CORRUPT_COPIES,
            )


def open_state_store(path: Path) -> KeyValueStore:
    """The SCORE's state store at `path`. A corrupt one (a filesystem error or a repair cut its
    files; or one a read found corrupt while in use, which left `damage_marker`) is moved aside,
    kept for inspection, and a new empty one is opened: the state is made only from the chain,
    and the peer replays its recorded blocks into the new store up to the roots it recorded (a
    SCORE that failed to load instead would give this peer results no other peer gives)."""
    marker = damage_marker(path)
    marked = marker.exists()
    try:
        if marked and path.exists():
            raise StorageCorrupt(marker.read_text(errors="replace")[:1000])
        store = open_store(path)
    except StorageCorrupt as exc:
        aside = _aside_name(path)
        try:
            path.rename(aside)
        except OSError as move:
            raise StorageError(f"{exc}; cannot move it aside: {move}") from None
        log.error("%s; moved aside to %s, a new state is replayed from the chain", exc, aside)
        _drop_old_copies(path, aside)
        store = open_store(path)
    if not marked:  # (one marked since is left for the next process: ScoreSupervisor kills this)
        return store
    try:  # the marked store is gone (moved aside above, or before a crash, or by hand)
        marker.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        store.close()
        raise StorageError(f"cannot remove {marker}: {exc}") from None
    else:
        try:  # durably: a marker back after a power cut had the new store moved aside and the
            # whole chain replayed again (review)
            sync_directory(marker.parent)
        except OSError as exc:
            store.close()
            raise StorageError(f"cannot sync the removal of {marker}: {exc}") from None
    return store


# the SCORE step limit the chain's genesis data states (score_step_limit), as the genesis block's
# execution records it in the state: every peer's transactions then run under it, whatever its
# own SCORE_STEP_LIMIT (an engine key: SCORE code can neither read nor write it)
STEP_LIMIT_KEY = coin.RESERVED_PREFIX + b"score:step_limit"


class LoadedScore:
    """A loaded SCORE with its state: executes blocks and queries (called from a worker thread)."""

    def __init__(self, request: pb.LoadRequest, step_limit: int) -> None:
        self.channel = request.channel
        self.score_address = channel_score_address(request.channel)
        self.events = EventLogs()
        self._results_bytes = 0  # of the block being executed (see MAX_BLOCK_RESULTS_BYTES)
        folder = Path(request.package_path).resolve()
        info = read_package_json(folder)
        if request.settings_json:
            settings = canonical.parse(request.settings_json)
            if not isinstance(settings, dict):
                raise PackageError("score_settings must be a JSON object")
            info = merge_settings(info, settings)
        self.package = ScorePackage(
            id=request.package_id or info["id"],
            version=request.package_version or info["version"],
            all_versions=tuple(request.all_versions) or (info["version"],),
            path=folder,
            main=info["main"],
            info=info,
        )
        self.meter = StepMeter(step_limit, [str(folder)])
        self.words = MachineWords(folder)
        self.state = ScoreState(open_state_store(Path(request.state_path)))
        try:
            self.proxy = StateProxy(ReadOnlyState(self.state, "state writes only inside invoke"))
            self._query_view = ReadOnlyState(self.state, "state is read-only in a query")
            # the load and the constructor under this peer's own limit, fresh or started again
            # (under the chain's after a restart only, a package loading in between its limit
            # and the peer's loaded on one and failed on the other: review)
            self.score = self._construct()
            stated = self.state.read_committed(STEP_LIMIT_KEY)
            if stated is not None:  # the chain's, over this peer's own (see _mint_genesis)
                if not stated.isdigit() or len(stated) > 10:
                    raise StorageCorrupt("SCORE state's step limit is damaged")
                self.meter.limit = int(stated)
        except BaseException:
            self.state.store.close()
            raise

    def _construct(self) -> ScoreBase:
        """The SCORE instance. Its constructor sees neither state nor blocks: it runs when this
        peer's SCORE process starts, at a height of this peer's own, so what it could read (and
        the steps it would count reading it) would differ between peers; its success must be
        the same on every peer at every height, as a failure records 9100 results."""
        logger = logging.getLogger(f"loopchain.score.{self.package.id}")
        blocks = BlockGate(self.state.blocks)
        context = ScoreContext(self.proxy, blocks, logger, self.package.info, self.events)
        cls = self.meter.run(lambda: load_score_class(self.package), imports=True)
        self.proxy.target = NoState(CONSTRUCTOR_READS)
        blocks.closed = CONSTRUCTOR_READS
        try:
            return self._run_score(lambda: cls(context))
        finally:
            self.proxy.reset()
            blocks.closed = None

    def _run_score(self, call: Callable[[], T]) -> T:
        """SCORE code `call` under the step meter. A StorageError one of its reads met is raised
        once it returns or raises, whatever it did with that error (caught it and went on, or
        raised another): this machine's failing disk is never a transaction's result or a
        query's answer, but a store failure (see ScoreServicer._run)."""
        self.state.forget_read_failure()
        try:
            returned = self.meter.run(call)
        except BaseException:
            self.state.raise_read_failure()
            raise
        self.state.raise_read_failure()
        return returned

    def _describe(self, exc: BaseException) -> str:
        """describe_error of what SCORE code raised (its str() is SCORE code too: see _run_score);
        PackageUnreadable when it is this machine failing to read a file of the package (a module
        imported in the call: not the SCORE's fault, as a state store failing is not)."""
        unreadable = unreadable_package_file(exc, self.package.path)
        if unreadable is not None:
            raise PackageUnreadable("cannot read {}: {}".format(*unreadable))
        message = describe_error(exc, self.meter, self.words)
        self.state.raise_read_failure()
        return message

    def invoke_block(self, block: Block) -> tuple[list[TxResult], bytes, bytes]:
        """Execute every transaction of the next block and stage it: (results, roots)."""
        expected = self.state.executed_height + 1
        if block.height != expected:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"block height {block.height} is not the next height {expected} "
                f"(executed height {self.state.executed_height})",
            )
        header = block.header
        view = BlockView(block.height, block.hash.hex(), header.timestamp, header.leader)
        self.state.begin_block()
        self._results_bytes = 0
        if block.height == 0 and block.validator_update is not None:
            self._mint_genesis(block.validator_update)
        results = [
            self._counted(
                self._invoke_icon_tx(tx, view)
                if tx.version == V3
                else self._invoke_tx(
                    tx.hash_hex, tx.data, tx.sender, tx.timestamp, view, tx.signed_by
                )
            )
            for tx in block.transactions
        ]
        staged = self.state.stage_block(view, results)
        return results, staged.state_root, staged.results_hash

    def _unkept(self, result: TxResult, overlay: TxOverlay) -> str | None:
        """Why a successful transaction's `result` and writes cannot be kept in the block being
        executed (MAX_BLOCK_WRITE_BYTES, MAX_BLOCK_RESULTS_BYTES), or None when they can."""
        writes = self.state.block_write_bytes_with(overlay)
        if writes > MAX_BLOCK_WRITE_BYTES:
            return (
                f"block write limit: this transaction's writes would take its block's writes to "
                f"{writes} bytes, limit {MAX_BLOCK_WRITE_BYTES}; they are discarded"
            )
        size = result_bytes(result)
        if self._results_bytes + size > MAX_BLOCK_RESULTS_BYTES:
            return (
                f"{BLOCK_RESULTS_FULL}: this result of {size} bytes would take its block's "
                f"results past {MAX_BLOCK_RESULTS_BYTES} bytes; its writes and events are discarded"
            )
        return None

    def _counted(self, result: TxResult) -> TxResult:
        """`result` counted towards MAX_BLOCK_RESULTS_BYTES; a failure that does not fit any
        more keeps only its code, steps and BLOCK_RESULTS_FULL (a success was fitted before its
        writes were merged: see _unkept)."""
        size = result_bytes(result)
        if self._results_bytes + size > MAX_BLOCK_RESULTS_BYTES:
            result = TxResult(result.tx_hash, result.code, BLOCK_RESULTS_FULL, result.steps)
            size = result_bytes(result)
        self._results_bytes += size
        return result

    def _mint_genesis(self, validators: ValidatorSet) -> None:
        genesis = validators.genesis_data()
        if genesis is None:
            return
        overlay = self.state.overlay()
        Ledger(overlay).mint_genesis([(a.address, a.balance) for a in genesis.accounts])
        if genesis.score_step_limit is not None:  # the chain's step limit, from its first block
            overlay.put(STEP_LIMIT_KEY, str(genesis.score_step_limit).encode())
            self.meter.limit = genesis.score_step_limit
        self.state.merge(overlay)

    def _invoke_icon_tx(self, tx: Transaction, view: BlockView) -> TxResult:
        """A client-signed transaction: the value moves and the SCORE runs (both or neither), and
        the sender pays its steps x STEP_PRICE in any case, at most what it holds."""
        icon = tx.icon()
        steps = coin.steps_for(icon.data_type, icon.data)
        self.events.take()  # nothing left over from a call before
        code, message, events = self._icon_effects(tx, icon, steps, view)
        if code == coin.OUT_OF_STEP:
            steps = icon.step_limit
        fees = self.state.overlay()
        ledger = Ledger(fees)
        ledger.transfer(
            icon.sender, coin.TREASURY, min(ledger.balance(icon.sender), steps * coin.STEP_PRICE)
        )
        self.state.merge(fees)
        return TxResult(tx.hash_hex, code, message, steps, events)

    def _icon_effects(
        self, tx: Transaction, icon: IconTransaction, steps: int, view: BlockView
    ) -> tuple[int, str, tuple[EventLog, ...]]:
        """(failure code or SUCCESS, message, events); the transaction's writes are merged on
        success."""
        if steps > icon.step_limit:
            return coin.OUT_OF_STEP, f"out of step: uses {steps} steps, limit {icon.step_limit}", ()
        overlay = self.state.overlay()
        ledger = Ledger(overlay)
        held, fee = ledger.balance(icon.sender), steps * coin.STEP_PRICE
        if held < icon.value + fee:
            return (
                coin.OUT_OF_BALANCE,
                f"out of balance: {icon.sender} holds {held} loop, needs {icon.value} + fee {fee}",
                (),
            )
        if icon.data_type in ("deploy", "deposit"):
            return coin.UNKNOWN_FAILURE, f"dataType {icon.data_type!r} is not supported", ()
        if icon.to.startswith("cx") and icon.to != self.score_address:
            return coin.CONTRACT_NOT_FOUND, f"no SCORE at {icon.to}", ()  # nothing could spend it
        ledger.transfer(icon.sender, icon.to, icon.value)
        if icon.data_type == "call":
            self.proxy.target = overlay
            view_tx = TransactionView(tx.hash_hex, icon.data, icon.sender, icon.timestamp, "client")
            try:
                code, message = _returned_result(
                    self._run_score(lambda: self.score.invoke(view_tx, view))
                )
            except StorageError:
                raise
            except BaseException as exc:  # whatever a SCORE raises fails only its transaction
                return coin.REVERTED, self._describe(exc), ()
            finally:
                self.proxy.reset()
            if code != SUCCESS:
                return coin.REVERTED, message or f"the SCORE returned code {code}", ()
        events = self.events.take()
        unkept = self._unkept(TxResult(tx.hash_hex, SUCCESS, "", steps, events), overlay)
        if unkept is not None:
            return coin.REVERTED, unkept, ()
        self.state.merge(overlay)
        return SUCCESS, "", events

    def _invoke_tx(
        self, tx_hash: str, data: Any, sender: str, time_us: int, view: BlockView, signed_by: str
    ) -> TxResult:
        overlay = self.state.overlay()
        self.proxy.target = overlay
        transaction = TransactionView(tx_hash, data, sender, time_us, signed_by)
        self.events.take()  # nothing left over from a call before
        try:
            code, message = _returned_result(
                self._run_score(lambda: self.score.invoke(transaction, view))
            )
        except StorageError:
            raise  # a local store failure is not the transaction's result: the whole call fails
        except BaseException as exc:  # whatever a SCORE raises fails only its transaction
            message = self._describe(exc)
            _log_failure(tx_hash, f"failed in the SCORE: {message}")
            return TxResult(tx_hash, SCORE_ERROR, message)
        finally:
            self.proxy.reset()
        result = TxResult(tx_hash, code, message, events=self.events.take())
        unkept = self._unkept(result, overlay)
        if unkept is not None:
            _log_failure(tx_hash, f"failed: {unkept}")
            return TxResult(tx_hash, SCORE_ERROR, unkept)
        self.state.merge(overlay)
        return result

    def query(self, params: str) -> str:
        """The SCORE's answer to a read-only query; Refused when it fails."""
        self.proxy.target = self._query_view
        failure: Refused | None = None
        try:
            answer = self._run_score(lambda: self.score.query(params))
        except StorageError:
            raise  # this machine's store failed, not the query: the process ends (see _run)
        except BaseException as exc:
            limited = issubclass(type(exc), StepLimitExceeded | MemoryError)
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED if limited else grpc.StatusCode.INVALID_ARGUMENT
            )
            failure = Refused(code, f"query failed: {self._describe(exc)}")
        finally:
            self.proxy.reset()
        if failure is not None:
            # raised here, not in the handler, so that it does not hold the SCORE's exception
            # as its context: that holds the SCORE's frames and all they allocated
            raise failure
        if type(answer) is not str:  # (a subclass's methods, or its __class__, are SCORE code)
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"query must return a JSON string, not {type(answer).__name__}",
            )
        return answer

    def answer(
        self, queries: Sequence[str], max_bytes: int, max_seconds: float = QUERY_TURN_S
    ) -> pb.ScoreQueryReply:
        """The answers to the first of `queries`, in order, all from the state at one height; a
        query that fails is refused alone. The reply stops (its caller asks the rest again)
        once answering has taken `max_seconds`, so that a batch of slow queries holds the
        runner, and the blocks waiting for it, no longer than one slow query does; and before an
        answer that would take it past `max_bytes`. The first query is always answered, or
        refused when its answer is larger than `max_bytes` on its own."""
        if len(queries) > MAX_QUERIES:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(queries)} queries in one call, limit {MAX_QUERIES}",
            )
        answers: list[pb.ScoreQueryAnswer] = []
        size = _REPLY_OVERHEAD
        ends = time.monotonic() + max_seconds
        for params in queries:
            if answers and time.monotonic() > ends:
                break
            answer = self._answer(params)
            size += answer.ByteSize() + _ANSWER_OVERHEAD
            if size > max_bytes:
                if answers:
                    break  # asked again in the next call
                answer = _refusal(
                    Refused(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"query answer of {answer.ByteSize()} bytes is larger than a reply "
                        f"may be ({max_bytes} bytes)",
                    )
                )
            answers.append(answer)
        return pb.ScoreQueryReply(height=self.state.executed_height, answers=answers)

    def _answer(self, params: str) -> pb.ScoreQueryAnswer:
        try:
            text = self.query(params)
        except Refused as exc:
            return _refusal(exc)
        try:
            return pb.ScoreQueryAnswer(response_json=text)
        except ValueError:  # protobuf takes only valid UTF-8 (not a lone surrogate)
            return _refusal(
                Refused(grpc.StatusCode.INVALID_ARGUMENT, "query answer is not valid UTF-8 text")
            )

    def balance(self, request: pb.BalanceRequest) -> pb.BalanceReply:
        """Accounts' ICX and the total supply, as the last committed block left them."""
        if len(request.addresses) > MAX_BALANCE_ADDRESSES:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(request.addresses)} addresses in one call, limit {MAX_BALANCE_ADDRESSES}",
            )
        ledger = Ledger(self._query_view)
        return pb.BalanceReply(
            total_supply=str(ledger.total_supply()),
            height=self.state.executed_height,
            balances=[str(ledger.balance(address)) for address in request.addresses],
        )

    def status(self) -> pb.ScoreStatus:
        state = self.state
        return pb.ScoreStatus(
            status=0,
            id=self.package.id,
            version=self.package.version,
            all_version=list(self.package.all_versions),
            executed_height=state.executed_height,
            state_root=state.state_root,
            results_hash=state.results_hash,
        )


def _failed_storage(exc: StorageError) -> str:
    what = (
        "SCORE package unreadable"
        if isinstance(exc, PackageUnreadable)
        else "SCORE state store failed"
    )
    return f"{what}: {exc}"


def load_failure(exc: BaseException, meter: StepMeter) -> str:
    """Why a Load failed, in one line: the engine's own words for its errors, a SCORE's
    exception described as a result is (describe_error: its constructor's exception whose
    str() raised had the process loaded again and again for good, review)."""
    if type(exc) is PackageError:  # (a SCORE's subclass of it is described as its own)
        return f"loading the SCORE failed: {exc}"
    return f"loading the SCORE failed: {describe_error(exc, meter)}"


class SerialRunner:
    """Runs one blocking SCORE call at a time on its own daemon thread (one thread for all
    calls, started with the first); the turn ends when the call does.

    A caller that stops waiting (deadline, cancellation) does not free the turn early, so no two
    calls ever touch the state at once.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # one at most
        self._thread: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            self._calls.get()()

    async def call(self, fn: Callable[[], T]) -> T:
        await self.lock.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            self.lock.release()
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(value)

        def work() -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                value = fn()
            except BaseException as exc:
                error = exc
            try:
                loop.call_soon_threadsafe(settle, value, error)
            except RuntimeError:  # the loop closed meanwhile (the process stops): no one waits
                pass

        try:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="score-calls", daemon=True)
                self._thread.start()
        except BaseException:
            self._thread = None
            self.lock.release()
            raise
        self._calls.put(work)
        return await future


class ScoreServicer(pb_grpc.ScoreServiceServicer):
    """ScoreService over one LoadedScore (or the reason there is none)."""

    def __init__(
        self,
        step_limit: int,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        query_limit: float | None = None,
    ) -> None:
        self.step_limit = step_limit
        self.max_answer_bytes = max_message_bytes
        self.query_limit = query_limit  # seconds a Query call may run (see arm_query_watchdog)
        self.loaded: LoadedScore | None = None
        self.request: pb.LoadRequest | None = None
        self.state_path: Path | None = None  # of the state store, once a Load named it
        self.reason = "waiting for Load"
        self.runner = SerialRunner()
        self.store_failed = asyncio.Event()  # its store takes no more writes: the process ends

    def _status(self) -> pb.ScoreStatus:
        if self.loaded is None:
            return pb.ScoreStatus(status=-1, message=self.reason, executed_height=-1)
        return self.loaded.status()

    async def _run(self, context: Any, work: Callable[[], T], *, executes: bool = False) -> T:
        """`work` on the runner's thread, its refusals and store failures as the call's status;
        when it `executes` a block, any other failure ends the process (ENGINE_FAILED_EXIT)."""
        loop = asyncio.get_running_loop()

        def guarded() -> T:
            try:
                return work()
            except StorageError as exc:  # told here, on the call's thread: its caller may be gone
                self._store_failed(exc)
                loop.call_soon_threadsafe(self.store_failed.set)
                raise
            except Refused:
                raise
            except BaseException as exc:
                if not executes:
                    raise
                log.exception("executing a block failed in the engine; this SCORE process ends")
                logging.shutdown()
                # out of memory is this machine's state, not the block's (counted, one peer
                # short of memory would give up a SCORE the others run): ended as a store failure
                memory = issubclass(type(exc), MemoryError)
                os._exit(STORE_FAILED_EXIT if memory else ENGINE_FAILED_EXIT)

        try:
            return await self.runner.call(guarded)
        except Refused as exc:
            await context.abort(exc.code, status_details(exc.message))
            raise  # abort raises; this line is never reached
        except StorageError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, status_details(_failed_storage(exc)))
            raise

    def _store_failed(self, exc: StorageError) -> None:
        """A store whose write failed takes no more until it is opened again: this process ends
        (STORE_FAILED_EXIT) and its supervisor starts another, which opens the store again and is
        replayed the blocks it misses. One a read found corrupt is marked, so that the next process moves
        it aside and is replayed the whole chain (the same read would fail again, process after
        process)."""
        log.error("%s; this SCORE process ends", _failed_storage(exc))
        if isinstance(exc, StorageCorrupt) and self.state_path is not None:
            try:
                write_atomic(damage_marker(self.state_path), str(exc).encode())
            except OSError as failed:
                log.error("cannot mark the state store for replay: %s", failed)

    def _require_loaded(self) -> LoadedScore:
        if self.loaded is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"{NOT_LOADED}: {self.reason}")
        return self.loaded

    async def Load(self, request: pb.LoadRequest, context: Any) -> pb.ScoreStatus:
        return await self._run(context, lambda: self._load(request))

    def _load(self, request: pb.LoadRequest) -> pb.ScoreStatus:
        if self.loaded is not None:
            if request != self.request:
                raise Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"SCORE {self.loaded.package.id} is already loaded from "
                    f"{self.loaded.package.path}; restart the process to load another",
                )
            return self.loaded.status()
        try:
            self.state_path = Path(request.state_path)
            self.loaded = LoadedScore(request, self.step_limit)
            self.request = request
        except StorageError:
            # this machine's state store cannot be opened or read (read-only or full disk, held
            # by another process): not the package's fault, and "not loaded" would make this peer
            # record results no other peer records. The process ends (see _run) and its supervisor
            # loads it again after a backoff while the peer's execution waits.
            raise
        except BaseException as exc:  # any other failure leaves the process serving, not loaded
            package = str(Path(request.package_path).resolve())
            self.reason = load_failure(exc, StepMeter(self.step_limit, [package]))
            log.warning("%s", self.reason)
            return self._status()
        log.info(
            "SCORE %s %s loaded for channel %s (executed height %d)",
            self.loaded.package.id,
            self.loaded.package.version,
            request.channel,
            self.loaded.state.executed_height,
        )
        return self._status()

    async def Status(self, request: pb.Empty, context: Any) -> pb.ScoreStatus:
        return self._status()

    async def InvokeBlock(self, request: pb.InvokeRequest, context: Any) -> pb.InvokeReply:
        try:
            # its own peer checked these bytes and hashed their transactions
            block = Block.decode_trusted(request.block, request.tx_hashes)
        except EncodingError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, status_details(f"malformed block: {exc}")
            )
        commit = request.commit if request.HasField("commit") else None

        def invoke() -> tuple[list[TxResult], bytes, bytes]:
            if commit is not None:  # the block before, recorded by the peer: committed first
                self._commit(commit.height, commit.block_hash)
            return self._invoke(block)

        results, state_root, result_root = await self._run(context, invoke, executes=True)
        return pb.InvokeReply(
            height=block.height,
            results=[
                pb.TxResult(
                    tx_hash=r.tx_hash,
                    code=r.code,
                    message=r.message,
                    steps=r.steps,
                    events_json=events_json(r.events),
                )
                for r in results
            ],
            state_root=state_root,
            results_hash=result_root,
        )

    def _invoke(self, block: Block) -> tuple[list[TxResult], bytes, bytes]:
        loaded = self._require_loaded()
        if block.header.channel != loaded.channel:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"block of channel {block.header.channel!r}; this SCORE serves {loaded.channel!r}",
            )
        return loaded.invoke_block(block)

    async def CommitBlock(self, request: pb.CommitRequest, context: Any) -> pb.ScoreStatus:
        return await self._run(context, lambda: self._commit(request.height, request.block_hash))

    def _commit(self, height: int, block_hash: str) -> pb.ScoreStatus:
        loaded = self._require_loaded()
        state = loaded.state
        if height == state.executed_height and block_hash in ("", state.block_hash):
            return loaded.status()  # a repeated commit (its reply was lost) is answered again
        staged = state.staged
        if staged is not None and block_hash and staged.view.block_hash != block_hash:
            raise Refused(
                grpc.StatusCode.ABORTED,
                f"cannot commit block {block_hash} at height {height}: "
                f"block {staged.view.block_hash} is staged",
            )
        try:
            state.commit(height)
        except StateConflict as exc:
            raise Refused(grpc.StatusCode.ABORTED, f"{exc}; invoke the block first") from None
        log.debug("committed height %d", height)
        return loaded.status()

    async def RollbackBlock(self, request: pb.RollbackRequest, context: Any) -> pb.ScoreStatus:
        return await self._run(context, lambda: self._rollback(request.height))

    def _rollback(self, height: int) -> pb.ScoreStatus:
        loaded = self._require_loaded()
        staged = loaded.state.staged
        if staged is not None and staged.view.height != height:
            raise Refused(
                grpc.StatusCode.ABORTED,
                f"cannot roll back height {height}: height {staged.view.height} is staged",
            )
        loaded.state.rollback()
        return loaded.status()

    async def Query(self, request: pb.ScoreQueryRequest, context: Any) -> pb.ScoreQueryReply:
        # the state's height with its answers, in one turn
        def answer() -> pb.ScoreQueryReply:
            return self._require_loaded().answer(request.queries, self.max_answer_bytes)

        return await self._run(context, lambda: within(self.query_limit, answer))

    async def Balance(self, request: pb.BalanceRequest, context: Any) -> pb.BalanceReply:
        return await self._run(context, lambda: self._require_loaded().balance(request))

    def close(self) -> None:
        """Close the state store unless a SCORE call still runs (the OS releases it on exit)."""
        if self.loaded is not None and not self.runner.lock.locked():
            self.loaded.state.store.close()


def arm_query_watchdog() -> None:
    """Have SIGALRM dump every thread's stack on stderr and then end the process as it would
    without a handler: what `within` arms. Both act without the GIL, which a query's C work may
    hold for good (a Python-level handler would never run)."""
    faulthandler.register(signal.SIGALRM, all_threads=True, chain=True)


def within(seconds: float | None, work: Callable[[], T]) -> T:
    """work() with a SIGALRM timer of `seconds` running meanwhile (none when None): past it the
    process ends (see arm_query_watchdog). One timer a process: calls are serial (SerialRunner)."""
    if seconds is None:
        return work()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return work()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _limit_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = memory_mb * 1024 * 1024
    soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _die_with_parent(parent_pid: int) -> None:
    """End with the parent (SIGKILL when it dies); exit now if it already has. SIGTERM was
    handled in Python: a SCORE call busy in C code that holds the interpreter (`sum(range(n))`,
    a regular expression backtracking) kept this process, and the state store's lock, past its
    peer's kill -9, and the peer started again could not open its state (review). Every write
    of the state is one synced batch: nothing is torn."""
    if not die_with_parent(parent_pid, signal.SIGKILL):
        log.warning("parent process %d is gone; exiting", parent_pid)
        sys.exit(0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63


def give_up_privileges() -> list[str]:
    """Drop every capability (bounding, ambient, effective, permitted, inheritable) and set
    no_new_privs; returns what could not be done (nothing on Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl, capset = libc.prctl, libc.capset
    except (OSError, AttributeError):
        return ["prctl and capset are not available"]
    failed = []
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        failed.append("no_new_privs")
    for capability in range(_last_capability() + 1):
        prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # EPERM without CAP_SETPCAP: none to drop
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if capset(ctypes.byref(header), data) != 0:
        failed.append(f"capset: {os.strerror(ctypes.get_errno())}")
    return failed


def _bind(server: grpc.aio.Server, socket_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # a stale socket of a process that was killed
    if server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise OSError(f"cannot listen on unix socket {socket_path}")


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    size = int(args.max_message_bytes)  # what a query's answers may take
    link = score_link_bytes(size)  # what an InvokeReply may take (its results are bounded)
    options = [("grpc.max_send_message_length", link), ("grpc.max_receive_message_length", link)]
    server = grpc.aio.server(options=options)
    query_limit = args.query_limit if args.query_limit > 0 else None
    if query_limit is not None:
        arm_query_watchdog()
    servicer = ScoreServicer(args.step_limit, size, query_limit)
    pb_grpc.add_ScoreServiceServicer_to_server(servicer, server)
    socket_path = Path(args.socket)
    _bind(server, socket_path)
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop)
    start_giving_back(args.give_back_mb)
    await server.start()
    log.info("SCORE process %d serving on unix:%s", os.getpid(), socket_path)
    ends = [asyncio.create_task(stop.wait()), asyncio.create_task(servicer.store_failed.wait())]
    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    for end in ends:
        end.cancel()
    log.info("SCORE process %d stopping", os.getpid())
    await server.stop(grace=0.5)
    servicer.close()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    return STORE_FAILED_EXIT if servicer.store_failed.is_set() else STOPPED_EXIT


def _log_failure(tx_hash: str, what: str) -> None:
    """Log that a transaction failed, unless failures came faster than _FAILED takes them."""
    untold = _FAILED.take()
    if untold is not None:
        more = f" ({untold} more failed transactions not logged)" if untold else ""
        log.info("transaction %s %s%s", tx_hash, what, more)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loopchain.scoreservice.process")
    parser.add_argument("--socket", required=True, help="unix socket path to serve on")
    parser.add_argument("--step-limit", type=int, default=DEFAULTS["SCORE_STEP_LIMIT"])
    parser.add_argument("--memory-mb", type=int, default=DEFAULTS["SCORE_MEMORY_LIMIT_MB"])
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULTS["GRPC_MAX_MESSAGE_BYTES"])
    parser.add_argument("--give-back-mb", type=int, default=DEFAULTS["MEMORY_GIVE_BACK_MB"])
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this parent is gone")
    parser.add_argument(
        "--query-limit",
        type=float,
        default=0.0,
        help="end the process when a query call runs longer than this many seconds (0: never)",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-level",
        default=DEFAULTS["LOOPCHAIN_LOG_LEVEL"],
        help="the lowest level logged (as LOOPCHAIN_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-records",
        action="store_true",
        help="write log records to stderr as lines of JSON, for its supervisor to log (output.py)",
    )
    parser.add_argument(
        "--monitor-log", metavar="HOST:PORT", help="ship logs to this fluentd collector"
    )
    parser.add_argument(
        "--monitor-label", default="score", help="the process's label in its log and there"
    )
    args = parser.parse_args(argv)
    if args.step_limit < 1:
        parser.error("--step-limit must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the SCORE process."""
    args = parse_args(argv)
    _limit_memory(args.memory_mb)
    os.umask(0o077)
    setup_logging(
        Config(DEFAULTS).replace(LOOPCHAIN_LOG_LEVEL=args.log_level),
        debug=args.debug,
        process=args.monitor_label,
        stderr_format=RecordLines() if args.log_records else None,
    )
    if args.monitor_log:
        host, _, port = args.monitor_log.rpartition(":")
        start_shipping(host, int(port), "score", args.monitor_label)
    _die_with_parent(args.parent_pid)
    for failure in give_up_privileges():
        log.warning("SCORE process keeps a privilege: %s", failure)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    install_crash_hooks()  # a crash before its log is set up is one record, one write, too
    sys.exit(main())
