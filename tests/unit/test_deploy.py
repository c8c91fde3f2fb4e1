"""deploy/: the compose network (in listed mode), its configs and the Dockerfile, checked without a
container engine; the step that lists the peers is run for real against temporary directories."""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from loopchain.configure import Config, load_config
from loopchain.peer.main import parse_args as parse_peer_args
from loopchain.peer.main import radiostation_targets
from loopchain.peer.node import peer_key_path
from loopchain.radiostation.channels import load_channels
from loopchain.radiostation.main import create_station, storage_dir
from loopchain.radiostation.main import parse_args as parse_radiostation_args
from loopchain.types.crypto import key_file_is_encrypted, open_key_file
from loopchain.types.passwords import KEY_PASSWORD_ENV
from tools import log_parser
from tools.listed_channels import main as listed_channels_main
from tools.listed_channels import parse_args as parse_listed_channels_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
FLUENT_CONF = DEPLOY / "fluentd" / "fluent.conf"
RS = "radiostation"
PEERS = {"peer0": 7100, "peer1": 7200, "peer2": 7300}
LOOPCHAIN_SERVICES = (RS, *PEERS)
INIT = "listed-channels"  # one-shot: makes the peers' keys and the RadioStation's channel file
INIT_SCRIPT = "tools/listed_channels.py"
COLLECTOR = "logcollector"
COLLECTOR_PORT = 24224
REST_DIFF = 1900
USER_MODULE = "loopchain.configure_user"
IMAGE_VENV_BIN = "/opt/loopchain/.venv/bin"  # WORKDIR/.venv/bin: the dependencies are there
IMAGE_VENV_PYTHONS = {f"{IMAGE_VENV_BIN}/python", f"{IMAGE_VENV_BIN}/python3"}
RESTARTED = (RS, *PEERS, COLLECTOR)  # long-running: started again after a crash
SYSTEM_PATH = (
    "/usr/bin:/bin"  # a PATH without the venv: `#!/usr/bin/env python3` finds another python
)

Parser = Callable[[list[str]], argparse.Namespace]
PARSERS: dict[str, Parser] = {
    "peer.py": parse_peer_args,
    "radiostation.py": parse_radiostation_args,
    "listed_channels.py": parse_listed_channels_args,
}


@pytest.fixture(autouse=True)
def no_user_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image has no configure_user.py, so a developer's own one must not leak into these checks."""
    monkeypatch.setitem(sys.modules, USER_MODULE, types.ModuleType(USER_MODULE))


# ------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, --flags and remaining arguments."""

    keyword: str
    flags: dict[str, str]
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    instructions = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
        instructions.append(Instruction(keyword.upper(), flags, rest.strip()))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last build stage (from its FROM on)."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def context_copies(stage: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context in a stage."""
    copies = []
    for ins in stage:
        if ins.keyword in ("COPY", "ADD") and "from" not in ins.flags:
            *sources, dest = shlex.split(ins.args)
            copies.append((sources, dest))
    return copies


def workdir(stage: list[Instruction]) -> str:
    """The last WORKDIR of a stage."""
    dirs = [ins.args for ins in stage if ins.keyword == "WORKDIR"]
    assert dirs, "the image sets no WORKDIR"
    return dirs[-1]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def repo_path(container_path: str, stage: list[Instruction]) -> Path:
    """The repository file a path inside the image comes from (relative paths: from WORKDIR)."""
    base = PurePosixPath(workdir(stage))
    path = base / container_path
    for sources, dest in context_copies(stage):
        target = base / dest
        if len(sources) == 1 and sources[0].endswith("/") and path.is_relative_to(target):
            return ROOT / sources[0] / path.relative_to(target)
    if path.is_relative_to(workdir(stage)):
        return ROOT / path.relative_to(workdir(stage))
    raise AssertionError(f"{container_path} does not come from the repository in the image")


# ------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name}"
    return dict(services[name])


def command(compose: dict[str, Any], name: str) -> list[str]:
    """A service's command as an argv list, without the image's venv python when it is named
    (the script first)."""
    cmd = service(compose, name).get("command")
    assert cmd, f"service {name} has no command"
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]
    if argv[0].endswith("python") or argv[0].endswith("python3"):
        assert argv[0] in IMAGE_VENV_PYTHONS, f"{name} runs {argv[0]}, not the image's venv python"
        argv = argv[1:]
    return argv


def parsed_args(compose: dict[str, Any], name: str) -> argparse.Namespace:
    """A service's command parsed by the real argparse parser of its script."""
    argv = command(compose, name)
    script = PurePosixPath(argv[0]).name
    assert script in PARSERS, f"service {name} runs {argv[0]}, not one of {sorted(PARSERS)}"
    try:
        return PARSERS[script](argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{script} rejects the flags of service {name}: {argv[1:]} (exit {exc.code})")


def environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    """A service's environment as strings (compose takes a mapping or a KEY=VALUE list)."""
    env = service(compose, name).get("environment") or {}
    if isinstance(env, list):
        env = {key: value for key, _, value in (str(item).partition("=") for item in env)}
    return {str(k): _env_text(v) for k, v in env.items()}


def _env_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def service_config(
    compose: dict[str, Any], name: str, dockerfile: list[Instruction]
) -> tuple[Config, Path]:
    """The configuration a loopchain service starts with, and the repository file of its -o."""
    args = parsed_args(compose, name)
    assert args.configure_file_path, f"service {name} gives no -o configuration file"
    path = repo_path(args.configure_file_path, final_stage(dockerfile))
    assert path.is_file(), f"{args.configure_file_path} of service {name} maps to missing {path}"
    return load_config(str(path), environ=environment(compose, name)), path


def published(compose: dict[str, Any], name: str) -> dict[int, int]:
    """Container port -> host port of each TCP port a service publishes."""
    result: dict[int, int] = {}
    for entry in service(compose, name).get("ports", []):
        assert isinstance(entry, str), f"{name}: write ports as 'ip:host:container' strings"
        spec, _, proto = entry.partition("/")
        if proto and proto != "tcp":
            continue
        *_, host, container = spec.split(":")
        result[int(container)] = int(host)
    return result


def service_port(args: argparse.Namespace, config: Config, script: str) -> int:
    """The gRPC port a peer or RadioStation listens on, from -p or the configuration."""
    if args.port:
        return int(args.port)
    return int(config.PORT_PEER if script == "peer.py" else config.PORT_RADIOSTATION)


def mounts(compose: dict[str, Any], name: str) -> list[tuple[str, PurePosixPath]]:
    """(source, container path) of each volume a service mounts."""
    result = []
    for entry in service(compose, name).get("volumes", []):
        assert isinstance(entry, str), f"{name}: write volumes as 'source:target[:mode]' strings"
        source, target, *_ = entry.split(":")
        result.append((source, PurePosixPath(target)))
    return result


def on_volume(compose: dict[str, Any], name: str, path: str | PurePosixPath) -> tuple[str, str]:
    """The named volume holding a container path of a service, and the path inside that volume."""
    path = PurePosixPath(path)
    assert path.is_absolute(), f"{name}: {path} is not an absolute container path"
    holding = [
        (src, target) for src, target in mounts(compose, name) if path.is_relative_to(target)
    ]
    assert len(holding) == 1, f"{name}: {path} is on no (or several) volume mounts"
    source, target = holding[0]
    assert source in set(compose.get("volumes") or {}), f"{name}: {source} is not a named volume"
    return source, str(path.relative_to(target))


def registered_target(compose: dict[str, Any], name: str, dockerfile: list[Instruction]) -> str:
    """The target a peer registers at: LOOPCHAIN_HOST and its port (as PeerNode.target)."""
    config, _ = service_config(compose, name, dockerfile)
    return f"{config.LOOPCHAIN_HOST}:{service_port(parsed_args(compose, name), config, 'peer.py')}"


def peer_key_location(
    compose: dict[str, Any], name: str, dockerfile: list[Instruction]
) -> tuple[str, str]:
    """Volume and path in it of the key file a peer opens (--private, else its storage dir)."""
    args = parsed_args(compose, name)
    config, _ = service_config(compose, name, dockerfile)
    port = service_port(args, config, "peer.py")
    return on_volume(compose, name, PurePosixPath(peer_key_path(config, port, args.private)))


def init_peers(compose: dict[str, Any]) -> list[tuple[str, str]]:
    """(target, key file) of each --peer of the listed-channels service."""
    return [(target, str(key)) for target, key in parsed_args(compose, INIT).peer]


def init_argv_on_host(compose: dict[str, Any], volumes: Path) -> list[str]:
    """The listed-channels arguments with each container path moved to volumes/<volume>/<path>."""

    def moved(path: str) -> str:
        volume, inside = on_volume(compose, INIT, path)
        return str(volumes / volume / inside)

    argv = command(compose, INIT)[1:]
    result: list[str] = []
    for before, arg in zip(["", *argv], argv, strict=False):
        if before == "--out":
            arg = moved(arg)
        elif before == "--peer":
            target, _, key = arg.partition("=")
            arg = f"{target}={moved(key)}"
        result.append(arg)
    args = parse_listed_channels_args(result)
    paths = [args.out, *(key for _, key in args.peer)]
    assert all(path.is_relative_to(volumes) for path in paths), f"a path was not moved: {result}"
    return result


def pairs(printed: list[str]) -> set[tuple[str, str]]:
    """The (target, peer id) lines listed_channels.py prints."""
    return set(zip(printed[::2], printed[1::2], strict=True))


def user_owned_dirs(stage: list[Instruction]) -> dict[str, set[str]]:
    """Directories `install -d -o USER` makes in a stage, by owner."""
    owned: dict[str, set[str]] = {}
    for ins in stage:
        if ins.keyword != "RUN":
            continue
        for part in re.split(r"&&|;", ins.args):
            words = shlex.split(part)
            if words[:1] != ["install"] or "-d" not in words:
                continue
            owner, paths, rest = "", [], iter(words[1:])
            for word in rest:
                if word in ("-o", "-g", "-m"):
                    value = next(rest)
                    owner = value if word == "-o" else owner
                elif not word.startswith("-"):
                    paths.append(word)
            owned.setdefault(owner, set()).update(paths)
    return owned


# ------------------------------------------------------------------ tests


def test_compose_declares_the_network(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*LOOPCHAIN_SERVICES, INIT, COLLECTOR}
    build = service(compose, RS)["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    images = {service(compose, name).get("image") for name in (*LOOPCHAIN_SERVICES, INIT)}
    assert len(images) == 1 and None not in images, f"one image for all: {images}"


def test_commands_run_repository_scripts_with_accepted_flags(compose: dict[str, Any]) -> None:
    for name in LOOPCHAIN_SERVICES:
        argv = command(compose, name)
        script = ROOT / argv[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{name}: {argv[0]} not runnable"
        expected = "radiostation.py" if name == RS else "peer.py"
        assert script.name == expected, f"{name} runs {script.name}"
        args = parsed_args(compose, name)
        assert args.configure_file_path, f"{name} gives no -o configuration file"
        if name in PEERS:
            assert args.radio_station_target, f"{name} gives no -r RadioStation target"
    argv = command(compose, INIT)
    assert argv[0] in (INIT_SCRIPT, f"./{INIT_SCRIPT}"), f"{INIT} runs {argv[0]}"
    script = ROOT / argv[0]
    assert script.is_file() and os.access(script, os.X_OK), f"{INIT}: {argv[0]} not runnable"
    assert parsed_args(compose, INIT).peer, f"{INIT} lists no --peer"


def test_configs_load_through_load_config(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    for name in LOOPCHAIN_SERVICES:
        config, path = service_config(compose, name, dockerfile)
        assert path.is_relative_to(DEPLOY), f"{name} reads {path}, not a file of deploy/"
        assert config.IP_LOCAL == "0.0.0.0", f"{name} must bind every interface"
        assert config.LOOPCHAIN_HOST == name, f"{name} advertises {config.LOOPCHAIN_HOST}"


def test_published_ports_follow_the_rest_rule(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    expected = {RS: 7102, **PEERS}
    for name in LOOPCHAIN_SERVICES:
        args = parsed_args(compose, name)
        config, _ = service_config(compose, name, dockerfile)
        port = service_port(args, config, PurePosixPath(command(compose, name)[0]).name)
        assert port == expected[name], f"{name} listens on {port}"
        assert config.PORT_DIFF_REST_SERVICE_CONTAINER == REST_DIFF
        rest = port + REST_DIFF
        ports = published(compose, name)
        assert set(ports) == {port, rest}, f"{name} publishes {sorted(ports)}"
        assert all(host == inside for inside, host in ports.items()), f"{name}: {ports}"


def test_peers_register_with_the_radiostation_service(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    rs_args = parsed_args(compose, RS)
    rs_config, _ = service_config(compose, RS, dockerfile)
    rs_port = service_port(rs_args, rs_config, "radiostation.py")
    for name in PEERS:
        args = parsed_args(compose, name)
        config, _ = service_config(compose, name, dockerfile)
        targets = radiostation_targets(
            args.radio_station_target, config.IP_RADIOSTATION, int(config.PORT_RADIOSTATION)
        )
        assert targets == (f"{RS}:{rs_port}",), f"{name} registers at {targets}"
        assert RS in service(compose, name).get("depends_on", {}), f"{name} must depend on {RS}"


def test_state_lives_on_a_named_volume_per_service(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    declared = set(compose.get("volumes") or {})
    used: list[str] = []
    for name in LOOPCHAIN_SERVICES:
        config, _ = service_config(compose, name, dockerfile)
        storage = PurePosixPath(config.DEFAULT_STORAGE_PATH)
        assert storage.is_absolute(), f"{name}: DEFAULT_STORAGE_PATH must be absolute"
        mounts = [str(v).split(":") for v in service(compose, name).get("volumes", [])]
        holding = [src for src, target, *_ in mounts if storage.is_relative_to(target)]
        assert len(holding) == 1, f"{name}: {storage} is on no (or several) volume mounts"
        assert holding[0] in declared, f"{name}: {holding[0]} is not a named volume"
        used.append(holding[0])
    assert len(set(used)) == len(used), f"services share a storage volume: {used}"


def fluentd_forward_port() -> int:
    """The port of the forward-protocol <source> in the fluentd configuration."""
    text = FLUENT_CONF.read_text(encoding="utf-8")
    for block in re.findall(r"<source>(.*?)</source>", text, re.S):
        if re.search(r"@type\s+forward\b", block):
            match = re.search(r"^\s*port\s+(\d+)\s*$", block, re.M)
            assert match, "the forward <source> names no port"
            return int(match.group(1))
    raise AssertionError(f"{FLUENT_CONF} has no forward <source>")


def test_every_node_ships_logs_to_the_collector(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    assert fluentd_forward_port() == COLLECTOR_PORT
    assert COLLECTOR_PORT in published(compose, COLLECTOR)
    mounts = [str(v).split(":")[:2] for v in service(compose, COLLECTOR).get("volumes", [])]
    conf_sources = [src for src, target in mounts if target == "/fluentd/etc/fluent.conf"]
    assert [(COMPOSE.parent / s).resolve() for s in conf_sources] == [FLUENT_CONF]
    for name in LOOPCHAIN_SERVICES:  # the peers' REST proxies and SCORE processes follow them
        config, _ = service_config(compose, name, dockerfile)
        assert config.MONITOR_LOG is True, f"{name}: MONITOR_LOG is off"
        assert config.MONITOR_LOG_HOST == COLLECTOR, f"{name} ships to {config.MONITOR_LOG_HOST}"
        assert config.MONITOR_LOG_PORT == COLLECTOR_PORT
        assert COLLECTOR in service(compose, name).get("depends_on", {}), f"{name}: no {COLLECTOR}"


def test_log_parser_reads_the_time_fluentd_writes() -> None:
    """fluent.conf injects `time` in its time_format; tools/log_parser.py must parse it."""
    text = FLUENT_CONF.read_text(encoding="utf-8")
    assert re.search(r"^\s*tag_key\s+tag\s*$", text, re.M), "fluent.conf injects no tag"
    assert re.search(r"^\s*time_key\s+time\s*$", text, re.M), "fluent.conf injects no time"
    match = re.search(r"^\s*time_format\s+(\S+)\s*$", text, re.M)
    assert match, "fluent.conf gives no time_format"
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=datetime.UTC)
    written = when.strftime(match.group(1).replace("%L", f"{when.microsecond // 1000:03d}"))
    assert log_parser.parse_time(written) == when.timestamp(), written


def test_radiostation_runs_in_listed_mode_on_the_file_listed_channels_writes(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    config, _ = service_config(compose, RS, dockerfile)
    assert config.ENABLE_CHANNEL_AUTH is True, "the RadioStation must run in listed mode"
    written = on_volume(compose, INIT, parsed_args(compose, INIT).out)
    read = on_volume(compose, RS, config.CHANNEL_MANAGE_DATA_PATH)
    assert read == written, f"{INIT} writes {written}, the RadioStation reads {read}"
    for name in (RS, *PEERS):
        condition = service(compose, name).get("depends_on", {}).get(INIT, {}).get("condition")
        assert condition == "service_completed_successfully", f"{name} does not wait for {INIT}"


def test_listed_channels_lists_every_peer_at_its_registered_target(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    listed = [target for target, _ in init_peers(compose)]
    expected = [registered_target(compose, name, dockerfile) for name in PEERS]
    assert sorted(listed) == sorted(expected), f"{INIT} lists {listed}, the peers are {expected}"


def test_listed_channels_makes_each_key_where_its_peer_looks_for_it(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    keys = dict(init_peers(compose))
    for name in PEERS:
        made = on_volume(compose, INIT, keys[registered_target(compose, name, dockerfile)])
        opened = peer_key_location(compose, name, dockerfile)
        assert made == opened, f"{INIT} makes {name}'s key at {made}, {name} opens {opened}"


def test_key_password_reaches_listed_channels_and_every_peer(compose: dict[str, Any]) -> None:
    value = environment(compose, INIT).get(KEY_PASSWORD_ENV)
    assert value is not None, f"{INIT} does not pass ${KEY_PASSWORD_ENV}"
    # taken from the shell or deploy/.env; unset means no password (an unencrypted local network)
    assert re.fullmatch(rf"\$\{{{KEY_PASSWORD_ENV}:-\}}", value), value
    for name in PEERS:
        assert environment(compose, name).get(KEY_PASSWORD_ENV) == value, f"{name}: no password"
    assert KEY_PASSWORD_ENV not in environment(compose, RS), (
        "the RadioStation needs no key password"
    )


def test_the_key_password_file_stays_out_of_the_image(dockerfile: list[Instruction]) -> None:
    ignored = DOCKERIGNORE.read_text(encoding="utf-8").split()
    assert "deploy/.env" in ignored, "deploy/.env would be sent to the builder"
    source_stage = dockerfile[
        : [i for i, ins in enumerate(dockerfile) if ins.keyword == "FROM"][-1]
    ]
    removed = [ins.args for ins in source_stage if ins.keyword == "RUN"]
    assert any("deploy/.env" in shlex.split(run) for run in removed), (
        "deploy/.env reaches the image"
    )


def test_every_volume_is_writable_by_the_image_user(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    stage = final_stage(dockerfile)
    users = [ins.args for ins in stage if ins.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    owned = user_owned_dirs(stage).get(users[-1], set())
    for name in (*LOOPCHAIN_SERVICES, INIT):
        assert "user" not in service(compose, name), f"{name} overrides the image's user"
        for source, target in mounts(compose, name):
            # an empty named volume takes the owner of the directory it is mounted over
            assert str(target) in owned, f"{name}: {target} ({source}) is not made for the user"


def test_listed_channels_writes_a_channel_file_the_radiostation_accepts(
    compose: dict[str, Any],
    dockerfile: list[Instruction],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The init step's own command line, run against temporary directories as its volumes."""
    monkeypatch.delenv(KEY_PASSWORD_ENV, raising=False)
    argv = init_argv_on_host(compose, tmp_path)
    assert listed_channels_main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.split()

    ids = {}
    for name in PEERS:
        volume, inside = peer_key_location(compose, name, dockerfile)
        key = open_key_file(tmp_path / volume / inside)  # where the peer will look for it
        assert not key.created and not key_file_is_encrypted(key.path)
        ids[name] = key.signer.address
    targets = {name: registered_target(compose, name, dockerfile) for name in PEERS}
    assert pairs(printed) == {(targets[name], ids[name]) for name in PEERS}

    config, _ = service_config(compose, RS, dockerfile)
    volume, inside = on_volume(compose, RS, config.CHANNEL_MANAGE_DATA_PATH)
    rs_volume, rs_inside = on_volume(compose, RS, config.DEFAULT_STORAGE_PATH)
    config = config.replace(
        CHANNEL_MANAGE_DATA_PATH=str(tmp_path / volume / inside),
        DEFAULT_STORAGE_PATH=str(tmp_path / rs_volume / rs_inside),
    )
    channels = load_channels(
        Path(config.CHANNEL_MANAGE_DATA_PATH),
        config.LOOPCHAIN_DEFAULT_CHANNEL,
        config.DEFAULT_SCORE_PACKAGE,
    )
    for name in PEERS:
        peer_config, _ = service_config(compose, name, dockerfile)
        assert peer_config.LOOPCHAIN_DEFAULT_CHANNEL in channels, f"{name}'s channel is not served"
    for spec in channels.values():
        assert spec.members is not None and not spec.unlisted()
        assert {m.peer_id for m in spec.members} == set(ids.values())
        for name in PEERS:
            assert spec.admits(ids[name], targets[name], channel_auth=True), name
            assert not spec.admits("hx" + "0" * 40, targets[name], channel_auth=True)
    create_station(config)  # the RadioStation starts on it in listed mode (StartupError if not)
    assert storage_dir(config).is_dir()

    # every `up` runs the step again: the keys, hence the ids, are kept
    assert listed_channels_main(argv) == 0
    assert capsys.readouterr().out.split() == printed


def test_listed_channels_encrypts_new_keys_with_the_password(
    compose: dict[str, Any],
    dockerfile: list[Instruction],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_PASSWORD_ENV, "correct horse")
    assert listed_channels_main(init_argv_on_host(compose, tmp_path)) == 0
    printed = capsys.readouterr().out.split()
    for name in PEERS:
        volume, inside = peer_key_location(compose, name, dockerfile)
        path = tmp_path / volume / inside
        assert key_file_is_encrypted(path), f"{name}'s key is not encrypted"
        address = open_key_file(path, "correct horse").signer.address
        assert (registered_target(compose, name, dockerfile), address) in pairs(printed)


def test_healthchecks_probe_each_services_rest_port(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    for name in LOOPCHAIN_SERVICES:
        config, _ = service_config(compose, name, dockerfile)
        script = PurePosixPath(command(compose, name)[0]).name
        rest = service_port(parsed_args(compose, name), config, script) + REST_DIFF
        probe = " ".join(service(compose, name)["healthcheck"]["test"])
        assert f"http://127.0.0.1:{rest}/api/v1/" in probe, f"{name} probes {probe}"
    for name in PEERS:
        depends = service(compose, name)["depends_on"]
        assert depends[RS]["condition"] == "service_healthy"


def test_dockerfile_builds_the_repository_with_setup_sh(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    assert all(
        ins.args.startswith("python:3.11-slim") for ins in dockerfile if ins.keyword == "FROM"
    )
    copied: list[str] = []
    for sources, _ in context_copies(dockerfile):
        for source in sources:
            matches = glob.glob(str(ROOT / source))
            assert matches, f"COPY source {source} does not exist in the repository"
            copied.append(source.rstrip("/"))
    assert "requirements.txt" in copied, "the runtime lock is not installed in its own layer"
    assert "." in copied, "the repository itself is not copied"
    whole_repo = [ins for ins in stage if ins.keyword == "COPY" and "from" in ins.flags]
    assert whole_repo and shlex.split(whole_repo[-1].args)[-1] in ("./", ".", workdir(stage))
    runs = [ins.args for ins in stage if ins.keyword == "RUN"]
    for run in runs:
        for script in re.findall(r"\./([\w.-]+\.sh)\b", run):
            assert os.access(ROOT / script, os.X_OK), f"RUN uses missing or non-executable {script}"
    assert any(re.search(r"(^|&&\s*)\./setup\.sh --runtime\b", run) for run in runs), (
        "no RUN ./setup.sh --runtime"
    )
    # the image installs the runtime lock only, with its hashes checked
    assert not any("requirements-dev" in run for run in runs), runs
    assert any("--require-hashes -r requirements.txt" in run for run in runs), runs
    cmd = [ins for ins in stage if ins.keyword == "CMD"]
    assert cmd, "the image needs a default command (the usage)"
    usage = " ".join(json.loads(cmd[-1].args))
    assert "-h" in usage and all(s in usage for s in ("radiostation.py", "peer.py")), usage


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("`docker compose version` does not work here (no docker CLI or compose plugin)")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ scripts run by another python


def _other_python() -> tuple[str, dict[str, str]] | None:
    """A python3 found on SYSTEM_PATH that is not this repository's venv (and its clean
    environment), or None when there is none."""
    python = shutil.which("python3", path=SYSTEM_PATH)
    env = {"PATH": SYSTEM_PATH, "HOME": str(ROOT)}
    if python is None:
        return None
    probe = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if probe.returncode != 0:
        return None
    if Path(probe.stdout.strip()).resolve() == (ROOT / ".venv").resolve():
        return None
    return python, env


def _shebang_tools() -> set[Path]:
    """The scripts of tools/ (a shebang line: meant to be run as files)."""
    return {
        path
        for path in (ROOT / "tools").glob("*.py")
        if path.read_text(encoding="utf-8").startswith("#!")
    }


def _readme_scripts() -> set[Path]:
    """The root scripts and the tools/<name>.py scripts the READMEs tell to run."""
    named: set[Path] = set()
    for readme in (ROOT / "README.md", DEPLOY / "README.md"):
        text = readme.read_text(encoding="utf-8")
        named.update(ROOT / "tools" / f"{m}.py" for m in re.findall(r"tools/(\w+)\.py", text))
        named.update(
            ROOT / f"{m}.py" for m in re.findall(r"\b(peer|radiostation|rest_proxy)\.py", text)
        )
    return {path for path in named if path.is_file() and path.read_text().startswith("#!")}


def test_every_tool_script_is_executable() -> None:
    tools = _shebang_tools()
    assert ROOT / "tools" / "bench.py" in tools
    for path in tools | _readme_scripts():
        assert os.access(path, os.X_OK), f"{path.relative_to(ROOT)} has a shebang but no exec bit"


def test_scripts_run_by_a_python_outside_the_venv(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    """Each compose command's script and each script the READMEs name runs `--help` with a python
    that is not the venv's (the image's own, a host's): as a file through its shebang on a PATH
    without the venv, and by that python in isolated mode."""
    found = _other_python()
    if found is None:
        pytest.skip(f"no python3 outside the repository's venv on {SYSTEM_PATH}")
    python, env = found
    stage = final_stage(dockerfile)
    scripts = {repo_path(command(compose, name)[0], stage) for name in (*LOOPCHAIN_SERVICES, INIT)}
    assert ROOT / INIT_SCRIPT in scripts
    scripts |= _readme_scripts() | _shebang_tools()
    failures = []
    for script in sorted(scripts):
        for argv in ([str(script), "--help"], [python, "-I", str(script), "--help"]):
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=120, env=env, cwd="/"
            )
            if done.returncode != 0 or "usage:" not in done.stdout.lower():
                failures.append(f"{shlex.join(argv)}: exit {done.returncode}: {done.stderr[-400:]}")
    assert not failures, "\n".join(failures)


def test_the_switch_into_the_venv_keeps_the_command_line_as_given(tmp_path: Path) -> None:
    """A python outside the venv is switched into it with its command line as given: `-m`, a
    path relative to another folder, interpreter flags; -S, which would leave out the venv's
    packages, dropped (review)."""
    found = _other_python()
    if found is None:
        pytest.skip(f"no python3 outside the repository's venv on {SYSTEM_PATH}")
    python, env = found
    runs = [
        ([python, "-m", "tools.gtool", "--help"], ROOT, env),
        ([python, "tools/../tools/log_parser.py", "--help"], ROOT, env),
        ([python, "-S", str(ROOT / "tools" / "log_parser.py"), "--help"], Path("/"), env),
        ([python, "-I", "-O", str(ROOT / "peer.py"), "--help"], Path("/"), env),
        ([python, str(ROOT / "tools" / "gtool.py"), "--help"], tmp_path, env),
    ]
    failures = []
    for argv, cwd, environ in runs:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=environ, cwd=cwd
        )
        if done.returncode != 0 or "usage:" not in done.stdout.lower():
            failures.append(
                f"{shlex.join(argv)} in {cwd}: exit {done.returncode}: {done.stderr[-400:]}"
            )
    assert not failures, "\n".join(failures)


def test_the_image_puts_its_venv_first_on_path(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    assert f"{workdir(stage)}/.venv/bin" == IMAGE_VENV_BIN
    paths = []
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                if key == "PATH":
                    paths.append(value)
    assert paths, "the image sets no PATH: `python3` there is the image's, without dependencies"
    assert paths[-1].split(":")[0] == IMAGE_VENV_BIN, paths[-1]
    assert "$PATH" in paths[-1].split(":") or "${PATH}" in paths[-1].split(":"), paths[-1]


def test_long_running_services_restart_unless_stopped(compose: dict[str, Any]) -> None:
    for name in RESTARTED:
        policy = service(compose, name).get("restart")
        assert policy == "unless-stopped", f"{name}: restart {policy!r}"
    # the one-shot step must exit for good: the others wait for its successful completion
    assert service(compose, INIT).get("restart") in (None, "no"), service(compose, INIT)


def test_the_collector_writes_only_the_nodes_tags_within_bounds() -> None:
    """A tag names the file it is written to and its sender chooses it ("../../x" wrote outside
    the log folder with the fluentd pinned here; every new tag a file and a buffer chunk): only
    the nodes' eight tags are written, the rest dropped; messages and the buffer are bounded."""
    text = FLUENT_CONF.read_text(encoding="utf-8")
    matches = re.findall(r"^<match\s+([^>]+)>", text, re.M)
    kinds = "{radiostation,peer,rest_proxy,score}"
    assert matches == [f"loopchain.{kinds} loopchain.{kinds}.event", "**"], matches
    last = text[text.rindex("<match **>") :]
    assert re.search(r"^\s*@type\s+null\s*$", last, re.M), "other tags are not dropped"
    assert re.search(r"^\s*chunk_size_limit\s+\S+", text, re.M), "messages are not bounded"
    assert re.search(r"^\s*total_limit_size\s+\S+", text, re.M), "the buffer is not bounded"


def test_every_service_bounds_the_output_docker_keeps(compose: dict[str, Any]) -> None:
    """Docker's default json-file driver keeps a service's output for good, and strangers'
    refused requests are logged (at a bounded rate) for as long as they come (log review)."""
    for name in (*RESTARTED, INIT):
        logging = service(compose, name).get("logging") or {}
        options = logging.get("options") or {}
        assert logging.get("driver") == "json-file", (name, logging)
        assert options.get("max-size") and int(options.get("max-file", 0)) >= 1, (name, logging)
