"""Client-signed ICON v3 transactions as chain transactions (loopchain/types/transaction.py): the
spec's vector, bytes kept through encode/decode, signatures, channels, refusals on decode, and
blocks carrying v3 next to v1 transactions."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.blockchain.intake_journal import IntakeJournal
from loopchain.types import canonical, icon_tx
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.icon_tx import make_params, sign_params, verify_send_params
from loopchain.types.transaction import V1, V3, Transaction, tx_hash_of
from tests.integration._storage_helpers import BASE_TIME_US, CHANNEL, ChainBuilder

# the spec's test vector (icon-jsonrpc-v3.md, "Transaction v3")
SDK_SIGNER = Signer(
    bytes.fromhex("592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c")
)
SDK_ADDRESS = "hxe7af5fcfd8dfc67530a01a0e403882687528dfcb"
TO = "hx5bfdb090f43a808005ffc27c25b213145e80b7cd"
VECTOR_HASH = "56e96f170c1c4a7d5ce80342c711364713e9fe7d476799a7806e802fd1e70499"
VECTOR_SIGNATURE = (
    "55+HFZI2glRJ7S/mSaaAOLG6ozoJCQQtjFAzXL25Pud96o2Vg5RixIfhx6OJH2stXoBUDh8qMXs2ewXW1di/0wA="
)
OTHER_SIGNER = Signer(bytes([7]) * 32)
SCORE = "cx" + "ab" * 20


def vector_params() -> dict[str, Any]:
    return {
        "version": "0x3",
        "from": SDK_ADDRESS,
        "to": TO,
        "stepLimit": "0x186a0",
        "timestamp": "0x60a24181e4000",
        "nid": "0x3",
        "value": "0xde0b6b3a7640000",
        "nonce": "0x1",
        "signature": VECTOR_SIGNATURE,
    }


def vector_tx() -> Transaction:
    return Transaction.from_icon(verify_send_params(vector_params()))


def call_tx(signer: Signer = SDK_SIGNER, n: int = 0) -> Transaction:
    params = make_params(
        sender=signer.address,
        to=SCORE,
        step_limit=2_000_000,
        timestamp_us=BASE_TIME_US + n,
        nid=3,
        data_type="call",
        data={"method": "set", "params": {"key": "k.{x}", "value": str(n)}},
    )
    return Transaction.from_icon(verify_send_params(sign_params(params, signer)))


def stored(body: dict[str, Any], signature: bytes) -> bytes:
    """The canonical bytes a v3 transaction is stored and sent as."""
    return canonical.encode({"body": body, "signature": signature.hex()})


# -- the spec's vector as a chain transaction


def test_the_vector_becomes_a_transaction_with_the_specs_hash() -> None:
    tx = vector_tx()
    params = vector_params()
    assert tx.hash_hex == VECTOR_HASH
    assert tx.hash == icon_tx.tx_hash(params) == verify_send_params(params).hash
    assert tx.hash == tx_hash_of(tx.body)
    assert tx.body == {k: v for k, v in params.items() if k != "signature"}
    assert tx.signature == base64.b64decode(VECTOR_SIGNATURE)
    assert (tx.version, tx.sender, tx.channel, tx.data) == (V3, SDK_ADDRESS, "", None)
    assert tx.timestamp == 1_700_000_000_000_000
    assert tx.signed_by == "client"
    assert tx.verify_signature()


def test_the_vector_is_stored_as_body_and_hex_signature_and_decodes_to_the_same_bytes() -> None:
    tx = vector_tx()
    raw = tx.encode()
    assert raw == stored(tx.body, tx.signature)
    assert b"signature" not in canonical.encode(tx.body)
    back = Transaction.decode(raw)
    assert back == tx and back.hash == tx.hash and back.encode() == raw
    assert back.body == tx.body and back.hash_hex == VECTOR_HASH
    assert Transaction.from_json(tx.to_json()).encode() == raw
    assert back.icon().params == vector_params()  # the params as the client sent them
    assert back.icon().tx_hash == "0x" + VECTOR_HASH


def test_strings_are_kept_as_sent_through_a_round_trip() -> None:
    # "0x01" is hashed as written (never normalised to "0x1"), and stays so in the chain
    params = make_params(sender=SDK_ADDRESS, to=TO, step_limit=100_000, timestamp_us=1, nid=3)
    params["value"], params["nonce"] = "0x0001", "0x00"
    signed = sign_params(params, SDK_SIGNER)
    tx = Transaction.from_icon(verify_send_params(signed))
    back = Transaction.decode(tx.encode())
    assert back.body["value"] == "0x0001" and back.body["nonce"] == "0x00"
    assert back.hash == icon_tx.tx_hash(params) != icon_tx.tx_hash({**params, "value": "0x1"})
    assert back.verify_signature()
    assert back.icon().value == 1


def test_a_call_with_escaped_data_round_trips() -> None:
    tx = call_tx()
    back = Transaction.decode(tx.encode())
    assert back.hash == tx.hash and back.encode() == tx.encode()
    assert back.data == {"method": "set", "params": {"key": "k.{x}", "value": "0"}}
    assert back.icon().data_type == "call" and back.verify_signature()


# -- signatures and channels


def test_a_signature_by_another_key_decodes_but_does_not_verify() -> None:
    tx = vector_tx()
    forged = OTHER_SIGNER.sign(tx.hash)
    back = Transaction.decode(stored(tx.body, forged))
    assert back.hash == tx.hash
    assert not back.verify_signature()
    assert Transaction.decode(tx.encode()).verify_signature()


def test_a_signature_over_another_body_does_not_verify() -> None:
    tx = vector_tx()
    other = {**tx.body, "value": "0xde0b6b3a7640001"}
    back = Transaction.decode(stored(other, tx.signature))
    assert back.hash == icon_tx.tx_hash(other) != tx.hash
    assert not back.verify_signature()


def test_a_v3_transaction_belongs_to_any_channel_a_v1_one_to_its_own() -> None:
    tx = vector_tx()
    assert tx.belongs_to(CHANNEL) and tx.belongs_to("another") and tx.belongs_to("")
    v1 = Transaction.create_v1(CHANNEL, {"a": 1}, BASE_TIME_US, Signer.generate())
    assert v1.belongs_to(CHANNEL) and not v1.belongs_to("another")
    assert v1.version == V1 and v1.signed_by == "peer"


def test_icon_is_refused_for_a_v1_transaction() -> None:
    v1 = Transaction.create_v1(CHANNEL, {"a": 1}, BASE_TIME_US, Signer.generate())
    with pytest.raises(EncodingError, match="not a v3 transaction"):
        v1.icon()


# -- refusals on decode


def _body_with(change: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    body = {k: v for k, v in vector_params().items() if k != "signature" and k not in drop}
    body.update(change)
    return body


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (_body_with({"signature": VECTOR_SIGNATURE}), "'signature' or 'txHash'"),
        (_body_with({"txHash": "0x" + VECTOR_HASH}), "'signature' or 'txHash'"),
        (_body_with({"channel": CHANNEL}), "unknown fields"),
        (_body_with({"memo": "x"}), "unknown fields"),
        (_body_with({"stepLimit": "0xZZ"}), "'stepLimit'"),
        (_body_with({"value": "0xDE0B6B3A7640000"}), "'value'"),  # upper case
        (_body_with({"timestamp": "1700000000000000"}), "'timestamp'"),  # no 0x
        (_body_with({"nid": 3}), "'nid' must be a string"),
        (_body_with({"nonce": "0x" + "1" * 65}), "'nonce'"),
        (_body_with({"from": "cx" + "1" * 40}), "'from'"),
        (_body_with({"to": "hx" + "1" * 39}), "'to'"),
        (_body_with({}, drop=("from",)), "missing field 'from'"),
        (_body_with({"data": "hello"}), "'data' needs a 'dataType'"),
        (_body_with({"dataType": "call", "data": "hello"}), "must be an object"),
        (_body_with({"dataType": "transfer", "data": "x"}), "'dataType'"),
    ],
)
def test_a_malformed_v3_body_is_refused_on_decode(body: dict[str, Any], text: str) -> None:
    signature = base64.b64decode(VECTOR_SIGNATURE)
    with pytest.raises(EncodingError, match=text):
        Transaction.decode(stored(body, signature))
    with pytest.raises(EncodingError, match=text):
        Transaction.from_json({"body": body, "signature": signature.hex()})


def test_a_trusted_v3_transaction_with_its_hash_is_parsed_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The REST proxy formats a block its peer sent with the hashes: a v3 transaction's params are
    not parsed nor hashed then. The SCORE, which executes it, parses them once via icon(), and
    does not hash them again: the hash is its peer's. Its shape is still checked, so garbage from
    the peer is still an EncodingError."""
    tx = call_tx()
    parses: list[object] = []
    hashed: list[object] = []
    real_parse, real_hash = icon_tx.parse_stored, icon_tx.tx_hash

    def counted(body: Any, signature: bytes, known_hash: bytes | None = None) -> Any:
        parses.append(body)
        return real_parse(body, signature, known_hash)

    def counted_hash(params: Any) -> bytes:
        hashed.append(params)
        return real_hash(params)

    monkeypatch.setattr(icon_tx, "parse_stored", counted)
    monkeypatch.setattr(icon_tx, "tx_hash", counted_hash)
    trusted = Transaction.from_json(tx.to_json(), trusted=True, known_hash=tx.hash)
    assert parses == [] and trusted.hash == tx.hash and trusted.sender == tx.sender
    assert trusted.timestamp == tx.timestamp and trusted.data == tx.data
    assert trusted.icon() == tx.icon() and len(parses) == 1 and hashed == []
    assert trusted.icon().params == tx.icon().params  # the params as the client sent them
    Transaction.from_json(tx.to_json(), trusted=True)  # no hash given: parsed and hashed
    assert len(parses) == 2 and len(hashed) == 1
    signature = base64.b64decode(VECTOR_SIGNATURE)
    for body, text in (
        (_body_with({"signature": VECTOR_SIGNATURE}), "'signature' or 'txHash'"),
        (_body_with({"memo": "x"}), "unknown fields"),
        (_body_with({"nid": 3}), "'nid' must be a string"),
        (_body_with({}, drop=("from",)), "missing field 'from'"),
        (_body_with({"timestamp": "1700000000000000"}), "'timestamp'"),  # read when formatted
    ):
        with pytest.raises(EncodingError, match=text):
            Transaction.from_json(
                {"body": body, "signature": signature.hex()}, trusted=True, known_hash=tx.hash
            )


def test_a_v3_body_needs_version_0x3_exactly() -> None:
    signature = base64.b64decode(VECTOR_SIGNATURE)
    for version in ("0x03", "3", "0x2"):
        with pytest.raises(EncodingError, match="version"):
            Transaction.decode(stored(_body_with({"version": version}), signature))


@pytest.mark.parametrize("recid", [2, 3, 27])
def test_a_signature_with_a_bad_recovery_id_is_refused_on_decode(recid: int) -> None:
    signature = base64.b64decode(VECTOR_SIGNATURE)[:64] + bytes([recid])
    with pytest.raises(EncodingError, match="recovery id"):
        Transaction.decode(stored(_body_with({}), signature))


def test_a_signature_of_the_wrong_length_is_refused_on_decode() -> None:
    signature = base64.b64decode(VECTOR_SIGNATURE)
    raw = canonical.encode({"body": _body_with({}), "signature": signature[:64].hex()})
    with pytest.raises(EncodingError, match="signature"):
        Transaction.decode(raw)


def test_a_good_body_decodes() -> None:
    # the refusals above are of their change alone
    signature = base64.b64decode(VECTOR_SIGNATURE)
    assert Transaction.decode(stored(_body_with({}), signature)).hash_hex == VECTOR_HASH


# -- blocks


def _mixed_block(chain: ChainBuilder) -> Block:
    v1 = chain.transaction()
    return chain.block([v1, vector_tx(), call_tx(OTHER_SIGNER, 1), chain.transaction()])


def test_a_block_of_v1_and_v3_transactions_passes_its_checks_and_round_trips() -> None:
    chain = ChainBuilder()
    block = _mixed_block(chain)
    assert [tx.version for tx in block.transactions] == [V1, V3, V3, V1]
    assert block.check_integrity() is None
    back = Block.decode(block.encode())
    assert back.encode() == block.encode() and back.hash == block.hash
    assert [tx.hash for tx in back.transactions] == [tx.hash for tx in block.transactions]
    assert back.check_integrity() is None
    assert back.transactions[1].hash_hex == VECTOR_HASH


def test_a_block_whose_v3_body_was_changed_in_transit_fails() -> None:
    chain = ChainBuilder()
    block = _mixed_block(chain)
    value = block.to_json()
    tampered = copy.deepcopy(value)
    tampered["transactions"][1]["body"]["value"] = "0xde0b6b3a7640001"
    back = Block.decode(canonical.encode(tampered))
    assert back.check_integrity() == "transactions do not match tx_root"
    assert Block.decode(canonical.encode(value)).check_integrity() is None


def test_a_block_a_leader_made_around_a_changed_v3_body_fails_on_its_signature() -> None:
    chain = ChainBuilder()
    good = vector_tx()
    body = {**good.body, "to": "hx" + "9" * 40}  # the leader redirects the transfer
    changed = Transaction(body=body, signature=good.signature, hash=icon_tx.tx_hash(body))
    block = chain.block([chain.transaction(), changed])
    assert block.check_integrity() == f"transaction {changed.hash_hex} has a bad signature"
    # decoded from its bytes, the same
    assert Block.decode(block.encode()).check_integrity() == (
        f"transaction {changed.hash_hex} has a bad signature"
    )


def test_a_block_with_a_v3_transaction_signed_by_another_key_fails() -> None:
    chain = ChainBuilder()
    good = vector_tx()
    forged = Transaction(body=good.body, signature=OTHER_SIGNER.sign(good.hash), hash=good.hash)
    block = chain.block([forged])
    assert block.check_integrity() == f"transaction {good.hash_hex} has a bad signature"


def test_a_v1_transaction_of_another_channel_still_fails_a_block() -> None:
    chain = ChainBuilder()
    other = Transaction.create_v1("another", {"a": 1}, BASE_TIME_US, Signer.generate())
    block = chain.block([vector_tx(), other])
    assert block.check_integrity() == (f"transaction {other.hash_hex} belongs to channel another")


def test_the_same_v3_transaction_twice_fails_a_block() -> None:
    chain = ChainBuilder()
    block = chain.block([vector_tx(), vector_tx()])
    assert block.check_integrity() == "block lists a transaction twice"


def test_the_v3_hash_is_not_the_v1_hash_of_the_same_body() -> None:
    tx = vector_tx()
    v1_digest = sha3_256(b"loopchain.tx.v1." + canonical.encode(tx.body))
    assert tx.hash != v1_digest


# -- hostile stored bodies, and the intake log


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = st.sampled_from(
    [
        "version",
        "from",
        "to",
        "stepLimit",
        "timestamp",
        "nid",
        "value",
        "nonce",
        "dataType",
        "data",
        "x",
    ]
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.dictionaries(_FIELDS, _JSON, min_size=1, max_size=3),
    drop=st.sets(_FIELDS, max_size=2),
)
def test_a_stored_v3_body_with_any_fields_changed_decodes_or_is_refused(
    changes: dict[str, Any], drop: set[str]
) -> None:
    """Whatever a peer relays as a v3 body: EncodingError, or a transaction whose hash is ICON's
    hash of exactly that body; nothing else escapes."""
    body = _body_with(changes, tuple(drop))
    try:
        raw = stored(body, base64.b64decode(VECTOR_SIGNATURE))
    except EncodingError:
        return  # not even canonical JSON (a float-free encoder refused it): nothing to decode
    try:
        tx = Transaction.decode(raw)
    except EncodingError:
        return
    assert tx.hash == icon_tx.tx_hash(body) and tx.encode() == raw


def test_v3_transactions_survive_the_intake_journal_as_acknowledged(tmp_path: Path) -> None:
    """What a peer acknowledged is replayed at start from the intake journal: a v3 transaction
    comes back the same (hash, bytes, signature still good)."""
    txs = [vector_tx(), call_tx(OTHER_SIGNER, 2)]
    journal = IntakeJournal(tmp_path / "intake")
    journal.append(txs)
    journal.close()
    back = IntakeJournal(tmp_path / "intake").replay()
    assert sorted(t.hash for t in back) == sorted(t.hash for t in txs)
    assert all(t.verify_signature() and t.encode() in {x.encode() for x in txs} for t in back)


def test_the_checked_params_are_kept_from_decode_for_execution() -> None:
    """A decoded v3 transaction keeps what its decode checked: execution reads it, never parses
    the params again (the SCORE runs every transaction of every block)."""
    tx = Transaction.decode(vector_tx().encode())
    first = tx.icon()
    assert first is tx.icon() and first.hash == tx.hash and first.sender == SDK_ADDRESS
    made = Transaction(body=dict(tx.body), signature=tx.signature, hash=tx.hash)
    assert made.icon().hash == tx.hash and made.icon() is made.icon()
