"""The SCORE process adapter (gRPC over a unix socket)."""

# Addresses one Balance call may ask about (the peer coalesces concurrent balance checks).
MAX_BALANCE_ADDRESSES = 500
