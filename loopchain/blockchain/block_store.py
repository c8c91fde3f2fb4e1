"""The final blocks of one channel, with their certificates and indexes, over a KeyValueStore.

Key schema (integers are unsigned big-endian, heights and rounds 8 bytes, so keys sort by number):

  b"B/" + height + block hash -> Block.encode()            every final block, and the blocks this
                                                           node voted for that are not final yet
                                                           (kept until a final block covers their
                                                           height; the one that becomes final stays)
  b"H/" + block hash (32)  -> height                       every final block's height, by its hash
  b"h/" + height           -> block hash                   heights 0..tip, no gaps, none above tip
  b"t/" + tx hash (32)     -> height + index (4 bytes) + offset (4) + length (4)   each transaction
                                                           of a saved block, once; offset and length
                                                           place its bytes in the block's (absent
                                                           when saved by earlier versions)
  b"c/" + height           -> QuorumCertificate.encode()   the certificate of the block at height
  b"s/tip"                 -> height + block hash          the last saved block (absent if empty)
  b"s/proof"               -> length (4) + block + certificate   the certified child that proves
                                                           the tip final (absent when not known)
  b"s/total_tx"            -> count (8 bytes)              transactions in blocks 0..tip
  b"s/channel"             -> channel name (UTF-8)         the channel this store belongs to
  b"s/safety"              -> canonical {highest_vote_round, high_qc}   what this node signed
  b"m/" + name (UTF-8)     -> value                        free metadata of the node (put_meta)
  b"R/" + height + tx hash -> canonical {code, message, height[, steps, cumulative_steps, events]}
                              a transaction's SCORE result (steps: a v3 transaction's)
  b"s/executed"            -> canonical {height, state_root, results_hash}   last executed block
  b"e/" + height           -> state root (32) + results hash (32)   roots after each executed block
  b"v/" + height           -> b""                          heights of blocks carrying a validator update
  b"x/" + height           -> tx hashes (32 bytes each)    each final block's transactions' hashes, in
                                                           order, so a read serves a block or one of
                                                           its transactions without decoding it (absent
                                                           for blocks saved by earlier versions)

Keys of earlier versions, read (and the moot ones deleted) but no longer written:

  b"b/" + block hash (32)  -> Block.encode()               a final block, by its hash
  b"r/" + tx hash (32)     -> a transaction's SCORE result, as under b"R/"
  b"p/" + height + block hash -> Block.encode()            a voted-for block not final yet
  b"i/" + timestamp + tx hash -> Transaction.encode()      the intake log: client transactions
                                                           acknowledged that no saved block held
                                                           (now in the intake journal)

Block bodies and results are keyed by height first, so that what a block adds sorts after all that
came before: LevelDB then moves their tables down its levels instead of rewriting them with every
compaction, as it did with keys by hash, spread over the whole key space. A voted-for block that
becomes final is written once, when voted for. Only the lookups by hash (b"t/", b"H/") are spread.

A lookup of a transaction not in the chain (every new transaction is asked about, with its
timestamp, at intake, in gossip, in a proposal and when its block is saved) reads nothing once
`tx_filter`, Bloom filters of the stored hashes (a peer's: of those stamped recently), is loaded
(`load_tx_filter`, which the channel runs at start): each such miss in LevelDB was charged to a
table file, and files charged often are compacted.

Execution (SCORE) runs after finality: the results of one executed block and the s/executed pointer
are written in ONE batch, heights 0..executed with no gap, executed <= tip.

Invariants: everything of one block (B/, H/, h/, t/, x/, c/, s/tip, s/total_tx, s/channel, s/proof)
is written in ONE write batch, so after a crash the store holds either all of it or none of it; only
its body may be there before (written, synced, when this node voted for it). The blocks one event
makes final and the vote record it leads to share that batch (`save`): the record is never on disk
without the blocks that came before it. The block at height h has header.prev_hash equal to the
hash of the block at h-1 (b"" at height 0), belongs to the store's channel, and its certificate
names its hash and height. `check()` verifies the tip end of these invariants at start-up; a store
that fails it must not be run on. The vote record only moves forward: the highest round voted or
complained in, and the round of the highest certificate.

What the peer acknowledged to its clients is kept in the intake journal beside the store
(loopchain/blockchain/intake_journal.py). Earlier versions kept it here, under b"i/": at start the
peer reads what is left there (`legacy_intake`), moves it to the journal and drops it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from loopchain import failpoints
from loopchain.blockchain.execution import TxResult, events_json
from loopchain.blockchain.tx_filter import RecentTxFilter, TxFilter
from loopchain.storage.abc import KeyValueStore
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.vote import QuorumCertificate

BODY = b"B/"
BY_HASH = b"H/"
LEGACY_BLOCK = b"b/"
HEIGHT = b"h/"
TX = b"t/"
CERTIFICATE = b"c/"
TIP = b"s/tip"
PROOF = b"s/proof"
LEGACY_PROOF = b"m/commit_proof"  # canonical {block, certificate}, written by earlier versions
TOTAL_TX = b"s/total_tx"
CHANNEL = b"s/channel"
SAFETY = b"s/safety"
META = b"m/"
RESULT = b"R/"
LEGACY_RESULT = b"r/"
EXECUTED = b"s/executed"
ROOTS = b"e/"
UPDATES = b"v/"
TX_HASHES = b"x/"
INTAKE = b"i/"
# Under a recent filter (tx_filter.RecentTxFilter): the widest distance between a transaction's
# timestamp and its block's that blocks saved may hold without a record (the block windows the
# store was written under, the widest), and the record of each transaction stamped further from
# its block (a block certified by peers with a wider window, synced): hash -> its timestamp
STAMP_GAP = b"s/stamp_gap"
STAMP_OUTLIER = b"o/"
LEGACY_PENDING = b"p/"

HASH_BYTES = 32
CHECK_DEPTH = 8  # how many blocks below the tip check() walks back through
DECODED_BLOCKS = 8  # newest blocks kept decoded: lookups of recent transactions decode nothing
PARSED_BLOCKS = 2  # blocks kept parsed (not decoded) for lookups of their transactions
FILTER_LOAD_STEP = 4096  # stored transaction hashes load_tx_filter adds between two yields


def encode_proof(block: Block, certificate: QuorumCertificate) -> bytes:
    """A commit proof as stored: the block's length, its bytes, the certificate's bytes."""
    raw = block.encode()
    return len(raw).to_bytes(4, "big") + raw + certificate.encode()


def decode_proof(raw: bytes) -> tuple[bytes, bytes]:
    """The (block, certificate) bytes of a stored commit proof."""
    size = int.from_bytes(raw[:4], "big")
    return raw[4 : 4 + size], raw[4 + size :]


class TxPlace(NamedTuple):
    """Where a final block holds a transaction."""

    height: int
    tx_index: int  # its position among the block's transactions
    block_hash: bytes


class StoredResult(NamedTuple):
    """A transaction's recorded result; `steps` and `cumulative_steps` (the block's steps up to
    and including it) are 0 for a v1 transaction."""

    code: int
    message: str
    height: int
    steps: int = 0
    cumulative_steps: int = 0
    events_json: str = ""  # the SCORE's event logs (execution.events_json), "" for none


class StoredBlock(NamedTuple):
    """A block as a peer serves it: its channel, its canonical bytes, its certificate's (b"" for
    a block not certified yet) and its transactions' hashes (32 bytes each, in order)."""

    channel: str
    block: bytes
    certificate: bytes
    tx_hashes: bytes

    @classmethod
    def of(cls, block: Block, certificate: QuorumCertificate | None) -> StoredBlock:
        """A decoded block (and its certificate, when it has one), as it is served."""
        return cls(
            block.header.channel,
            block.encode(),
            certificate.encode() if certificate is not None else b"",
            b"".join(tx.hash for tx in block.transactions),
        )


# a final block to save: the block, its certificate, and the certified child that proves it final
# (known for the newest of those saved together; None for the others)
FinalBlock = tuple[Block, QuorumCertificate, tuple[Block, QuorumCertificate] | None]
# a vote record to save: the highest round voted or complained in, the highest certificate, and
# the block voted for (None for a complaint, or a record without a vote)
VoteRecord = tuple[int, QuorumCertificate | None, Block | None]


class BlockStoreError(RuntimeError):
    """A block that may not be saved, or a store whose contents are inconsistent."""


class StoreDamaged(BlockStoreError):
    """What the store holds is missing or does not parse where its indexes say it is: damaged
    (on disk, or by hand), not a block refused by the store's rules."""


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + _u64(height)


def _body_key(height: int, block_hash: bytes) -> bytes:
    return _height_key(BODY, height) + block_hash


def _key_height(key: bytes) -> int:
    """The height in a b"B/" or b"p/" key."""
    return _int(key[2:10])


class BlockStore:
    """Final blocks of ONE channel: save them atomically, look them up, check them at start-up."""

    def __init__(self, kv: KeyValueStore, channel: str, tx_window_us: int | None = None) -> None:
        """`tx_window_us`: how far from its block's timestamp a transaction may be stamped (the
        consensus' block rule): the filter then holds the recent transactions only (see
        tx_filter.RecentTxFilter); None, every stored one."""
        self._kv = kv
        self.channel = channel
        self._tip_height, self._tip_hash = self._read_tip_pointer()
        self._tip: tuple[Block, QuorumCertificate] | None = None
        self._decoded: OrderedDict[bytes, Block] = OrderedDict()
        self._parsed: OrderedDict[bytes, list[Any]] = OrderedDict()  # see _transaction_alone
        self._legacy_proof = kv.get(LEGACY_PROOF) is not None
        # the hashes of the stored transactions, so that a lookup of one not stored reads nothing
        # (see tx_filter); "maybe" to every hash until load_tx_filter has run
        self.tx_window_us = tx_window_us
        gap = kv.get(STAMP_GAP)
        self._stamp_gap = _int(gap) if gap is not None else 0
        # a recent filter needs every block saved with its stamps' record: a store an earlier
        # version wrote (or one written without a window) keeps the whole-chain filter
        self._recording = tx_window_us is not None and (gap is not None or self._tip_height < 0)
        # a store saving blocks unrecorded (no window) forgets its record at its first save:
        # opened with a window again later, it trusted the record and missed those blocks'
        # far-stamped transactions (review)
        self._forget_gap = gap is not None and not self._recording
        self.tx_filter: TxFilter | RecentTxFilter = (
            RecentTxFilter(2 * tx_window_us)
            if self._recording and tx_window_us is not None
            else TxFilter(self.total_tx())
        )
        # the last safety record written or read (this store is its only writer): a vote checks
        # against it without reading and decoding the record with its certificate again
        self._safety: tuple[int, QuorumCertificate | None] | None = None
        # (round, block hash) of the vote the safety record names (last_vote), with it
        self._last_vote: tuple[int, bytes] | None = None
        # the keys of the kept voted-for blocks above the tip by block hash (this store is their
        # only writer): a block deletes the moot ones by key, never by walking the prefix, which
        # LevelDB makes slower with every delete not yet compacted away
        self._pending = {key[10:]: key for key, _ in kv.iterate(LEGACY_PENDING)}
        # whether an earlier version left bodies or results keyed by hash (none are written now):
        # a lookup that misses tries those keys only then, not on every miss
        self._legacy_blocks = next(kv.iterate(LEGACY_BLOCK), None) is not None
        self._legacy_results = next(kv.iterate(LEGACY_RESULT), None) is not None
        for key, _ in kv.iterate(BODY, reverse=True):  # the highest first: stop at the tip
            if _key_height(key) <= self._tip_height:
                break
            self._pending[key[10:]] = key

    # -- writing

    def save_block(
        self,
        block: Block,
        certificate: QuorumCertificate,
        proof: tuple[Block, QuorumCertificate] | None = None,
    ) -> None:
        """Append the next final block with its certificate (and the certified child that proves
        it final, when known) in one write batch, or refuse."""
        self.save([(block, certificate, proof)])

    def save(self, commits: Sequence[FinalBlock] = (), votes: Sequence[VoteRecord] = ()) -> None:
        """Append the next final blocks, each with its certificate and, for the newest, the
        certified child that proves it final when known; then record what this node signed
        (`votes`, oldest first: see save_safety_record). All in ONE synced write batch, one
        fdatasync however many there are, or none of it when any is refused (BlockStoreError).

        One batch, not a synced write each: a follower makes a block final and votes for the
        next one on the same proposal, and each sync holds the event loop. Nor a final block
        written unsynced ahead of a synced vote record: LevelDB syncs only the newest log when
        it switches logs, so the record could survive a power cut that loses the block."""
        tip_height, tip_hash, total = self._tip_height, self._tip_hash, self.total_tx()
        staged: list[tuple[Block, bytes, QuorumCertificate, list[tuple[bytes, int]]]] = []
        seen: set[bytes] = set()  # transactions of the blocks before, not in the store yet
        for block, certificate, _proof in commits:
            block_hash = block.hash  # computed, not stored, by Block: compute it once
            self._check_appendable(block, block_hash, certificate, tip_height, tip_hash)
            positions = self._check_new_transactions(block, block_hash, seen)
            seen.update(tx_hash for tx_hash, _ in positions)
            staged.append((block, block_hash, certificate, positions))
            tip_height, tip_hash = block.height, block_hash
        safety = self._check_votes(votes)
        kept = {  # voted-for blocks above the new tip: kept until a final block covers them
            voted.hash: (_body_key(voted.height, voted.hash), voted)
            for _round, _qc, voted in votes
            if voted is not None and voted.height > tip_height
        }
        covered = [h for h, key in self._pending.items() if _key_height(key) <= tip_height]
        final_keys = {_body_key(block.height, block_hash) for block, block_hash, *_ in staged}
        # into the filter before they are written: a hash added for a batch that then fails costs
        # a read, while one written and not added (the filter failed to grow) would be "surely
        # not stored" for a stored transaction
        for block, _hash, _certificate, positions in staged:
            self.tx_filter.advance(block.header.timestamp)
            for tx_hash, index in positions:
                self.tx_filter.add(tx_hash, block.transactions[index].timestamp)
        with self._kv.write_batch() as batch:
            if self._forget_gap and staged:
                batch.delete(STAMP_GAP)
            for block, block_hash, certificate, positions in staged:
                height = block.height
                body_key = _body_key(height, block_hash)
                if self._pending.get(block_hash) != body_key:  # not already kept as voted for
                    batch.put(body_key, block.encode())
                batch.put(BY_HASH + block_hash, _u64(height))
                batch.put(_height_key(HEIGHT, height), block_hash)
                batch.put(
                    _height_key(TX_HASHES, height), b"".join(tx.hash for tx in block.transactions)
                )
                if self._recording:
                    self._record_stamps(batch, block)
                spans = block.transaction_spans()
                for tx_hash, index in positions:
                    place = _u64(height) + index.to_bytes(4, "big")
                    if spans is not None:
                        offset, length = spans[index]
                        place += offset.to_bytes(4, "big") + length.to_bytes(4, "big")
                    batch.put(TX + tx_hash, place)
                batch.put(_height_key(CERTIFICATE, height), certificate.encode())
                if block.validator_update is not None:
                    batch.put(_height_key(UPDATES, height), b"")
                total += len(block.transactions)
            if staged:
                proof = commits[-1][2]
                batch.put(TOTAL_TX, _u64(total))
                batch.put(CHANNEL, self.channel.encode())
                batch.put(TIP, _u64(tip_height) + tip_hash)
                if proof is not None:
                    batch.put(PROOF, encode_proof(*proof))
                else:
                    batch.delete(PROOF)
                if self._legacy_proof:  # a store of an earlier version: its old proof goes too
                    batch.delete(LEGACY_PROOF)
                for pending_hash in covered:  # voted blocks these heights make moot (or final)
                    if self._pending[pending_hash] not in final_keys:
                        batch.delete(self._pending[pending_hash])
            for voted_hash, (key, voted) in kept.items():
                if self._pending.get(voted_hash) != key:
                    batch.put(key, voted.encode())
            if safety is not None:
                round_, high_qc = safety
                last_vote = self._vote_in(round_, votes)
                record = {
                    "highest_vote_round": round_,
                    "high_qc": high_qc.to_json() if high_qc is not None else None,
                    **({"voted": last_vote[1].hex()} if last_vote is not None else {}),
                }
                batch.put(SAFETY, canonical.encode(record))
            if staged:
                failpoints.hit("block-store-batch")
        for pending_hash in covered:
            del self._pending[pending_hash]
        self._pending.update((voted_hash, key) for voted_hash, (key, _voted) in kept.items())
        if safety is not None:
            self._safety = safety
            self._last_vote = self._vote_in(safety[0], votes)
        if staged:
            block, _hash, certificate, _positions = staged[-1]
            self._tip_height, self._tip_hash = tip_height, tip_hash
            self._tip = (block, certificate)
            self._legacy_proof = False
            self._forget_gap = False  # deleted with the first blocks saved unrecorded
            for block, block_hash, *_ in staged[-DECODED_BLOCKS:]:
                self._keep_decoded(block_hash, block)

    def _keep_decoded(self, block_hash: bytes, block: Block) -> None:
        self._decoded[block_hash] = block
        self._decoded.move_to_end(block_hash)
        if len(self._decoded) > DECODED_BLOCKS:
            self._decoded.popitem(last=False)

    def _check_appendable(
        self,
        block: Block,
        block_hash: bytes,
        certificate: QuorumCertificate,
        tip_height: int,
        tip_hash: bytes,
    ) -> None:
        """Refuse `block` unless it extends the block at `tip_height` (hash `tip_hash`)."""
        header = block.header
        expected = tip_height + 1
        problem = None
        if header.channel != self.channel:
            problem = f"it belongs to channel {header.channel!r}"
        elif block.height != expected:
            problem = f"its height is {block.height}, the next height is {expected}"
        elif header.prev_hash != tip_hash:
            problem = (
                f"its prev_hash {header.prev_hash.hex() or '(empty)'} is not the tip hash "
                f"{tip_hash.hex() or '(empty)'}"
            )
        elif certificate.block_hash != block_hash:
            problem = f"its certificate is for block {certificate.block_hash.hex()}"
        elif certificate.height != block.height or certificate.channel != self.channel:
            problem = (
                f"its certificate is for height {certificate.height} "
                f"of channel {certificate.channel!r}"
            )
        if problem:
            raise BlockStoreError(
                f"refusing to save block {block_hash.hex()} at height {block.height} "
                f"in channel {self.channel!r}: {problem}"
            )

    def _check_new_transactions(
        self, block: Block, block_hash: bytes, staged: set[bytes]
    ) -> list[tuple[bytes, int]]:
        """(hash, index) of each transaction; refuses one that is already in the chain or among
        `staged` (those of the blocks saved in the same batch before it)."""
        positions: dict[bytes, int] = {}
        for index, tx in enumerate(block.transactions):
            found = self._tx_entry(tx.hash, tx.timestamp)
            if found is not None or tx.hash in staged or tx.hash in positions:
                if found is not None:
                    where = f"at height {_int(found[:8])}"
                elif tx.hash in staged:
                    where = "in a block saved with it"
                else:
                    where = "twice in this block"
                raise BlockStoreError(
                    f"refusing to save block {block_hash.hex()} at height {block.height}: "
                    f"transaction {tx.hash_hex} is already {where}"
                )
            positions[tx.hash] = index
        return list(positions.items())

    def save_safety_record(
        self,
        highest_vote_round: int,
        high_qc: QuorumCertificate | None,
        voted: Block | None = None,
    ) -> None:
        """Durably record what this node signed (before the vote or complaint leaves it): the
        highest round it voted or complained in never moves back, nor does its certificate's round.
        `voted`: the block voted for, kept in the same synced write until a final block covers its
        height. Its certificate may be the highest one a quorum holds (their vote records name it)
        while no final block holds it yet: if every node restarted, only these copies would let
        the next leader extend it."""
        self.save(votes=[(highest_vote_round, high_qc, voted)])

    def _check_votes(
        self, votes: Sequence[VoteRecord]
    ) -> tuple[int, QuorumCertificate | None] | None:
        """The newest of `votes` (highest round, highest certificate), None for none;
        BlockStoreError when one would move the record back (see save_safety_record)."""
        last = self.safety_record()
        for highest_vote_round, high_qc, _voted in votes:
            if last is not None:
                if highest_vote_round < last[0]:
                    raise BlockStoreError(
                        f"safety record would move back from round {last[0]} "
                        f"to {highest_vote_round}"
                    )
                last_qc_round = last[1].round if last[1] is not None else -1
                if (high_qc.round if high_qc is not None else -1) < last_qc_round:
                    raise BlockStoreError("safety record would lower the highest certificate")
            last = (highest_vote_round, high_qc)
        return last if votes else None

    def _vote_in(self, round_: int, votes: Sequence[VoteRecord]) -> tuple[int, bytes] | None:
        """The vote this node cast in `round_` (its record's highest round) by `votes` or, when
        they cast none there (a complaint after it), as recorded before; None when it cast none
        in that round (it complained only)."""
        for voted_round, _qc, voted in reversed(votes):
            if voted_round == round_ and voted is not None:
                return (round_, voted.hash)
        before = self.last_vote()
        return before if before is not None and before[0] == round_ else None

    def last_vote(self) -> tuple[int, bytes] | None:
        """(round, block hash) of the vote this node cast in the highest round of its safety
        record, None when it cast none there (it complained only; or a record of an earlier
        version, which named none): what it may send again after a restart, and nothing else
        (a review: the tip's proof block, sent again as voted, signed a vote in a round this
        node had only complained in)."""
        self.safety_record()  # (read with it)
        return self._last_vote

    def safety_record(self) -> tuple[int, QuorumCertificate | None] | None:
        """(highest voted round, highest certificate) as last recorded, or None."""
        if self._safety is not None:
            return self._safety
        raw = self._kv.get(SAFETY)
        if raw is None:
            return None
        try:  # both fields always written: a missing certificate would read as no lock at all
            value = canonical.decode(raw)
            qc, voted = value["high_qc"], value.get("voted")
            record = (
                int(value["highest_vote_round"]),
                QuorumCertificate.from_json(qc) if qc is not None else None,
            )
            last_vote = (record[0], bytes.fromhex(voted)) if voted is not None else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._broken(f"the safety record is damaged: {exc!r}"[:300]) from None
        self._safety, self._last_vote = record, last_vote
        return self._safety

    def save_results(
        self,
        height: int,
        results: Sequence[TxResult],
        state_root: bytes,
        results_hash: bytes,
    ) -> None:
        """Record the execution of the block at `height` (each transaction's result) in ONE batch."""
        executed = self.executed()
        expected = (executed[0] if executed else -1) + 1
        if height != expected or height > self._tip_height:
            raise BlockStoreError(f"cannot record execution of block {height}: expected {expected}")
        cumulative = 0
        with self._kv.write_batch() as batch:
            for result in results:
                value: dict[str, Any] = {
                    "code": int(result.code),
                    "message": str(result.message),
                    "height": height,
                }
                if result.steps:  # a v3 transaction's steps, and the block's up to it
                    cumulative += result.steps
                    value["steps"], value["cumulative_steps"] = result.steps, cumulative
                if result.events:
                    value["events"] = events_json(result.events)
                key = _height_key(RESULT, height) + bytes.fromhex(result.tx_hash)
                batch.put(key, canonical.encode_checked(value))  # no floats here
            pointer = {
                "height": height,
                "state_root": state_root.hex(),
                "results_hash": results_hash.hex(),
            }
            batch.put(EXECUTED, canonical.encode(pointer))
            batch.put(_height_key(ROOTS, height), state_root + results_hash)

    def roots_at(self, height: int) -> tuple[bytes, bytes] | None:
        """(state root, results hash) after executing the block at `height`."""
        raw = self._kv.get(_height_key(ROOTS, height))
        return (raw[:HASH_BYTES], raw[HASH_BYTES:]) if raw is not None else None

    def executed(self) -> tuple[int, bytes, bytes] | None:
        """(height, state root, results hash) of the last executed block, None before any."""
        raw = self._kv.get(EXECUTED)
        if raw is None:
            return None
        try:
            value = canonical.decode(raw)
            return (
                int(value["height"]),
                bytes.fromhex(value["state_root"]),
                bytes.fromhex(value["results_hash"]),
            )
        except (ValueError, TypeError, KeyError) as exc:  # EncodingError: ValueError
            raise self._broken(f"the execution record is corrupt: {exc}") from None

    def tx_result(self, tx_hash: bytes, height: int | None = None) -> StoredResult | None:
        """The recorded result of an executed transaction (`height`: its block's, when known)."""
        if height is None:
            position = self._tx_entry(tx_hash)
            height = _int(position[:8]) if position is not None else None
        raw = self._kv.get(_height_key(RESULT, height) + tx_hash) if height is not None else None
        if raw is None and self._legacy_results:
            raw = self._kv.get(LEGACY_RESULT + tx_hash)  # executed by an earlier version
        if raw is None:
            return None
        try:
            value = canonical.decode(raw)
            return StoredResult(
                int(value["code"]),
                str(value["message"]),
                int(value["height"]),
                int(value.get("steps", 0)),
                int(value.get("cumulative_steps", 0)),
                str(value.get("events", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # EncodingError too
            raise self._broken(f"the result of {tx_hash.hex()} is corrupt: {exc}") from None

    # -- blocks voted for, not final yet

    def pending_blocks(self) -> list[Block]:
        """The kept voted-for blocks above the tip, lowest first, and the block whose certificate
        proves the tip final: the highest certified block, which a store written before a node
        kept its votes for itself as pending holds only there (such a node, restarted, waited
        for that block for good)."""
        found = [
            self._pending_at(key)
            for key in sorted(self._pending.values(), key=lambda key: key[2:])
            if _key_height(key) > self._tip_height
        ]
        proof = self._proof_block()
        if proof is not None and proof.height > self._tip_height:
            found = [proof, *(block for block in found if block.hash != proof.hash)]
        return found

    def pending_block(self, block_hash: bytes) -> Block | None:
        """A kept voted-for block, or the tip's proof block, by its hash."""
        key = self._pending.get(block_hash)
        if key is not None:
            return self._pending_at(key)
        proof = self._proof_block()
        return proof if proof is not None and proof.hash == block_hash else None

    def _pending_at(self, key: bytes) -> Block:
        raw = self._kv.get(key)
        if raw is None:
            raise StoreDamaged(f"kept voted-for block {key[10:].hex()} is gone from the store")
        try:
            return Block.decode(raw)
        except ValueError as exc:  # EncodingError, or a bad hex field deep inside
            raise self._broken(f"kept voted-for block {key[10:].hex()} is corrupt: {exc}") from None

    def _proof_block(self) -> Block | None:
        proof = self.commit_proof()
        if proof is None:
            return None
        try:
            return Block.decode(proof[0])
        except ValueError as exc:  # EncodingError, or a bad hex field deep inside
            raise self._broken(f"the commit proof's block is corrupt: {exc}") from None

    # -- the intake log of earlier versions (moved to the intake journal at start)

    def legacy_intake(self) -> list[bytes]:
        """The transactions an earlier version logged here (their bytes, oldest first)."""
        return [raw for _, raw in self._kv.iterate(INTAKE)]

    def drop_legacy_intake(self) -> None:
        """Forget them all (once the journal holds those that still matter)."""
        keys = [key for key, _ in self._kv.iterate(INTAKE)]
        if keys:
            with self._kv.write_batch() as batch:
                for key in keys:
                    batch.delete(key)

    def put_meta(self, name: str, value: bytes) -> None:
        """Durably store a named metadata value."""
        self._kv.put(META + name.encode(), value, sync=True)

    # -- reading

    def check_in_place(self) -> None:
        """StorageError when the store's files are no longer where it was opened
        (KeyValueStore.check_in_place)."""
        self._kv.check_in_place()

    def tip_height(self) -> int:
        """Height of the last saved block, -1 when the store is empty."""
        return self._tip_height

    def tip_hash(self) -> bytes:
        """Hash of the last saved block, b"" when the store is empty."""
        return self._tip_hash

    def tip(self) -> tuple[Block, QuorumCertificate] | None:
        """The last saved block and its certificate, None when the store is empty."""
        if self._tip is None and self._tip_height >= 0:
            block = self._decoded_at(self._tip_height, self._tip_hash)
            certificate = self.certificate_at(self._tip_height)
            if block is None or certificate is None:
                raise self._broken("the tip block or its certificate is missing")
            self._tip = (block, certificate)
        return self._tip

    def block_by_height(self, height: int) -> Block | None:
        """The final block at `height`, None when there is none."""
        if not 0 <= height <= self._tip_height:
            return None
        block_hash = self._kv.get(_height_key(HEIGHT, height))
        return self._decoded_at(height, block_hash) if block_hash is not None else None

    def stored_block(self, height: int) -> StoredBlock | None:
        """The final block at `height` (negative: the tip) as served, None when there is none.
        Its stored bytes are served as they are: a reader of old blocks decoded a whole block
        each (~6 ms for 1,000 transactions, on the event loop that runs consensus)."""
        height = self._tip_height if height < 0 else height
        if not 0 <= height <= self._tip_height:
            return None
        block_hash = self._kv.get(_height_key(HEIGHT, height))
        return self._stored(height, block_hash) if block_hash is not None else None

    def stored_block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        """The final block with `block_hash` as it is served (see `stored_block`), or None."""
        height = self._kv.get(BY_HASH + block_hash)
        if height is not None:
            return self._stored(_int(height), block_hash)
        block = self.block_by_hash(block_hash)  # kept by an earlier version under its hash only
        return self._stored(block.height, block_hash) if block is not None else None

    def _stored(self, height: int, block_hash: bytes) -> StoredBlock:
        block = self._decoded.get(block_hash)
        hashes = self._kv.get(_height_key(TX_HASHES, height)) if block is None else None
        if block is None and hashes is None:  # saved by an earlier version: decoded, as before
            block = self._decode(height, block_hash)
        if block is not None:
            raw: bytes | None = block.encode()
            hashes = b"".join(tx.hash for tx in block.transactions)
        else:
            raw = self._body(height, block_hash)
        certificate = self._kv.get(_height_key(CERTIFICATE, height))
        if raw is None or hashes is None or certificate is None:
            raise self._broken(f"the block at height {height} or its certificate is missing")
        return StoredBlock(self.channel, raw, certificate, hashes)

    def encoded_at(self, height: int) -> tuple[bytes, bytes] | None:
        """The stored (canonical) bytes of the block at `height` and of its certificate."""
        if not 0 <= height <= self._tip_height:
            return None
        block_hash = self._kv.get(_height_key(HEIGHT, height))
        raw = self._body(height, block_hash) if block_hash is not None else None
        certificate = self._kv.get(_height_key(CERTIFICATE, height))
        return (raw, certificate) if raw is not None and certificate is not None else None

    def iter_update_heights(self) -> Iterator[int]:
        """Heights of the blocks that carry a validator update, newest first, as they are read."""
        for key, _ in self._kv.iterate(UPDATES, reverse=True):
            yield _int(key[len(UPDATES) :])

    def has_block(self, block_hash: bytes) -> bool:
        """Whether a final block has `block_hash` (an index read: nothing decoded)."""
        if block_hash in self._decoded or self._kv.get(BY_HASH + block_hash) is not None:
            return True
        return self._legacy_blocks and self._kv.get(LEGACY_BLOCK + block_hash) is not None

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """The final block with `block_hash`, None when there is none."""
        cached = self._decoded.get(block_hash)
        if cached is not None:
            return cached
        height = self._kv.get(BY_HASH + block_hash)
        return self._decode(_int(height) if height is not None else None, block_hash)

    def _body(self, height: int | None, block_hash: bytes) -> bytes | None:
        """A final block's bytes, under its height, or by its hash as an earlier version kept it."""
        raw = self._kv.get(_body_key(height, block_hash)) if height is not None else None
        if raw is None and self._legacy_blocks:
            raw = self._kv.get(LEGACY_BLOCK + block_hash)
        return raw

    def _decoded_at(self, height: int, block_hash: bytes) -> Block | None:
        """The final block `block_hash` at `height` (known: no lookup by hash)."""
        cached = self._decoded.get(block_hash)
        return cached if cached is not None else self._decode(height, block_hash)

    def _decode(self, height: int | None, block_hash: bytes) -> Block | None:
        raw = self._body(height, block_hash)
        if raw is None:
            return None
        try:
            block = Block.decode(raw)
        except ValueError as exc:  # EncodingError, or a bad hex field deep inside
            raise self._broken(f"block {block_hash.hex()} is corrupt: {exc}") from None
        self._keep_decoded(block_hash, block)
        return block

    def certificate_at(self, height: int) -> QuorumCertificate | None:
        """The certificate of the block at `height`, None when there is none."""
        if height < 0:
            return None
        raw = self._kv.get(_height_key(CERTIFICATE, height))
        if raw is None:
            return None
        try:
            return QuorumCertificate.decode(raw)
        except ValueError as exc:  # EncodingError, or a bad hex field deep inside
            raise self._broken(f"certificate at height {height} is corrupt: {exc}") from None

    def commit_proof(self) -> tuple[bytes, bytes] | None:
        """The encoded block and certificate that prove the tip final, None when not known."""
        raw = self._kv.get(PROOF)
        if raw is not None:
            return decode_proof(raw)
        legacy = self._kv.get(LEGACY_PROOF)
        if legacy is None:
            return None
        value = canonical.decode(legacy)
        return canonical.encode(value["block"]), canonical.encode(value["certificate"])

    def _record_stamps(self, batch: Any, block: Block) -> None:
        """Record in `batch` what a recent filter's loading needs of `block` (see STAMP_GAP)."""
        window = self.tx_window_us or 0
        if self._stamp_gap < window:
            batch.put(STAMP_GAP, _u64(window))
            self._stamp_gap = window  # (a batch that then fails leaves it wider: harmless)
        stamp = block.header.timestamp
        for tx in block.transactions:
            if abs(tx.timestamp - stamp) > self._stamp_gap:
                # (clamped: one stamped before 0 is before any span, one past 2**64 ahead of it)
                clamped = min(max(tx.timestamp, 0), (1 << 64) - 1)
                batch.put(STAMP_OUTLIER + tx.hash, _u64(clamped))

    def has_transaction(self, tx_hash: bytes, stamped_us: int | None = None) -> bool:
        """True when a final block holds the transaction stamped `stamped_us` (one index read, no
        block decoded; none when the filter knows the hash is not stored: a recent filter knows
        it of a transaction only with its timestamp)."""
        return self._tx_entry(tx_hash, stamped_us) is not None

    def _tx_entry(self, tx_hash: bytes, stamped_us: int | None = None) -> bytes | None:
        """The index entry of a stored transaction, read only when the filter may hold it."""
        held = self.tx_filter.may_hold(tx_hash, stamped_us)
        return self._kv.get(TX + tx_hash) if held else None

    def load_tx_filter(self) -> Iterator[int]:
        """Add the hashes of the stored transactions to the filter, yielding how many so far
        after every FILTER_LOAD_STEP of them (a piece of the caller's work: a channel runs each
        in its worker thread, beside its event loop). When it ends the filter is loaded. The
        blocks saved meanwhile add their own hashes, as every save does. A whole-chain filter
        reads a snapshot of the index; a recent one, the blocks stamped within twice its span and
        the block window of the newest, newest first (a transaction stamped within the span is
        in one of them)."""
        if isinstance(self.tx_filter, RecentTxFilter):
            yield from self._load_recent(self.tx_filter)
            return
        count = 0
        for key, _place in self._kv.iterate(TX, cached=False):
            self.tx_filter.add(key[len(TX) :])
            count += 1
            if count % FILTER_LOAD_STEP == 0:
                yield count
        self.tx_filter.loaded = True
        yield count

    def _load_recent(self, hashes: RecentTxFilter) -> Iterator[int]:
        count, height = 0, self._tip_height  # (the blocks saved meanwhile add themselves)
        # every transaction stamped further from its block than the store's widest window is
        # recorded (STAMP_OUTLIER); the others are in the blocks stamped within the span and
        # that window of the newest
        window = max(self._stamp_gap, self.tx_window_us or 0)
        outliers = [
            (key[len(STAMP_OUTLIER) :], _int(value))
            for key, value in self._kv.iterate(STAMP_OUTLIER, cached=False)
        ]
        oldest: int | None = None
        while height >= 0:
            block_hash = self._kv.get(_height_key(HEIGHT, height))
            raw = self._body(height, block_hash) if block_hash is not None else None
            if raw is None:
                raise self._broken(f"block {height} is missing")
            block = Block.decode(raw)  # not kept: the decoded blocks are the event loop's
            stamp = block.header.timestamp
            if oldest is None:  # the newest: the chain's time, then the records
                hashes.advance(stamp)
                oldest = stamp - hashes.span_us - window
                for tx_hash, stamped_us in outliers:
                    hashes.add(tx_hash, stamped_us)
                count += len(outliers)
            elif stamp < oldest:
                break
            for tx in block.transactions:
                hashes.add(tx.hash, tx.timestamp)
            count += len(block.transactions)
            if count // FILTER_LOAD_STEP != (count - len(block.transactions)) // FILTER_LOAD_STEP:
                yield count
            height -= 1
        hashes.loaded = True
        yield count

    def transaction_place(self, tx_hash: bytes) -> TxPlace | None:
        """Where a final block holds the transaction (two index reads, no block decoded)."""
        located = self._located(tx_hash)
        return located[0] if located is not None else None

    def _located(self, tx_hash: bytes) -> tuple[TxPlace, bytes] | None:
        """The transaction's place, and where its bytes are in its block's (offset and length,
        4 bytes each; b"" when saved by an earlier version)."""
        position = self._tx_entry(tx_hash)
        if position is None:
            return None
        height, index = _int(position[:8]), _int(position[8:12])
        block_hash = self._kv.get(_height_key(HEIGHT, height))
        if block_hash is None:
            raise self._broken(f"transaction index of {tx_hash.hex()} names a missing height")
        return TxPlace(height, index, block_hash), position[12:20]

    def _transaction_alone(self, place: TxPlace, tx_hash: bytes, span: bytes) -> Transaction | None:
        """The transaction at `place`, made alone from its block's stored bytes (its hash is the
        one stored for that place), not the whole block decoded: from its own bytes when their
        `span` is known (~1/20 of the work), else from the block's bytes parsed (1/5 of the work,
        kept for the next lookups in the block); None when the block's hashes are not stored
        (saved by an earlier version) or do not match."""
        hashes = self._kv.get(_height_key(TX_HASHES, place.height))
        start = place.tx_index * 32
        if hashes is None or hashes[start : start + 32] != tx_hash:
            return None
        if len(span) == 8 and place.block_hash not in self._parsed:
            alone = self._transaction_at(place, tx_hash, _int(span[:4]), _int(span[4:]))
            if alone is not None:
                return alone
        try:
            items = self._parsed.get(place.block_hash)
            if items is None:
                raw = self._body(place.height, place.block_hash)
                if raw is None:
                    return None
                items = canonical.decode_trusted(raw)["transactions"]
                self._parsed[place.block_hash] = items
                if len(self._parsed) > PARSED_BLOCKS:
                    self._parsed.popitem(last=False)
            return Transaction.from_json(items[place.tx_index], trusted=True, known_hash=tx_hash)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # EncodingError: ValueError
            raise self._broken(f"block {place.block_hash.hex()} is corrupt: {exc}") from None

    def _transaction_at(
        self, place: TxPlace, tx_hash: bytes, offset: int, length: int
    ) -> Transaction | None:
        """The transaction whose bytes are at `offset` in its block's, or None when they are not
        a transaction's bytes there (the caller then parses the whole block, which tells a
        damaged block from a wrong place)."""
        raw = self._body(place.height, place.block_hash)
        if raw is None:
            return None
        piece = raw[offset : offset + length]
        after = raw[offset + length : offset + length + 1]
        if len(piece) != length or piece[:1] != b"{" or after not in (b",", b"]"):
            return None
        try:  # hashed again (a few us): what is served under a hash is the one with that hash
            tx = Transaction.from_json(canonical.decode_trusted(piece), trusted=True)
        except (ValueError, TypeError, KeyError):  # EncodingError: ValueError
            return None
        if tx.hash != tx_hash:
            return None
        tx.__dict__["_encoded"] = piece  # its canonical bytes: served without re-encoding
        return tx

    def find_transaction(self, tx_hash: bytes) -> tuple[Transaction, TxPlace] | None:
        """A transaction in a final block and its place, or None."""
        located = self._located(tx_hash)
        if located is None:
            return None
        place, span = located
        if place.block_hash not in self._decoded:
            alone = self._transaction_alone(place, tx_hash, span)
            if alone is not None:
                return alone, place
        block = self._decoded_at(place.height, place.block_hash)
        if (
            block is None
            or place.tx_index >= len(block.transactions)
            or block.transactions[place.tx_index].hash != tx_hash
        ):
            raise self._broken(f"transaction index of {tx_hash.hex()} points at a wrong place")
        return block.transactions[place.tx_index], place

    def total_tx(self) -> int:
        """Number of transactions in all final blocks."""
        raw = self._kv.get(TOTAL_TX)
        return _int(raw) if raw is not None else 0

    def get_meta(self, name: str) -> bytes | None:
        """A named metadata value, or None."""
        return self._kv.get(META + name.encode())

    # -- integrity

    def check(self) -> None:
        """Verify the tip end of the chain at start-up; raise BlockStoreError when inconsistent."""
        stored_channel = self._kv.get(CHANNEL)
        if stored_channel is not None and stored_channel != self.channel.encode():
            raise self._broken(f"it belongs to channel {stored_channel.decode(errors='replace')!r}")
        highest = next(self._kv.iterate(HEIGHT, reverse=True), None)
        if self._tip_height < 0:
            if highest is not None:
                raise self._broken("it has a height index but no tip pointer")
            return
        if highest is None or _int(highest[0][len(HEIGHT) :]) != self._tip_height:
            raise self._broken(f"the height index does not end at the tip {self._tip_height}")
        if self._kv.get(TOTAL_TX) is None:
            raise self._broken("the transaction counter is missing")
        child_prev = None
        for height in range(self._tip_height, max(-1, self._tip_height - CHECK_DEPTH), -1):
            block = self._check_height(height, child_prev)
            child_prev = block.header.prev_hash
        if self._tip_height < CHECK_DEPTH and child_prev != b"":
            raise self._broken("the block at height 0 has a prev_hash")

    def _check_height(self, height: int, child_prev: bytes | None) -> Block:
        """Check one height's index, block, certificate and link to its child."""
        indexed = self._kv.get(_height_key(HEIGHT, height))
        if indexed is None:
            raise self._broken(f"height {height} is missing from the index")
        if height == self._tip_height and indexed != self._tip_hash:
            raise self._broken("the tip pointer and the height index disagree")
        block = self.block_by_hash(indexed)
        if block is None or block.hash != indexed or block.height != height:
            raise self._broken(f"the block at height {height} is missing or wrong")
        if block.header.channel != self.channel:
            raise self._broken(f"the block at height {height} is of another channel")
        if child_prev is not None and child_prev != indexed:
            raise self._broken(f"the block at height {height + 1} does not extend height {height}")
        certificate = self.certificate_at(height)
        if certificate is None or certificate.block_hash != indexed or certificate.height != height:
            raise self._broken(f"the certificate at height {height} is missing or wrong")
        return block

    def _read_tip_pointer(self) -> tuple[int, bytes]:
        raw = self._kv.get(TIP)
        if raw is None:
            return -1, b""
        if len(raw) != 8 + HASH_BYTES:
            raise self._broken("the tip pointer is malformed")
        return _int(raw[:8]), raw[8:]

    def _broken(self, problem: str) -> StoreDamaged:
        """The error for an inconsistent store, saying what is wrong and that it must not run."""
        return StoreDamaged(f"block store of channel {self.channel!r} is inconsistent: {problem}")
