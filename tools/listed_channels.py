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
is written; without it the channels state none. A genesis stating no "nid" gives each channel
after the first its own network id for v3 transactions (the first 0x3, ICON_NID's default, the next
0x4, ...), so that none takes another's v3 transactions replayed. Prints one "target peer_id" line
per peer.
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
from pathlib import Path

from loopchain.configure import shown
from loopchain.durable import write_atomic
from loopchain.sources import is_target
from loopchain.types import channel_name, package_name
from loopchain.types.certificates import CertificateError, check_password_text
from loopchain.types.channel_name import is_channel_name
from loopchain.types.crypto import SignatureError, load_or_create_key
from loopchain.types.genesis import GenesisData
from loopchain.types.package_name import is_package_name
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


class Refused(Exception):
    """What is wrong with the arguments, one line, and the exit status to end with."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _settings(text: str, ids: dict[str, str]) -> dict[str, object]:
    """--score-settings with every "@TARGET" replaced by its peer's id; Refused when it is not a
    JSON object or names a target no --peer has."""
    try:
        settings = _with_ids(json.loads(text), ids)
    except KeyError as exc:
        raise Refused(f"--score-settings: {exc.args[0]}") from None
    except (ValueError, RecursionError) as exc:
        raise Refused(f"--score-settings: not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise Refused("--score-settings must be a JSON object")
    return settings


def _genesis(text: str | None) -> object:
    """--genesis as JSON once GenesisData accepts it (None without it); Refused otherwise."""
    if text is None:
        return None
    try:
        genesis = json.loads(text)
        GenesisData.from_json(genesis)
    except (ValueError, RecursionError) as exc:  # not JSON, or an EncodingError naming the field
        raise Refused(f"--genesis: {exc}") from None
    return genesis


def _check_out(out: Path) -> None:
    """Refused when `out` cannot be written as a file: it is a directory, or the nearest of its
    folders that exists is not one (a file stands where a folder must be made)."""
    if out.is_dir():
        raise Refused(f"--out {out} is a directory; give the file to write")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise Refused(f"--out {out}: {folder} is not a directory")


def _peers(args: argparse.Namespace, password: str | None) -> list[dict[str, str]]:
    """Each --peer's id and target, its key made (or kept) at its KEYFILE; Refused (status 1)
    for a key that cannot be read or written."""
    peers = []
    for target, key_file in args.peer:
        try:
            signer = load_or_create_key(key_file, password)
        except (SignatureError, OSError) as exc:
            raise Refused(f"{key_file}: {exc}", 1) from None
        peers.append({"peer_id": signer.address, "peer_target": target})
        print(target, signer.address)
    return peers


def _write(out: Path, channels: dict[str, object]) -> None:
    try:
        write_atomic(out, (json.dumps(channels, indent=2) + "\n").encode(), 0o644)
        os.chmod(out, 0o644)  # the channel list is not a secret, whatever the umask
    except OSError as exc:
        raise Refused(f"cannot write {out}: {exc.strerror or exc}", 1) from None


def run(args: argparse.Namespace) -> None:
    """Check every argument, then make the keys and write the file; Refused for what is wrong
    (nothing made when an argument is)."""
    names = [name for name in args.channels.split(",") if name]
    if not names:
        raise Refused("--channels names no channel")
    for name in names:  # as the RadioStation reads them (it refused the file it was given)
        if not is_channel_name(name):
            raise Refused(f"--channels: {shown(name)} must be {channel_name.RULE}")
    if not is_package_name(args.score):
        raise Refused(f"--score {shown(args.score)} must be {package_name.RULE}")
    password = os.environ.get(KEY_PASSWORD_ENV) or None
    try:
        check_password_text(password, f"${KEY_PASSWORD_ENV}")
    except CertificateError as exc:
        raise Refused(str(exc), 1) from None
    _settings(args.score_settings, {target: "" for target, _ in args.peer})
    genesis = _genesis(args.genesis)
    _check_out(args.out)
    peers = _peers(args, password)
    settings = _settings(args.score_settings, {p["peer_target"]: p["peer_id"] for p in peers})
    channel: dict[str, object] = {"score_package": args.score, "peers": peers}
    if settings:
        channel["score_settings"] = settings
    channels: dict[str, object] = {}
    for index, name in enumerate(names):
        own = dict(channel)
        if genesis is not None:
            own["genesis_data"] = _own_network(genesis, index, len(names))
        channels[name] = own
    _write(args.out, channels)


FIRST_NID = 0x3  # the default ICON_NID: the first channel's, as it would be without a nid


def _own_network(genesis: object, index: int, count: int) -> object:
    """`genesis` for the channel at `index` of `count`: with a nid of its own when there are
    several channels and it states none (channels sharing one take each other's v3
    transactions, replayed)."""
    if count == 1 or not isinstance(genesis, dict) or "nid" in genesis:
        return genesis
    return {**genesis, "nid": hex(FIRST_NID + index)}


def main(argv: list[str] | None = None) -> int:
    """Run the tool; the exit status (2 for a wrong argument, 1 for a key or file that cannot
    be made), the reason on one line of stderr."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except Refused as exc:
        print(f"listed_channels.py: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
