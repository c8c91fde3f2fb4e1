"""The SCORE process adapter (gRPC over a unix socket)."""

from loopchain.blockchain.execution import MAX_BLOCK_RESULTS_BYTES

# Addresses one Balance call may ask about (the peer coalesces concurrent balance checks).
MAX_BALANCE_ADDRESSES = 500
# Queries one Query call may carry (the peer coalesces concurrent queries).
MAX_QUERIES = 100
# The exit status of a SCORE process whose state store (or package files) failed: this machine's
# failure, not the SCORE's (its supervisor starts another; a block's try does not count it).
STORE_FAILED_EXIT = 75
# The exit status of a SCORE process stopped as asked (SIGTERM, SIGINT). Not 0: a SCORE calling
# os._exit(0) in a transaction ends its process with 0, and that end is the SCORE's doing (a
# block's try counts it; were it taken for a stop, the block would be tried for good).
STOPPED_EXIT = 76
# The exit status of a SCORE process whose block execution failed in the engine itself (no
# transaction's result, no store failure): a crash its peer counts against the block's tries, so
# that a failure every peer meets alike ends in the SCORE given up, not in the block tried for
# good uncounted (review).
ENGINE_FAILED_EXIT = 70

# Beside a block's results, what an InvokeReply takes: its roots and height, each result's field
# tags and lengths (fewer bytes than the keys and quotes of the result's JSON, which is counted)
_LINK_HEADROOM_BYTES = 1024 * 1024
_MAX_GRPC_MESSAGE_BYTES = 2**31 - 1


def score_link_bytes(max_message_bytes: int) -> int:
    """What one message between a peer and its SCORE process may take, for GRPC_MAX_MESSAGE_BYTES
    `max_message_bytes`: the InvokeReply of any block the peer can hold. The block came within
    that limit; its results take at most MAX_BLOCK_RESULTS_BYTES, and past that each fewer bytes
    than its transaction does in the block (see execution.MAX_BLOCK_RESULTS_BYTES). A peer's
    results must not depend on its configuration, so the link is sized to them, not they to it."""
    return min(
        max_message_bytes + MAX_BLOCK_RESULTS_BYTES + _LINK_HEADROOM_BYTES, _MAX_GRPC_MESSAGE_BYTES
    )
