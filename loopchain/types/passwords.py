"""Where the password of a private key comes from: an environment variable, a file only its owner
can open, or a prompt on a terminal; never a command line, which every user of the machine can read
(`ps`, /proc/<pid>/cmdline).

Key files and password files are refused when their mode lets group or others in (as ssh refuses
a private key that is "too open").
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

KEY_PASSWORD_ENV = "LOOPCHAIN_KEY_PASSWORD"  # the peer's signing key (peer_key, --private)
OWNER_ONLY = 0o600
_GROUP_OTHERS = 0o077
MAX_PASSWORD_FILE_BYTES = 4096


class PasswordError(ValueError):
    """A password source that cannot be used (missing, empty or readable by others)."""


def access_problem(path: Path, what: str) -> str | None:
    """Why `path` is too open to hold a secret (group or others may access it), or None."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & _GROUP_OTHERS:
        return (
            f"{what} {path} has mode {mode:04o}: group or others can access it; "
            f"run `chmod 600 {path}`"
        )
    return None


def read_private_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of `what` (a password file, a key file) at `path`; PasswordError when it is
    missing or unreadable, open to group or others, or longer than `limit` bytes."""
    try:
        problem = access_problem(path, what)
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise PasswordError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if problem is not None:
        raise PasswordError(problem)
    if len(data) > limit:
        raise PasswordError(f"{what} {path} is longer than {limit} bytes")
    return data


def read_password_file(path: str | Path) -> str:
    """The password in the file at `path` (its first line); PasswordError when the file is
    missing, empty, too big or open to group or others."""
    path = Path(path)
    data = read_private_file(path, "password file", MAX_PASSWORD_FILE_BYTES)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise PasswordError(f"password file {path} is not UTF-8 text") from None
    password = lines[0] if lines else ""
    if not password:
        raise PasswordError(f"password file {path} is empty")
    return password


def argv_warning(flag: str, env: str, file_flag: str) -> str:
    """The warning printed when a password was given on the command line with `flag`."""
    return (
        f"a password on the command line ({flag}) is visible to every user of this machine "
        f"(ps, /proc/<pid>/cmdline); give it in ${env} or with {file_flag} FILE (mode 0600) instead"
    )


def choose_password(
    *,
    file: str | Path | None,
    argv_value: str | None,
    env: str,
    warn: Callable[[str], None],
    argv_flag: str,
    file_flag: str,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The first password given: the file, the command-line value (with a warning), the variable.

    None when none is given (an empty variable or command-line value counts as none).
    """
    if file:
        return read_password_file(file)
    if argv_value:
        warn(argv_warning(argv_flag, env, file_flag))
        return argv_value
    value = (os.environ if environ is None else environ).get(env, "")
    return value or None


def can_prompt() -> bool:
    """True when a person may be asked: stdin is a terminal."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # a closed or odd stdin
        return False


def prompt_password(prompt: str, *, confirm: bool = False) -> str | None:
    """A password typed on the terminal without echo (None when stdin is no terminal or the answer
    is empty); with `confirm` it is asked twice and PasswordError raised when the two differ."""
    if not can_prompt():
        return None
    first = getpass.getpass(f"{prompt}: ")
    if not first:
        return None
    if confirm and getpass.getpass("the same password again: ") != first:
        raise PasswordError("the two passwords differ")
    return first
