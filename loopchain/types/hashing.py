"""SHA3-256 hashing and binary merkle trees with inclusion proofs.

Leaves and inner nodes are domain-separated (0x00 / 0x01 prefixes) so a leaf can never be passed
off as an inner node; an odd node at the end of a level is promoted unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

EMPTY_ROOT = hashlib.sha3_256(b"").digest()


def sha3_256(data: bytes) -> bytes:
    """SHA3-256 digest of `data`."""
    return hashlib.sha3_256(data).digest()


def _leaf(item: bytes) -> bytes:
    return sha3_256(b"\x00" + item)


def _node(left: bytes, right: bytes) -> bytes:
    return sha3_256(b"\x01" + left + right)


def merkle_root(items: list[bytes]) -> bytes:
    """Merkle root of the items (each typically a 32-byte hash); the empty list has EMPTY_ROOT."""
    if not items:
        return EMPTY_ROOT
    level = [_leaf(item) for item in items]
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass(frozen=True)
class ProofStep:
    """One sibling on the path from a leaf to the root."""

    sibling: bytes
    sibling_is_left: bool


def merkle_proof(items: list[bytes], index: int) -> list[ProofStep]:
    """Inclusion proof of items[index]."""
    if not 0 <= index < len(items):
        raise IndexError(f"leaf index {index} out of range for {len(items)} items")
    level = [_leaf(item) for item in items]
    proof: list[ProofStep] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(ProofStep(level[sibling], sibling < index))
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return proof


def verify_merkle_proof(item: bytes, proof: list[ProofStep], root: bytes) -> bool:
    """Check that `item` is included under `root`."""
    current = _leaf(item)
    for step in proof:
        current = (
            _node(step.sibling, current) if step.sibling_is_left else _node(current, step.sibling)
        )
    return current == root
