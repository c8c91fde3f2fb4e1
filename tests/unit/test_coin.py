"""The native coin (loopchain/blockchain/coin.py): steps, balances, transfers and the genesis mint,
over the SCORE state's own overlay (ScoreState / TxOverlay on an in-memory store)."""

from __future__ import annotations

import pytest

from loopchain.blockchain import coin
from loopchain.blockchain.coin import MAX_AMOUNT, RESERVED_PREFIX, Ledger, steps_for
from loopchain.blockchain.execution import next_state_root
from loopchain.blockchain.score_base import BlockView, ScoreError
from loopchain.scoreservice.state import ReadOnlyState, ScoreState, TxOverlay
from loopchain.storage.memory import MemoryStore
from loopchain.types.hashing import EMPTY_ROOT

A = "hx" + "a" * 40
B = "hx" + "b" * 40
C = "hx" + "c" * 40
SCORE = "cx" + "d" * 40


def balance_key(address: str) -> bytes:
    return b"\x00icx:balance:" + address.encode()


SUPPLY_KEY = b"\x00icx:supply"


def funded(accounts: list[tuple[str, int]]) -> ScoreState:
    """A state whose block so far minted `accounts` (merged, not committed)."""
    state = ScoreState(MemoryStore())
    state.begin_block()
    overlay = state.overlay()
    Ledger(overlay).mint_genesis(accounts)
    state.merge(overlay)
    return state


# -- the step schedule


def test_the_constants_are_icons() -> None:
    assert coin.ICX == 10**18
    assert coin.STEP_PRICE == 12_500_000_000 == 125 * 10**8
    assert (coin.STEP_DEFAULT, coin.STEP_INPUT_PER_BYTE, coin.STEP_CONTRACT_CALL) == (
        100_000,
        200,
        25_000,
    )
    assert MAX_AMOUNT == 2**256 - 1
    assert coin.TREASURY.startswith("hx") and len(coin.TREASURY) == 42
    codes = (coin.UNKNOWN_FAILURE, coin.CONTRACT_NOT_FOUND, coin.METHOD_NOT_FOUND)
    assert codes == (1, 2, 3)
    assert (coin.OUT_OF_STEP, coin.OUT_OF_BALANCE, coin.REVERTED) == (10, 11, 32)


@pytest.mark.parametrize(
    ("data_type", "data", "steps"),
    [
        (None, None, 100_000),  # a plain transfer
        ("message", "hi", 100_000 + 200 * len('"hi"')),
        ("message", "", 100_000 + 200 * 2),
        ("message", "é", 100_000 + 200 * 4),  # bytes of UTF-8, not characters
        ("call", {"method": "m"}, 100_000 + 200 * len('{"method":"m"}') + 25_000),
        # canonical JSON: keys sorted, no spaces, whatever order the client wrote
        (
            "call",
            {"params": {"b": "1", "a": "2"}, "method": "set"},
            100_000 + 200 * len('{"method":"set","params":{"a":"2","b":"1"}}') + 25_000,
        ),
        ("call", None, 100_000 + 25_000),
        (
            "deploy",
            {"contentType": "x", "content": "0x00"},
            100_000 + 200 * len('{"content":"0x00","contentType":"x"}'),
        ),
        ("deposit", {"action": "add"}, 100_000 + 200 * len('{"action":"add"}')),
        ("message", None, 100_000),
    ],
)
def test_steps_follow_the_schedule(data_type: str | None, data: object, steps: int) -> None:
    assert steps_for(data_type, data) == steps


def test_steps_do_not_depend_on_key_order() -> None:
    one = {"method": "set", "params": {"key": "k", "value": "v"}}
    other = {"params": {"value": "v", "key": "k"}, "method": "set"}
    assert steps_for("call", one) == steps_for("call", other)
    assert steps_for("call", one) != steps_for(
        "call", {**one, "params": {"key": "kk", "value": "v"}}
    )


# -- balances and the mint


def test_an_unknown_account_holds_nothing_and_the_supply_starts_at_zero() -> None:
    ledger = Ledger(ScoreState(MemoryStore()).overlay())
    assert ledger.balance(A) == 0
    assert ledger.total_supply() == 0


def test_mint_genesis_credits_every_account_and_records_their_sum() -> None:
    overlay = ScoreState(MemoryStore()).overlay()
    ledger = Ledger(overlay)
    ledger.mint_genesis([(A, 7 * coin.ICX), (B, 1), (C, MAX_AMOUNT - 7 * coin.ICX - 1)])
    assert (ledger.balance(A), ledger.balance(B)) == (7 * coin.ICX, 1)
    assert ledger.balance(C) == MAX_AMOUNT - 7 * coin.ICX - 1
    assert ledger.total_supply() == MAX_AMOUNT
    # the keys and values are part of every peer's state root: pin them
    assert overlay.writes == {
        balance_key(A): str(7 * coin.ICX).encode(),
        balance_key(B): b"1",
        balance_key(C): str(MAX_AMOUNT - 7 * coin.ICX - 1).encode(),
        SUPPLY_KEY: str(MAX_AMOUNT).encode(),
    }
    assert all(key.startswith(RESERVED_PREFIX) for key in overlay.writes)


def test_mint_genesis_of_no_account_records_a_zero_supply() -> None:
    overlay = ScoreState(MemoryStore()).overlay()
    Ledger(overlay).mint_genesis([])
    assert overlay.writes == {SUPPLY_KEY: b"0"}


def test_a_zero_genesis_balance_stores_no_value() -> None:
    overlay = ScoreState(MemoryStore()).overlay()
    Ledger(overlay).mint_genesis([(A, 0), (B, 3)])
    # a zero balance is a delete (no "0" is ever stored), the same on every peer
    assert overlay.writes == {balance_key(A): None, balance_key(B): b"3", SUPPLY_KEY: b"3"}


def test_a_genesis_balance_beyond_the_bound_is_refused() -> None:
    ledger = Ledger(ScoreState(MemoryStore()).overlay())
    with pytest.raises(ValueError, match="out of range"):
        ledger.mint_genesis([(A, MAX_AMOUNT + 1)])
    ledger.mint_genesis([(B, MAX_AMOUNT)])  # the bound itself is a balance
    assert ledger.balance(B) == MAX_AMOUNT


def test_balances_commit_with_the_block_and_are_read_back_by_a_new_state() -> None:
    store = MemoryStore()
    state = ScoreState(store)
    state.begin_block()
    overlay = state.overlay()
    Ledger(overlay).mint_genesis([(A, 10), (B, 5)])
    state.merge(overlay)
    staged = state.stage_block(BlockView(0, "00" * 32, 1, A), [])
    writes = {balance_key(A): b"10", balance_key(B): b"5", SUPPLY_KEY: b"15"}
    assert staged.state_root == next_state_root(EMPTY_ROOT, writes)
    state.commit(0)
    view = ReadOnlyState(ScoreState(store), "read only")
    ledger = Ledger(view)
    assert (ledger.balance(A), ledger.balance(B), ledger.total_supply()) == (10, 5, 15)
    with pytest.raises(ScoreError, match="read only"):
        ledger.transfer(A, B, 1)  # a read-only view takes no transfer


# -- transfers


def test_a_transfer_moves_the_amount_and_keeps_the_supply() -> None:
    state = funded([(A, 100), (B, 1)])
    overlay = state.overlay()
    ledger = Ledger(overlay)
    ledger.transfer(A, B, 30)
    assert (ledger.balance(A), ledger.balance(B), ledger.total_supply()) == (70, 31, 101)
    assert overlay.writes == {balance_key(A): b"70", balance_key(B): b"31"}
    # the overlay is the transaction's: nothing reached the block until it is merged
    assert Ledger(state.overlay()).balance(A) == 100


def test_a_transfer_of_everything_deletes_the_senders_key() -> None:
    state = funded([(A, 100)])
    overlay = state.overlay()
    Ledger(overlay).transfer(A, C, 100)
    assert overlay.writes == {balance_key(A): None, balance_key(C): b"100"}


def test_the_whole_supply_moves_to_one_account() -> None:
    state = funded([(A, MAX_AMOUNT - 1), (B, 1)])
    overlay = state.overlay()
    ledger = Ledger(overlay)
    ledger.transfer(B, A, 1)
    assert ledger.balance(A) == MAX_AMOUNT and ledger.balance(B) == 0


@pytest.mark.parametrize(("sender", "amount"), [(A, 101), (C, 1), (B, 2)])
def test_a_transfer_beyond_the_senders_balance_is_refused_and_writes_nothing(
    sender: str, amount: int
) -> None:
    state = funded([(A, 100), (B, 1)])
    overlay = state.overlay()
    with pytest.raises(ValueError, match=f"{sender} holds"):
        Ledger(overlay).transfer(sender, C, amount)
    assert overlay.writes == {}


def test_a_transfer_to_oneself_writes_nothing_but_still_needs_the_amount() -> None:
    state = funded([(A, 100)])
    overlay = state.overlay()
    ledger = Ledger(overlay)
    ledger.transfer(A, A, 100)
    assert overlay.writes == {} and ledger.balance(A) == 100
    with pytest.raises(ValueError, match="holds 100 loop, needs 101"):
        ledger.transfer(A, A, 101)
    assert overlay.writes == {}


def test_a_zero_transfer_writes_nothing_even_from_an_empty_account() -> None:
    overlay = funded([(A, 1)]).overlay()
    Ledger(overlay).transfer(C, A, 0)
    Ledger(overlay).transfer(A, SCORE, 0)
    assert overlay.writes == {}


def test_the_coins_keys_are_the_ones_score_code_is_refused() -> None:
    # StateProxy refuses keys starting with RESERVED_PREFIX; every key the ledger writes must
    # start with it, or a SCORE could forge a balance
    overlay = funded([(A, 100)]).overlay()
    ledger = Ledger(overlay)
    ledger.transfer(A, SCORE, 40)
    ledger.mint_genesis([(C, 1)])
    assert overlay.writes and all(key.startswith(b"\x00") for key in overlay.writes)


def test_a_negative_transfer_is_refused_and_writes_nothing() -> None:
    state = funded([(A, 5)])
    overlay: TxOverlay = state.overlay()
    with pytest.raises(ValueError, match="amounts are not negative"):
        Ledger(overlay).transfer(A, C, -1)
    assert overlay.writes == {}


def test_a_transfer_overflowing_the_recipient_is_refused_and_writes_nothing() -> None:
    state = ScoreState(MemoryStore())
    overlay = state.overlay()
    Ledger(overlay).mint_genesis([(A, MAX_AMOUNT)])
    Ledger(overlay).mint_genesis([(B, 1)])  # two mints: nothing bounds their sum
    state.merge(overlay)
    overlay = state.overlay()
    with pytest.raises(ValueError, match=f"{A} would hold more than"):
        Ledger(overlay).transfer(B, A, 1)
    assert overlay.writes == {}
