"""Genesis accounts of a channel: parsing, every refusal, the canonical text, and the validator set
that carries it (sets without one hash exactly as before)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.genesis import (
    MAX_BALANCE,
    MAX_GENESIS_ACCOUNTS,
    MAX_LEADER_TURN,
    MAX_SCORE_STEP_LIMIT,
    GenesisAccount,
    GenesisData,
)
from loopchain.types.validators import Group, Validator, ValidatorSet

GOD = "hxe7af5fcfd8dfc67530a01a0e403882687528dfcb"
TREASURY = "hx1000000000000000000000000000000000000000"
ICX = 10**18
# localnet.sh's default GENESIS, as written there
LOCALNET = {
    "accounts": [
        {"name": "god", "address": GOD, "balance": "0xd3c21bcecceda1000000"},
        {"name": "treasury", "address": TREASURY, "balance": "0x0"},
    ],
    "message": "loopchain local network: development genesis",
}


def addr(i: int) -> str:
    return f"hx{i:040x}"


def test_the_localnet_genesis_funds_the_sdk_key_with_a_million_icx() -> None:
    data = GenesisData.from_json(LOCALNET)
    assert data.accounts == (
        GenesisAccount("god", GOD, 1_000_000 * ICX),
        GenesisAccount("treasury", TREASURY, 0),
    )
    assert data.message == "loopchain local network: development genesis"
    assert data.total_supply == 1_000_000 * ICX
    # the key the ICON SDK tests publish is the funded account
    secret = bytes.fromhex("592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c")
    assert Signer(secret).address == GOD


def test_round_trip_and_canonical_text() -> None:
    data = GenesisData.from_json(LOCALNET)
    assert data.to_json() == LOCALNET
    assert GenesisData.from_json(data.to_json()) == data
    text = data.encoded()
    assert isinstance(text, str)
    assert text == canonical.encode(LOCALNET).decode()
    assert text.startswith('{"accounts":[{"address":"hxe7af')  # sorted keys, no spaces
    assert GenesisData.decode(text) == data
    # balances come back in minimal lowercase hex; an empty message is not written
    spelled = GenesisData.from_json(
        {"accounts": [{"name": "a", "address": addr(1), "balance": "0x00ff"}], "message": ""}
    )
    assert spelled.to_json() == {"accounts": [{"name": "a", "address": addr(1), "balance": "0xff"}]}
    assert GenesisData.from_json({"accounts": []}) == GenesisData(())
    assert GenesisData(()).total_supply == 0


def test_a_channels_network_id_is_read_written_and_bounded() -> None:
    """`nid` gives a channel its own network id for v3 transactions, written as ICON writes it."""
    data = GenesisData.from_json({**LOCALNET, "nid": "0xffffffff"})
    assert data.nid == 2**32 - 1 and data.to_json() == {**LOCALNET, "nid": "0xffffffff"}
    assert GenesisData.decode(data.encoded()) == data
    assert GenesisData.from_json(LOCALNET).nid is None and "nid" not in LOCALNET
    for bad in ("0x0", "0x05", "0X5", "5", "0x100000000", 5, None, "0xg"):
        with pytest.raises(EncodingError, match="field 'nid' must be a network id"):
            GenesisData.from_json({**LOCALNET, "nid": bad})
    with pytest.raises(EncodingError, match="'nid' must be a network id from 0x1"):
        GenesisData((), nid=0)


def test_a_channels_leader_turn_is_read_written_and_bounded() -> None:
    """`leader_block_creation_limit` states the channel's leader turn, one value for every
    peer, written as ICON writes integers."""
    data = GenesisData.from_json({**LOCALNET, "leader_block_creation_limit": "0xffff"})
    assert data.leader_block_creation_limit == MAX_LEADER_TURN == 65535
    assert data.to_json() == {**LOCALNET, "leader_block_creation_limit": "0xffff"}
    assert GenesisData.decode(data.encoded()) == data
    both = {**LOCALNET, "score_step_limit": "0x5", "leader_block_creation_limit": "0x14"}
    assert GenesisData.from_json(both).to_json() == both
    assert GenesisData.from_json(LOCALNET).leader_block_creation_limit is None
    for bad in ("0x0", "0x10000", "0X5", "20", "", "0x-1"):
        with pytest.raises(EncodingError, match="leader_block_creation_limit"):
            GenesisData.from_json({**LOCALNET, "leader_block_creation_limit": bad})
    for bad_type in (20, None, True, ["0x5"]):
        with pytest.raises(EncodingError, match="'leader_block_creation_limit' must be a string"):
            GenesisData.from_json({**LOCALNET, "leader_block_creation_limit": bad_type})
    for wrong in (0, -1, 2**16, True):
        with pytest.raises(EncodingError, match="'leader_block_creation_limit' must be from 0x1"):
            GenesisData((), leader_block_creation_limit=wrong)


def test_a_channels_score_step_limit_is_read_written_and_bounded() -> None:
    """`score_step_limit` states the channel's SCORE step limit, one value for every peer."""
    data = GenesisData.from_json({**LOCALNET, "score_step_limit": "0x7fffffff"})
    assert data.score_step_limit == MAX_SCORE_STEP_LIMIT == 2**31 - 1
    assert data.to_json() == {**LOCALNET, "score_step_limit": "0x7fffffff"}
    assert GenesisData.decode(data.encoded()) == data
    assert GenesisData.from_json({**LOCALNET, "score_step_limit": "0x01"}).to_json() == {
        **LOCALNET,
        "score_step_limit": "0x1",
    }
    assert GenesisData.from_json(LOCALNET).score_step_limit is None
    for bad in ("0x0", "0x80000000", "0X5", "5", "", "0xg"):
        with pytest.raises(EncodingError, match="score_step_limit"):
            GenesisData.from_json({**LOCALNET, "score_step_limit": bad})
    for bad_type in (5, None, True, ["0x5"]):
        with pytest.raises(EncodingError, match="field 'score_step_limit' must be a string"):
            GenesisData.from_json({**LOCALNET, "score_step_limit": bad_type})
    for wrong in (0, -1, 2**31, True):
        with pytest.raises(EncodingError, match="'score_step_limit' must be from 0x1"):
            GenesisData((), score_step_limit=wrong)
    # another spelling of the same data is not the canonical text of a validator set
    spelled = data.encoded().replace('"0x7fff', '"0x07fff')
    with pytest.raises(EncodingError, match="canonical"):
        GenesisData.decode(spelled)


def test_the_limits_themselves_are_accepted() -> None:
    top = {"name": "n" * 64, "address": addr(1), "balance": "0x" + "f" * 64}
    data = GenesisData.from_json({"accounts": [top], "message": "m" * 1000})
    assert data.total_supply == MAX_BALANCE == 2**256 - 1
    many = [{"name": "a", "address": addr(i), "balance": "0x1"} for i in range(1000)]
    assert GenesisData.from_json({"accounts": many}).total_supply == MAX_GENESIS_ACCOUNTS
    assert GenesisData.from_json({"accounts": [{**top, "name": "é"}]}).accounts[0].name == "é"


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """LOCALNET with the item at `path` set to `value` (deleted when value is ...)."""
    data = copy.deepcopy(LOCALNET)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


HUGE = "0x" + "8" + "0" * 63  # 2**255: two of them add up to 2**256


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "expected a JSON object"),
        ("{}", "expected a JSON object"),
        ({}, "missing field 'accounts'"),
        (_with(("accounts",), {}), "field 'accounts' has the wrong type"),
        (_with(("extra",), 1), r"unknown fields \['extra'\]"),
        (_with(("message",), 5), "'message' must be a string"),
        (_with(("message",), "m" * 1001), "'message' must be a string of at most 1000"),
        (_with(("accounts", 1), "hx00"), r"'accounts\[1\]' must be an object"),
        (_with(("accounts", 1, "owner"), "x"), r"'accounts\[1\]': unknown fields \['owner'\]"),
        (_with(("accounts", 0, "name"), ...), r"'accounts\[0\]': missing field 'name'"),
        (_with(("accounts", 0, "name"), 7), r"accounts\[0\]': field 'name' has the wrong type"),
        (_with(("accounts", 0, "name"), ""), r"'accounts\[0\].name' must be 1 to 64"),
        (_with(("accounts", 0, "name"), "n" * 65), r"'accounts\[0\].name' must be 1 to 64"),
        (_with(("accounts", 0, "name"), "\ud800"), r"Unicode.*accounts\[0\]\.name"),
        (_with(("accounts", 0, "address"), ...), "missing field 'address'"),
        (_with(("accounts", 0, "address"), GOD.upper()), r"'accounts\[0\].address' must be 'hx'"),
        (_with(("accounts", 0, "address"), "cx" + GOD[2:]), r"'accounts\[0\].address' must be"),
        (_with(("accounts", 0, "address"), GOD[:-1]), r"'accounts\[0\].address' must be 'hx'"),
        (_with(("accounts", 0, "address"), 1), "field 'address' has the wrong type"),
        (_with(("accounts", 1, "address"), GOD), rf"'accounts\[1\].address' {GOD} is listed twice"),
        (_with(("accounts", 0, "balance"), ...), "missing field 'balance'"),
        (_with(("accounts", 0, "balance"), 5), "field 'balance' has the wrong type"),
        (_with(("accounts", 0, "balance"), True), "field 'balance' has the wrong type"),
        (_with(("accounts", 0, "balance"), "0X1"), r"'accounts\[0\].balance' must be '0x'"),
        (_with(("accounts", 0, "balance"), "0xAB"), r"'accounts\[0\].balance' must be '0x'"),
        (_with(("accounts", 0, "balance"), "0x"), r"'accounts\[0\].balance' must be '0x'"),
        (_with(("accounts", 0, "balance"), "10"), r"'accounts\[0\].balance' must be '0x'"),
        (_with(("accounts", 0, "balance"), "-0x1"), r"'accounts\[0\].balance' must be '0x'"),
        (_with(("accounts", 0, "balance"), " 0x1"), r"'accounts\[0\].balance' must be '0x'"),
        # 2**256, one above the largest balance
        (_with(("accounts", 0, "balance"), "0x1" + "0" * 64), r"accounts\[0\].balance' must be"),
        (
            {
                "accounts": [
                    {"name": "a", "address": addr(1), "balance": HUGE},
                    {"name": "b", "address": addr(2), "balance": HUGE},
                ]
            },
            "add up to more than 2\\*\\*256 - 1",
        ),
        (
            {
                "accounts": [
                    {"name": "a", "address": addr(i), "balance": "0x1"} for i in range(1001)
                ]
            },
            "'accounts' lists 1001 accounts, more than 1000",
        ),
    ],
)
def test_every_malformed_genesis_is_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        GenesisData.from_json(value)


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        ((GenesisAccount("a", addr(1), -1),), "balance' must be an integer from 0"),
        ((GenesisAccount("a", addr(1), MAX_BALANCE + 1),), "balance' must be an integer from 0"),
        ((GenesisAccount("a", addr(1), True),), "balance' must be an integer from 0"),  # type: ignore[arg-type]
        ((GenesisAccount("a", 5, 1),), "address' must be a string"),  # type: ignore[arg-type]
        ((GenesisAccount("", addr(1), 1),), "name' must be 1 to 64"),
    ],
)
def test_made_directly_the_same_rules_hold(
    accounts: tuple[GenesisAccount, ...], message: str
) -> None:
    with pytest.raises(EncodingError, match=message):
        GenesisData(accounts)


@pytest.mark.parametrize(
    "text",
    [
        '{"accounts":[{"address":"' + GOD + '","balance":"0x01","name":"a"}]}',  # not minimal
        '{"accounts":[],"message":""}',  # an empty message is not written
        '{"accounts": []}',  # spacing
        '{"message":"m","accounts":[]}',  # key order
        "not json",
        '{"accounts":[],"message":"\ud800"}',  # a lone surrogate, which UTF-8 cannot hold
    ],
)
def test_decode_takes_only_the_canonical_text(text: str) -> None:
    with pytest.raises(EncodingError):
        GenesisData.decode(text)


# -- in the validator set


def plain_set() -> ValidatorSet:
    return ValidatorSet(
        "c",
        3,
        (Validator("hx" + "a" * 40, 2), Validator("hx" + "b" * 40, 1, "g")),
        groups=(Group("g", 1),),
        auditors=("hx" + "c" * 40,),
        score_package="sample/token",
        score_settings='{"token":{"owner":"hx1"}}',
    )


def test_a_set_without_genesis_hashes_exactly_as_before() -> None:
    vs = plain_set()
    assert "genesis" not in vs.body() and "genesis" not in vs.to_json()
    assert vs.genesis_data() is None
    # the hash the code before genesis data made of the very same set
    assert vs.hash.hex() == "42345a103c4abd4fc0a44d04b5ecb155005e1311df7b4ee35b2749fe389eb233"
    small = ValidatorSet("c", 1, (Validator("hx" + "a" * 40),))
    assert small.hash.hex() == "247ed0c5181a204d9ea4f7b9f48c5d9e9583b76354764725d515562af1783ca4"


def test_a_set_with_genesis_carries_it_under_its_hash_and_signature() -> None:
    issuer = Signer.generate()
    data = GenesisData.from_json(LOCALNET)
    plain = plain_set()
    vs = dataclasses.replace(plain, genesis=data.encoded()).signed_by(issuer)
    assert vs.body()["genesis"] == data.encoded()
    assert vs.hash != plain.hash
    other = GenesisData.from_json(_with(("accounts", 1, "balance"), "0x1")).encoded()
    assert dataclasses.replace(vs, genesis=other).hash != vs.hash  # every balance is covered
    again = ValidatorSet.decode(vs.encode())
    assert again == vs and again.verify_issuer(issuer.address)
    assert again.genesis_data() == data
    assert again.genesis_data().total_supply == 1_000_000 * ICX  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("genesis", "message"),
    [
        (5, "field 'genesis' must be a string"),
        ({"accounts": []}, "field 'genesis' must be a string"),
        ("not json", "genesis: not JSON"),
        ('{"accounts":[{"address":"hx1","balance":"0x1","name":"a"}]}', "accounts\\[0\\].address"),
        ('{"accounts":[],"x":1}', "genesis: unknown fields"),
        ('{"accounts":[{"address":"' + GOD + '","balance":"0x01","name":"a"}]}', "canonical"),
    ],
)
def test_a_set_with_a_bad_genesis_is_refused(genesis: Any, message: str) -> None:
    raw = {**plain_set().to_json(), "genesis": genesis}
    with pytest.raises(EncodingError, match=message):
        ValidatorSet.from_json(raw)
    with pytest.raises(EncodingError, match=message):
        ValidatorSet.decode(canonical.encode(raw))
    if isinstance(genesis, str):  # nor can one be made holding it
        with pytest.raises(EncodingError, match=message):
            dataclasses.replace(plain_set(), genesis=genesis)


def test_genesis_text_in_a_set_is_json_of_the_data() -> None:
    vs = dataclasses.replace(plain_set(), genesis=GenesisData.from_json(LOCALNET).encoded())
    assert json.loads(json.loads(vs.encode())["genesis"]) == LOCALNET
