"""The SCORE process adapter (gRPC over a unix socket)."""

# Addresses one Balance call may ask about (the peer coalesces concurrent balance checks).
MAX_BALANCE_ADDRESSES = 500
# Queries one Query call may carry (the peer coalesces concurrent queries).
MAX_QUERIES = 100
