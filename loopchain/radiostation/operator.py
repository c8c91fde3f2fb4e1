"""The operator's credential: a random bearer token in a file only its owner may read.

At its first start the RadioStation writes the token (32 random bytes, URL-safe base64) to
RADIOSTATION_ADMIN_TOKEN_PATH, by default {DEFAULT_STORAGE_PATH}/radiostation_{port}/admin_token:
under a temporary name with mode 0600, synced, then linked into place, never over an existing file
(durable.write_atomic; the temporary files of writers killed midway are swept from its folder
whenever the token is opened). Later starts read it and refuse to start while group or others have
any access to it. An operator may put a token of their own in the file (32 to 256 characters of
A-Z a-z 0-9 - . _ ~ + / =).

Every state-changing REST call carries `Authorization: Bearer <token>`; the token is compared in
constant time and never logged or served.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from loopchain.durable import sweep_leftovers, write_atomic

TOKEN_FILE = "admin_token"
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32
MAX_TOKEN_CHARS = 256
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_SECRET_MODE = 0o600


class TokenFileError(Exception):
    """The token file cannot be created or is unsafe to use; the message names it and says why."""


class MissingCredential(Exception):
    """A write without `Authorization: Bearer <token>` (answered 401)."""


class WrongCredential(Exception):
    """A write with a bearer token that is not the operator's (answered 403)."""


@dataclass(frozen=True)
class OperatorToken:
    """The operator's token and the file it lives in (its repr never shows the token)."""

    path: Path
    secret: bytes = field(repr=False)

    def check(self, authorization: str | None) -> None:
        """Accept `Bearer <token>`; MissingCredential or WrongCredential otherwise."""
        scheme, _, candidate = (authorization or "").strip().partition(" ")
        candidate = candidate.strip()
        if scheme.lower() != "bearer" or not candidate:
            raise MissingCredential("send the operator token as 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(candidate.encode("utf-8", "replace"), self.secret):
            raise WrongCredential("the bearer token is not the operator token")


def token_path(configured: str, storage: Path) -> Path:
    """The token file: RADIOSTATION_ADMIN_TOKEN_PATH, or admin_token in the storage directory."""
    return Path(configured) if configured else storage / TOKEN_FILE


def load_or_create_token(path: Path) -> tuple[OperatorToken, bool]:
    """The token at `path` (created when missing) and whether it was created now."""
    sweep_leftovers(path.parent)
    try:
        return _load(path), False
    except FileNotFoundError:
        pass
    try:
        created = _create(path)
    except FileExistsError:  # another process created it first: use that one
        return _load(path), False
    except OSError as exc:
        raise TokenFileError(f"cannot create the operator token file {path}: {exc}") from None
    return created, True


def _load(path: Path) -> OperatorToken:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"the operator token file {path} is not a regular file")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise TokenFileError(
                f"the operator token file {path} is open to group or others (mode {mode:04o}); "
                f"make it private with: chmod 600 {path}"
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TokenFileError(f"cannot read the operator token file {path}: {exc}") from None
    return OperatorToken(path, _parse(path, raw))


def is_token_text(text: str) -> bool:
    """Whether `text` has the characters an operator token may hold (RFC 6750's b64token)."""
    return bool(_TOKEN.fullmatch(text))


def _parse(path: Path, raw: bytes) -> bytes:
    token = raw.strip()
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise TokenFileError(
            f"the operator token in {path} must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} "
            f"characters, it has {len(token)}; delete the file to have a new one made"
        )
    if not is_token_text(token.decode("ascii", "replace")):
        raise TokenFileError(
            f"the operator token in {path} may only hold A-Z a-z 0-9 - . _ ~ + / and a trailing ="
        )
    return token


def _create(path: Path) -> OperatorToken:
    """Write a new token under a temporary name (0600, synced) and link it into place."""
    token = secrets.token_urlsafe(TOKEN_BYTES).encode("ascii")
    # FileExistsError when another process was first: a token is never replaced
    write_atomic(path, token + b"\n", _SECRET_MODE, overwrite=False)
    return OperatorToken(path, token)
