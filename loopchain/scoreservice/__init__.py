"""The SCORE process adapter (gRPC over a unix socket)."""
