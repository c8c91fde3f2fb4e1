#!/usr/bin/env python3
"""Load generator: sends transactions (or queries) to a peer and measures what the chain commits.

    .venv/bin/python tools/loadtool.py -c 4 -p http://127.0.0.1:9000 -m 60s -t 0
    .venv/bin/python tools/loadtool.py -p 127.0.0.1:7100 -m 1m --rate 200 --json
    .venv/bin/python tools/loadtool.py -c 16 -p http://127.0.0.1:9000 -m 60s -t 2

`-t 0` creates v1 transactions (the peer signs), `-t 1` queries, `-t 2` sends ICON v3 transfers that
the clients sign: first the funding account funds one fresh account per client with FUND_ICX, then
each client sends 1-loop transfers from its own account (stepLimit 100,000, nid `--nid`, by default
the channel's, as its peer says) through
icx_sendTransaction (REST) or CreateIconTx (gRPC). The funding account's private key comes from
`--key-file FILE` (mode 0600: hex, or PEM as a peer's key file, an encrypted one opened with
$LOOPCHAIN_KEY_PASSWORD), else $LOOPCHAIN_LOADTOOL_KEY (hex), else the development genesis account
of ./localnet.sh; `--key HEX` still works, with a warning: every user of the machine sees command
lines.

`-p http://host:port` speaks the peer REST API v1; `-p host:port` speaks the peer's gRPC service.
Committed transactions are counted from the chain itself: after every poll, the tool walks the new
blocks (REST: /api/v1/blocks then /api/v1/blocks?hash= back to the last seen height; gRPC: GetBlock
by height) and matches their transaction hashes against the ones it submitted.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc

from loopchain.blockchain import coin
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import PeerServiceStub
from loopchain.types.block import Block
from loopchain.types.certificates import CertificateError, check_password_text
from loopchain.types.crypto import SignatureError, Signer, load_pem_key
from loopchain.types.icon_tx import make_params, sign_params
from loopchain.types.passwords import KEY_PASSWORD_ENV, PasswordError, read_private_file
from tools.rest_client import (
    MAX_REPLY_BYTES,
    ToolError,
    add_tls_arguments,
    parse_reply,
    tls_context,
)

DEFAULT_TARGET = "http://127.0.0.1:9000"
DEFAULT_QUERY = {"jsonrpc": "2.0", "method": "ping", "params": {}}  # -t 1 without --query-body
POLL_INTERVAL = 0.2
ERROR_BACKOFF = 0.05
RETRY_AFTER_CAP = 5.0  # the longest a client waits when an answer says Retry-After
READ_CHUNK = 64 * 1024
UNCOMMITTED_SAMPLE = 10  # acknowledged hashes not seen committed, in the summary
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_WALK = 1000  # new blocks read in one poll (a poll every POLL_INTERVAL sees a few)
# blocks of one poll asked for at once: each costs a round trip, and one at a time a watcher
# 200 ms from its peer read ~2.5 blocks/s of a chain making more (its commit latency was its lag)
MAX_FETCHES = 16
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_PORT = re.compile(r"([^:/\s]+|\[[0-9a-fA-F:]+\]):(\d{1,5})")
_TX_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
# The development genesis account of ./localnet.sh (the ICON SDK tests' key: public, never real)
DEV_KEY = "592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c"
FUND_ICX = 100  # each v3 client's account: enough for 80,000 transfers at 100,000 steps
FUND_DEADLINE = 120.0  # seconds for every client's account to be funded
V3_STEP_LIMIT = coin.STEP_DEFAULT
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
KEY_ENV = "LOOPCHAIN_LOADTOOL_KEY"  # -t 2: the funding account's private key (hex)
MAX_KEY_FILE_BYTES = 64 * 1024

# ------------------------------------------------------------------ pure functions


def parse_duration(text: str) -> float:
    """Seconds from "60", "60s", "1m", "1.5m", "500ms" or "2h"; ValueError when malformed or zero."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"duration {text!r} is not a number with an optional unit ms, s, m or h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return seconds


def retry_after_seconds(header: str | None) -> float | None:
    """The delay of a Retry-After header given in seconds (None if absent or an HTTP date)."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile `pct` (0-100) of `values`, or None when there are none."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0-100")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Target:
    """Where the load goes: "rest" with a base URL, or "grpc" with host:port."""

    kind: str
    address: str


def parse_target(text: str) -> Target:
    """ "http(s)://host:port" → REST; "host:port" → gRPC PeerService; ValueError otherwise."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        if not _HOST_PORT.fullmatch(text.split("://", 1)[1].rstrip("/")):
            raise ValueError(f"target {text!r} must look like http://host:port")
        return Target("rest", text.rstrip("/"))
    match = _HOST_PORT.fullmatch(text)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"target {text!r} is neither http://host:port (REST) nor host:port (gRPC)")
    return Target("grpc", text)


def _argparse_type(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{text} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{text} is not a non-negative number")
    return value


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("the query body must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of the load tool."""
    parser = argparse.ArgumentParser(
        prog="loadtool.py",
        description="Send transactions or queries to a peer and measure commits.",
    )
    add = parser.add_argument
    add(
        "-c",
        "--clients",
        type=_argparse_type(_positive_int),
        default=1,
        help="concurrent clients (default 1)",
    )
    add(
        "-p",
        "--target",
        "--peer",  # loopchain's loadtool called it so
        type=_argparse_type(parse_target),
        default=parse_target(DEFAULT_TARGET),
        help=f"http://host:port (REST, default {DEFAULT_TARGET}) or host:port (gRPC)",
    )
    add(
        "-m",
        "--duration",
        type=_argparse_type(parse_duration),
        default=10.0,
        help="send for this long: 60, 60s, 1m (default 10s)",
    )
    add(
        "--mins",
        dest="duration",
        type=_argparse_type(lambda text: parse_duration(f"{text}m")),
        help="send for this many minutes (loopchain's loadtool's --mins; -m takes seconds)",
    )
    add(
        "-d",
        "--debug",
        action="store_true",
        help="loopchain's loadtool's debug switch: taken, and changes nothing (errors are always"
        " counted and named)",
    )
    add(
        "-t",
        "--type",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="0 create tx (v1), 1 query, 2 v3 transfers signed by one account per client",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--key-file",
        type=Path,
        help="-t 2: the funding account's private key: a file (mode 0600) holding it in hex or"
        f" PEM (encrypted: ${KEY_PASSWORD_ENV}); else ${KEY_ENV} (hex), else the development"
        " genesis account of ./localnet.sh",
    )
    key.add_argument(
        "--key",
        metavar="HEX",
        help=f"-t 2: deprecated (visible to every user in ps): --key-file or ${KEY_ENV}",
    )
    add(
        "--nid",
        type=_argparse_type(_positive_int),
        help="-t 2: network id (default: the channel's, as its peer says)",
    )
    add("--channel", default="", help="channel (default: the peer's default channel)")
    add("--rate", type=_argparse_type(_positive_float), help="at most this many requests/s")
    add(
        "--drain",
        type=_argparse_type(_non_negative_float),
        default=15.0,
        help="seconds to wait for commits after sending (default 15)",
    )
    add(
        "--timeout",
        type=_argparse_type(_positive_float),
        default=10.0,
        help="per-request timeout in seconds (default 10)",
    )
    add("--query-body", type=_argparse_type(_json_object), help="JSON object for -t 1")
    add(
        "--tx-body",
        type=_argparse_type(_json_object),
        help='JSON object sent for -t 0 (a "loadtool" field is added to keep each one unique)',
    )
    add_tls_arguments(parser, key_flags=("--tls-key",))  # --key is the funding key's
    add("--json", action="store_true", help="print one JSON summary object")
    add(
        "--progress",
        action="store_true",
        help="a progress line on stderr once a second (the default when stderr is a terminal)",
    )
    add(
        "--report",
        metavar="DIR",
        help="write report.json, report.md and latency.png (latency over time) into DIR",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    return build_parser().parse_args(argv)


def minutes_hint(argv: Sequence[str]) -> str:
    """A note for -m given a bare number: loopchain's loadtool read `-m 5` as five minutes, and a
    script written for it would run this one for five seconds ("" when -m has a unit)."""
    values = [b for a, b in itertools.pairwise(argv) if a in ("-m", "--duration")]
    values += [a.partition("=")[2] for a in argv if a.startswith("--duration=")]
    values += [a[2:] for a in argv if a.startswith("-m") and len(a) > 2]
    bare = [v for v in values if re.fullmatch(r"\d+(\.\d+)?", v)]
    if not bare:
        return ""
    return (
        f"loadtool: -m {bare[-1]} sends for {bare[-1]} seconds (loopchain's loadtool read -m as "
        f"minutes: give --mins {bare[-1]} or -m {bare[-1]}m for that)"
    )


# ------------------------------------------------------------------ transports


class LoadError(Exception):
    """A failed request, classified by `kind` for the error summary; `retry_after` is the delay
    its answer asked for (a Retry-After header in seconds), if any."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.retry_after = retry_after


def _code_word(code: object) -> str:
    """An answer's response code as an error's category: an integer of a few digits, else "?"
    (the server's words: each distinct one was a category of its own, and a peer answering a
    fresh 50 kB code each time grew the tool's memory and summary without end, review)."""
    if isinstance(code, bool) or not isinstance(code, int | str):
        return "?"
    text = str(code)
    return text if len(text) <= 12 and text.lstrip("-").isdigit() else "?"


def tx_hash_of(value: Any) -> str:
    """The 64 hex digits of a transaction hash as answered (with or without 0x);
    LoadError("bad reply") for anything else."""
    match = _TX_HASH.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise LoadError("bad reply", f"not a transaction hash: {str(value)[:80]!r}")
    return match.group(1).lower()


@dataclass(frozen=True)
class BlockInfo:
    """What the load tool needs of a block."""

    height: int
    block_hash: str
    prev_hash: str
    tx_hashes: tuple[str, ...] | None  # None when the reply did not list them


async def fetch_new_blocks(
    tip: BlockInfo,
    seen_height: int,
    block_at: Callable[[int], Awaitable[BlockInfo | None]],
    stop: asyncio.Event | None = None,
) -> list[BlockInfo]:
    """The blocks above `seen_height` up to the tip (already fetched), oldest first, at most
    MAX_WALK of them (the newest): asked for by height with `block_at`, the newest first, at
    most MAX_FETCHES at once. Once `stop` is set no other height is asked for, and those fetched
    (which join up to the tip) are returned. LoadError("bad chain") for a block answered at
    another height than asked, for no block at a height below the tip, and for a block whose
    hash is not the prev_hash of the block above it."""
    if tip.height <= seen_height:
        return []
    wanted = range(tip.height - 1, max(seen_height, tip.height - MAX_WALK), -1)
    heights = iter(wanted)
    fetched: dict[int, BlockInfo] = {}

    async def fetch() -> None:
        # a height is taken only when it will be asked for: those taken, all fetched, are the
        # heights just below the tip, with no gap, however the answers come back
        while not (stop is not None and stop.is_set()):
            height = next(heights, None)
            if height is None:
                return
            block = await block_at(height)
            if block is None:
                raise LoadError(
                    "bad chain", f"no block at height {height}, below the tip at {tip.height}"
                )
            if block.height != height:
                raise LoadError("bad chain", f"asked height {height}, got {block.height}")
            fetched[height] = block

    tasks = [asyncio.create_task(fetch()) for _ in range(min(MAX_FETCHES, len(wanted)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    found = [*(fetched[height] for height in sorted(fetched)), tip]
    for below, above in itertools.pairwise(found):
        if below.block_hash != above.prev_hash:
            raise LoadError(
                "bad chain",
                f"the block at height {above.height} names parent {above.prev_hash or '(none)'},"
                f" the block at height {below.height} is {below.block_hash}",
            )
    return found


class Transport(Protocol):
    """Requests to one peer; every method raises LoadError on failure."""

    async def create_tx(self, payload: dict[str, Any]) -> str: ...
    async def create_icon_tx(self, params: dict[str, Any]) -> str: ...
    async def balance(self, address: str) -> int: ...
    async def query(self, payload: dict[str, Any]) -> None: ...
    async def network_id(self) -> int: ...
    async def last_block(self) -> BlockInfo | None: ...
    async def new_blocks(
        self, tip: BlockInfo, seen_height: int, stop: asyncio.Event | None = None
    ) -> list[BlockInfo]: ...
    async def close(self) -> None: ...


class RestTransport:
    """The peer REST API v1 over one aiohttp session with a bounded connection pool."""

    def __init__(
        self,
        base: str,
        channel: str,
        timeout: float,
        connections: int,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self._base = base
        self._channel = channel
        self._server_name = server_name
        # https: `tls` (default: the system's CAs), the certificate naming `server_name` (or the host)
        # `connections` for the caller's requests, and MAX_FETCHES more for new_blocks
        connector = aiohttp.TCPConnector(
            limit=connections + MAX_FETCHES, ssl=tls if tls is not None else True
        )
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=client_timeout)
        self._tip: BlockInfo | None = None

    async def _answer(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        """(HTTP status, Retry-After seconds, body) of one request, the body at most
        MAX_REPLY_BYTES; LoadError for no answer or a larger one."""
        try:
            if self._server_name:
                kwargs["server_hostname"] = self._server_name
            async with self._session.request(method, self._base + path, **kwargs) as resp:
                retry = retry_after_seconds(resp.headers.get("Retry-After"))
                if (resp.content_length or 0) > MAX_REPLY_BYTES:
                    raise LoadError("reply too large", retry_after=retry)
                chunks: list[bytes] = []
                size = 0
                while chunk := await resp.content.read(READ_CHUNK):
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:
                        raise LoadError("reply too large", retry_after=retry)
                    chunks.append(chunk)
                return resp.status, retry, b"".join(chunks)
        except TimeoutError:
            raise LoadError("timeout") from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise LoadError("tls", str(getattr(exc, "verify_message", "") or exc)[:200]) from None
        except aiohttp.ClientConnectionError:
            raise LoadError("connection") from None
        except aiohttp.ClientError:
            raise LoadError("bad reply") from None

    async def _json(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any], float | None]:
        """(HTTP status, the JSON object answered, Retry-After seconds); LoadError for no
        answer, or for an answer that is not an object (by its status when it is an error)."""
        status, retry, raw = await self._answer(method, path, **kwargs)
        try:
            body = parse_reply(raw)  # (ValueError when it holds too many objects to parse)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            if status != 200:  # an error page of a proxy in between, say: its status says it
                raise LoadError(f"http {status}", retry_after=retry)
            raise LoadError("bad reply" if body is None else f"http {status} (not an object)")
        return status, body, retry

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body, retry = await self._json(method, path, **kwargs)
        if status != 200 or body.get("response_code") not in (0, "0"):
            detail = str(body.get("message", ""))
            kind = f"http {status} ({_code_word(body.get('response_code'))})"
            raise LoadError(kind, detail, retry_after=retry)
        return body

    def _params(self, **extra: str) -> dict[str, str]:
        return {**({"channel": self._channel} if self._channel else {}), **extra}

    async def create_tx(self, payload: dict[str, Any]) -> str:
        body = {**payload, "channel": self._channel} if self._channel else payload
        reply = await self._request("POST", "/api/v1/transactions", json=body)
        return tx_hash_of(reply.get("tx_hash"))

    async def query(self, payload: dict[str, Any]) -> None:
        body = {**payload, "channel": self._channel} if self._channel else payload
        await self._request("POST", "/api/v1/query", json=body)

    async def _v3(self, method: str, params: dict[str, Any]) -> Any:
        path = "/api/v3" + (f"/{self._channel}" if self._channel else "")
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        status, body, retry = await self._json("POST", path, json=request)
        if "error" in body:
            error = body["error"] if isinstance(body["error"], dict) else {}
            kind = f"http {status} ({_code_word(error.get('code'))})"
            raise LoadError(kind, str(error.get("message")), retry_after=retry)
        if status != 200:
            raise LoadError(f"http {status}", retry_after=retry)
        return body.get("result")

    async def create_icon_tx(self, params: dict[str, Any]) -> str:
        return tx_hash_of(await self._v3("icx_sendTransaction", params))

    async def network_id(self) -> int:
        result = await self._v3("icx_getNetworkInfo", {})
        return _network_id(result.get("nid") if isinstance(result, dict) else None)

    async def balance(self, address: str) -> int:
        result = await self._v3("icx_getBalance", {"address": address})
        try:
            return int(result, 16)
        except (TypeError, ValueError):
            raise LoadError("bad reply", f"not a balance: {str(result)[:80]!r}") from None

    async def last_block(self) -> BlockInfo | None:
        """The last block, with its transactions; while the peer's status names the same tip,
        the one fetched before (a watcher polls often, and a whole block costs the peer and its
        proxy far more than its status does: that cost would be counted as the network's)."""
        status = await self._request("GET", "/api/v1/status/peer", params=self._params())
        named = status.get("block_hash")
        if not named or not isinstance(named, str):
            return None  # an empty chain
        if self._tip is None or named != self._tip.block_hash:
            # by hash, so that the reply lists the transactions (the last block's does not)
            reply = await self._request("GET", "/api/v1/blocks", params=self._params(hash=named))
            self._tip = _rest_block(reply)
        return self._tip

    async def _block_at(self, height: int) -> BlockInfo | None:
        reply = await self._request(
            "GET", "/api/v1/blocks", params=self._params(height=str(height))
        )
        return _rest_block(reply)

    async def new_blocks(
        self, tip: BlockInfo, seen_height: int, stop: asyncio.Event | None = None
    ) -> list[BlockInfo]:
        """As fetch_new_blocks (a peer's own "no block" is its 404, a LoadError of its own)."""
        return await fetch_new_blocks(tip, seen_height, self._block_at, stop)

    async def close(self) -> None:
        await self._session.close()


def _rest_block(reply: dict[str, Any]) -> BlockInfo | None:
    """The block of a /api/v1/blocks reply, None for none; LoadError("bad reply") for a reply of
    another shape (a height that is not an integer, a hash that is not text, ...)."""
    data = reply.get("block_data_json") or {}
    block_hash, txs = reply.get("block_hash"), reply.get("tx_data_json")
    if not isinstance(data, dict):
        raise LoadError("bad reply", "block_data_json is not an object")
    height, prev_hash = data.get("height", -1), data.get("prev_block_hash", "")
    if not isinstance(height, int) or isinstance(height, bool):
        raise LoadError("bad reply", f"a block height that is not an integer: {str(height)[:80]}")
    if not block_hash or height < 0:
        return None
    if not isinstance(block_hash, str) or not isinstance(prev_hash, str):
        raise LoadError("bad reply", "a block hash that is not text")
    if txs is not None and not isinstance(txs, list):
        raise LoadError("bad reply", "tx_data_json is not a list")
    return BlockInfo(
        height=height,
        block_hash=block_hash,
        prev_hash=prev_hash,
        tx_hashes=None
        if txs is None
        else tuple(tx_hash_of(tx.get("tx_hash") if isinstance(tx, dict) else None) for tx in txs),
    )


class GrpcTransport:
    """The peer's gRPC PeerService."""

    def __init__(self, target: str, channel: str, timeout: float) -> None:
        options = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
        self._grpc_channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = PeerServiceStub(self._grpc_channel)
        self._channel = channel
        self._timeout = timeout

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise LoadError(f"grpc {exc.code().name}", exc.details() or "") from None

    async def create_tx(self, payload: dict[str, Any]) -> str:
        request = pb.CreateTxRequest(channel=self._channel, data_json=json.dumps(payload))
        reply = await self._call(self._stub.CreateTx, request)
        return tx_hash_of(reply.tx_hash)

    async def query(self, payload: dict[str, Any]) -> None:
        request = pb.QueryRequest(channel=self._channel, params_json=json.dumps(payload))
        await self._call(self._stub.Query, request)

    async def create_icon_tx(self, params: dict[str, Any]) -> str:
        request = pb.IconTxRequest(channel=self._channel, params_json=json.dumps(params))
        reply = await self._call(self._stub.CreateIconTx, request)
        return tx_hash_of(reply.tx_hash)

    async def network_id(self) -> int:
        reply = await self._call(self._stub.GetStatus, pb.ChannelRequest(channel=self._channel))
        return _network_id(reply.nid or DEFAULT_NID)  # a peer of an earlier version says none

    async def balance(self, address: str) -> int:
        request = pb.BalanceRequest(channel=self._channel, address=address)
        reply = await self._call(self._stub.GetBalance, request)
        try:
            return int(reply.balance)
        except ValueError:
            raise LoadError("bad reply", f"balance {reply.balance[:80]!r} is no number") from None

    async def _block(self, height: int) -> BlockInfo | None:
        request = pb.GetBlockRequest(channel=self._channel, height=height)
        reply = await self._call(self._stub.GetBlock, request)
        if not reply.block:
            return None
        try:
            block = Block.decode(reply.block)
        except ValueError:
            raise LoadError("bad block") from None
        return BlockInfo(
            height=block.height,
            block_hash=block.hash.hex(),
            prev_hash=block.header.prev_hash.hex(),
            tx_hashes=tuple(tx.hash_hex for tx in block.transactions),
        )

    async def last_block(self) -> BlockInfo | None:
        return await self._block(-1)

    async def new_blocks(
        self, tip: BlockInfo, seen_height: int, stop: asyncio.Event | None = None
    ) -> list[BlockInfo]:
        """As fetch_new_blocks (a peer's own "no block" is grpc NOT_FOUND, a LoadError of its
        own)."""
        return await fetch_new_blocks(tip, seen_height, self._block, stop)

    async def close(self) -> None:
        await self._grpc_channel.close()


def transport_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of --cacert, --cert and --tls-key (None without them); ToolError for a
    file that cannot be used, or for TLS options with a target that is not https://."""
    tls = tls_context(
        getattr(args, "cacert", None), getattr(args, "cert", None), getattr(args, "tls_key", None)
    )
    if tls is not None and not args.target.address.startswith("https://"):
        raise ToolError(
            f"--cacert, --cert and --tls-key are for an https:// target, not {args.target.address}"
        )
    return tls


def open_transport(args: argparse.Namespace) -> Transport:
    """The transport for the parsed target."""
    target: Target = args.target
    if target.kind == "rest":
        server_name = getattr(args, "server_name", None)
        tls = transport_tls(args)
        connections = args.clients + 2
        return RestTransport(
            target.address, args.channel, args.timeout, connections, tls, server_name
        )
    return GrpcTransport(target.address, args.channel, args.timeout)


# ------------------------------------------------------------------ the run


@dataclass
class Stats:
    """Everything measured during a run (monotonic seconds)."""

    submit_times: dict[str, float] = field(default_factory=dict)
    commit_latencies: list[float] = field(default_factory=list)
    reply_latencies: list[float] = field(default_factory=list)
    # (sent, latency) of each commit (create modes) or reply (queries): the report's plot
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # each request's answer by status
    sent: int = 0  # requests started
    submitted: int = 0
    committed: int = 0
    blocks_seen: int = 0
    height: int = -1
    first_submit: float | None = None
    last_commit: float | None = None

    def record_submit(self, tx_hash: str, sent: float, replied: float) -> None:
        self.submitted += 1
        self.submit_times[tx_hash] = sent
        self.reply_latencies.append(replied - sent)
        if self.first_submit is None:
            self.first_submit = sent

    def record_block(self, block: BlockInfo, observed: float) -> None:
        self.blocks_seen += 1
        self.height = max(self.height, block.height)
        for tx_hash in block.tx_hashes or ():
            sent = self.submit_times.pop(tx_hash, None)
            if sent is not None:
                self.committed += 1
                self.commit_latencies.append(observed - sent)
                self.samples.append((sent, observed - sent))
                self.last_commit = observed


class RateLimiter:
    """Spaces requests of all clients to at most `rate` per second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self, end: float, stop: asyncio.Event) -> bool:
        """Wait for the next request's slot; False (nothing to send) when that slot is at or
        past `end`, or `stop` is set first: a rate below the clients over the duration had them
        sleep past -m, deaf to Ctrl-C (review)."""
        now = time.monotonic()
        slot = max(now, self._next)
        if slot >= end:
            return False
        self._next = slot + self._interval
        if slot > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), slot - now)
        return not stop.is_set()


@dataclass
class Run:
    """One load run: its settings, transport, measurements and stop signals."""

    args: argparse.Namespace
    transport: Transport
    stats: Stats = field(default_factory=Stats)
    limiter: RateLimiter | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stop_sending: asyncio.Event = field(default_factory=asyncio.Event)
    stop_all: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = 0.0
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    accounts: list[Signer] = field(default_factory=list)  # -t 2: one per client
    sink: str = ""  # -t 2: where the transfers go (the funding account)
    funder: Signer | None = None  # -t 2: the funding account (else funding_signer(args))

    def icon_payload(self, client: int, seq: int) -> dict[str, Any]:
        """A signed 1-loop transfer from the client's account back to the funding account."""
        return transfer_params(self.accounts[client], self.sink, 1, self.args.nid, nonce=seq)

    def payload(self, client: int, seq: int) -> dict[str, Any]:
        if self.args.type == 1:
            return dict(self.args.query_body or DEFAULT_QUERY)
        params = {"run": self.run_id, "client": client, "seq": seq}
        if self.args.tx_body is not None:
            return {**self.args.tx_body, "loadtool": params}
        return {"jsonrpc": "2.0", "method": "loadtool", "params": params}


async def _client(run: Run, client: int, end: float) -> None:
    """Send requests one at a time until `end` (so in-flight requests ≤ client count)."""
    seq = 0
    while time.monotonic() < end and not run.stop_sending.is_set():
        if run.limiter is not None and not await run.limiter.wait(end, run.stop_sending):
            return
        payload = run.icon_payload(client, seq) if run.args.type == 2 else run.payload(client, seq)
        seq += 1
        run.stats.sent += 1
        sent = time.monotonic()
        try:
            if run.args.type in (0, 2):
                create = (
                    run.transport.create_icon_tx if run.args.type == 2 else run.transport.create_tx
                )
                tx_hash = await create(payload)
                if tx_hash in run.stats.submit_times:  # acknowledged before and not committed
                    raise LoadError("repeated hash")
                run.stats.record_submit(tx_hash, sent, time.monotonic())
            else:
                await run.transport.query(payload)
                run.stats.submitted += 1
                run.stats.reply_latencies.append(time.monotonic() - sent)
                run.stats.samples.append((sent, time.monotonic() - sent))
            run.stats.answers[_ok_answer(run.args)] += 1
        except LoadError as exc:
            run.stats.errors[exc.kind] += 1
            run.stats.answers[exc.kind] += 1
            await asyncio.sleep(_backoff(exc, end))


def _backoff(exc: LoadError, end: float) -> float:
    """How long a client waits after a failed request: what the answer's Retry-After asked
    (at most RETRY_AFTER_CAP, and not past the end of sending), else ERROR_BACKOFF."""
    if exc.retry_after is None:
        return ERROR_BACKOFF
    return max(0.0, min(exc.retry_after, RETRY_AFTER_CAP, end - time.monotonic()))


def _ok_answer(args: argparse.Namespace) -> str:
    """How a successful answer is counted among the answers by status."""
    return "http 200" if args.target.kind == "rest" else "grpc OK"


async def _poll_chain(run: Run) -> None:
    """Observe new blocks once, recording the transactions they commit."""
    tip = await run.transport.last_block()
    if tip is None or tip.height <= run.stats.height:
        return
    blocks = await run.transport.new_blocks(tip, run.stats.height, run.stop_all)
    if blocks and blocks[0].height > run.stats.height + 1 and not run.stop_all.is_set():
        run.stats.errors["chain poll: blocks not read"] += 1  # more than MAX_WALK at once
    for block in blocks:
        run.stats.record_block(block, time.monotonic())


async def _watch_commits(run: Run) -> None:
    """Poll the chain until told to stop, ending early once every submitted tx is committed."""
    while not run.stop_all.is_set():
        try:
            await _poll_chain(run)
        except LoadError as exc:
            run.stats.errors[f"chain poll: {exc.kind}"] += 1
        if run.stop_sending.is_set() and not run.stats.submit_times:
            return
        try:
            await asyncio.wait_for(run.stop_all.wait(), POLL_INTERVAL)
        except TimeoutError:
            pass


def progress_line(run: Run, now: float) -> str:
    """One progress line: elapsed, sent, acknowledged (and its rate), errors, committed, height."""
    stats = run.stats
    elapsed = max(now - run.started, 1e-6)
    return (
        f"{elapsed:6.1f}s  sent {stats.sent}  acknowledged {stats.submitted}"
        f" ({stats.submitted / elapsed:.1f}/s)  errors {sum(stats.errors.values())}"
        f"  committed {stats.committed}  height {stats.height}"
    )


async def _progress(run: Run) -> None:
    """A progress line on stderr once a second: rewritten in place on a terminal, one line each
    second otherwise (--progress into a file or a pipe)."""
    terminal = sys.stderr.isatty()
    while not run.stop_all.is_set():
        line = progress_line(run, time.monotonic())
        sys.stderr.write(f"\r{line}\x1b[K" if terminal else line + "\n")
        sys.stderr.flush()
        try:
            await asyncio.wait_for(run.stop_all.wait(), 1.0)
        except TimeoutError:
            pass
    if terminal:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


class KeyProblem(ValueError):
    """The funding account's key cannot be used; the message shows no part of it."""


def _hex_key(text: str, source: str) -> Signer:
    """The private key written in hex (64 digits, 0x allowed) in `text`; KeyProblem naming
    `source` (never quoting `text`) otherwise."""
    try:
        return Signer.from_hex(text)
    except SignatureError as exc:
        raise KeyProblem(f"{source} is {exc}") from None


def read_key_file(path: Path, environ: Mapping[str, str]) -> Signer:
    """The private key in `path` (hex, or PEM opened with $LOOPCHAIN_KEY_PASSWORD when it is
    encrypted); KeyProblem when it cannot be read, is open to group or others (as a peer's key
    file or a password file is refused), or holds no secp256k1 private key."""
    try:
        raw = read_private_file(path, "key file", MAX_KEY_FILE_BYTES)
    except PasswordError as exc:
        raise KeyProblem(str(exc)) from None
    if not raw.lstrip().startswith(b"-----BEGIN"):
        return _hex_key(raw.decode("ascii", "replace"), f"key file {path}")
    password = environ.get(KEY_PASSWORD_ENV) or None
    try:
        check_password_text(password, f"${KEY_PASSWORD_ENV}")
        return load_pem_key(raw, password)
    except (CertificateError, SignatureError) as exc:
        raise KeyProblem(f"key file {path}: {exc}") from None


def funding_signer(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Signer:
    """-t 2: the funding account: --key-file, --key (with a warning on stderr), $LOOPCHAIN_LOADTOOL_KEY
    or the development genesis account; KeyProblem when the one given cannot be used."""
    environ = os.environ if environ is None else environ
    if getattr(args, "key_file", None) is not None:
        return read_key_file(args.key_file, environ)
    if getattr(args, "key", None):
        print(
            "loadtool: warning: a private key on the command line (--key) is visible to every"
            " user of this machine (ps, /proc/<pid>/cmdline); give it with --key-file FILE"
            f" (mode 0600) or in ${KEY_ENV} instead",
            file=sys.stderr,
        )
        return _hex_key(args.key, "--key")
    if environ.get(KEY_ENV):
        return _hex_key(environ[KEY_ENV], f"${KEY_ENV}")
    return Signer(bytes.fromhex(DEV_KEY))


async def fund_accounts(run: Run) -> None:
    """-t 2: a fresh account per client, funded with FUND_ICX by the funding account."""
    funder = run.funder
    if funder is None:
        try:
            funder = funding_signer(run.args)
        except KeyProblem as exc:
            raise LoadError("funding", str(exc)) from None
    run.sink = funder.address
    run.accounts = [Signer.generate() for _ in range(run.args.clients)]
    if run.args.nid is None:
        run.args.nid = await run.transport.network_id()
    await fund(run.transport, funder, run.accounts, run.args.nid)


DEFAULT_NID = "0x3"  # ICON_NID's default


def _network_id(stated: object) -> int:
    """The network id a peer stated ("0x3"); LoadError for anything else."""
    if isinstance(stated, str) and stated.startswith("0x") and 2 < len(stated) <= 10:
        with contextlib.suppress(ValueError):
            return int(stated, 16)
    raise LoadError("bad reply", f"not a network id: {str(stated)[:80]!r}")


def transfer_params(
    sender: Signer, to: str, value: int, nid: int, nonce: int | None = None
) -> dict[str, Any]:
    """A signed v3 transfer of `value` loop at V3_STEP_LIMIT, stamped now."""
    params = make_params(
        sender=sender.address,
        to=to,
        step_limit=V3_STEP_LIMIT,
        timestamp_us=time.time_ns() // 1000,
        nid=nid,
        value=value,
        nonce=nonce,
    )
    return sign_params(params, sender)


async def fund(transport: Transport, funder: Signer, accounts: Sequence[Signer], nid: int) -> None:
    """Send FUND_ICX from `funder` to each account and wait until every one holds it (LoadError
    when they are not all funded within FUND_DEADLINE)."""
    for index, account in enumerate(accounts):
        await transport.create_icon_tx(
            transfer_params(funder, account.address, FUND_ICX * coin.ICX, nid, nonce=index)
        )
    deadline = time.monotonic() + FUND_DEADLINE
    waiting = list(accounts)
    while waiting:
        waiting = [a for a in waiting if await transport.balance(a.address) == 0]
        if waiting and time.monotonic() > deadline:
            raise LoadError(
                "funding", f"{len(waiting)} accounts unfunded after {FUND_DEADLINE:g} s"
            )
        if waiting:
            await asyncio.sleep(POLL_INTERVAL)


async def execute(run: Run) -> None:
    """Send for the duration, then wait up to --drain seconds for the commits."""
    args = run.args
    if args.type == 2:
        await fund_accounts(run)
    if args.type in (0, 2):
        run.stats.height = _height(await run.transport.last_block())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, _interrupt, run)
    try:
        await _send_and_drain(run)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _send_and_drain(run: Run) -> None:
    args = run.args
    tasks: list[asyncio.Task[None]] = []
    if args.type in (0, 2):
        tasks.append(asyncio.create_task(_watch_commits(run)))
    if getattr(args, "progress", False) or sys.stderr.isatty():
        tasks.append(asyncio.create_task(_progress(run)))
    run.started = time.monotonic()
    end = run.started + args.duration
    await asyncio.gather(*(_client(run, i, end) for i in range(args.clients)))
    run.send_seconds = time.monotonic() - run.started
    run.stop_sending.set()
    if args.type in (0, 2) and tasks:
        drain_end = time.monotonic()
        await _drain(run, tasks[0], args.drain)
        run.drain_seconds = time.monotonic() - drain_end
    run.stop_all.set()
    await asyncio.gather(*tasks)


async def _drain(run: Run, watcher: asyncio.Task[None], seconds: float) -> None:
    stopped = asyncio.create_task(run.stop_all.wait())
    await asyncio.wait([watcher, stopped], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


def _height(block: BlockInfo | None) -> int:
    return block.height if block is not None else -1


def _interrupt(run: Run) -> None:
    if run.stop_sending.is_set():
        run.stop_all.set()  # a second Ctrl-C ends the drain too
    run.stop_sending.set()


# ------------------------------------------------------------------ the report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _rate(count: int, seconds: float | None) -> float | None:
    return round(count / seconds, 2) if seconds and seconds > 0 else None


def summarize(run: Run) -> dict[str, Any]:
    """The run's results as one JSON-ready object."""
    stats, args = run.stats, run.args
    creating = args.type in (0, 2)
    latencies = stats.commit_latencies if creating else stats.reply_latencies
    span = None
    if stats.first_submit is not None and stats.last_commit is not None:
        span = stats.last_commit - stats.first_submit
    return {
        "target": args.target.address,
        "transport": args.target.kind,
        "mode": {0: "create_tx", 1: "query", 2: "v3_transfer"}[args.type],
        "channel": args.channel,
        "clients": args.clients,
        "send_seconds": round(run.send_seconds, 3),
        "submitted": stats.submitted,
        "submit_tps": _rate(stats.submitted, run.send_seconds),
        "committed": stats.committed if creating else None,
        "commit_tps": _rate(stats.committed, span) if creating else None,
        "commit_span_seconds": None if span is None else round(span, 3),
        "uncommitted": len(stats.submit_times) if creating else None,
        # the first few acknowledged but not seen committed, to look up (oldest first)
        "uncommitted_sample": list(stats.submit_times)[:UNCOMMITTED_SAMPLE] if creating else None,
        "drain_seconds": round(run.drain_seconds, 3),
        "blocks_observed": stats.blocks_seen,
        "latency_kind": "commit" if creating else "reply",
        "latency_ms": {f"p{p}": _ms(percentile(latencies, p)) for p in (50, 90, 99)},
        "errors": dict(stats.errors.most_common()),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""
    unit = "queries" if summary["mode"] == "query" else "tx"
    lines = [
        f"target      {summary['target']} ({summary['transport']}), "
        f"channel {summary['channel'] or '<default>'}, {summary['clients']} clients",
        f"submitted   {summary['submitted']} {unit} in {summary['send_seconds']:.1f} s"
        f" = {summary['submit_tps'] or 0:.1f}/s",
    ]
    if summary["mode"] != "query":
        lines.append(
            f"committed   {summary['committed']} tx = {summary['commit_tps'] or 0:.1f} tx/s"
            f" (first submit → last commit {summary['commit_span_seconds'] or 0:.2f} s),"
            f" {summary['uncommitted']} not committed after {summary['drain_seconds']:.1f} s drain,"
            f" {summary['blocks_observed']} blocks observed"
        )
    lat = summary["latency_ms"]
    lines.append(
        f"latency     {summary['latency_kind']} p50 {lat['p50']} ms  p90 {lat['p90']} ms"
        f"  p99 {lat['p99']} ms"
    )
    errors = ", ".join(f"{kind}: {n}" for kind, n in summary["errors"].items()) or "none"
    lines.append(f"errors      {errors}")
    if summary.get("uncommitted_sample"):
        lines.append(f"uncommitted {' '.join(summary['uncommitted_sample'])}")
    return "\n".join(lines)


async def perform(args: argparse.Namespace, funder: Signer | None = None) -> Run:
    """Run the load described by `args` (-t 2: funded by `funder`, else funding_signer(args));
    the finished run with its measurements."""
    transport = open_transport(args)
    run = Run(args, transport, limiter=RateLimiter(args.rate) if args.rate else None)
    run.funder = funder
    try:
        await execute(run)
    finally:
        await transport.close()
    return run


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load described by `args` and return the summary."""
    return summarize(await perform(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 after a run, 1 when the peer could not be reached at all (or the report
    could not be written), 130 for a Ctrl-C before sending began (funding, the first status)."""
    args = parse_args(argv)
    hint = minutes_hint(sys.argv[1:] if argv is None else argv)
    if hint:
        print(hint, file=sys.stderr)
    try:
        transport_tls(args)  # its files refused here, before any request
        funder = funding_signer(args) if args.type == 2 else None
    except (KeyProblem, ToolError) as exc:
        print(f"loadtool: {exc}", file=sys.stderr)
        return 1
    try:
        run = asyncio.run(perform(args, funder))
    except LoadError as exc:
        print(f"loadtool: cannot read the chain at {args.target.address}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # once sending starts, Ctrl-C stops it and the summary follows
        print("loadtool: interrupted before sending began", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = summarize(run)
    print(json.dumps(summary) if args.json else format_summary(summary))
    if args.report:
        from tools.load_report import write_report  # matplotlib only when a report is asked for

        try:
            paths = write_report(run, Path(args.report))
        except OSError as exc:
            print(f"loadtool: cannot write the report in {args.report}: {exc}", file=sys.stderr)
            return 1
        print(f"report      {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 1 if summary["submitted"] == 0 and summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
