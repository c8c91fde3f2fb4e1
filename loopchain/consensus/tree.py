"""The tree of blocks that are proposed or certified but not yet final, rooted at the final tip."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from loopchain.blockchain.chain import ChainTip
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.vote import QuorumCertificate

MAX_TREE_BLOCKS = 256
# the tree holds at most this many blocks' worth of bytes, counted in the largest blocks' size (a
# leader may sign any number of blocks of up to the proposal bound for its round: 256 of those
# held GBs decoded); honest progress keeps a few blocks in the tree
TREE_BUDGET_BLOCKS = 16


@dataclass
class TreeNode:
    """A block above the final tip, the chain facts after it, and its certificate once known."""

    block: Block
    point: ChainTip
    certificate: QuorumCertificate | None = None
    proposal_checked: bool = False  # within the bounds a voter checks (a fetched block is not)


class BlockTree:
    """Blocks extending the final tip; every node's parent is the tip or another node."""

    def __init__(self, root: ChainTip, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes  # of the blocks' encodings together
        self.size_bytes = 0
        self.nodes: dict[bytes, TreeNode] = {}
        self._txs: dict[bytes, Transaction] | None = None  # every node's by hash; None: not made

    def point(self, block_hash: bytes) -> ChainTip | None:
        """Chain facts after the block `block_hash` (the root or a node)."""
        if block_hash == self.root.block_hash:
            return self.root
        node = self.nodes.get(block_hash)
        return node.point if node else None

    def get(self, block_hash: bytes) -> TreeNode | None:
        return self.nodes.get(block_hash)

    def has_room(self, block: Block) -> bool:
        """Whether `block` fits beside the tree's blocks (by count and by bytes)."""
        return (
            len(self.nodes) < MAX_TREE_BLOCKS
            and self.size_bytes + len(block.encode()) <= self.max_bytes
        )

    def add(self, block: Block, parent: ChainTip) -> TreeNode:
        """Insert `block`, whose parent point is `parent` (already checked to extend it)."""
        node = self.nodes.get(block.hash)
        if node is None:
            node = TreeNode(block, parent.advance(block))
            self.nodes[block.hash] = node
            self.size_bytes += len(block.encode())
            if self._txs is not None:
                self._txs.update((tx.hash, tx) for tx in block.transactions)
        return node

    def evict_stale_leaf(self, current_round: int, keep: bytes) -> bool:
        """Drop an uncertified block of another round than `current_round` that no other block
        extends (not voted on here now; fetched again should a certificate name it), other than
        `keep` (the parent of the block to make room for): the one of the farthest round ahead,
        else of the lowest round past. False when there is none."""
        parents = {node.block.header.prev_hash for node in self.nodes.values()}
        parents.add(keep)
        stale = [
            node
            for block_hash, node in self.nodes.items()
            if node.certificate is None
            and node.block.header.round != current_round
            and block_hash not in parents
        ]
        if not stale:
            return False
        ahead = [node for node in stale if node.block.header.round > current_round]
        if ahead:
            gone = max(ahead, key=lambda node: node.block.header.round)
        else:
            gone = min(stale, key=lambda node: node.block.header.round)
        del self.nodes[gone.block.hash]
        self.size_bytes -= len(gone.block.encode())
        self._txs = None  # made again when asked for
        return True

    def certify(self, qc: QuorumCertificate) -> None:
        node = self.nodes.get(qc.block_hash)
        if node is not None and node.certificate is None:
            node.certificate = qc

    def parent_point(self, node: TreeNode) -> ChainTip | None:
        return self.point(node.block.header.prev_hash)

    def path_to(self, block_hash: bytes) -> list[TreeNode]:
        """Nodes from just above the root up to `block_hash`, oldest first ([] if not connected)."""
        path: list[TreeNode] = []
        current = block_hash
        while current != self.root.block_hash:
            node = self.nodes.get(current)
            if node is None:
                return []
            path.append(node)
            current = node.block.header.prev_hash
        path.reverse()
        return path

    def tx_hashes_on_path(self, block_hash: bytes) -> set[bytes]:
        """Transactions in the not-yet-final ancestors of `block_hash` (inclusive)."""
        return {tx.hash for node in self.path_to(block_hash) for tx in node.block.transactions}

    def tx_hashes(self) -> Collection[bytes]:
        """Transactions in any block of the tree (made once and kept up to date; a view the
        caller only reads)."""
        return self._transactions().keys()

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        """The transaction `tx_hash` as a block of the tree holds it (its signature checked when
        the block was), or None."""
        return self._transactions().get(tx_hash)

    def _transactions(self) -> dict[bytes, Transaction]:
        if self._txs is None:
            self._txs = {
                tx.hash: tx for node in self.nodes.values() for tx in node.block.transactions
            }
        return self._txs

    def has_pending_transactions(self) -> bool:
        return any(node.block.transactions for node in self.nodes.values())

    def advance_root(self, root: ChainTip) -> None:
        """Make `root` (a node just finalised) the new root and drop what does not extend it."""
        self.root = root
        keep: dict[bytes, TreeNode] = {}
        for block_hash, node in sorted(self.nodes.items(), key=lambda item: item[1].block.height):
            parent = node.block.header.prev_hash
            if node.block.height > root.height and (parent == root.block_hash or parent in keep):
                keep[block_hash] = node
        self.nodes = keep
        self.size_bytes = sum(len(node.block.encode()) for node in keep.values())
        self._txs = None
