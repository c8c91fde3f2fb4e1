"""BlockStore over MemoryStore and LevelDB: atomic saves, refusals, lookups, restart, vote records."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopchain.blockchain import block_store as schema
from loopchain.blockchain.block_store import BlockStore, BlockStoreError, TxPlace
from loopchain.blockchain.execution import TxResult
from loopchain.storage.abc import KeyValueStore, WriteBatch
from loopchain.storage.leveldb import LevelDBStore
from loopchain.storage.memory import MemoryStore
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.vote import QuorumCertificate
from tests.integration._storage_helpers import CHANNEL, ChainBuilder


@pytest.fixture(params=["memory", "leveldb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    store = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield store
    store.close()


@pytest.fixture
def store(kv: KeyValueStore) -> BlockStore:
    return BlockStore(kv, CHANNEL)


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder()


def save_next(store: BlockStore, chain: ChainBuilder, tx_count: int = 0) -> Block:
    block, certificate = chain.next(tx_count)
    store.save_block(block, certificate)
    return block


def snapshot(kv: KeyValueStore) -> list[tuple[bytes, bytes]]:
    return list(kv.iterate())


# -- empty store


def test_empty_store(store: BlockStore) -> None:
    assert store.tip_height() == -1
    assert store.tip_hash() == b""
    assert store.tip() is None
    assert store.block_by_height(0) is None
    assert store.block_by_height(-1) is None
    assert store.block_by_hash(b"\x00" * 32) is None
    assert not store.has_block(b"\x00" * 32)
    assert store.certificate_at(0) is None
    assert store.certificate_at(-1) is None
    assert store.find_transaction(b"\x00" * 32) is None
    assert store.transaction_place(b"\x00" * 32) is None
    assert store.total_tx() == 0
    assert store.safety_record() is None
    store.check()


# -- saving and looking up


def test_saved_chain_is_found_by_height_hash_and_transaction(
    store: BlockStore, chain: ChainBuilder
) -> None:
    saved = [save_next(store, chain, tx_count) for tx_count in (0, 2, 3)]
    assert store.tip_height() == 2
    assert store.tip_hash() == saved[-1].hash
    assert store.total_tx() == 5
    for block in saved:
        assert store.block_by_height(block.height) == block
        assert store.block_by_hash(block.hash) == block
        assert store.has_block(block.hash)
        certificate = store.certificate_at(block.height)
        assert certificate is not None
        assert certificate.block_hash == block.hash
        assert certificate.verify(chain.validators) is None
        for index, tx in enumerate(block.transactions):
            place = TxPlace(block.height, index, block.hash)
            assert store.find_transaction(tx.hash) == (tx, place)
            assert store.transaction_place(tx.hash) == place
    assert store.block_by_height(3) is None
    assert store.certificate_at(3) is None
    tip = store.tip()
    assert tip is not None and tip[0] == saved[-1] and tip[1] == store.certificate_at(2)
    store.check()


def test_committed_check_is_an_index_read_that_decodes_no_block(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = [save_next(store, chain, 3) for _ in range(schema.DECODED_BLOCKS + 2)]
    decoded: list[bytes] = []
    real_decode = Block.decode
    monkeypatch.setattr(Block, "decode", lambda raw: decoded.append(raw) or real_decode(raw))
    reopened = BlockStore(kv, CHANNEL)
    for block in saved:
        for tx in block.transactions:
            assert reopened.has_transaction(tx.hash)
    assert not reopened.has_transaction(b"\x01" * 32)
    assert decoded == []  # re-gossiped committed transactions cost no block decode
    # a lookup decodes no block: it parses only its transaction's bytes, which the index places
    # in the block's (before: the whole block's bytes, ~13x the time in a block of 1,000)
    parsed: list[bytes] = []
    real_parse = canonical.decode_trusted
    monkeypatch.setattr(
        canonical, "decode_trusted", lambda raw: parsed.append(raw) or real_parse(raw)
    )
    oldest = saved[0]
    for index, tx in enumerate(oldest.transactions):
        place = TxPlace(oldest.height, index, oldest.hash)
        assert reopened.find_transaction(tx.hash) == (tx, place)
    assert decoded == [] and parsed == [tx.encode() for tx in oldest.transactions]
    # a store of an earlier version does not place them: the block's bytes are parsed once, and
    # its other transactions served from that parse
    for tx in oldest.transactions:
        kv.put(schema.TX + tx.hash, kv.get(schema.TX + tx.hash)[:12])
    parsed.clear()
    earlier = BlockStore(kv, CHANNEL)
    for index, tx in enumerate(oldest.transactions):
        place = TxPlace(oldest.height, index, oldest.hash)
        assert earlier.find_transaction(tx.hash) == (tx, place)
    assert decoded == [] and parsed == [oldest.encode()]
    # a block read is served as stored: no decode either
    for block in saved:
        stored = reopened.stored_block(block.height)
        assert stored is not None and stored.block == block.encode()
        assert stored.tx_hashes == b"".join(tx.hash for tx in block.transactions)
    assert decoded == []
    # only the most recently used few stay decoded: a scan over more of them misses every time
    for block in saved[1:] + saved:
        reopened.block_by_hash(block.hash)
    assert len(decoded) == (len(saved) - 1) + len(saved)


def test_commit_proof_is_written_with_its_block_and_never_outlives_it(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    assert store.commit_proof() is None
    first, first_qc = chain.next(1)
    child, child_qc = chain.next(0)
    store.save_block(first, first_qc, (child, child_qc))
    assert store.commit_proof() == (child.encode(), child_qc.encode())
    store.save_block(child, child_qc)  # saved without a proof: the old one must not stay
    assert store.commit_proof() is None
    # a store written by an earlier version kept the proof as canonical JSON in metadata
    grandchild, grandchild_qc = chain.next(0)
    legacy = canonical.encode(
        {"block": grandchild.to_json(), "certificate": grandchild_qc.to_json()}
    )
    kv.put(schema.LEGACY_PROOF, legacy)
    reopened = BlockStore(kv, CHANNEL)
    assert reopened.commit_proof() == (grandchild.encode(), grandchild_qc.encode())
    reopened.save_block(grandchild, grandchild_qc)  # the first new block drops the old proof
    assert kv.get(schema.LEGACY_PROOF) is None and reopened.commit_proof() is None


def test_blocks_are_stored_as_canonical_bytes(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    block = save_next(store, chain, 1)
    assert kv.get(schema.BODY + u64(0) + block.hash) == block.encode()
    assert kv.get(schema.BY_HASH + block.hash) == u64(0)
    certificate = store.certificate_at(0)
    assert certificate is not None
    assert kv.get(schema.CERTIFICATE + (0).to_bytes(8, "big")) == certificate.encode()


def test_height_keys_iterate_in_numeric_order(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    saved = [save_next(store, chain) for _ in range(3)]
    indexed = [value for _, value in kv.iterate(schema.HEIGHT)]
    assert indexed == [block.hash for block in saved]


# -- refusals: each leaves the store exactly as it was


def assert_refused(
    store: BlockStore, kv: KeyValueStore, block: Block, qc: QuorumCertificate, why: str
) -> None:
    before, tip = snapshot(kv), (store.tip_height(), store.tip_hash())
    with pytest.raises(BlockStoreError, match=why):
        store.save_block(block, qc)
    assert snapshot(kv) == before
    assert (store.tip_height(), store.tip_hash()) == tip


def test_refuses_genesis_with_a_prev_hash(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    block = chain.block(prev_hash=b"\x01" * 32)
    assert_refused(store, kv, block, chain.certify(block), "prev_hash")


def test_refuses_a_height_gap_and_a_repeat(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    first, first_qc = chain.next()
    store.save_block(first, first_qc)
    gap = chain.block(height=2)
    assert_refused(store, kv, gap, chain.certify(gap), "height is 2, the next height is 1")
    assert_refused(store, kv, first, first_qc, "height is 0, the next height is 1")


def test_refuses_a_block_that_does_not_extend_the_tip(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    save_next(store, chain)
    fork = chain.block(prev_hash=b"\x02" * 32)
    assert_refused(store, kv, fork, chain.certify(fork), "is not the tip hash")


def test_refuses_a_block_of_another_channel(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    other = chain.block(channel="other_channel")
    assert_refused(store, kv, other, chain.certify(other), "belongs to channel 'other_channel'")


def test_refuses_a_certificate_of_another_block(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    block = chain.block([chain.transaction()])
    sibling = chain.block()
    assert_refused(store, kv, block, chain.certify(sibling), "certificate is for block")


def test_refuses_a_certificate_of_another_height_or_channel(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    block = chain.block()
    assert_refused(store, kv, block, chain.certify(block, height=5), "certificate is for height 5")
    wrong = chain.certify(block, channel="other_channel")
    assert_refused(store, kv, block, wrong, "of channel 'other_channel'")


def test_refuses_a_transaction_already_in_the_chain(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    first = save_next(store, chain, 1)
    replay = chain.block([chain.transaction(), first.transactions[0]])
    assert_refused(store, kv, replay, chain.certify(replay), "already at height 0")
    tx = chain.transaction()
    twice = Block.create(
        channel=CHANNEL,
        height=1,
        round_=0,
        prev_hash=first.hash,
        prev_qc=chain.prev_qc,
        transactions=[tx, tx],
        timestamp=1,
        leader=chain.signers[1],
        next_leader=chain.signers[2].address,
        validators_hash=chain.validators.hash,
    )
    assert_refused(store, kv, twice, chain.certify(twice), "already twice in this block")


# -- restart and integrity


def test_restart_resumes_from_the_same_tip(tmp_path: Path, chain: ChainBuilder) -> None:
    with LevelDBStore(tmp_path / "db") as kv:
        store = BlockStore(kv, CHANNEL)
        saved = [save_next(store, chain, 1) for _ in range(4)]
        store.save_safety_record(4, None)
        store.put_meta("state_root", b"\x06" * 32)
    with LevelDBStore(tmp_path / "db") as kv:
        reopened = BlockStore(kv, CHANNEL)
        reopened.check()
        assert reopened.tip_height() == 3
        assert reopened.tip_hash() == saved[-1].hash
        tip = reopened.tip()
        assert tip is not None and tip[0] == saved[-1]
        assert reopened.total_tx() == 4
        assert reopened.safety_record() == (4, None)
        assert reopened.get_meta("state_root") == b"\x06" * 32
        block, certificate = chain.next(2)
        reopened.save_block(block, certificate)
        assert reopened.tip_height() == 4
        assert reopened.find_transaction(block.transactions[1].hash) == (
            block.transactions[1],
            TxPlace(4, 1, block.hash),
        )


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def damage_missing_certificate(kv: KeyValueStore, tip: Block) -> None:
    kv.delete(schema.CERTIFICATE + u64(tip.height))


def damage_index_beyond_tip(kv: KeyValueStore, tip: Block) -> None:
    kv.put(schema.HEIGHT + u64(tip.height + 1), b"\x07" * 32)


def damage_missing_index_below_tip(kv: KeyValueStore, tip: Block) -> None:
    kv.delete(schema.HEIGHT + u64(tip.height - 1))


def damage_corrupt_tip_block(kv: KeyValueStore, tip: Block) -> None:
    kv.put(schema.BODY + u64(tip.height) + tip.hash, tip.encode()[:-5])


def damage_tip_points_elsewhere(kv: KeyValueStore, tip: Block) -> None:
    kv.put(schema.TIP, u64(tip.height) + tip.header.prev_hash)


def damage_broken_link(kv: KeyValueStore, tip: Block) -> None:
    below = kv.get(schema.HEIGHT + u64(tip.height - 2))
    assert below is not None
    kv.put(schema.HEIGHT + u64(tip.height - 1), below)


def damage_other_channel(kv: KeyValueStore, tip: Block) -> None:
    kv.put(schema.CHANNEL, b"other_channel")


def damage_counter_missing(kv: KeyValueStore, tip: Block) -> None:
    kv.delete(schema.TOTAL_TX)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (damage_missing_certificate, "certificate at height 3 is missing"),
        (damage_index_beyond_tip, "height index does not end at the tip 3"),
        (damage_missing_index_below_tip, "height 2 is missing from the index"),
        (damage_corrupt_tip_block, "is corrupt"),
        (damage_tip_points_elsewhere, "tip pointer and the height index disagree"),
        (damage_broken_link, "block at height 2 is missing or wrong"),
        (damage_other_channel, "belongs to channel 'other_channel'"),
        (damage_counter_missing, "transaction counter is missing"),
    ],
)
def test_check_refuses_a_damaged_store(
    kv: KeyValueStore,
    chain: ChainBuilder,
    damage: Callable[[KeyValueStore, Block], None],
    message: str,
) -> None:
    store = BlockStore(kv, CHANNEL)
    saved = [save_next(store, chain, 1) for _ in range(4)]
    store.check()
    damage(kv, saved[-1])
    with pytest.raises(BlockStoreError, match=message) as info:
        BlockStore(kv, CHANNEL).check()
    # (what to do next is said by the peer refusing it: node._open_channel)
    assert str(info.value).startswith(f"block store of channel {CHANNEL!r} is inconsistent: ")


def test_check_refuses_an_index_without_a_tip(kv: KeyValueStore, chain: ChainBuilder) -> None:
    store = BlockStore(kv, CHANNEL)
    save_next(store, chain)
    kv.delete(schema.TIP)
    with pytest.raises(BlockStoreError, match="height index but no tip pointer"):
        BlockStore(kv, CHANNEL).check()


def test_malformed_tip_pointer_is_refused_on_open(kv: KeyValueStore) -> None:
    kv.put(schema.TIP, b"\x00" * 5)
    with pytest.raises(BlockStoreError, match="tip pointer is malformed"):
        BlockStore(kv, CHANNEL)


def test_check_walks_a_long_chain_only_at_its_tip_end(
    kv: KeyValueStore, chain: ChainBuilder
) -> None:
    store = BlockStore(kv, CHANNEL)
    for _ in range(schema.CHECK_DEPTH + 3):
        save_next(store, chain)
    kv.delete(schema.CERTIFICATE + u64(0))  # far below the checked window
    store.check()
    kv.delete(schema.CERTIFICATE + u64(store.tip_height() - schema.CHECK_DEPTH + 1))
    with pytest.raises(BlockStoreError, match="certificate at height"):
        store.check()


# -- vote records and metadata


def test_safety_records_move_forward_only(store: BlockStore, chain: ChainBuilder) -> None:
    _block, qc = chain.next(0)
    store.save_safety_record(3, None)
    assert store.safety_record() == (3, None)
    store.save_safety_record(3, qc)  # the same round again, with a certificate
    assert store.safety_record() == (3, qc)
    with pytest.raises(BlockStoreError, match="move back"):
        store.save_safety_record(2, qc)
    with pytest.raises(BlockStoreError, match="lower the highest certificate"):
        store.save_safety_record(4, None)
    assert store.safety_record() == (3, qc)


def test_the_safety_record_names_the_vote_cast_in_its_round(
    kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """What a node started again may send again (ChannelService._vote_again): the vote it cast
    in its record's round, kept when it complains in that round after, gone once it only
    complained in a later one; none from a record of an earlier version."""
    store = BlockStore(kv, CHANNEL)
    voted, qc = chain.next(0)
    assert store.last_vote() is None
    store.save_safety_record(voted.header.round, None, voted)
    assert store.last_vote() == (voted.header.round, voted.hash)
    store.save_safety_record(voted.header.round, qc)  # a complaint in the same round, after
    assert BlockStore(kv, CHANNEL).last_vote() == (voted.header.round, voted.hash)
    store.save_safety_record(voted.header.round + 1, qc)  # a complaint in the next round only
    assert store.last_vote() is None
    assert BlockStore(kv, CHANNEL).last_vote() is None
    record = canonical.decode(kv.get(schema.SAFETY))  # type: ignore[arg-type]
    kv.put(schema.SAFETY, canonical.encode({k: v for k, v in record.items() if k != "voted"}))
    assert BlockStore(kv, CHANNEL).last_vote() is None  # (an earlier version's record)


class Counting(MemoryStore):
    """A MemoryStore that counts the writes that would sync (every batch is synced)."""

    syncs = 0

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self.syncs += sync
        super().put(key, value, sync=sync)

    def write_batch(self) -> WriteBatch:
        self.syncs += 1
        return super().write_batch()


def test_a_vote_record_and_its_block_are_one_synced_write(chain: ChainBuilder) -> None:
    """Between a proposal and its vote a node syncs once: the record of what it signed and the
    block it voted for go in one batch, both there after a restart or neither."""
    kv = Counting()
    store = BlockStore(kv, CHANNEL)
    save_next(store, chain)
    voted = chain.block([chain.transaction()])
    kv.syncs = 0
    store.save_safety_record(5, None, voted)
    assert kv.syncs == 1
    again = BlockStore(kv, CHANNEL)
    assert again.safety_record() == (5, None)
    assert [b.hash for b in again.pending_blocks()] == [voted.hash]
    with pytest.raises(BlockStoreError, match="move back"):
        again.save_safety_record(4, None, chain.block([chain.transaction()]))
    assert [b.hash for b in BlockStore(kv, CHANNEL).pending_blocks()] == [voted.hash]


def test_final_blocks_and_the_vote_that_follows_them_are_one_synced_write(
    chain: ChainBuilder,
) -> None:
    """A follower makes a block final and votes for the next on one proposal: one sync for both,
    and after a restart the record is there with the block it came after (never alone: a power
    cut could keep a later synced record and lose an earlier unsynced block)."""
    kv = Counting()
    store = BlockStore(kv, CHANNEL)
    save_next(store, chain)
    first, first_qc = chain.next(2)
    second, second_qc = chain.next(1)
    voted = chain.block([chain.transaction()])  # height 3, voted for, not final
    kv.syncs = 0
    store.save(
        [(first, first_qc, None), (second, second_qc, (voted, chain.certify(voted)))],
        [(7, second_qc, voted)],
    )
    assert kv.syncs == 1
    for opened in (store, BlockStore(kv, CHANNEL)):
        opened.check()
        assert opened.tip_height() == 2 and opened.tip_hash() == second.hash
        assert opened.total_tx() == 3
        assert opened.safety_record() == (7, second_qc)
        assert [b.hash for b in opened.pending_blocks()] == [voted.hash]
        assert opened.commit_proof() is not None
        assert all(opened.has_transaction(tx.hash) for tx in first.transactions)


def test_blocks_and_a_vote_saved_together_are_refused_together(
    kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """One bad part refuses the whole save: nothing of it is written or remembered."""
    store = BlockStore(kv, CHANNEL)
    save_next(store, chain)
    store.save_safety_record(5, None)
    good, good_qc = chain.next(1)
    repeat = chain.block(list(good.transactions[:1]))  # the same transaction in the next block
    repeat_qc = chain.certify(repeat)
    voted = chain.block([chain.transaction()], height=3, prev_hash=repeat.hash)
    before = snapshot(kv)
    cases = [
        ([(good, good_qc, None), (repeat, repeat_qc, None)], [], "in a block saved with it"),
        ([(good, good_qc, None)], [(4, None, voted)], "move back"),
        ([(repeat, repeat_qc, None)], [(6, None, voted)], "the next height is 1"),
    ]
    for commits, votes, problem in cases:
        with pytest.raises(BlockStoreError, match=problem):
            store.save(commits, votes)
        assert snapshot(kv) == before
        assert store.tip_height() == 0 and store.safety_record() == (5, None)
        assert store.pending_blocks() == [] and store.total_tx() == 0


def test_final_blocks_saved_together_read_as_if_saved_one_by_one(chain: ChainBuilder) -> None:
    """Several blocks in one save (catching up) leave the very keys and values that saving them
    one at a time leaves: moot voted-for blocks deleted, the proof (its block kept as voted-for)
    with the newest only."""
    blocks = [chain.next(2) for _ in range(4)]
    child = chain.block([chain.transaction()])
    proof = (child, chain.certify(child))
    moot = chain.block([chain.transaction()], height=2, prev_hash=blocks[1][0].hash)
    one_by_one, together = MemoryStore(), MemoryStore()
    for kv in (one_by_one, together):
        BlockStore(kv, CHANNEL).save_safety_record(1, None, moot)
    single = BlockStore(one_by_one, CHANNEL)
    for index, (block, qc) in enumerate(blocks):
        single.save_block(block, qc, proof if index == len(blocks) - 1 else None)
    BlockStore(together, CHANNEL).save(
        [(block, qc, None) for block, qc in blocks[:-1]] + [(*blocks[-1], proof)]
    )
    assert snapshot(together) == snapshot(one_by_one)
    kept = BlockStore(together, CHANNEL).pending_blocks()
    assert [block.hash for block in kept] == [child.hash]  # the proof's block, not the moot one


def test_meta_values(store: BlockStore) -> None:
    assert store.get_meta("state_root") is None
    store.put_meta("state_root", b"\x01")
    store.put_meta("other", b"")
    assert store.get_meta("state_root") == b"\x01"
    assert store.get_meta("other") == b""


# -- property: a chain of random length against a list model


def open_backend(backend: str, directory: str) -> KeyValueStore:
    return MemoryStore() if backend == "memory" else LevelDBStore(Path(directory) / "db")


@pytest.mark.parametrize("backend", ["memory", "leveldb"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx_counts=st.lists(st.integers(0, 3), max_size=8), bad_height=st.integers(0, 10))
def test_random_chain_matches_a_list_model(
    backend: str, tx_counts: list[int], bad_height: int
) -> None:
    chain = ChainBuilder()
    with tempfile.TemporaryDirectory() as directory, open_backend(backend, directory) as kv:
        store = BlockStore(kv, CHANNEL)
        model: list[tuple[Block, QuorumCertificate]] = []
        for count in tx_counts:
            block, certificate = chain.next(count)
            store.save_block(block, certificate)
            model.append((block, certificate))
        if bad_height != len(model):  # every height but the next one is refused
            wrong = chain.block(height=bad_height)
            with pytest.raises(BlockStoreError, match="the next height is"):
                store.save_block(wrong, chain.certify(wrong))
        assert_matches(store, model)


def assert_matches(store: BlockStore, model: list[tuple[Block, QuorumCertificate]]) -> None:
    store.check()
    assert store.tip_height() == len(model) - 1
    assert store.tip() == (model[-1] if model else None)
    assert store.total_tx() == sum(len(block.transactions) for block, _ in model)
    for height, (block, certificate) in enumerate(model):
        assert store.block_by_height(height) == block
        assert store.block_by_hash(block.hash) == block
        assert store.certificate_at(height) == certificate
        for index, tx in enumerate(block.transactions):
            assert store.find_transaction(tx.hash) == (tx, TxPlace(height, index, block.hash))
    assert store.block_by_height(len(model)) is None


def test_execution_results_are_recorded_in_order_with_their_pointer() -> None:
    from loopchain.storage.memory import MemoryStore

    builder = ChainBuilder()
    store = BlockStore(MemoryStore(), builder.channel)
    blocks = [builder.next(2) for _ in range(3)]
    for block, qc in blocks:
        store.save_block(block, qc)
    assert store.executed() is None
    with pytest.raises(BlockStoreError):
        store.save_results(1, [], b"\x01" * 32, b"\x02" * 32)  # gap: 0 not executed yet
    first = blocks[0][0]
    results = [TxResult(tx.hash_hex, 0, "") for tx in first.transactions]
    store.save_results(0, results, b"\x01" * 32, b"\x02" * 32)
    assert store.executed() == (0, b"\x01" * 32, b"\x02" * 32)
    assert store.roots_at(0) == (b"\x01" * 32, b"\x02" * 32)
    assert store.roots_at(1) is None
    assert store.tx_result(first.transactions[0].hash) == (0, "", 0, 0, 0, "")
    assert store.tx_result(blocks[1][0].transactions[0].hash) is None
    with pytest.raises(BlockStoreError):
        store.save_results(0, results, b"\x01" * 32, b"\x02" * 32)  # twice


# -- the intake log


def test_an_earlier_versions_intake_log_is_read_and_dropped_whole(
    store: BlockStore, chain: ChainBuilder, kv: KeyValueStore
) -> None:
    """Earlier versions kept acknowledged transactions under b"i/" (timestamp + hash): they are
    read oldest first, and dropped all at once when the journal holds them."""
    txs = [chain.transaction() for _ in range(3)]
    for tx in reversed(txs):
        kv.put(schema.INTAKE + tx.timestamp.to_bytes(8, "big") + tx.hash, tx.encode())
    save_next(store, chain, tx_count=2)  # blocks saved meanwhile leave them alone
    assert store.legacy_intake() == [tx.encode() for tx in txs]
    store.drop_legacy_intake()
    assert store.legacy_intake() == []
    assert store.tip_height() == 0


def test_voted_blocks_are_kept_until_a_final_block_covers_their_height(
    store: BlockStore, chain: ChainBuilder
) -> None:
    save_next(store, chain)
    voted = chain.block([chain.transaction()])  # height 1, voted for, not final
    store.save_safety_record(1, None, voted)
    assert [b.hash for b in store.pending_blocks()] == [voted.hash]
    assert store.pending_block(voted.hash) is not None
    assert store.pending_block(b"\x01" * 32) is None
    save_next(store, chain)  # another block becomes final at height 1
    assert store.pending_blocks() == [] and store.pending_block(voted.hash) is None


def test_voted_blocks_kept_before_a_restart_are_found_and_dropped_after_it(
    kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """The store knows its kept voted-for blocks by key (read once when opened): one kept before
    a restart is offered and served by hash after it, and the block that makes it moot deletes
    it from the key-value store, with the one above that height kept."""
    first = BlockStore(kv, CHANNEL)
    save_next(first, chain)
    low = chain.block([chain.transaction()])  # height 1, voted for, not final
    first.save_safety_record(1, None, low)
    high = chain.block([chain.transaction()], height=2, prev_hash=low.hash)
    first.save_safety_record(2, None, high)

    reopened = BlockStore(kv, CHANNEL)
    assert [b.hash for b in reopened.pending_blocks()] == [low.hash, high.hash]
    served = reopened.pending_block(low.hash)
    assert served is not None and served.hash == low.hash
    final = save_next(reopened, chain)  # another block becomes final at height 1
    bodies = [key[10:] for key, _ in kv.iterate(schema.BODY)]  # heights 0, 1 (final), 2 (kept)
    assert len(bodies) == 3 and bodies[1:] == [final.hash, high.hash], bodies
    assert reopened.pending_block(low.hash) is None
    assert [b.hash for b in BlockStore(kv, CHANNEL).pending_blocks()] == [high.hash]


def test_the_tips_proof_block_is_kept_as_pending_until_it_is_final(
    store: BlockStore, chain: ChainBuilder
) -> None:
    """The block whose certificate proves the tip final may be kept nowhere else (its next leader
    voted for it without sending, so without saving, the vote): after every peer restarted, it is
    offered like a voted-for block, and served by its hash, until it is final itself."""
    first, first_qc = chain.next(1)
    child, child_qc = chain.next(0)
    store.save_block(first, first_qc, (child, child_qc))
    assert [b.hash for b in store.pending_blocks()] == [child.hash]
    found = store.pending_block(child.hash)
    assert found is not None and found.hash == child.hash
    store.save_safety_record(1, None, child)  # also voted for: offered once
    assert [b.hash for b in store.pending_blocks()] == [child.hash]
    store.save_block(child, child_qc)  # final itself, with no proof of its own
    assert store.pending_blocks() == [] and store.pending_block(child.hash) is None


# -- the layout: bodies and results by height, a voted-for block written once


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers every key it was given a value for."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def _apply(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        self.written += [key for key, value in ops if value is not None]
        super()._apply(ops)


def test_a_voted_for_block_that_becomes_final_is_written_once_under_its_height(
    chain: ChainBuilder,
) -> None:
    """Its body, kept (synced) when this node voted for it, is the final block's body: the save
    that makes it final writes its index, not its bytes again."""
    kv = RecordingStore()
    store = BlockStore(kv, CHANNEL)
    save_next(store, chain, 1)
    voted = chain.block([chain.transaction()])
    store.save_safety_record(1, None, voted)
    qc = chain.certify(voted)
    chain.advance(voted, qc)
    store.save_block(voted, qc)
    key = schema.BODY + u64(1) + voted.hash
    assert kv.written.count(key) == 1
    assert store.pending_blocks() == [] and kv.get(key) == voted.encode()
    assert store.block_by_hash(voted.hash) == voted
    assert store.encoded_at(1) == (voted.encode(), qc.encode())
    reopened = BlockStore(kv, CHANNEL)  # not taken for a voted-for block after a restart
    assert reopened.pending_blocks() == [] and reopened.block_by_hash(voted.hash) == voted


def test_bodies_and_results_sort_by_height(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """What each block adds sorts after all that came before (LevelDB then moves the tables
    holding it down its levels instead of rewriting them)."""
    blocks = [save_next(store, chain, 3) for _ in range(4)]
    for block in blocks:
        results = [TxResult(tx.hash_hex, 0, "") for tx in block.transactions]
        store.save_results(block.height, results, b"\x01" * 32, b"\x02" * 32)
    assert [key[10:] for key, _ in kv.iterate(schema.BODY)] == [b.hash for b in blocks]
    heights = [int.from_bytes(key[2:10], "big") for key, _ in kv.iterate(schema.RESULT)]
    assert heights == sorted(heights) and len(heights) == 12
    for block in blocks:
        for tx in block.transactions:
            assert store.tx_result(tx.hash) == (0, "", block.height, 0, 0, "")


def _to_earlier_layout(kv: KeyValueStore, tip_height: int) -> None:
    """Rewrite a store as earlier versions kept it: bodies by hash (b/), results by transaction
    hash (r/), voted-for blocks under p/, no height by hash (H/)."""
    with kv.write_batch() as batch:
        for key, value in kv.iterate(schema.BODY):
            height, block_hash = int.from_bytes(key[2:10], "big"), key[10:]
            if height <= tip_height:
                batch.put(schema.LEGACY_BLOCK + block_hash, value)
            else:
                batch.put(schema.LEGACY_PENDING + key[2:], value)
            batch.delete(key)
        for key, _ in kv.iterate(schema.BY_HASH):
            batch.delete(key)
        for key, value in kv.iterate(schema.RESULT):
            batch.put(schema.LEGACY_RESULT + key[10:], value)
            batch.delete(key)


def test_a_store_an_earlier_version_wrote_is_read_and_goes_on(
    kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """Blocks by hash, results by transaction hash and a voted-for block under p/ are all found
    after the upgrade; the voted-for block, once final, is written under its height and its old
    copy deleted."""
    store = BlockStore(kv, CHANNEL)
    blocks = [save_next(store, chain, 2) for _ in range(2)]
    first = blocks[0]
    store.save_results(
        0, [TxResult(tx.hash_hex, 0, "ok") for tx in first.transactions], *[b"\x01" * 32] * 2
    )
    voted = chain.block([chain.transaction()])
    store.save_safety_record(2, None, voted)
    _to_earlier_layout(kv, store.tip_height())
    assert not list(kv.iterate(schema.BODY)) and list(kv.iterate(schema.LEGACY_PENDING))

    reopened = BlockStore(kv, CHANNEL)
    reopened.check()
    assert [reopened.block_by_height(h) for h in (0, 1)] == blocks
    assert reopened.block_by_hash(blocks[1].hash) == blocks[1]
    assert reopened.has_block(blocks[0].hash) and not reopened.has_block(voted.hash)
    encoded = reopened.encoded_at(0)
    assert encoded is not None and encoded[0] == first.encode()
    tx = blocks[1].transactions[1]
    assert reopened.find_transaction(tx.hash) == (tx, TxPlace(1, 1, blocks[1].hash))
    assert reopened.tx_result(first.transactions[1].hash) == (0, "ok", 0, 0, 0, "")
    assert [b.hash for b in reopened.pending_blocks()] == [voted.hash]

    qc = chain.certify(voted)
    chain.advance(voted, qc)
    reopened.save_block(voted, qc)
    assert not list(kv.iterate(schema.LEGACY_PENDING))
    assert kv.get(schema.BODY + u64(2) + voted.hash) == voted.encode()
    assert BlockStore(kv, CHANNEL).block_by_hash(voted.hash) == voted


def test_a_vote_recorded_for_a_final_block_keeps_no_copy_that_a_later_block_could_delete(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """A vote record naming a block at or below the tip (a node voting again after a restart)
    keeps nothing as voted-for: its key is the final block's own body, which the next final block
    would otherwise delete as moot."""
    save_next(store, chain, 1)
    final = save_next(store, chain, 1)
    store.save_safety_record(5, None, final)
    assert store.pending_blocks() == []
    save_next(store, chain, 1)
    assert store.block_by_height(1) == final
    assert BlockStore(kv, CHANNEL).block_by_height(1) == final  # and after a reopen


class CountingReads(MemoryStore):
    """A MemoryStore that counts its reads by key prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        self.reads.append(key[:2])
        return super().get(key)


def test_a_store_of_this_version_never_looks_up_the_earlier_keys(chain: ChainBuilder) -> None:
    """Misses (an unknown block hash, a transaction not executed yet) cost one read each, not
    a second one under the earlier layout's keys, which only a store an earlier version wrote has."""
    kv = CountingReads()
    store = BlockStore(kv, CHANNEL)
    block = save_next(store, chain, 1)
    kv.reads.clear()
    assert store.block_by_hash(b"\x05" * 32) is None
    assert store.tx_result(block.transactions[0].hash, block.height) is None
    assert schema.LEGACY_BLOCK not in kv.reads and schema.LEGACY_RESULT not in kv.reads, kv.reads


def test_a_block_by_height_or_the_tip_is_read_without_the_index_by_hash(
    chain: ChainBuilder,
) -> None:
    """The height is known: the body is read under it, not after a lookup of its hash's height."""
    kv = CountingReads()
    writer = BlockStore(kv, CHANNEL)
    for _ in range(3):
        save_next(writer, chain, 1)
    store = BlockStore(kv, CHANNEL)  # nothing decoded yet
    kv.reads.clear()
    assert store.block_by_height(1) is not None and store.tip() is not None
    assert schema.BY_HASH not in kv.reads and kv.reads.count(schema.BODY) == 2, kv.reads


def test_blocks_saved_without_their_hashes_are_still_served_by_decoding(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """An earlier version kept no b"x/" hashes: its blocks and transactions are served from a
    decoded block, as before."""
    saved = [save_next(store, chain, 2) for _ in range(3)]
    for height in range(3):
        kv.delete(schema._height_key(schema.TX_HASHES, height))
    reopened = BlockStore(kv, CHANNEL)
    for block in saved:
        assert reopened.stored_block(block.height) == schema.StoredBlock.of(
            block, reopened.certificate_at(block.height)
        )
        assert reopened.stored_block_by_hash(block.hash) == reopened.stored_block(block.height)
        for index, tx in enumerate(block.transactions):
            assert reopened.find_transaction(tx.hash) == (
                tx,
                TxPlace(block.height, index, block.hash),
            )
    assert reopened.stored_block(-1) == reopened.stored_block(saved[-1].height)
    assert reopened.stored_block(len(saved)) is None
    assert reopened.stored_block_by_hash(b"\x02" * 32) is None


def test_a_read_of_a_block_whose_parts_are_gone_or_garbled_says_the_store_is_broken(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """Reads that serve stored bytes still refuse a store that lost a block's certificate, or
    whose body no longer parses for a transaction looked up in it."""
    block = save_next(store, chain, 2)
    save_next(store, chain, 0)
    reopened = BlockStore(kv, CHANNEL)
    kv.put(schema._body_key(block.height, block.hash), b"{garbled")
    with pytest.raises(BlockStoreError, match="is corrupt"):
        reopened.find_transaction(block.transactions[1].hash)
    kv.delete(schema._height_key(schema.CERTIFICATE, block.height))
    with pytest.raises(BlockStoreError, match="or its certificate is missing"):
        reopened.stored_block(block.height)


@pytest.mark.parametrize("kv", ["memory"], indirect=True)
def test_a_transaction_placed_wrongly_in_its_block_is_still_served_as_itself(
    store: BlockStore, kv: KeyValueStore, chain: ChainBuilder
) -> None:
    """The index places a transaction's bytes in its block's; a lookup serves only a transaction
    with the hash asked for, so a place that names another transaction's bytes, or none, falls
    back to parsing the block (a bug or a store written by hand must not serve a wrong one)."""
    block = save_next(store, chain, 3)
    first, second, third = block.transactions
    placed_first = kv.get(schema.TX + first.hash)
    placed_second = kv.get(schema.TX + second.hash)
    assert placed_first is not None and placed_second is not None and len(placed_first) == 20
    kv.put(schema.TX + first.hash, placed_first[:12] + placed_second[12:])  # second's bytes
    kv.put(
        schema.TX + third.hash, kv.get(schema.TX + third.hash)[:12] + (10**6).to_bytes(4, "big") * 2
    )
    reopened = BlockStore(kv, CHANNEL)
    assert reopened.find_transaction(first.hash) == (first, TxPlace(block.height, 0, block.hash))
    assert reopened.find_transaction(third.hash) == (third, TxPlace(block.height, 2, block.hash))
    found = reopened.find_transaction(second.hash)
    assert found is not None and found[0].encode() == second.encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff not json",
        canonical.encode({"highest_vote_round": 4}),  # its certificate's field gone
        canonical.encode({"highest_vote_round": "four", "high_qc": None}),
        canonical.encode({"highest_vote_round": 4, "high_qc": {"round": 1}}),
    ],
)
def test_a_damaged_safety_record_is_refused_never_read_as_no_lock(
    kv: KeyValueStore, raw: bytes
) -> None:
    """A damaged record escaped as a bare EncodingError (a traceback at the peer's start), and
    one without its certificate field read as "no certificate": a lock lowered (review)."""
    kv.put(schema.SAFETY, raw, sync=True)
    with pytest.raises(schema.StoreDamaged, match="safety record is damaged"):
        BlockStore(kv, CHANNEL).safety_record()


def test_a_damaged_commit_proof_is_refused_as_a_damaged_store(
    store: BlockStore, chain: ChainBuilder, kv: KeyValueStore
) -> None:
    save_next(store, chain, 1)
    kv.put(schema.PROOF, canonical.encode({"block": "zz", "certificate": "zz"}), sync=True)
    fresh = BlockStore(kv, CHANNEL)
    with pytest.raises(BlockStoreError):
        fresh._proof_block()
