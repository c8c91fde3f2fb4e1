#!/usr/bin/env python3
"""demotool: a client of one peer's REST API v1, as a menu or as subcommands.

    .venv/bin/python tools/demotool.py -p http://127.0.0.1:9000 tx -n 3 --data '{"data": "hi"}'
    .venv/bin/python tools/demotool.py find <tx_hash>
    .venv/bin/python tools/demotool.py status
    .venv/bin/python tools/demotool.py blocks --count 5          # back from the last block
    .venv/bin/python tools/demotool.py blocks --from 0 --to 9    # a range of heights
    .venv/bin/python tools/demotool.py monitor --interval 1 --count 10
    .venv/bin/python tools/demotool.py query '{"method": "total_supply"}'
    .venv/bin/python tools/demotool.py load -c 4 -m 10s --report out/
    .venv/bin/python tools/demotool.py                            # the numbered menu (a terminal)

`--json` prints machine-readable output. Exit status: 0 done, 1 the peer failed, refused or
answered what the tool cannot read (one line on stderr saying why), 2 a usage error (or no
subcommand without a terminal).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tools import loadtool
from tools.menu import MenuItem, ask, run_menu, run_tool
from tools.rest_client import (
    DEFAULT_TIMEOUT,
    RestClient,
    ToolError,
    add_tls_arguments,
    client_from_args,
    seconds_arg,
    terminal_text,
    tls_argv,
    url_arg,
)

DEFAULT_PEER = "http://127.0.0.1:9000"
MAX_TXS = 10_000
BATCH = 500  # transactions per POST (the REST proxy takes arrays of up to 500)
MAX_BLOCKS = 10_000
WAIT_POLL = 0.2
T = TypeVar("T")
NOT_INVOKED_YET = 2  # a result code: final, not executed yet
RESULT_CODES = {0: "success", 2: "not invoked yet", 9000: "SCORE raised", 9100: "SCORE unreachable"}


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    convert.__name__ = "integer"
    return convert


def build_parser() -> argparse.ArgumentParser:
    """The command line: global options and one subcommand."""
    parser = argparse.ArgumentParser(
        prog="demotool.py",
        description="A client of a loopchain peer's REST API: transactions, status, blocks, load."
        " Without a subcommand on a terminal: the numbered menu.",
    )
    parser.add_argument(
        "-p",
        "--peer",
        type=url_arg,
        default=DEFAULT_PEER,
        help=f"REST URL (default {DEFAULT_PEER})",
    )
    parser.add_argument("--channel", default="", help="channel (default: the peer's default)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--timeout", type=seconds_arg, default=DEFAULT_TIMEOUT, help="seconds per request"
    )
    add_tls_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tx = sub.add_parser("tx", help="create transactions and print their hashes")
    tx.add_argument("-n", "--count", type=_bounded_int(1, MAX_TXS), default=1)
    tx.add_argument(
        "--data", type=_json_object, default={"data": "hello"}, help="the JSON object sent"
    )
    tx.add_argument(
        "--wait",
        action="store_true",
        help="wait until each is in a block and executed (exit 1 when one failed)",
    )
    tx.add_argument("--wait-timeout", type=seconds_arg, default=60.0, help="for --wait (60 s)")
    find = sub.add_parser("find", help="a transaction and its result")
    find.add_argument("hash", help="the transaction hash (64 hex digits)")
    sub.add_parser("status", help="the peer's status and its SCORE")
    blocks = sub.add_parser("blocks", help="walk back from the last block, or print a range")
    blocks.add_argument("--count", type=_bounded_int(1, MAX_BLOCKS), default=10)
    blocks.add_argument("--from", dest="start", type=_bounded_int(0, 2**62), help="first height")
    blocks.add_argument("--to", dest="end", type=_bounded_int(0, 2**62), help="last height")
    monitor = sub.add_parser("monitor", help="print height, leader and pool until Ctrl-C")
    monitor.add_argument("--interval", type=seconds_arg, default=1.0, help="seconds (default 1)")
    monitor.add_argument(
        "--count", type=_bounded_int(0, 10**9), default=0, help="iterations (0: until Ctrl-C)"
    )
    query = sub.add_parser("query", help="send a query to the channel's SCORE")
    query.add_argument("body", type=_json_object, help="the JSON object passed to the SCORE")
    load = sub.add_parser("load", help="a short load (tools/loadtool.py)")
    load.add_argument("-c", "--clients", default="2", help="concurrent clients (default 2)")
    load.add_argument("-m", "--duration", default="5s", help="how long to send (default 5s)")
    load.add_argument("--drain", default="15", help="seconds to wait for commits (default 15)")
    load.add_argument("--progress", action="store_true", help="a progress line on stderr")
    load.add_argument("--report", metavar="DIR", help="report.json, report.md, latency.png")
    return parser


# ------------------------------------------------------------------ subcommands


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value) if args.json else terminal_text(text))


def _post_batch(client: RestClient, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    reply = client.ok("POST", "/api/v1/transactions", body=bodies)
    if not isinstance(reply, list) or len(reply) != len(bodies):
        raise ToolError("the peer did not answer one result per transaction")
    return reply


def _tx_height(client: RestClient, channel: str, tx_hash: str) -> int | None:
    """The height of the block holding the transaction; None while it waits in the pool."""
    reply = client.get("/api/v1/transactions", hash=tx_hash, channel=channel)
    height = int(reply.get("block_height", -1))
    return height if height >= 0 else None


def _tx_result(client: RestClient, channel: str, tx_hash: str) -> dict[str, Any] | None:
    """The transaction's result ({"code", "message"}); None until its peer executed it (a
    moment after its block is final)."""
    reply = client.get("/api/v1/transactions/result", hash=tx_hash, channel=channel)
    response = reply.get("response")
    if not isinstance(response, dict):
        raise ToolError(f"the peer answered no result object for {tx_hash}")
    return None if response.get("code") == NOT_INVOKED_YET else response


def _polled(fetch: Callable[[], T | None], deadline: float, late: str) -> T:
    """fetch() every WAIT_POLL until it gives something; ToolError(`late`) past `deadline`."""
    while (value := fetch()) is None:
        if time.monotonic() > deadline:
            raise ToolError(late)
        time.sleep(WAIT_POLL)
    return value


def cmd_tx(client: RestClient, args: argparse.Namespace) -> int:
    """Send the transactions in batches (and with --wait, wait for their blocks); the hashes the
    peer took are printed even when a later batch or the wait fails, before its error."""
    hashes: list[str] = []
    heights: dict[str, int | None] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        failed = _send_txs(client, args, hashes)
        if args.wait:  # each block, then each result (a SCORE's failure is said below)
            deadline, channel = time.monotonic() + args.wait_timeout, args.channel
            after = f"after {args.wait_timeout:g} s"
            for h in hashes:
                fetch_height = functools.partial(_tx_height, client, channel, h)
                heights[h] = _polled(fetch_height, deadline, f"{h} not in a block {after}")
            for h in hashes:
                fetch_result = functools.partial(_tx_result, client, channel, h)
                results[h] = _polled(fetch_result, deadline, f"{h} not executed {after}")
    finally:
        _print_txs(args, hashes, heights, results)
    for tx_hash in hashes:  # each failure said (the exit status counts them)
        code = results.get(tx_hash, {}).get("code", 0)
        if code != 0:
            failed += 1
            said = results[tx_hash].get("message")
            name = RESULT_CODES.get(code, "unknown code") if isinstance(code, int) else "no code"
            print(
                terminal_text(
                    f"failed: {tx_hash} in block {heights.get(tx_hash)}: result {code} ({name})"
                    + (f": {said}" if said else "")
                ),
                file=sys.stderr,
            )
    return 1 if failed else 0


def _send_txs(client: RestClient, args: argparse.Namespace, hashes: list[str]) -> int:
    """Post args.count transactions, BATCH at a time, adding each taken one's hash to `hashes`;
    the number refused."""
    body = {**args.data, "channel": args.channel} if args.channel else dict(args.data)
    failed = 0
    for start in range(0, args.count, BATCH):
        for answer in _post_batch(client, [body] * min(BATCH, args.count - start)):
            if answer.get("response_code") in (0, "0"):
                hashes.append(str(answer["tx_hash"]))
            else:
                failed += 1
                print(terminal_text(f"refused: {answer.get('message', answer)}"), file=sys.stderr)
    return failed


def _print_txs(
    args: argparse.Namespace,
    hashes: list[str],
    heights: dict[str, int | None],
    results: dict[str, dict[str, Any]],
) -> None:
    """One line per hash (with --wait: and its block height, "none" when not known), or the
    JSON list of them (with --wait: and the result code, None when not known)."""
    if args.json:
        rows: list[dict[str, Any]] = []
        for tx_hash in hashes:
            row: dict[str, Any] = {"tx_hash": tx_hash}
            if args.wait:
                code = results.get(tx_hash, {}).get("code")
                row.update(block_height=heights.get(tx_hash), result_code=code)
            rows.append(row)
        print(json.dumps(rows))
    else:
        for tx_hash in hashes:
            height = heights.get(tx_hash)
            print(f"{tx_hash} {'none' if height is None else height}" if args.wait else tx_hash)
    sys.stdout.flush()


def cmd_find(client: RestClient, args: argparse.Namespace) -> int:
    tx_hash = args.hash.strip().removeprefix("0x")
    tx = client.get("/api/v1/transactions", hash=tx_hash, channel=args.channel)
    result = client.get("/api/v1/transactions/result", hash=tx_hash, channel=args.channel)
    response = result.get("response") or {}
    height = int(tx.get("block_height", -1))
    code = response.get("code")
    text = "\n".join(
        [
            f"tx_hash      {tx_hash}",
            f"block        {height if height >= 0 else 'none yet (in the pool)'}",
            f"result       {code} ({RESULT_CODES.get(code, 'unknown code') if isinstance(code, int) else 'no code'})"
            + (f": {response['message']}" if response.get("message") else ""),
            f"data         {json.dumps(tx.get('data'))}",
            f"peer         {(tx.get('meta') or {}).get('peer_id', '')}",
        ]
    )
    _emit(args, {"tx_hash": tx_hash, "transaction": tx, "result": response}, text)
    return 0


def cmd_status(client: RestClient, args: argparse.Namespace) -> int:
    peer = client.get("/api/v1/status/peer", channel=args.channel)
    score = client.get("/api/v1/status/score", channel=args.channel)
    keys = (
        *("status", "peer_id", "peer_target", "channel", "leader_id", "block_height"),
        *("total_tx", "tx_pool_size", "validator_count", "pending_validator_count"),
        *("audience_count", "consensus"),
    )
    lines = [f"{key:<16} {peer[key]}" for key in keys if key in peer]
    lines.append(f"{'score':<16} {score.get('id')} {score.get('version')}")
    _emit(args, {"peer": peer, "score": score}, "\n".join(lines))
    return 0


def _block_row(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("block_data_json") or {}
    txs = reply.get("tx_data_json")
    return {
        "height": int(data.get("height", -1)),
        "hash": str(reply.get("block_hash", "")),
        "tx_count": int(data["tx_count"]) if "tx_count" in data else len(txs or ()),
        "peer_id": str(data.get("peer_id", "")),
        "time_stamp": data.get("time_stamp"),
        "prev_hash": str(data.get("prev_block_hash", "")),
    }


def _walk_back(client: RestClient, channel: str, count: int) -> list[dict[str, Any]]:
    rows = [_block_row(client.get("/api/v1/blocks", channel=channel))]
    while len(rows) < count and rows[-1]["height"] > 0 and rows[-1]["prev_hash"]:
        reply = client.get("/api/v1/blocks", hash=rows[-1]["prev_hash"], channel=channel)
        rows.append(_block_row(reply))
    return rows


def cmd_blocks(client: RestClient, args: argparse.Namespace) -> int:
    if args.start is None and args.end is None:
        rows = _walk_back(client, args.channel, args.count)
    else:
        end = args.end
        if end is None:
            end = _block_row(client.get("/api/v1/blocks", channel=args.channel))["height"]
        start = args.start if args.start is not None else max(0, end - args.count + 1)
        if start > end or end - start >= MAX_BLOCKS:
            raise ToolError(f"--from {start} --to {end}: at most {MAX_BLOCKS} blocks, in order")
        rows = [
            _block_row(client.get("/api/v1/blocks", height=h, channel=args.channel))
            for h in range(start, end + 1)
        ]
    text = "\n".join(
        f"{r['height']:>8}  {r['hash']}  {r['tx_count']:>5} txs  by {r['peer_id']}" for r in rows
    )
    _emit(args, rows, f"{'height':>8}  {'hash':<64}  {'txs':>9}\n{text}")
    return 0


def cmd_monitor(client: RestClient, args: argparse.Namespace) -> int:
    failures, done = 0, 0
    try:
        while not args.count or done < args.count:
            if done:
                time.sleep(args.interval)
            done += 1
            now = time.strftime("%H:%M:%S")
            try:
                peer = client.get("/api/v1/status/peer", channel=args.channel)
            except ToolError as exc:
                failures += 1
                print(f"demotool: {now} {exc}", file=sys.stderr)
                continue
            row = {
                "time": now,
                "block_height": peer.get("block_height"),
                "leader_id": peer.get("leader_id"),
                "tx_pool_size": peer.get("tx_pool_size"),
                "total_tx": peer.get("total_tx"),
            }
            text = (
                f"{now}  height {row['block_height']}  leader {row['leader_id']}"
                f"  pool {row['tx_pool_size']}  total_tx {row['total_tx']}"
            )
            _emit(args, row, text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 1 if failures == done and done else 0


def cmd_query(client: RestClient, args: argparse.Namespace) -> int:
    body = {**args.body, "channel": args.channel} if args.channel else args.body
    reply = client.ok("POST", "/api/v1/query", body=body)
    _emit(args, reply, json.dumps(reply.get("response"), indent=1))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    argv = ["-p", args.peer, "-c", args.clients, "-m", args.duration, "--drain", args.drain]
    argv += ["--timeout", str(args.timeout)]
    argv += ["--channel", args.channel] if args.channel else []
    argv += ["--json"] if args.json else []
    argv += ["--progress"] if args.progress else []
    argv += ["--report", args.report] if args.report else []
    argv += tls_argv(args, key_flag="--tls-key")
    return loadtool.main(argv)


COMMANDS: dict[str, Callable[[RestClient, argparse.Namespace], int]] = {
    "tx": cmd_tx,
    "find": cmd_find,
    "status": cmd_status,
    "blocks": cmd_blocks,
    "monitor": cmd_monitor,
    "query": cmd_query,
}


def execute(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; ToolError for a failure to report."""
    if args.command == "load":
        return cmd_load(args)
    return COMMANDS[args.command](client_from_args(args.peer, args), args)


# ------------------------------------------------------------------ the menu


def menu_items() -> list[MenuItem]:
    """The numbered entries, each building the argv of its subcommand from the answers."""
    return [
        MenuItem(
            "create transactions",
            lambda: ["tx", "-n", ask("how many", "1"), "--data", ask("data", '{"data": "hello"}')],
        ),
        MenuItem("find a transaction", lambda: ["find", ask("transaction hash")]),
        MenuItem("peer status", lambda: ["status"]),
        MenuItem("query the SCORE", lambda: ["query", ask("query JSON", '{"method": "info"}')]),
        MenuItem("print the chain", lambda: ["blocks", "--count", ask("how many blocks", "10")]),
        MenuItem(
            "monitor (Ctrl-C stops)",
            lambda: ["monitor", "--interval", ask("interval s", "1"), "--count", ask("times", "0")],
        ),
        MenuItem(
            "load test",
            lambda: ["load", "-c", ask("clients", "2"), "-m", ask("duration", "5s")],
        ),
    ]


def _menu(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    globals_ = ["-p", args.peer, "--timeout", str(args.timeout), *tls_argv(args)]
    globals_ += ["--channel", args.channel] if args.channel else []
    title = f"loopchain demotool - peer {args.peer}, channel {args.channel or '(default)'}"

    def run(argv: list[str]) -> int:
        return execute(parser.parse_args([*globals_, *argv]))

    return run_menu(title, menu_items(), run, node="the peer")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    return run_tool("demotool", build_parser(), argv, execute, _menu, node="the peer")


if __name__ == "__main__":
    sys.exit(main())
