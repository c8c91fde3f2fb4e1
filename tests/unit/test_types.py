"""Property tests of the value types: canonical encoding, hashing, signatures, merkle, quorums."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.types import block as block_module
from loopchain.types import canonical, crypto
from loopchain.types import transaction as tx_module
from loopchain.types import vote as vote_module
from loopchain.types.block import Block, BlockHeader
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer, address_of, recover_address, verify
from loopchain.types.hashing import (
    EMPTY_ROOT,
    merkle_proof,
    merkle_root,
    sha3_256,
    verify_merkle_proof,
)
from loopchain.types.transaction import Transaction
from loopchain.types.validators import (
    MAX_SET_PEERS,
    MIN_RATIO,
    Group,
    Validator,
    ValidatorSet,
    ratio_from_config,
)
from loopchain.types.vote import Complaint, QuorumCertificate, TimeoutCertificate, Vote

SETTINGS = settings(max_examples=60, deadline=None)
CHANNEL = "types_channel"
SIGNERS = [Signer(bytes([i + 1]) * 32) for i in range(5)]  # fixed keys: examples stay replayable

# -- strategies

# Text without lone surrogates (those are not UTF-8; see test_lone_surrogates_are_encoding_errors).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_data = st.dictionaries(text, json_values, max_size=4)
hashes = st.binary(min_size=32, max_size=32)


def make_tx(data: Any, timestamp: int = 1, signer: Signer = SIGNERS[0]) -> Transaction:
    return Transaction.create_v1(CHANNEL, data, timestamp, signer)


def validator_set(weights: list[int], version: int = 1) -> ValidatorSet:
    members = tuple(Validator(f"hx{i:040x}", w) for i, w in enumerate(weights))
    return ValidatorSet(CHANNEL, version, members)


VALIDATORS = ValidatorSet(CHANNEL, 1, tuple(Validator(s.address) for s in SIGNERS[:4])).signed_by(
    SIGNERS[4]
)


def make_block(transactions: list[Transaction], height: int = 1, timestamp: int = 10) -> Block:
    return Block.create(
        channel=CHANNEL,
        height=height,
        round_=0,
        prev_hash=sha3_256(b"parent"),
        prev_qc=None,
        transactions=transactions,
        timestamp=timestamp,
        leader=SIGNERS[0],
        next_leader=SIGNERS[1].address,
        validators_hash=VALIDATORS.hash,
    )


def flip(raw: bytes, index: int) -> bytes:
    index %= len(raw)
    return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]


# -- canonical JSON


@SETTINGS
@given(json_values)
def test_canonical_round_trip_and_determinism(value: Any) -> None:
    raw = canonical.encode(value)
    assert canonical.decode(raw) == value
    assert canonical.encode(canonical.decode(raw)) == raw


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_fast_encoding_is_byte_identical_to_the_standard_library(value: Any) -> None:
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.encode(value) == reference.encode("utf-8")
    assert canonical.encode_checked(value) == reference.encode("utf-8")


def test_control_characters_and_big_integers_encode_like_the_standard_library() -> None:
    value = {"\u00e9": '\x00\x1f\x7f\u2028"\\\n\t\b\f\r', "n": [2**64, -(2**63) - 1, 2**63]}
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.encode(value) == reference.encode("utf-8")


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b"9" * 5000, b'{"a":[1,2.5]}'])
def test_hostile_inputs_are_encoding_errors(raw: bytes) -> None:
    with pytest.raises(EncodingError):
        canonical.decode(raw)


@SETTINGS
@given(json_data, st.integers(0, 2**62))
def test_created_transactions_carry_the_bytes_a_decoder_would_make(data: Any, ts: int) -> None:
    for checked in (False, True):
        tx = Transaction.create_v1(CHANNEL, data, ts, SIGNERS[0], checked=checked)
        assert tx.encode() == canonical.encode(tx.to_json())
        again = Transaction.decode(tx.encode())
        assert (again.hash, again.encode()) == (tx.hash, tx.encode())
        assert again.verify_signature()


@SETTINGS
@given(json_values, st.sampled_from([{"indent": 1}, {"separators": (", ", ": ")}, {}]))
def test_non_canonical_bytes_are_rejected(value: Any, style: dict[str, Any]) -> None:
    raw = json.dumps(value, ensure_ascii=True, **style).encode()
    if raw == canonical.encode(value):
        assert canonical.decode(raw) == value
    else:
        with pytest.raises(EncodingError):
            canonical.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"b":1,"a":2}',  # unsorted keys
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a": 1}',  # whitespace
        b"1.5",  # float
        b"1e3",
        b"NaN",
        b'"\\u00e9"',  # escaped where canonical writes UTF-8
        b"\xff",  # not UTF-8
        b"",
        b"[1,]",
    ],
)
def test_specific_non_canonical_inputs(raw: bytes) -> None:
    with pytest.raises(EncodingError):
        canonical.decode(raw)


def test_floats_are_refused_on_encode_with_their_path() -> None:
    with pytest.raises(EncodingError, match=r"\$\.a\[1\]"):
        canonical.encode({"a": [1, 2.0]})


def test_lone_surrogates_are_encoding_errors() -> None:
    value = json.loads('{"data": "\\ud800"}')  # what a REST client can send
    with pytest.raises(EncodingError):
        canonical.encode(value)


# -- transactions


@SETTINGS
@given(json_data, st.integers(0, 2**62))
def test_transaction_round_trip_and_signature(data: Any, timestamp: int) -> None:
    tx = make_tx(data, timestamp)
    decoded = Transaction.decode(tx.encode())
    assert decoded == tx and decoded.hash == tx.hash
    assert decoded.verify_signature()
    assert decoded.sender == SIGNERS[0].address
    assert address_of(decoded.public_key()) == tx.sender
    assert make_tx(data, timestamp).hash == tx.hash  # same value, same hash
    assert make_tx(data, timestamp + 1).hash != tx.hash
    assert make_tx({"other": data}, timestamp).hash != tx.hash


@SETTINGS
@given(json_data, st.integers(0, 64))
def test_tampered_transaction_signature_is_rejected(data: Any, index: int) -> None:
    tx = make_tx(data)
    forged = dataclasses.replace(tx, signature=flip(tx.signature, index))
    assert not forged.verify_signature()
    stolen = Transaction(
        {**tx.body, "data": {"changed": True}}, tx.signature, tx.hash
    )  # body changed, old signature kept
    assert not Transaction.decode(stolen.encode()).verify_signature()


def test_transaction_decode_rejects_malformed() -> None:
    tx = make_tx({"a": 1})
    good = tx.to_json()
    for bad in (
        {**good, "signature": good["signature"][:-2]},
        {**good, "body": {**good["body"], "version": "9"}},
        {**good, "body": {k: v for k, v in good["body"].items() if k != "from"}},
        {**good, "body": {**good["body"], "timestamp": "1"}},
        {"body": good["body"]},
    ):
        with pytest.raises(EncodingError):
            Transaction.decode(canonical.encode(bad))


# -- blocks

HEADER_CHANGES = {
    "channel": "other",
    "height": 2,
    "round": 1,
    "prev_hash": sha3_256(b"other parent"),
    "tx_root": sha3_256(b"x"),
    "state_root": sha3_256(b"y"),
    "results_hash": sha3_256(b"z"),
    "timestamp": 11,
    "leader": SIGNERS[2].address,
    "next_leader": SIGNERS[3].address,
    "validators_hash": sha3_256(b"v"),
    "next_validators_hash": sha3_256(b"w"),
    "version": 2,
    "state_height": 4,
}


def test_every_header_field_is_listed() -> None:
    names = {f.name for f in dataclasses.fields(BlockHeader)} - {"prev_qc", "prev_tc"}
    assert names == set(HEADER_CHANGES)


def test_timeout_certificate_is_covered_by_the_block_hash() -> None:
    from loopchain.types.vote import Complaint, TimeoutCertificate

    tc = TimeoutCertificate.from_complaints(
        [Complaint.create("c", 3, None, s) for s in SIGNERS[:3]]
    )
    assert TimeoutCertificate.decode(tc.encode()) == tc
    header = BlockHeader(
        channel="c",
        height=1,
        round=6,
        prev_hash=sha3_256(b"p"),
        prev_qc=None,
        tx_root=sha3_256(b"t"),
        state_root=sha3_256(b"s"),
        results_hash=sha3_256(b"r"),
        timestamp=1,
        leader=SIGNERS[0].address,
        next_leader=SIGNERS[1].address,
        validators_hash=sha3_256(b"v"),
        next_validators_hash=sha3_256(b"v"),
    )
    with_tc = dataclasses.replace(header, prev_tc=tc)
    assert with_tc.hash != header.hash
    assert BlockHeader.from_json(with_tc.to_json()) == with_tc


@SETTINGS
@given(st.lists(json_data, max_size=4, unique_by=json.dumps), st.integers(0, 1000))
def test_block_round_trip_and_hash_stability(datas: list[Any], height: int) -> None:
    block = make_block([make_tx(d, i) for i, d in enumerate(datas)], height)
    decoded = Block.decode(block.encode())
    assert decoded == block and decoded.hash == block.hash
    assert decoded.check_integrity() is None
    hashes = [tx.hash for tx in block.transactions]
    for trusted in (  # as the SCORE (hashes given) and the REST proxy (hashed again) decode it
        Block.decode_trusted(block.encode(), b"".join(hashes)),
        Block.decode_trusted(block.encode()),
    ):
        assert trusted == block and [tx.hash for tx in trusted.transactions] == hashes
        assert [tx.encode() for tx in trusted.transactions] == [
            tx.encode() for tx in block.transactions
        ]
    assert make_block(list(block.transactions), height).hash == block.hash
    for name, value in HEADER_CHANGES.items():
        if getattr(block.header, name) == value:  # the drawn block already has that value
            value = value + 1 if isinstance(value, int) else value
        changed = dataclasses.replace(block.header, **{name: value})
        assert changed.hash != block.hash, f"header field {name} is not covered by the hash"


def test_block_hash_covers_the_previous_certificate() -> None:
    block = make_block([])
    votes = [Vote.create(CHANNEL, 0, 0, sha3_256(b"parent"), s) for s in SIGNERS[:3]]
    qc = QuorumCertificate.from_votes(votes)
    with_qc = dataclasses.replace(block.header, prev_qc=qc)
    assert with_qc.hash != block.hash
    assert Block.decode(dataclasses.replace(block, header=with_qc).encode()).header.prev_qc == qc


@SETTINGS
@given(st.integers(0, 64))
def test_tampered_block_is_rejected(index: int) -> None:
    block = make_block([make_tx({"n": 1}), make_tx({"n": 2})])
    forged = dataclasses.replace(block, signature=flip(block.signature, index))
    assert forged.check_integrity() in {
        "block is not signed by its leader",
        "block signature is malformed",
    }
    dropped = dataclasses.replace(block, transactions=block.transactions[:1])
    assert dropped.check_integrity() == "transactions do not match tx_root"
    other_leader = dataclasses.replace(block.header, leader=SIGNERS[1].address)
    assert (
        dataclasses.replace(block, header=other_leader).check_integrity()
        == "block is not signed by its leader"
    )


def test_a_blocks_signature_is_recovered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The integrity check and a later consensus check of one block share one recovery of its
    leader's signature; a copy with another signature gets its own answer."""
    block = Block.decode(make_block([make_tx({"n": 1})]).encode())
    recovered: list[bytes] = []
    real = block_module.recover_address

    def counted(digest: bytes, signature: bytes) -> str:
        recovered.append(digest)
        return real(digest, signature)

    monkeypatch.setattr(block_module, "recover_address", counted)
    assert block.check_integrity() is None
    assert block.signature_problem() is None
    assert recovered == [block.hash]
    forged = dataclasses.replace(block, signature=flip(block.signature, 3))
    assert forged.signature_problem() is not None
    assert block.signature_problem() is None and len(recovered) == 2


def test_block_decode_rejects_malformed() -> None:
    good = make_block([make_tx({"n": 1})]).to_json()
    for bad in (
        {**good, "header": {**good["header"], "height": "1"}},
        {**good, "header": {**good["header"], "prev_hash": "abcd"}},
        {**good, "signature": "00"},
        {**good, "transactions": [{"body": {}}]},
        {k: v for k, v in good.items() if k != "header"},
    ):
        with pytest.raises(EncodingError):
            Block.decode(canonical.encode(bad))
    with pytest.raises(EncodingError):
        Block.decode(canonical.encode(good).replace(b",", b", ", 1))


# Each object inside a block, by its path in the block's JSON (a list index picks an item).
_NESTED = {
    "header.prev_qc": ("header", "prev_qc"),
    "header.prev_tc": ("header", "prev_tc"),
    "validator_update": ("validator_update",),
    "a validator": ("validator_update", "validators", 0),
    "a group": ("validator_update", "groups", 0),
}


@pytest.mark.parametrize("path", _NESTED.values(), ids=list(_NESTED))
def test_a_block_refuses_a_field_its_objects_do_not_have(path: tuple[Any, ...]) -> None:
    # A block is stored and served as received, under a hash and signatures that cover only the
    # fields its objects read: a field added on the way (a sync server padding the blocks it
    # serves) would be stored and served again, megabytes a block, with every check passing.
    parent = Vote.create(CHANNEL, 0, 0, sha3_256(b"parent"), SIGNERS[1])
    complaint = Complaint.create(CHANNEL, 1, None, SIGNERS[2])
    update = dataclasses.replace(
        VALIDATORS, validators=(Validator(SIGNERS[0].address, 1, "g"),), groups=(Group("g"),)
    ).signed_by(SIGNERS[4])
    block = Block.create(
        channel=CHANNEL,
        height=1,
        round_=2,
        prev_hash=sha3_256(b"parent"),
        prev_qc=QuorumCertificate.from_votes([parent]),
        prev_tc=TimeoutCertificate.from_complaints([complaint]),
        transactions=[make_tx({"n": 1})],
        timestamp=10,
        leader=SIGNERS[0],
        next_leader=SIGNERS[1].address,
        validators_hash=VALIDATORS.hash,
        validator_update=update,
    )
    assert Block.decode(block.encode()) == block
    padded = block.to_json()
    part = padded
    for key in path:
        part = part[key]
    part["padding"] = "A" * 1000
    raw = canonical.encode(padded)
    with pytest.raises(EncodingError, match="unknown fields"):
        Block.decode(raw)


def test_a_block_takes_the_pooled_transactions_whose_bytes_it_carries() -> None:
    pooled_txs = [make_tx({"n": 1}), make_tx({"n": 2}), make_tx({"flag": True}, 3)]
    held = {tx.signature: tx for tx in pooled_txs}
    asked: list[bytes] = []

    def pooled(signature: bytes) -> Transaction | None:
        asked.append(signature)
        return held.get(signature)

    fresh = make_tx({"n": 3})  # not held: decoded and hashed as always
    block = make_block([*pooled_txs, fresh])
    decoded = Block.decode(block.encode(), pooled)
    assert decoded == block and decoded.check_integrity() is None
    assert all(a is b for a, b in zip(decoded.transactions[:3], pooled_txs, strict=True))
    assert decoded.transactions[3] is not fresh and decoded.transactions[3].hash == fresh.hash
    assert len(asked) == 4
    # A leader relays a held transaction with its body altered (true for 1: equal in Python, not
    # in bytes) under the same signature: it is decoded afresh, not taken from the pool, and its
    # block no longer matches the tx_root the leader computed over the held one.
    altered = block.to_json()
    altered["transactions"][2]["body"]["data"] = {"flag": 1}
    forged = Block.decode(canonical.encode(altered), pooled)
    assert forged.transactions[2] is not pooled_txs[2]
    assert forged.transactions[2].hash != pooled_txs[2].hash
    assert forged.check_integrity() == "transactions do not match tx_root"
    broken = block.to_json()
    broken["transactions"][0]["signature"] = "zz" * 65  # not hex: refused as before
    with pytest.raises(EncodingError):
        Block.decode(canonical.encode(broken), pooled)


def test_a_trusted_block_takes_its_peers_hashes_and_refuses_a_wrong_count() -> None:
    block = make_block([make_tx({"n": 1}), make_tx({"n": 2})])
    given = sha3_256(b"first") + sha3_256(b"second")
    trusted = Block.decode_trusted(block.encode(), given)
    assert [tx.hash for tx in trusted.transactions] == [given[:32], given[32:]]  # not re-made
    for wrong in (given[:32], given + given[:32], given[:-1]):
        with pytest.raises(EncodingError, match="transaction hashes"):
            Block.decode_trusted(block.encode(), wrong)
    for bad in (b"", b"[1,", b'{"header":{}}', b"\xff", canonical.encode(block.to_json())[:-1]):
        with pytest.raises(EncodingError):
            Block.decode_trusted(bad)
    big = {**block.to_json(), "transactions": [{**make_tx({"n": 10**30}).to_json()}]}
    assert Block.decode_trusted(canonical.encode(big)).transactions[0].data == {"n": 10**30}


# -- votes and certificates


@SETTINGS
@given(hashes, st.integers(0, 2**40), st.integers(0, 100), st.sampled_from(SIGNERS))
def test_vote_round_trip_and_signature(
    block_hash: bytes, height: int, round_: int, signer: Signer
) -> None:
    vote = Vote.create(CHANNEL, height, round_, block_hash, signer)
    decoded = Vote.decode(vote.encode())
    assert decoded == vote and decoded.verify_signature()
    assert verify(vote.digest, vote.signature, signer.address)
    for changed in (
        dataclasses.replace(vote, height=height + 1),
        dataclasses.replace(vote, round=round_ + 1),
        dataclasses.replace(vote, channel="other"),
        dataclasses.replace(vote, block_hash=sha3_256(block_hash)),
        dataclasses.replace(vote, voter=SIGNERS[(SIGNERS.index(signer) + 1) % 5].address),
    ):
        assert not changed.verify_signature()


@SETTINGS
@given(hashes, st.integers(0, 64))
def test_certificate_round_trip_and_verification(block_hash: bytes, index: int) -> None:
    votes = [Vote.create(CHANNEL, 7, 0, block_hash, s) for s in SIGNERS[:4]]
    qc = QuorumCertificate.from_votes(votes[::-1] + votes[:1])  # order and duplicates do not matter
    assert qc.voters == sorted(s.address for s in SIGNERS[:4])
    decoded = QuorumCertificate.decode(qc.encode())
    assert decoded == qc and decoded.verify(VALIDATORS) is None
    assert QuorumCertificate.from_votes(votes[:2]).verify(VALIDATORS) == (
        "certificate does not hold a quorum of validator weight"
    )
    voter = qc.signatures[index % 4][0]
    tampered = dataclasses.replace(
        qc,
        signatures=tuple((v, flip(sig, index) if v == voter else sig) for v, sig in qc.signatures),
    )
    assert tampered.verify(VALIDATORS) is not None
    outsider = Vote.create(CHANNEL, 7, 0, block_hash, SIGNERS[4])
    assert "not a validator" in (
        QuorumCertificate.from_votes([*votes, outsider]).verify(VALIDATORS) or ""
    )


def test_a_signature_is_recovered_once_per_process_and_forgeries_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vote checked on arrival is not recovered again in the certificate that gathers it; a bad
    signature is never remembered; the memo forgets its oldest entries beyond its bound."""
    votes = [Vote.create(CHANNEL, 9, 1, sha3_256(b"memo"), s) for s in SIGNERS[:4]]
    other = Vote.create(CHANNEL, 9, 2, sha3_256(b"memo"), SIGNERS[0])
    memo = crypto.SignatureMemo(4)
    monkeypatch.setattr(vote_module, "SIGNATURES", memo)  # a process that did not sign them
    recoveries: list[bytes] = []

    def counted(digest: bytes, signature: bytes) -> str:
        recoveries.append(signature)
        return recover_address(digest, signature)

    monkeypatch.setattr(crypto, "recover_address", counted)
    assert all(v.verify_signature() for v in votes) and len(recoveries) == 4
    qc = QuorumCertificate.from_votes(votes)
    assert qc.verify(VALIDATORS) is None and len(recoveries) == 4
    forged = dataclasses.replace(
        qc, signatures=((qc.signatures[0][0], flip(qc.signatures[0][1], 3)), *qc.signatures[1:])
    )
    for _ in range(2):
        assert forged.verify(VALIDATORS) is not None
    assert len(recoveries) == 6
    assert other.verify_signature() and len(recoveries) == 7  # a fifth entry
    assert votes[1].verify_signature() and len(recoveries) == 7  # still held
    assert votes[0].verify_signature() and len(recoveries) == 8  # the oldest, forgotten


def test_a_transaction_keeps_its_good_signature_on_itself_not_in_the_process_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction decoded from the wire is recovered once, then answers from itself (a block
    carries the pooled object), a forgery as well; one made here is recovered never; and the
    process-wide memo, kept for votes, does not grow by one entry per transaction (it held ~55 MB
    per peer at its bound when it did)."""
    recoveries: list[bytes] = []

    def counted(digest: bytes, signature: bytes) -> str:
        recoveries.append(signature)
        return recover_address(digest, signature)

    monkeypatch.setattr(tx_module, "recover_address", counted)
    memo_before = len(crypto.SIGNATURES._good)
    made = make_tx({"n": 1})
    assert made.verify_signature() and recoveries == []  # signed here
    received = Transaction.decode(made.encode())
    assert received.verify_signature() and received.verify_signature()
    assert len(recoveries) == 1
    block = Block.decode(make_block([made]).encode(), {received.signature: received}.get)
    assert block.transactions[0] is received and block.check_integrity() is None
    assert len(recoveries) == 1
    assert Transaction.decode(made.encode()).verify_signature() and len(recoveries) == 2  # new one
    forged = Transaction.decode(
        make_tx({"n": 1}, signer=SIGNERS[1])
        .encode()
        .replace(SIGNERS[1].address.encode(), SIGNERS[0].address.encode())
    )
    for _ in range(2):  # a forgery too is recovered once: the object is immutable
        assert not forged.verify_signature() and len(recoveries) == 3
    assert len(crypto.SIGNATURES._good) == memo_before


def test_certificate_refuses_mixed_votes_and_unsorted_voters() -> None:
    a = Vote.create(CHANNEL, 1, 0, sha3_256(b"a"), SIGNERS[0])
    b = Vote.create(CHANNEL, 1, 0, sha3_256(b"b"), SIGNERS[1])
    with pytest.raises(EncodingError):
        QuorumCertificate.from_votes([a, b])
    raw = QuorumCertificate.from_votes(
        [a, dataclasses.replace(b, block_hash=a.block_hash)]
    ).to_json()
    raw["signatures"].reverse()
    with pytest.raises(EncodingError, match="unique and sorted"):
        QuorumCertificate.decode(canonical.encode(raw))


# -- validator sets


@SETTINGS
@given(st.lists(st.integers(1, 1000), min_size=1, max_size=8), st.integers(0, 100))
def test_validator_set_round_trip_and_issuer_signature(weights: list[int], version: int) -> None:
    vs = validator_set(weights, version).signed_by(SIGNERS[4])
    decoded = ValidatorSet.decode(vs.encode())
    assert decoded == vs and decoded.hash == vs.hash
    assert decoded.verify_issuer(SIGNERS[4].address)
    assert not decoded.verify_issuer(SIGNERS[3].address)
    assert vs.hash == validator_set(weights, version).hash  # the signature is not hashed
    assert validator_set(weights, version + 1).hash != vs.hash
    assert validator_set([*weights[:-1], weights[-1] + 1], version).hash != vs.hash
    forged = dataclasses.replace(vs, signature=flip(vs.signature, version))
    assert not forged.verify_issuer(SIGNERS[4].address)


def test_validator_set_refuses_duplicates_and_nonpositive_weights() -> None:
    with pytest.raises(EncodingError, match="a group id must not be a validator's peer id"):
        ValidatorSet(
            CHANNEL, 1, (Validator("hxa"), Validator("hxb", 1, "hxa")), groups=(Group("hxa", 5),)
        )
    with pytest.raises(EncodingError, match="twice"):
        ValidatorSet(CHANNEL, 1, (Validator("hxa"), Validator("hxa")))
    with pytest.raises(EncodingError, match="positive"):
        ValidatorSet(CHANNEL, 1, (Validator("hxa", 0),))


@pytest.mark.parametrize(
    "validators,auditors,groups",
    [(MAX_SET_PEERS + 1, 0, 0), (MAX_SET_PEERS - 56, 57, 0), (1, 0, MAX_SET_PEERS + 1)],
)
def test_a_decoded_validator_set_lists_at_most_max_set_peers(
    validators: int, auditors: int, groups: int
) -> None:
    """Counted before any entry is read: a RadioStation's answer (or a block) listing 60,000
    validators held the event loop a second."""
    ids = [f"hx{i:040x}" for i in range(validators + auditors)]
    listed = ValidatorSet(CHANNEL, 1, tuple(Validator(i) for i in ids[:validators]))
    raw = {
        **listed.to_json(),
        "auditors": ids[validators:],
        "groups": [{"group_id": f"g{i}", "weight": 1} for i in range(groups)],
    }
    with pytest.raises(EncodingError, match=f"at most {MAX_SET_PEERS} peers and groups"):
        ValidatorSet.from_json(raw)
    raw["validators"] = raw["validators"][: MAX_SET_PEERS - len(raw["auditors"])]
    raw["groups"] = []
    assert len(ValidatorSet.from_json(raw).validators) == len(raw["validators"])


# -- merkle trees


item_lists = st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=33)


@SETTINGS
@given(item_lists, st.data())
def test_every_merkle_proof_verifies_and_others_do_not(
    items: list[bytes], data: st.DataObject
) -> None:
    root = merkle_root(items)
    for index, item in enumerate(items):
        assert verify_merkle_proof(item, merkle_proof(items, index), root)
    index = data.draw(st.integers(0, len(items) - 1))
    proof = merkle_proof(items, index)
    for other in items:
        if other != items[index]:
            assert not verify_merkle_proof(other, proof, root)
    assert not verify_merkle_proof(items[index] + b"x", proof, root)
    assert not verify_merkle_proof(items[index], proof, flip(root, index))
    if proof:
        step = proof[data.draw(st.integers(0, len(proof) - 1))]
        bad = [
            s if s is not step else dataclasses.replace(step, sibling=flip(s.sibling, 0))
            for s in proof
        ]
        assert not verify_merkle_proof(items[index], bad, root)


@SETTINGS
@given(item_lists, item_lists)
def test_different_lists_have_different_roots(a: list[bytes], b: list[bytes]) -> None:
    assert (merkle_root(a) == merkle_root(b)) == (a == b)


def test_merkle_edges() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    assert merkle_root([b"a"]) != sha3_256(b"a")  # leaves are domain-separated
    with pytest.raises(IndexError):
        merkle_proof([b"a"], 1)
    with pytest.raises(IndexError):
        merkle_proof([], 0)


# -- quorum arithmetic


def subsets(ids: list[str]) -> st.SearchStrategy[set[str]]:
    """Any subset, or one missing only a few ids (so that pairs of quorums are common)."""
    anything = st.sets(st.sampled_from(ids))
    nearly_all = st.sets(st.sampled_from(ids), max_size=max(1, len(ids) // 3)).map(
        lambda missing: set(ids) - missing
    )
    return anything | nearly_all


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
    st.data(),
    st.sampled_from([MIN_RATIO, Fraction(67, 100), Fraction(3, 4), Fraction(1, 2)]),
)
def test_any_two_quorums_intersect_in_more_than_a_third(
    weights: list[int], data: st.DataObject, ratio: Fraction
) -> None:
    vs = validator_set(weights)
    a, b = data.draw(subsets(vs.peer_ids)), data.draw(subsets(vs.peer_ids))
    if vs.has_quorum(a, ratio) and vs.has_quorum(b, ratio):
        assert 3 * vs.voting_weight(a & b) > vs.total_weight
        assert vs.has_quorum(a | b, ratio)  # adding voters never loses a quorum
    if ratio <= MIN_RATIO:  # a configured ratio never lowers the bar below 2/3
        assert vs.has_quorum(a, ratio) == vs.has_quorum(a)
    assert vs.has_quorum(vs.peer_ids, ratio)
    assert not vs.has_quorum([], ratio)


def grouped_set(members: list[tuple[int, int]], group_weights: list[int]) -> ValidatorSet:
    """Validators of weights w in groups g (members: (w, g), group 0 = none); group g weighs
    group_weights[g - 1]."""
    used = sorted({g for _, g in members if g})
    validators = tuple(
        Validator(SIGNERS[i % len(SIGNERS)].address + f"{i}", w, f"g{g}" if g else "")
        for i, (w, g) in enumerate(members)
    )
    groups = tuple(Group(f"g{g}", group_weights[g - 1]) for g in used)
    return ValidatorSet("c", 1, validators, groups=groups)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 9), st.integers(0, 3)), min_size=1, max_size=12),
    st.lists(st.integers(1, 20), min_size=3, max_size=3),
    st.data(),
    st.sampled_from([MIN_RATIO, Fraction(67, 100), Fraction(3, 4)]),
)
def test_grouped_quorums_share_units_holding_more_than_a_third(
    members: list[tuple[int, int]], group_weights: list[int], data: st.DataObject, ratio: Fraction
) -> None:
    """Validators in up to three groups (group 0 = none): two quorums share > 1/3 of unit weight."""
    vs = grouped_set(members, group_weights)
    a, b = data.draw(subsets(vs.peer_ids)), data.draw(subsets(vs.peer_ids))
    if vs.has_quorum(a, ratio) and vs.has_quorum(b, ratio):
        shared = vs.voting_units(a, ratio) & vs.voting_units(b, ratio)
        assert 3 * vs.units_weight(shared) > vs.total_weight
    assert vs.has_quorum(vs.peer_ids, ratio)
    assert not vs.has_quorum([], ratio)
    assert ValidatorSet.decode(vs.encode()) == vs


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 9), st.integers(0, 2)), min_size=1, max_size=9),
    st.lists(st.integers(1, 20), min_size=2, max_size=2),
    st.data(),
    st.fractions(min_value=Fraction(1, 3), max_value=Fraction(99, 100), max_denominator=1000),
)
def test_quorum_arithmetic_in_integers_equals_the_fractions(
    members: list[tuple[int, int]], group_weights: list[int], data: st.DataObject, ratio: Fraction
) -> None:
    """The quorum checks compare in integers; they must say what the Fraction definition says."""
    vs = grouped_set(members, group_weights)
    validators = vs.validators
    voted = data.draw(subsets(vs.peer_ids))
    share = max(ratio, MIN_RATIO)
    units = {v.peer_id for v in validators if not v.group_id and v.peer_id in voted}
    for g in vs.groups:
        weights = [(v.weight, v.peer_id in voted) for v in validators if v.group_id == g.group_id]
        if Fraction(sum(w for w, yes in weights if yes)) > share * sum(w for w, _ in weights):
            units.add(g.group_id)
    assert vs.voting_units(voted, ratio) == units
    expected = Fraction(vs.units_weight(units)) > share * vs.total_weight
    assert vs.has_quorum(voted, ratio) is expected


def test_a_group_votes_as_one_unit() -> None:
    ids = [s.address for s in SIGNERS[:5]]
    vs = ValidatorSet(
        "c",
        1,
        (
            Validator(ids[0]),
            Validator(ids[1]),
            Validator(ids[2], 1, "g"),
            Validator(ids[3], 1, "g"),
            Validator(ids[4], 1, "g"),
        ),
        groups=(Group("g", 2),),
    )
    assert vs.total_weight == 4
    assert vs.voting_units([ids[2], ids[3]]) == set()  # 2 of 3 members is not more than 2/3
    assert vs.voting_units(ids[2:]) == {"g"}
    assert vs.has_quorum([ids[0], *ids[2:]])  # 1 + 2 of 4
    assert not vs.has_quorum([ids[0], ids[1], ids[2], ids[3]])  # 2 of 4: the group did not count


def test_weight_counts_distinct_validators_only() -> None:
    vs = validator_set([1, 1, 1, 1])
    first = vs.peer_ids[0]
    assert vs.voting_weight([first, first, first, "hxnotamember"]) == 1
    assert not vs.has_quorum([first] * 10)
    assert vs.has_quorum(vs.peer_ids[:3]) and not vs.has_quorum(vs.peer_ids[:2])


def test_ratio_from_config() -> None:
    # loopchain's default 0.67 spells 2/3: the classic 2f+1 (67 of 100, 171 of 256 validators),
    # and a channel of weights 34/33/33 with one of the 33 down goes on (it halted at 67/100)
    for two_thirds in (0.67, 0.667, 2 / 3):
        assert ratio_from_config(two_thirds) == MIN_RATIO
    assert ratio_from_config(0.75) == Fraction(3, 4)
    for n, f in ((100, 33), (256, 85)):
        equal = validator_set([1] * n)
        ratio = ratio_from_config(0.67)
        assert equal.has_quorum(equal.peer_ids[: 2 * f + 1], ratio)
        assert not equal.has_quorum(equal.peer_ids[: 2 * f], ratio)
    weighted = validator_set([34, 33, 33])
    assert weighted.has_quorum(weighted.peer_ids[:2], ratio_from_config(0.67))
    for unsafe in (0.5, 0.66, 0.0):
        with pytest.raises(ValueError, match="below 2/3"):
            ratio_from_config(unsafe)
    for impossible in (1.0, 1.5):
        with pytest.raises(ValueError, match="below 1"):
            ratio_from_config(impossible)


def test_signatures_recover_their_signer() -> None:
    digest = sha3_256(b"message")
    signature = SIGNERS[2].sign(digest)
    assert recover_address(digest, signature) == SIGNERS[2].address
    assert not verify(digest, signature[:-1], SIGNERS[2].address)
    assert not verify(sha3_256(b"other"), signature, SIGNERS[2].address)


def test_pem_signing_keys_load_with_their_password(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from loopchain.types.crypto import SignatureError, load_or_create_key

    key = ec.generate_private_key(ec.SECP256K1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    path.chmod(0o600)  # a key file others may read is refused
    signer = load_or_create_key(path, "secret")
    assert signer.secret_bytes() == key.private_numbers().private_value.to_bytes(32, "big")
    with pytest.raises(SignatureError, match=r"key\.pem"):
        load_or_create_key(path, "wrong")
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(other)
    with pytest.raises(SignatureError, match="secp256k1"):
        load_or_create_key(path)


def test_validator_set_states_the_channel_configuration() -> None:
    plain = validator_set([1, 1])
    configured = dataclasses.replace(
        plain,
        auditors=("hx" + "c" * 40,),
        score_package="sample/token",
        score_settings='{"token":{"owner":"hx1"}}',
    ).signed_by(SIGNERS[4])
    again = ValidatorSet.decode(configured.encode())
    assert again == configured and again.verify_issuer(SIGNERS[4].address)
    assert (again.auditors, again.score_package) == (("hx" + "c" * 40,), "sample/token")
    assert configured.hash != plain.hash  # the configuration is covered by the set's hash
    assert "auditors" not in plain.body()  # sets without it hash as before
    with pytest.raises(EncodingError, match="auditors"):
        dataclasses.replace(plain, auditors=(plain.peer_ids[0],))
    # the validators' keys, when stated, must be theirs
    keyed = ValidatorSet(CHANNEL, 1, (Validator(SIGNERS[0].address, 1, "", SIGNERS[0].public_key),))
    assert ValidatorSet.decode(keyed.encode()).validators[0].public_key == SIGNERS[0].public_key
    with pytest.raises(EncodingError, match="not its key"):
        ValidatorSet(CHANNEL, 1, (Validator(SIGNERS[0].address, 1, "", SIGNERS[1].public_key),))


def test_a_group_counts_toward_a_third_once_a_third_of_its_members_are_there() -> None:
    ids = [f"hx{i:040x}" for i in range(7)]
    members = tuple(Validator(p, 1, "g" if i >= 3 else "") for i, p in enumerate(ids))
    vs = ValidatorSet("c", 1, members, groups=(Group("g", 2),))  # 3 alone + a unit of 2: 5
    # one alone and half the group: evidence of an honest unit (1 + 2 of 5 > 1/3) ...
    assert vs.exceeds_third([ids[2], ids[3], ids[4]])
    # ... though that half of the group cannot vote for it
    assert vs.voting_units([ids[3], ids[4]]) == set()
    # a quarter of the group and nobody else is not (0 of 5)
    assert not vs.exceeds_third([ids[3]])
    assert vs.exceeds_third([ids[0], ids[1]])  # 2 of 5 alone


@SETTINGS
@given(st.lists(json_data, max_size=5))
def test_transaction_spans_place_each_transactions_bytes_in_the_blocks(datas: list[Any]) -> None:
    """A store serves one transaction from its block's bytes at the place the spans give: they
    must be its canonical bytes, in a block made here and in one decoded from those bytes."""
    block = make_block([make_tx(data, timestamp=i + 1) for i, data in enumerate(datas)])
    for made in (block, Block.decode(block.encode())):
        raw, spans = made.encode(), made.transaction_spans()
        assert spans is not None and len(spans) == len(made.transactions)
        for (offset, length), tx in zip(spans, made.transactions, strict=True):
            assert raw[offset : offset + length] == tx.encode()
    forged = dataclasses.replace(block)
    forged.__dict__["_encoded"] = block.encode().replace(b'"transactions":[', b'"transactions": [')
    assert forged.transaction_spans() is None  # laid out otherwise: not placed
