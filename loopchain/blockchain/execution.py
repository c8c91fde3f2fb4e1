"""Results of executing a block's transactions and the commitments every peer computes from them.

`results_hash` commits to a block's transaction results; `next_state_root` chains a commitment to
the state writes of each executed block onto the previous one, so two peers that executed the same
blocks hold the same root, and any difference in any write of any block gives a different root.
Both are carried in a later block header and checked by voters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from loopchain.blockchain.score_base import EventLog, is_valid_text
from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.hashing import EMPTY_ROOT, merkle_root, sha3_256

SUCCESS = 0
NOT_INVOKED = 2
SCORE_ERROR = 9000
SCORE_UNREACHABLE = 9100

MAX_RESULT_MESSAGE_CHARS = 1000  # longer messages are cut (deterministically) before hashing
# The codes a SCORE may return from invoke: those of the InvokeReply's int32 field, negative ones
# included (recorded as returned, a v1 transaction's writes kept, as every version did); a code
# outside them cannot be sent, so it fails its transaction instead.
MIN_RESULT_CODE = -(2**31)
MAX_RESULT_CODE = 2**31 - 1

# What the results of one block may take, summed over each result's canonical JSON (what
# results_hash covers; the InvokeReply carries the same fields, in fewer bytes). One result is
# bounded already (a message of MAX_RESULT_MESSAGE_CHARS, at most MAX_EVENTS_PER_TX events of
# MAX_EVENT_CHARS: about 1.6 MB in the worst escaping), a block's transactions are not: a result
# that would take its block past this bound is not kept (its transaction fails, its writes and
# events discarded), and one failing once the bound is reached keeps only its code and
# BLOCK_RESULTS_FULL (fewer bytes than its transaction takes in the block). So a block's reply
# from the SCORE is at most this plus the size of the block itself (see score_link_bytes).
MAX_BLOCK_RESULTS_BYTES = 16 * 1024 * 1024
BLOCK_RESULTS_FULL = "block results limit reached"

_STATE_DOMAIN = b"loopchain.state."
_RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {"tx_hash": str, "code": int, "message": str}
_RESULT_KNOWN = frozenset((*_RESULT_FIELDS, "steps", "events"))


@dataclass(frozen=True)
class TxResult:
    """The outcome of one transaction: its hash (hex), a result code and a message, the steps a
    v3 transaction used (0 for v1: it pays no fee) and the events its SCORE emitted. The JSON form
    (which the results hash covers) leaves out "steps" and "events" when there are none."""

    tx_hash: str
    code: int
    message: str = ""
    steps: int = 0
    events: tuple[EventLog, ...] = ()

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "tx_hash": self.tx_hash,
            "code": self.code,
            "message": self.message,
        }
        if self.steps:
            value["steps"] = self.steps
        if self.events:
            value["events"] = [event.to_json() for event in self.events]
        return value

    @classmethod
    def from_json(cls, value: Any) -> TxResult:
        """Parse the JSON form; raises EncodingError naming the bad field."""
        obj = canonical.check_fields(value, _RESULT_FIELDS, _RESULT_KNOWN)
        steps = obj.get("steps", 0)
        if type(steps) is not int or steps < 0:
            raise EncodingError("field 'steps' must be a non-negative int")
        events = obj.get("events", [])
        if not isinstance(events, list):
            raise EncodingError("field 'events' must be a list")
        parsed = tuple(EventLog.from_json(event) for event in events)
        return cls(obj["tx_hash"], obj["code"], obj["message"], steps, parsed)


@dataclass(frozen=True)
class InvokeResult:
    """The staged outcome of one block: its results and the roots if it is committed."""

    height: int
    results: list[TxResult]
    state_root: bytes
    results_hash: bytes


def events_json(events: tuple[EventLog, ...]) -> str:
    """Events as canonical JSON text ("" for none), as they travel and are stored."""
    return canonical.encode([e.to_json() for e in events]).decode() if events else ""


def parse_events(text: str) -> tuple[EventLog, ...]:
    """The events of events_json's text (EncodingError when malformed)."""
    if not text:
        return ()
    value = canonical.parse(text)
    if not isinstance(value, list):
        raise EncodingError("events must be a JSON list")
    return tuple(EventLog.from_json(item) for item in value)


def clip_message(message: str) -> str:
    """The message as it is recorded in a result: at most MAX_RESULT_MESSAGE_CHARS characters."""
    if len(message) <= MAX_RESULT_MESSAGE_CHARS:
        return message
    return message[: MAX_RESULT_MESSAGE_CHARS - 3] + "..."


def valid_text(text: str) -> str:
    """`text` as it may be recorded: each lone surrogate (not valid Unicode, so not hashable or
    sendable) written as a backslash escape, the same on every peer."""
    if is_valid_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def result_bytes(result: TxResult) -> int:
    """The bytes of `result`'s canonical JSON, what it counts towards MAX_BLOCK_RESULTS_BYTES."""
    return len(canonical.encode_checked(result.to_json()))


def results_hash(results: list[TxResult]) -> bytes:
    """Merkle root over the SHA3-256 of each result's canonical JSON (EMPTY_ROOT for none)."""
    return merkle_root([sha3_256(canonical.encode(result.to_json())) for result in results])


def _writes_digest(writes: dict[bytes, bytes | None]) -> bytes:
    """SHA3-256 of the canonical JSON of [[key hex, value hex or null], ...] in key order, hashed
    a write at a time: the hex of a block's writes together would take twice their size (up to
    MAX_BLOCK_WRITE_BYTES) again in memory, and their JSON as much once more."""
    digest = hashlib.sha3_256(b"[")
    for index, key in enumerate(sorted(writes)):
        value = writes[key]
        digest.update(b'["' if index == 0 else b',["')
        digest.update(key.hex().encode("ascii"))
        digest.update(b'",null]' if value is None else b'","')
        if value is not None:
            digest.update(value.hex().encode("ascii"))
            digest.update(b'"]')
    digest.update(b"]")
    return digest.digest()


def next_state_root(prev_root: bytes, writes: dict[bytes, bytes | None]) -> bytes:
    """The state root after a block that wrote `writes` (None: deleted) on top of `prev_root`."""
    if len(prev_root) != 32:
        raise EncodingError(f"a state root must be 32 bytes, got {len(prev_root)}")
    for key, value in writes.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise TypeError("state writes map bytes keys to bytes values or None")
    return sha3_256(_STATE_DOMAIN + prev_root + _writes_digest(writes))


GENESIS_STATE_ROOT = EMPTY_ROOT  # the state root before any block was executed
