#!/usr/bin/env python3
"""gtool: RadioStation administration through its REST API, as a menu or as subcommands.

    .venv/bin/python tools/gtool.py -r http://127.0.0.1:9002 status
    .venv/bin/python tools/gtool.py channels
    .venv/bin/python tools/gtool.py add-channel kofia_2 --score loopchain/default --nid 0x20
    .venv/bin/python tools/gtool.py add-peer kofia_2 127.0.0.1:7100 --peer-id hx...
    .venv/bin/python tools/gtool.py remove-peer kofia_2 hx...     # or the entry's host:port
    .venv/bin/python tools/gtool.py unregister hx...              # forget a registration
    .venv/bin/python tools/gtool.py dump --out channel_manage_data.json
    .venv/bin/python tools/gtool.py                                # the numbered menu (a terminal)

Reads are open; the changes (add-channel, add-peer, remove-peer, unregister) send the operator
token, read from --token-file, else from the file the RadioStation uses: RADIOSTATION_ADMIN_TOKEN_PATH
(environment or -o conf.json) or {DEFAULT_STORAGE_PATH}/radiostation_{port}/admin_token, the port
being the REST port - PORT_DIFF_REST_SERVICE_CONTAINER. Exit status: 0 done, 1 the RadioStation
failed, refused or answered what the tool cannot read (one line on stderr saying why), 2 a usage
error.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loopchain.configure import ConfigError, load_config
from loopchain.durable import write_atomic
from loopchain.radiostation.operator import MAX_TOKEN_CHARS, is_token_text, token_path
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

DEFAULT_RADIOSTATION = "http://127.0.0.1:9002"
STATUS_NAMES = {0: "unknown", 1: "connected", 2: "disconnected"}
CHANNEL_FILE_MODE = 0o644  # as listed_channels.py writes it: the channel list is no secret


def build_parser() -> argparse.ArgumentParser:
    """The command line: global options and one subcommand."""
    parser = argparse.ArgumentParser(
        prog="gtool.py",
        description="Administer a loopchain RadioStation: channels, peers, channel data."
        " Without a subcommand on a terminal: the numbered menu.",
    )
    add = parser.add_argument
    add("-r", "--radiostation", type=url_arg, default=DEFAULT_RADIOSTATION, help="its REST URL")
    add("--token-file", help="the operator token file (default: the RadioStation's own)")
    add("-o", "--configure_file_path", help="the RadioStation's JSON configuration (token path)")
    add("--json", action="store_true", help="machine-readable output")
    add("--timeout", type=seconds_arg, default=DEFAULT_TIMEOUT, help="seconds per request")
    add_tls_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("status", help="each channel's peers, their status and the leader")
    sub.add_parser("channels", help="the channels, their SCORE and listed peers")
    add_channel = sub.add_parser("add-channel", help="add a channel")
    add_channel.add_argument("channel")
    add_channel.add_argument("--score", help="its SCORE package (default: the RadioStation's)")
    add_channel.add_argument(
        "--nid",
        help="its network id for ICON v3 transactions, e.g. 0x20 (default: the peers' ICON_NID "
        "unless another channel takes it; else the RadioStation gives it one of its own)",
    )
    add_peer = sub.add_parser("add-peer", help="list a peer in a channel")
    add_peer.add_argument("channel")
    add_peer.add_argument("target", help="the peer's host:port")
    add_peer.add_argument("--peer-id", help="its id (hx...), needed with ENABLE_CHANNEL_AUTH")
    add_peer.add_argument("--weight", type=int, help="its voting weight (default 1)")
    add_peer.add_argument("--group", help="its group id")
    add_peer.add_argument("--role", choices=("validator", "auditor"), help="default validator")
    remove = sub.add_parser("remove-peer", help="take a peer out of a channel's list")
    remove.add_argument("channel")
    remove.add_argument("peer", help="the entry's peer id (hx...) or, without one, its host:port")
    unregister = sub.add_parser("unregister", help="forget a peer's registration (every channel)")
    unregister.add_argument("peer_id")
    dump = sub.add_parser("dump", help="the channel data as channel_manage_data.json")
    dump.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    return parser


# ------------------------------------------------------------------ the token


def read_token(args: argparse.Namespace) -> str:
    """The operator token from --token-file or the RadioStation's token file."""
    path = Path(args.token_file) if args.token_file else default_token_path(args)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_CHARS + 2)
    except OSError as exc:
        raise ToolError(
            f"cannot read the operator token file {path}: {exc.strerror or exc} "
            "(give --token-file, or -o with the RadioStation's configuration)"
        ) from None
    token = raw.strip().decode("ascii", "replace")
    if not token or len(token) > MAX_TOKEN_CHARS or not is_token_text(token):
        # (one of other characters was sent, and refused as the RadioStation's answer, review)
        raise ToolError(f"{path} does not hold an operator token")
    return token


def default_token_path(args: argparse.Namespace) -> Path:
    """Where the RadioStation keeps its token, from the same configuration layers it reads."""
    try:
        config = load_config(args.configure_file_path, dict(os.environ))
    except ConfigError as exc:
        raise ToolError(f"configuration: {exc}") from None
    rest_port = urllib.parse.urlsplit(args.radiostation).port or 0
    port = rest_port - int(config.PORT_DIFF_REST_SERVICE_CONTAINER)
    storage = Path(config.DEFAULT_STORAGE_PATH) / f"radiostation_{port}"
    return token_path(str(config.RADIOSTATION_ADMIN_TOKEN_PATH), storage)


def _operator(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {read_token(args)}"}


# ------------------------------------------------------------------ subcommands


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=1) if args.json else terminal_text(text))


def channel_data(client: RestClient) -> dict[str, Any]:
    data = client.get("/api/v1/channel/data").get("data")
    if not isinstance(data, dict):
        raise ToolError("the RadioStation answered no channel data")
    return data


def cmd_status(client: RestClient, args: argparse.Namespace) -> int:
    result: dict[str, Any] = {}
    lines = []
    for channel in channel_data(client):
        peers = client.get("/api/v1/peer/list", channel=channel)["data"]
        leader = next(
            (p["peer_id"] for p in peers["registered_peer_list"] if p.get("peer_type") == 1), ""
        )
        result[channel] = {**peers, "leader": leader}
        lines.append(
            f"{channel}: {peers['registered_peer_count']} registered, "
            f"{peers['connected_peer_count']} connected, leader {leader or 'none'}"
        )
        for peer in peers["registered_peer_list"]:
            status = STATUS_NAMES.get(peer.get("status"), str(peer.get("status")))
            lines.append(f"  {peer['order']:>3}  {peer['peer_id']}  {peer['target']}  {status}")
    _emit(args, result, "\n".join(lines))
    return 0


def cmd_channels(client: RestClient, args: argparse.Namespace) -> int:
    data = channel_data(client)
    lines = []
    for name, entry in data.items():
        peers = entry.get("peers", [])
        lines.append(f"{name}: SCORE {entry.get('score_package')}, {len(peers)} listed peers")
        for peer in peers:
            extra = {k: v for k, v in peer.items() if k not in ("peer_id", "peer_target")}
            who = f"{peer.get('peer_id', '(any id)')}  {peer.get('peer_target', '(any target)')}"
            lines.append(f"  {who}" + (f"  {json.dumps(extra)}" if extra else ""))
    _emit(args, data, "\n".join(lines))
    return 0


def _changed(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    data = reply.get("data") or {}
    _emit(args, reply, f"{reply.get('message')} (channel version {data.get('version')})")
    return 0


def cmd_add_channel(client: RestClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"channel": args.channel}
    if args.score:
        body["score_package"] = args.score
    if args.nid:
        body["genesis_data"] = {"accounts": [], "nid": args.nid}
    reply = client.ok("POST", "/api/v1/channel", body=body, headers=_operator(args))
    return _changed(args, reply)


def cmd_add_peer(client: RestClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"channel": args.channel, "peer_target": args.target}
    optional = {
        "peer_id": args.peer_id,
        "weight": args.weight,
        "group_id": args.group,
        "role": args.role,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    reply = client.ok("POST", "/api/v1/channel/peer", body=body, headers=_operator(args))
    return _changed(args, reply)


def cmd_remove_peer(client: RestClient, args: argparse.Namespace) -> int:
    key = "peer_id" if args.peer.startswith("hx") else "peer_target"
    params = {"channel": args.channel, key: args.peer}
    reply = client.ok("DELETE", "/api/v1/channel/peer", params, headers=_operator(args))
    return _changed(args, reply)


def cmd_unregister(client: RestClient, args: argparse.Namespace) -> int:
    params = {"peer_id": args.peer_id}
    reply = client.ok("DELETE", "/api/v1/peer", params, headers=_operator(args))
    versions = (reply.get("data") or {}).get("channels", {})
    _emit(args, reply, f"{reply.get('message')}; channel versions now {versions}")
    return 0


def cmd_dump(client: RestClient, args: argparse.Namespace) -> int:
    text = json.dumps(channel_data(client), indent=1, ensure_ascii=False) + "\n"
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ToolError(f"cannot write {out}: {out.parent} is not a directory")
    try:  # a whole file or none, synced before it is renamed over the old one (durable)
        write_atomic(out, text.encode("utf-8"), CHANNEL_FILE_MODE)
        os.chmod(out, CHANNEL_FILE_MODE)  # whatever the umask, as listed_channels.py
    except OSError as exc:
        raise ToolError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"channel data written to {out}", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[RestClient, argparse.Namespace], int]] = {
    "status": cmd_status,
    "channels": cmd_channels,
    "add-channel": cmd_add_channel,
    "add-peer": cmd_add_peer,
    "remove-peer": cmd_remove_peer,
    "unregister": cmd_unregister,
    "dump": cmd_dump,
}


def execute(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; ToolError for a failure to report."""
    return COMMANDS[args.command](client_from_args(args.radiostation, args), args)


# ------------------------------------------------------------------ the menu


def _optional(flag: str, answer: str) -> list[str]:
    return [flag, answer] if answer else []


def menu_items() -> list[MenuItem]:
    """The numbered entries, each building the argv of its subcommand from the answers."""
    return [
        MenuItem("RadioStation status", lambda: ["status"]),
        MenuItem("show channels", lambda: ["channels"]),
        MenuItem(
            "add a channel",
            lambda: ["add-channel", ask("channel"), *_optional("--score", ask("SCORE package"))],
        ),
        MenuItem(
            "add a peer to a channel",
            lambda: [
                "add-peer",
                ask("channel"),
                ask("peer target host:port"),
                *_optional("--peer-id", ask("peer id (hx...)")),
            ],
        ),
        MenuItem(
            "remove a peer from a channel",
            lambda: ["remove-peer", ask("channel"), ask("peer id or host:port")],
        ),
        MenuItem("unregister a peer", lambda: ["unregister", ask("peer id (hx...)")]),
        MenuItem(
            "write channel_manage_data.json",
            lambda: ["dump", "--out", ask("file", "channel_manage_data.json")],
        ),
    ]


def _menu(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    globals_ = ["-r", args.radiostation, "--timeout", str(args.timeout), *tls_argv(args)]
    globals_ += _optional("--token-file", args.token_file or "")
    globals_ += _optional("-o", args.configure_file_path or "")

    def run(argv: list[str]) -> int:
        return execute(parser.parse_args([*globals_, *argv]))

    title = f"loopchain gtool - RadioStation {args.radiostation}"
    return run_menu(title, menu_items(), run, node="the RadioStation")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    return run_tool("gtool", build_parser(), argv, execute, _menu, node="the RadioStation")


if __name__ == "__main__":
    sys.exit(main())
