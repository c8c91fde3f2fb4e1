"""loopchain: a permissioned blockchain node suite (RadioStation, peers, REST proxy, SCORE)."""

import os

# gRPC's core writes its INFO lines to stderr itself, past Python's logging and its limits: one
# line for every failed TLS handshake, which anyone who reaches a TLS port causes at will (a
# review measured 392 KB/s from one client). It reads GRPC_VERBOSITY once, when grpc is first
# imported: here, before any module of this package imports it. An operator's own setting stays.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
