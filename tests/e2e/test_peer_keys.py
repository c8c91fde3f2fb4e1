"""The real peer.py and its key: created encrypted with a password from the environment or a file,
refused with one clear line when the password is missing or wrong or a file is open to others,
older hex keys and password-less development keys still working with a warning; and, on a running
network, no child of the peer (REST proxy, SCORE) inherits the password."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from loopchain.types.passwords import KEY_PASSWORD_ENV
from tests._tty import run_on_tty
from tools.procs import (
    ROOT,
    LocalNetwork,
    Proc,
    assert_clean_log,
    child_pids,
    free_port_pair,
    wait_until,
)

PASSWORD = "peer-key-pw-31f0"
PEER_ID = re.compile(r"peer id (hx[0-9a-f]{40})")
EXIT_DEADLINE = 60.0


class Peer:
    """peer.py with a chosen environment and arguments, stdin not a terminal, no RadioStation."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port_pair()
        self.config = tmp_path / "conf.json"
        self.config.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(tmp_path / "storage")}))
        self.key_path = tmp_path / "storage" / f"peer_{self.port}" / "peer_key"
        self.runs = 0

    def _proc(self, args: list[str], env: dict[str, str]) -> Proc:
        """The peer's next run (stdin /dev/null: never a terminal), not started yet."""
        self.runs += 1
        rs = f"127.0.0.1:{free_port_pair()}"  # nobody listens: the peer waits after its key
        command = ["peer.py", "-p", str(self.port), "-r", rs, "-o", str(self.config), "--no-rest"]
        return Proc(f"peer_{self.runs}", [*command, *args], self.tmp_path, env=_base_env() | env)

    def refused(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run the peer, which must exit 1 at once; its log."""
        proc = self._proc(list(args), env or {})
        assert proc.run(EXIT_DEADLINE) == 1, proc.log_text()
        text = proc.log_text()
        assert "cannot start: " in text, text
        assert_clean_log(text, proc.name)
        return text

    def runs_as(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
        """Run the peer until it has loaded its key, then stop it; (peer id, its log)."""
        proc = self._proc(list(args), env or {}).start()
        try:
            found = wait_until(
                lambda: PEER_ID.search(proc.log_text()) or not proc.alive,
                EXIT_DEADLINE,
                "the peer's id in its log",
            )
            assert proc.alive, proc.log_text()
            assert proc.stop(EXIT_DEADLINE) == 0, proc.log_text()
        finally:
            if proc.alive:
                proc.kill9()
        text = proc.log_text()
        assert PASSWORD not in text, text
        assert_clean_log(text, proc.name)
        assert isinstance(found, re.Match)
        return found.group(1), text


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != KEY_PASSWORD_ENV}


def _private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_peer_key_is_created_encrypted_and_opened_only_with_its_password(
    tmp_path: Path,
) -> None:
    peer = Peer(tmp_path)
    # 1. first start with the password in the environment: an encrypted PKCS#8 key, mode 0600
    peer_id, text = peer.runs_as(env={KEY_PASSWORD_ENV: PASSWORD})
    raw = peer.key_path.read_bytes()
    assert raw.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert peer.key_path.stat().st_mode & 0o777 == 0o600
    assert Signer(pki.signing_secret_from_pem(raw, PASSWORD)).address == peer_id
    assert "UNENCRYPTED" not in text
    # 2. no password (and no terminal to ask on), a wrong one: refused, naming the key file
    text = peer.refused()
    assert (
        f"key file {peer.key_path} is encrypted: give its password in ${KEY_PASSWORD_ENV}" in text
    )
    assert "wrong password" in peer.refused(env={KEY_PASSWORD_ENV: "not it"})
    # 3. the password in a file of mode 0600; a file others may read is refused
    password_file = _private_file(tmp_path / "key_password", PASSWORD + "\n")
    assert peer.runs_as("--key-password-file", str(password_file))[0] == peer_id
    password_file.chmod(0o644)
    text = peer.refused("--key-password-file", str(password_file))
    assert f"password file {password_file} has mode 0644" in text
    # 4. -a still works, with a warning that the process list shows it
    same, text = peer.runs_as("-a", PASSWORD)
    assert same == peer_id and "is visible to every user of this machine" in text
    # 5. a key file others may read is refused, whatever the password
    peer.key_path.chmod(0o644)
    text = peer.refused(env={KEY_PASSWORD_ENV: PASSWORD})
    assert f"key file {peer.key_path} has mode 0644" in text and "chmod 600" in text


def test_without_a_password_the_key_is_kept_unencrypted_with_a_loud_warning(
    tmp_path: Path,
) -> None:
    peer = Peer(tmp_path)
    peer_id, text = peer.runs_as()
    assert "created UNENCRYPTED (no password given)" in text
    assert Signer(bytes.fromhex(peer.key_path.read_text())).address == peer_id
    # an older hex key keeps loading; a password given later does not change the file
    assert peer.runs_as()[0] == peer_id
    same, text = peer.runs_as(env={KEY_PASSWORD_ENV: PASSWORD})
    assert same == peer_id and "is an older unencrypted hex file" in text
    assert Signer(bytes.fromhex(peer.key_path.read_text())).address == peer_id


def test_a_key_made_beside_the_keys_of_other_ports_names_them(tmp_path: Path) -> None:
    """A peer started on another port than before makes a new key: a new peer, which no channel
    lists (the RadioStation refuses it as not listed), and nothing said why (operator review)."""
    peer = Peer(tmp_path)
    first_id, text = peer.runs_as()
    assert "on other ports" not in text
    first_key = peer.key_path
    peer.port = free_port_pair()
    peer.key_path = tmp_path / "storage" / f"peer_{peer.port}" / "peer_key"
    new_id, text = peer.runs_as()
    assert new_id != first_id
    assert (
        f"peer key {peer.key_path} was created now: this peer is a new one (peer id {new_id}). "
        "If it ran before on another port, it was another peer" in text
    )
    assert f"on other ports keep their keys in {first_key}; to go on as one of them" in text
    # with that key given, it is the first peer again, and nothing more is said
    same, text = peer.runs_as("--private", str(first_key))
    assert same == first_id and "on other ports" not in text


def test_on_a_terminal_the_peer_asks_for_the_password_of_its_encrypted_key(
    tmp_path: Path,
) -> None:
    peer = Peer(tmp_path)
    peer_id, _ = peer.runs_as(env={KEY_PASSWORD_ENV: PASSWORD})
    rs = f"127.0.0.1:{free_port_pair()}"
    argv = [sys.executable, "peer.py", "-p", str(peer.port), "-r", rs, "-o", str(peer.config)]
    prompt = f"password of the peer key {peer.key_path}"
    done = run_on_tty(
        [*argv, "--no-rest"],
        [(prompt, PASSWORD)],
        env=_base_env(),
        cwd=str(ROOT),
        stop_when="waiting for RadioStation",
    )
    assert done.exit_code == 0, done.output
    assert f"peer id {peer_id}" in done.output and PASSWORD not in done.output
    wrong = run_on_tty([*argv, "--no-rest"], [(prompt, "nope")], env=_base_env(), cwd=str(ROOT))
    assert wrong.exit_code == 1 and "cannot start: " in wrong.output
    assert "wrong password" in wrong.output
    assert_clean_log(wrong.output, "peer.py on a terminal")


@pytest.fixture
def network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalNetwork:
    monkeypatch.setenv(KEY_PASSWORD_ENV, PASSWORD)  # every process of this network starts with it
    return LocalNetwork(tmp_path)


def test_no_child_of_a_running_peer_inherits_its_key_password(network: LocalNetwork) -> None:
    try:
        network.start_radiostation()
        port = network.start_peer()
        peer_dir = network.workdir / "storage" / f"peer_{port}"
        assert (peer_dir / "peer_key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
        peer_pid = network.peers[port].popen.pid  # type: ignore[union-attr]
        children = wait_until(lambda: _children(peer_pid), 40, "the REST proxy and SCORE")
        assert len(children) == 2, children  # the REST proxy and the channel's SCORE
        for pid, command in children.items():
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert PASSWORD.encode() not in environ, command
            assert KEY_PASSWORD_ENV.encode() not in environ, command
            if "loopchain.scoreservice.process" in command:
                score_cwd = peer_dir / "loopchain_default" / "score_cwd"
                assert os.readlink(f"/proc/{pid}/cwd") == str(score_cwd)
    finally:
        network.stop_and_check()


def _children(parent: int) -> dict[int, str] | None:
    """Command lines of the live children of `parent` once there are at least two."""
    found = child_pids(parent)
    return found if len(found) >= 2 else None
