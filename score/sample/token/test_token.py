"""sample/token: initial supply, transfers, mint, refusals that change nothing, queries."""

from __future__ import annotations

import copy
import json

import pytest

from loopchain.blockchain.score_base import ScoreError
from score.testkit import ALICE, BOB, OWNER, Harness

SUPPLY = 1_000_000_000


def ask(harness: Harness, method: str, **params: object) -> dict[str, object]:
    return json.loads(harness.score.query(json.dumps({"method": method, "params": params})))


def balance(harness: Harness, address: str) -> object:
    return ask(harness, "balance_of", address=address)["balance"]


def transfer(harness: Harness, sender: str, to: str, value: object) -> None:
    harness.invoke({"method": "transfer", "params": {"to": to, "value": value}}, sender=sender)


@pytest.fixture
def token() -> Harness:
    harness = Harness("sample/token")
    transfer(harness, OWNER, ALICE, 100)  # the first sender becomes the owner
    return harness


def test_first_sender_gets_supply_and_transfers(token: Harness) -> None:
    assert ask(token, "owner") == {"owner": OWNER}
    assert ask(token, "total_supply") == {"total_supply": SUPPLY}
    assert balance(token, OWNER) == SUPPLY - 100
    assert balance(token, ALICE) == 100
    transfer(token, ALICE, BOB, 40)
    assert (balance(token, ALICE), balance(token, BOB)) == (60, 40)
    transfer(token, BOB, BOB, 40)  # to oneself: no change
    assert balance(token, BOB) == 40


def test_nothing_before_first_transaction() -> None:
    harness = Harness("sample/token")
    assert ask(harness, "total_supply") == {"total_supply": 0}
    assert ask(harness, "owner") == {"owner": None}
    assert harness.state.data == {}


def test_configured_owner_gets_supply() -> None:
    info = copy.deepcopy(Harness("sample/token").package.info)
    info["token"]["owner"] = BOB
    harness = Harness("sample/token", info)
    transfer(harness, BOB, ALICE, 5)
    assert (balance(harness, BOB), balance(harness, ALICE)) == (SUPPLY - 5, 5)


def test_insufficient_balance_raises_and_changes_nothing(token: Harness) -> None:
    before = dict(token.state.data)
    with pytest.raises(ScoreError, match="insufficient balance"):
        transfer(token, ALICE, BOB, 101)
    with pytest.raises(ScoreError, match="insufficient balance"):
        transfer(token, BOB, ALICE, 1)
    assert token.state.data == before


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"to": ALICE, "value": 1.5}, "integer"),
        ({"to": ALICE, "value": True}, "integer"),
        ({"to": ALICE, "value": "1"}, "integer"),
        ({"to": ALICE, "value": "0x"}, "hex string"),
        ({"to": ALICE, "value": "0xg"}, "hex string"),
        ({"to": ALICE, "value": "-0x1"}, "hex string"),
        ({"to": ALICE, "value": " 0x1"}, "hex string"),
        ({"to": ALICE, "value": "0x1\n"}, "hex string"),
        ({"to": ALICE, "value": "0x" + "0" * 65}, "hex string"),
        ({"to": ALICE, "value": "0x0"}, "between"),
        ({"to": ALICE, "value": 0}, "between"),
        ({"to": ALICE, "value": -3}, "between"),
        ({"to": "hxABC", "value": 1}, "address"),
        ({"value": 1}, "params.to"),
    ],
)
def test_bad_transfers_raise_and_change_nothing(
    token: Harness, params: dict[str, object], message: str
) -> None:
    before = dict(token.state.data)
    with pytest.raises(ScoreError, match=message):
        token.invoke({"method": "transfer", "params": params}, sender=OWNER)
    assert token.state.data == before


def test_amounts_as_v3_hex_strings(token: Harness) -> None:
    # an ICON v3 "call" carries only strings: a client signs its own transfer in ICON's form
    token.invoke({"method": "transfer", "params": {"to": BOB, "value": "0x1e"}}, ALICE, "client")
    assert (balance(token, ALICE), balance(token, BOB)) == (70, 30)
    token.invoke({"method": "mint", "params": {"value": "0xA", "to": BOB}}, sender=OWNER)
    assert ask(token, "total_supply") == {"total_supply": SUPPLY + 10}
    assert balance(token, BOB) == 40
    before = dict(token.state.data)
    with pytest.raises(ScoreError, match="2\\*\\*256"):
        token.invoke({"method": "mint", "params": {"value": "0x" + "f" * 64}}, sender=OWNER)
    with pytest.raises(ScoreError, match="insufficient balance"):
        token.invoke({"method": "transfer", "params": {"to": BOB, "value": "0x47"}}, ALICE)
    assert token.state.data == before


def test_mint_only_by_owner(token: Harness) -> None:
    token.invoke({"method": "mint", "params": {"value": 50, "to": BOB}}, sender=OWNER)
    token.invoke({"method": "mint", "params": {"value": 7}}, sender=OWNER)
    assert ask(token, "total_supply") == {"total_supply": SUPPLY + 57}
    assert (balance(token, BOB), balance(token, OWNER)) == (50, SUPPLY - 100 + 7)
    before = dict(token.state.data)
    with pytest.raises(ScoreError, match="only the owner"):
        token.invoke({"method": "mint", "params": {"value": 1}}, sender=ALICE)
    with pytest.raises(ScoreError, match="2\\*\\*256"):
        token.invoke({"method": "mint", "params": {"value": 2**256 - 1}}, sender=OWNER)
    assert token.state.data == before


def test_state_holds_integers_canonically(token: Harness) -> None:
    assert token.state.data[f"balance:{ALICE}".encode()] == b"100"
    assert token.state.data[b"token:total_supply"] == str(SUPPLY).encode()


def test_bad_calls_and_queries(token: Harness) -> None:
    with pytest.raises(ScoreError, match="unknown method"):
        token.invoke({"method": "burn", "params": {}}, sender=OWNER)
    with pytest.raises(ScoreError, match="unknown query method"):
        ask(token, "burned")
    with pytest.raises(ScoreError, match=r"params\.address"):
        ask(token, "balance_of", address="nobody")
    with pytest.raises(ScoreError, match="not JSON"):
        token.score.query("balance")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("many", "must be an object"),
        ({"initial_supply": -1}, "token.initial_supply"),
        ({"initial_supply": 1.0}, "token.initial_supply"),
        ({"initial_supply": 1, "owner": "alice"}, "token.owner"),
    ],
)
def test_bad_token_settings_refuse_to_start(settings: object, message: str) -> None:
    info = copy.deepcopy(Harness("sample/token").package.info)
    info["token"] = settings
    with pytest.raises(ScoreError, match=message):
        Harness("sample/token", info)


def test_peer_signed_transactions_move_tokens_only_for_the_configured_owner() -> None:
    info = copy.deepcopy(Harness("sample/token").package.info)
    info["token"]["owner"] = BOB
    harness = Harness("sample/token", info)
    # the owner peer's own transactions move its tokens
    harness.invoke({"method": "transfer", "params": {"to": ALICE, "value": 9}}, BOB, "peer")
    assert balance(harness, ALICE) == 9
    before = dict(harness.state.data)
    # another peer cannot spend tokens, nor mint, for a client it does not name
    for data in (
        {"method": "transfer", "params": {"to": BOB, "value": 1}},
        {"method": "mint", "params": {"value": 1}},
    ):
        with pytest.raises(ScoreError, match="signed this transaction for a client"):
            harness.invoke(data, ALICE, "peer")
    assert harness.state.data == before
    # the same transfer signed by ALICE herself goes through
    harness.invoke({"method": "transfer", "params": {"to": BOB, "value": 1}}, ALICE, "client")
    assert balance(harness, ALICE) == 8


def test_without_an_owner_no_peer_signed_transaction_moves_tokens() -> None:
    harness = Harness("sample/token")
    with pytest.raises(ScoreError, match="signed this transaction for a client"):
        harness.invoke({"method": "transfer", "params": {"to": ALICE, "value": 1}}, BOB, "peer")
    assert ask(harness, "owner") == {"owner": None}  # a peer-signed call took no ownership
