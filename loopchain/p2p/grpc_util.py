"""gRPC channel and server construction with the project's limits and options."""

from __future__ import annotations

import grpc

from loopchain.configure import Config


def channel_options(config: Config) -> list[tuple[str, int]]:
    size = int(config.GRPC_MAX_MESSAGE_BYTES)
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.enable_retries", 0),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def open_channel(target: str, config: Config) -> grpc.aio.Channel:
    """An insecure aio channel to `target` (host:port)."""
    return grpc.aio.insecure_channel(target, options=channel_options(config))


def create_server(config: Config) -> grpc.aio.Server:
    """An aio server with the configured message size limits (and no port sharing)."""
    return grpc.aio.server(options=[*channel_options(config), ("grpc.so_reuseport", 0)])


def bind(server: grpc.aio.Server, host: str, port: int) -> None:
    """Bind `host:port`, failing at once with a clear message when the port is taken."""
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: port in use or not allowed ({exc})") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}: port in use or not allowed")
