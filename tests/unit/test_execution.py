"""Transaction results, the results hash and the state-root chain (loopchain.blockchain.execution)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopchain.blockchain.execution import (
    MAX_RESULT_MESSAGE_CHARS,
    NOT_INVOKED,
    SCORE_ERROR,
    SCORE_UNREACHABLE,
    SUCCESS,
    TxResult,
    clip_message,
    next_state_root,
    results_hash,
)
from loopchain.blockchain.score_base import BlockView, ScoreError
from loopchain.scoreservice.process import StepLimitExceeded, StepMeter
from loopchain.scoreservice.state import (
    BLOCK_CACHE_SIZE,
    MAX_TX_WRITE_BYTES,
    MAX_VALUE_BYTES,
    ReadOnlyState,
    ScoreState,
    StateConflict,
    StateProxy,
)
from loopchain.storage.memory import MemoryStore
from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.hashing import EMPTY_ROOT, merkle_root, sha3_256

keys = st.binary(min_size=1, max_size=16)
values = st.none() | st.binary(max_size=16)
writes_st = st.dictionaries(keys, values, max_size=12)
roots = st.binary(min_size=32, max_size=32)
results_st = st.lists(
    st.builds(
        TxResult,
        tx_hash=st.text(alphabet="0123456789abcdef", min_size=1, max_size=8),
        code=st.sampled_from([SUCCESS, NOT_INVOKED, SCORE_ERROR, SCORE_UNREACHABLE, 1]),
        message=st.text(max_size=10),
    ),
    max_size=8,
)


def test_result_codes_are_the_compat_values() -> None:
    assert (SUCCESS, NOT_INVOKED, SCORE_ERROR, SCORE_UNREACHABLE) == (0, 2, 9000, 9100)


def test_tx_result_json_round_trip_and_validation() -> None:
    result = TxResult("ab12", SCORE_ERROR, "ValueError: no")
    assert result.to_json() == {"tx_hash": "ab12", "code": 9000, "message": "ValueError: no"}
    assert TxResult.from_json(result.to_json()) == result
    assert TxResult("ab", 0).message == ""
    with pytest.raises(EncodingError, match="code"):
        TxResult.from_json({"tx_hash": "ab", "code": True, "message": ""})
    with pytest.raises(EncodingError, match="message"):
        TxResult.from_json({"tx_hash": "ab", "code": 0})


def test_results_hash_of_nothing_is_the_empty_root() -> None:
    assert results_hash([]) == EMPTY_ROOT


def test_results_hash_is_the_merkle_root_of_result_digests() -> None:
    results = [TxResult("aa", 0), TxResult("bb", 9000, "KeyError: 'x'")]
    leaves = [sha3_256(canonical.encode(r.to_json())) for r in results]
    assert results_hash(results) == merkle_root(leaves)


@given(results_st)
def test_results_hash_changes_with_any_field(results: list[TxResult]) -> None:
    base = results_hash(results)
    assert results_hash(list(results)) == base
    for index, result in enumerate(results):
        for changed in (
            TxResult(result.tx_hash + "0", result.code, result.message),
            TxResult(result.tx_hash, result.code + 1, result.message),
            TxResult(result.tx_hash, result.code, result.message + "x"),
        ):
            altered = [*results[:index], changed, *results[index + 1 :]]
            assert results_hash(altered) != base


def test_results_hash_depends_on_order() -> None:
    a, b = TxResult("aa", 0), TxResult("bb", 0)
    assert results_hash([a, b]) != results_hash([b, a])


def test_state_root_formula() -> None:
    writes: dict[bytes, bytes | None] = {b"k2": None, b"k1": b"\x01"}
    listed = canonical.encode([["6b31", "01"], ["6b32", None]])
    expected = sha3_256(b"loopchain.state." + EMPTY_ROOT + sha3_256(listed))
    assert next_state_root(EMPTY_ROOT, writes) == expected


@given(writes_st, roots)
def test_the_root_is_the_formula_over_the_hex_listing_of_any_writes(
    writes: dict[bytes, bytes | None], prev: bytes
) -> None:
    """The writes are hashed one at a time (their listing made whole would take several times
    their size in memory): the same digest as the canonical JSON of the whole listing."""
    listed = canonical.encode(
        [
            [key.hex(), None if value is None else value.hex()]
            for key, value in sorted(writes.items())
        ]
    )
    expected = sha3_256(b"loopchain.state." + prev + sha3_256(listed))
    assert next_state_root(prev, writes) == expected


def test_a_block_without_writes_still_advances_the_root() -> None:
    first = next_state_root(EMPTY_ROOT, {})
    assert first != EMPTY_ROOT
    assert next_state_root(first, {}) != first


def test_state_root_rejects_malformed_input() -> None:
    with pytest.raises(EncodingError, match="32 bytes"):
        next_state_root(b"short", {})
    with pytest.raises(TypeError):
        next_state_root(EMPTY_ROOT, {"text": b"v"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        next_state_root(EMPTY_ROOT, {b"k": "text"})  # type: ignore[dict-item]


@given(writes_st, roots, st.randoms(use_true_random=False))
def test_state_root_ignores_insertion_order(
    writes: dict[bytes, bytes | None], prev: bytes, rnd: random.Random
) -> None:
    items = list(writes.items())
    rnd.shuffle(items)
    assert next_state_root(prev, dict(items)) == next_state_root(prev, writes)


@given(writes_st, roots, keys, values)
def test_any_change_of_a_write_changes_the_root(
    writes: dict[bytes, bytes | None], prev: bytes, key: bytes, value: bytes | None
) -> None:
    base = next_state_root(prev, writes)
    if writes.get(key, "absent") != value:  # a write added or its value (or deletion) changed
        assert next_state_root(prev, {**writes, key: value}) != base
    if writes:
        first = next(iter(writes))
        assert next_state_root(prev, {k: v for k, v in writes.items() if k != first}) != base


@given(writes_st, roots, roots)
def test_the_root_commits_to_the_history(
    writes: dict[bytes, bytes | None], prev: bytes, other: bytes
) -> None:
    if prev != other:
        assert next_state_root(prev, writes) != next_state_root(other, writes)


def test_a_delete_differs_from_an_empty_value() -> None:
    assert next_state_root(EMPTY_ROOT, {b"k": None}) != next_state_root(EMPTY_ROOT, {b"k": b""})


def test_clip_message_bounds_length_deterministically() -> None:
    assert clip_message("short") == "short"
    long = "x" * (MAX_RESULT_MESSAGE_CHARS + 50)
    clipped = clip_message(long)
    assert len(clipped) == MAX_RESULT_MESSAGE_CHARS
    assert clipped.endswith("...")
    assert clip_message(long) == clipped


# -- the SCORE state (loopchain.scoreservice.state) over a memory store ----------------------------


def _view(height: int) -> BlockView:
    return BlockView(height, f"{height:064x}", 1_000 + height, "hxleader")


def test_reads_see_the_transaction_then_the_block_then_the_committed_state() -> None:
    store = MemoryStore()
    state = ScoreState(store)
    state.begin_block()
    first = state.overlay()
    first.put(b"a", b"1")
    first.put(b"b", b"1")
    assert state.read_staged(b"a") is None  # not merged yet
    state.merge(first)
    second = state.overlay()
    second.delete(b"a")
    assert (second.get(b"a"), second.get(b"b")) == (None, b"1")
    failed = state.overlay()
    failed.put(b"c", b"dirty")  # dropped: never merged
    state.merge(second)
    staged = state.stage_block(
        _view(0), [TxResult("aa", 0), TxResult("bb", 0), TxResult("cc", 9000)]
    )
    assert staged.state_root == next_state_root(EMPTY_ROOT, {b"a": None, b"b": b"1"})
    assert state.read_committed(b"b") is None and state.executed_height == -1
    state.commit(0)
    assert (state.read_committed(b"a"), state.read_committed(b"b")) == (None, b"1")
    assert state.read_committed(b"c") is None


def test_a_commit_survives_reopening_and_a_rollback_leaves_nothing() -> None:
    store = MemoryStore()
    state = ScoreState(store)
    for height in range(3):
        state.begin_block()
        overlay = state.overlay()
        overlay.put(b"h", str(height).encode())
        state.merge(overlay)
        staged = state.stage_block(_view(height), [TxResult(f"{height:02x}", 0)])
        state.commit(height)
    state.begin_block()
    overlay = state.overlay()
    overlay.put(b"h", b"never")
    state.merge(overlay)
    state.stage_block(_view(3), [])
    state.rollback()
    with pytest.raises(StateConflict, match="nothing is staged"):
        state.commit(3)
    reopened = ScoreState(store)
    assert reopened.executed_height == 2
    assert (reopened.state_root, reopened.results_hash) == (staged.state_root, staged.results_hash)
    assert reopened.block_hash == _view(2).block_hash
    assert reopened.read_committed(b"h") == b"2"
    assert reopened.blocks.last_block() == _view(2)
    assert reopened.blocks.block_by_hash(_view(1).block_hash) == _view(1)
    assert reopened.blocks.block_by_height(3) is None
    assert reopened.blocks.block_by_hash("ff" * 32) is None


def test_only_the_staged_height_can_be_committed() -> None:
    state = ScoreState(MemoryStore())
    state.begin_block()
    state.stage_block(_view(0), [])
    with pytest.raises(StateConflict, match="height 0 is staged"):
        state.commit(1)
    state.commit(0)
    assert state.executed_height == 0


def test_state_access_checks_keys_and_values_and_refuses_writes_outside_invoke() -> None:
    state = ScoreState(MemoryStore())
    overlay = state.overlay()
    with pytest.raises(TypeError, match="keys must be bytes"):
        overlay.put("text", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values must be bytes"):
        overlay.put(b"k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 to"):
        overlay.get(b"")
    read_only = ReadOnlyState(state, "read-only here")
    proxy = StateProxy(read_only)
    with pytest.raises(ScoreError, match="read-only here"):
        proxy.put(b"k", b"v")
    proxy.target = overlay
    proxy.put(b"k", b"v")
    assert overlay.writes == {b"k": b"v"}
    proxy.reset()
    with pytest.raises(ScoreError):
        proxy.delete(b"k")


def test_old_blocks_are_read_from_the_store_beyond_the_cache() -> None:
    state = ScoreState(MemoryStore())
    for height in range(BLOCK_CACHE_SIZE + 5):
        state.begin_block()
        state.stage_block(_view(height), [])
        state.commit(height)
    assert state.blocks.block_by_height(0) == _view(0)
    assert state.blocks.block_by_hash(_view(2).block_hash) == _view(2)
    assert state.blocks.last_block() == _view(BLOCK_CACHE_SIZE + 4)


# -- the step meter of the SCORE process ----------------------------------------------------------

LOOPS = """
def loop():
    while True:
        pass

def swallowing_loop():
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass

def caught_and_returned():
    try:
        while True:
            pass
    except BaseException:
        return "escaped"

def short(n):
    total = 0
    for i in range(n):
        total += i
    return total
"""


@pytest.fixture
def user_module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "user_loops.py"
    path.write_text(LOOPS)
    spec = importlib.util.spec_from_file_location("user_loops_for_meter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["loop", "swallowing_loop", "caught_and_returned"])
def test_the_step_meter_stops_every_loop(
    tmp_path: Path, user_module: ModuleType, name: str
) -> None:
    meter = StepMeter(5_000, [str(tmp_path)])
    for _ in range(2):  # the same count both times: deterministic
        with pytest.raises(StepLimitExceeded, match="step limit exceeded"):
            meter.run(getattr(user_module, name))
        assert meter.tripped
    assert sys.gettrace() is None


def test_the_step_meter_counts_only_user_lines(tmp_path: Path, user_module: ModuleType) -> None:
    meter = StepMeter(1_000, [str(tmp_path)])
    assert meter.run(lambda: user_module.short(100)) == 4950
    first = meter.count
    assert meter.run(lambda: user_module.short(100)) == 4950
    assert meter.count == first and not meter.tripped
    assert meter.run(lambda: sum(range(100_000))) == sum(range(100_000))  # not user code
    assert meter.count == 0
    with pytest.raises(StepLimitExceeded):
        meter.run(lambda: user_module.short(1_000))


def test_writes_count_each_key_once_with_its_last_value() -> None:
    """A transaction's writes are bounded by what they leave (a key written again counts its
    last value, a delete its key), and a write past the bound fails, leaving the writes before
    it; a block counts what its merged transactions leave the same way."""
    state = ScoreState(MemoryStore())
    overlay = state.overlay()
    value = b"v" * MAX_VALUE_BYTES
    for _ in range(3 * MAX_TX_WRITE_BYTES // MAX_VALUE_BYTES):  # one key, many times its bound
        overlay.put(b"k", value)
    assert overlay.write_bytes == 1 + MAX_VALUE_BYTES
    overlay.delete(b"k")
    assert overlay.write_bytes == 1
    fits = MAX_TX_WRITE_BYTES // (MAX_VALUE_BYTES + 2)
    for index in range(fits):
        overlay.put(b"%02d" % index, value)
    before = dict(overlay.writes)
    with pytest.raises(ScoreError, match=f"at most {MAX_TX_WRITE_BYTES} bytes"):
        overlay.put(b"over", value)
    assert overlay.writes == before
    state.merge(overlay)
    again = state.overlay()
    again.put(b"00", b"")  # replaces a value of the block's
    assert state.block_write_bytes_with(again) == overlay.write_bytes - MAX_VALUE_BYTES
