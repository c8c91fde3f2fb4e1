#!/usr/bin/env python3
"""Write channel_manage_data.json for listed mode (ENABLE_CHANNEL_AUTH): each peer's key is made
(or kept) where the peer will look for it, and every channel lists the peers by their ids.

    tools/listed_channels.py --out FILE [--channels A,B] [--score ORG/PACKAGE]
                             [--score-settings JSON] [--genesis JSON]
                             --peer TARGET=KEYFILE [--peer TARGET=KEYFILE ...]

e.g. `--peer 127.0.0.1:7100=.storage/peer_7100/peer_key`. A new key is encrypted with
$LOOPCHAIN_KEY_PASSWORD when it is set (the peer reads the same variable), else written unencrypted
as a development network needs; an existing key keeps its id. `--score-settings` is the channels'
"score_settings" object, where a string "@TARGET" stands for the id of the peer at TARGET (e.g.
'{"token": {"owner": "@127.0.0.1:7100"}}'). `--genesis` is the channels' "genesis_data" object
(the accounts funded with the native coin at genesis, loopchain.types.genesis), checked before it
is written; without it the channels state none. Prints one "target peer_id" line per peer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loopchain.radiostation.channels import is_target
from loopchain.types.certificates import CertificateError, check_password_text
from loopchain.types.crypto import SignatureError, load_or_create_key, write_private_file
from loopchain.types.genesis import GenesisData
from loopchain.types.passwords import KEY_PASSWORD_ENV


def _peer(text: str) -> tuple[str, Path]:
    target, sep, key_file = text.partition("=")
    if not sep or not is_target(target) or not key_file:
        raise argparse.ArgumentTypeError(f"expected TARGET=KEYFILE (host:port=path), got {text!r}")
    return target, Path(key_file)


def _with_ids(value: object, ids: dict[str, str]) -> object:
    """`value` with every string "@TARGET" replaced by the id of the peer at TARGET."""
    if isinstance(value, str) and value.startswith("@"):
        if value[1:] not in ids:
            raise KeyError(f"{value}: no --peer has the target {value[1:]}")
        return ids[value[1:]]
    if isinstance(value, dict):
        return {key: _with_ids(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_ids(item, ids) for item in value]
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="listed_channels.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", required=True, type=Path, help="channel_manage_data.json to write")
    parser.add_argument("--channels", default="loopchain_default", help="channel names, A,B")
    parser.add_argument("--score", default="loopchain/default", help="SCORE package of each")
    parser.add_argument(
        "--score-settings", default="{}", help="score_settings JSON ('@TARGET': id)"
    )
    parser.add_argument("--genesis", help="genesis_data JSON of each channel (default: none)")
    parser.add_argument("--peer", action="append", type=_peer, required=True, help="TARGET=KEYFILE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = [name for name in args.channels.split(",") if name]
    if not names:
        print("listed_channels.py: --channels names no channel", file=sys.stderr)
        return 2
    password = os.environ.get(KEY_PASSWORD_ENV) or None
    try:
        check_password_text(password, f"${KEY_PASSWORD_ENV}")
    except CertificateError as exc:
        print(f"listed_channels.py: {exc}", file=sys.stderr)
        return 1
    peers = []
    for target, key_file in args.peer:
        try:
            signer = load_or_create_key(key_file, password)
        except (SignatureError, OSError) as exc:
            print(f"listed_channels.py: {key_file}: {exc}", file=sys.stderr)
            return 1
        peers.append({"peer_id": signer.address, "peer_target": target})
        print(target, signer.address)
    ids = {peer["peer_target"]: peer["peer_id"] for peer in peers}
    try:
        settings = _with_ids(json.loads(args.score_settings), ids)
    except (ValueError, KeyError) as exc:
        print(f"listed_channels.py: --score-settings: {exc}", file=sys.stderr)
        return 2
    if not isinstance(settings, dict):
        print("listed_channels.py: --score-settings must be a JSON object", file=sys.stderr)
        return 2
    genesis = None
    if args.genesis is not None:
        try:
            genesis = json.loads(args.genesis)
            GenesisData.from_json(genesis)
        except ValueError as exc:  # not JSON, or an EncodingError naming the field
            print(f"listed_channels.py: --genesis: {exc}", file=sys.stderr)
            return 2
    channel = {"score_package": args.score, "peers": peers}
    if settings:
        channel["score_settings"] = settings
    if genesis is not None:
        channel["genesis_data"] = genesis
    channels = {name: channel for name in names}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(args.out, (json.dumps(channels, indent=2) + "\n").encode())
    os.chmod(args.out, 0o644)  # the channel list is not a secret
    return 0


if __name__ == "__main__":
    sys.exit(main())
