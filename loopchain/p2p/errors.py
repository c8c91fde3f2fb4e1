"""Request errors a service backend raises; the gRPC adapter maps each kind to a status code."""

from __future__ import annotations

from enum import Enum

import grpc


class ErrorKind(Enum):
    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
    POOL_FULL = grpc.StatusCode.RESOURCE_EXHAUSTED
    NO_LEADER = grpc.StatusCode.FAILED_PRECONDITION
    UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
    DENIED = grpc.StatusCode.PERMISSION_DENIED
    TIMEOUT = grpc.StatusCode.DEADLINE_EXCEEDED
    SCORE_DOWN = grpc.StatusCode.ABORTED  # the peer is up, its SCORE process is not
    DAMAGED = grpc.StatusCode.DATA_LOSS  # what was asked for is damaged in the peer's store


class RequestError(Exception):
    """A request that cannot be served, with a message for the client."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# "transaction <hash> not found: <why>", the peer's answer about a transaction it dropped (its
# REST proxy tells v3 clients the why)
TX_NOT_FOUND_BECAUSE = " not found: "
