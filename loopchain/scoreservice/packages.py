"""Finding, unpacking and importing SCORE packages.

A package named "<org>/<package>" is looked for under the SCORE repository, in this order:

1. the folder `repository/<org>/<package>`: used in place, or, when it is a git repository,
   checked out at the configured branch into the work directory;
2. the zip `repository/<org>_<package>.zip`: extracted into the work directory;
3. the git repository `repository/<org>_<package>` (with a working tree or bare): checked out at
   the configured branch into the work directory.

"develop/<package>" folders are loaded as they are, and only when allowed. The user's repository
is only ever read: nothing is deleted, rewritten or added there (`__pycache__` included). Unpacked
copies are content-addressed (zip digest, commit hash) and reused; they appear atomically. What an
unpack killed midway leaves (`.unpack-<pid>-<random>` beside the copies) is removed the next time
that package is resolved, once its maker is provably gone (owned_dir.py).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from loopchain.blockchain.score_base import ScoreBase
from loopchain.durable import sync_directory, sync_tree
from loopchain.scoreservice.owned_dir import OwnedDir, sweep_owned_dirs
from loopchain.storage.abc import StorageError
from loopchain.types import package_name
from loopchain.types.package_name import is_package_name

GIT_TIMEOUT_SECONDS = 30.0
MAX_PACKAGE_BYTES = 64 * 1024 * 1024  # unpacked size of a zip or git package
MAX_PACKAGE_FILES = 10_000
MAX_PACKAGE_JSON_BYTES = 1024 * 1024
DEVELOP_ORG = "develop"
UNPACK_PREFIX = ".unpack-"  # folders unpacking is done in, beside the unpacked copies

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUIRED_FIELDS = ("id", "version", "main")
_OPTIONAL_FIELDS: dict[str, type] = {"auth": dict, "description": str, "function": dict}
_JSON_NAMES: dict[type, str] = {dict: "object", str: "string"}
_module_numbers = itertools.count()


class PackageError(Exception):
    """A SCORE package that cannot be found, unpacked, validated or imported; says what and where."""


class PackageUnreadable(StorageError):
    """This machine cannot read the package's own files now (a permission, an I/O error): not
    the package's fault, so no "not loaded" (9100) results only this peer would record; the SCORE
    process ends and is started again after a backoff, as on a state store failure. Before, it
    stayed "not loaded" until its peer was started again."""


@dataclass(frozen=True)
class ScorePackage:
    """A resolved package: its folder (ready to import) and its parsed package.json."""

    id: str
    version: str
    all_versions: tuple[str, ...]
    path: Path
    main: str
    info: dict[str, Any]
    settings: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # the channel's, over package.json


def resolve_package(
    repository: Path, name: str, *, branch: str, allow_develop: bool, work_dir: Path
) -> ScorePackage:
    """Find package `name` ("<org>/<package>") in `repository`, unpacking into `work_dir` if needed."""
    org, package = _split_name(name)
    _check_work_dir(repository, work_dir)
    folder = repository / org / package
    if org == DEVELOP_ORG:
        return _resolve_develop(folder, name, allow_develop)
    if folder.is_dir():
        if _is_git_repository(folder):
            return _resolve_git(folder, branch, work_dir / f"{org}_{package}")
        return _resolve_folder(folder)
    archive = repository / f"{org}_{package}.zip"
    if archive.is_file():
        return _resolve_zip(archive, work_dir / f"{org}_{package}")
    git_folder = repository / f"{org}_{package}"
    if git_folder.is_dir() and _is_git_repository(git_folder):
        return _resolve_git(git_folder, branch, work_dir / f"{org}_{package}")
    raise PackageError(
        f"SCORE package {name!r} not found in {repository}: looked for the folder {folder}, "
        f"the zip {archive} and the git repository {git_folder}"
    )


def load_score_class(package: ScorePackage) -> type[ScoreBase]:
    """Import the package's main module under a unique name and return its `UserScore` class."""
    module = _import_main(package)
    try:
        return _user_score(module, package)
    except PackageError:
        _forget_modules(module.__name__.rpartition(".")[0])
        raise


def _user_score(module: ModuleType, package: ScorePackage) -> type[ScoreBase]:
    user_score = getattr(module, "UserScore", None)
    where = f"{package.main}.py of SCORE package {package.id!r} ({package.path})"
    if user_score is None:
        raise PackageError(f"no UserScore class in {where}")
    if not isinstance(user_score, type) or not issubclass(user_score, ScoreBase):
        raise PackageError(
            f"UserScore does not subclass ScoreBase in {where} "
            "(write `from loopchain.blockchain import ScoreBase` and `class UserScore(ScoreBase)`)"
        )
    return user_score


# -- names and locations -------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    if not is_package_name(name):
        raise PackageError(f"SCORE package name {name[:80]!r} must be {package_name.RULE}")
    org, _, package = name.partition("/")
    return org, package


def _check_work_dir(repository: Path, work_dir: Path) -> None:
    if work_dir.resolve().is_relative_to(repository.resolve()):
        raise PackageError(
            f"the SCORE work directory {work_dir} is inside the SCORE repository {repository}; "
            "packages are never unpacked into the repository"
        )


def _resolve_develop(folder: Path, name: str, allow_develop: bool) -> ScorePackage:
    if not allow_develop:
        raise PackageError(
            f"SCORE package {name!r} is a develop package; set ALLOW_LOAD_SCORE_IN_DEVELOP to load it"
        )
    if not folder.is_dir():
        raise PackageError(f"develop SCORE package {name!r} not found: no folder {folder}")
    return _resolve_folder(folder)


def _resolve_folder(folder: Path) -> ScorePackage:
    info = read_package_json(folder)
    return _package(folder, info, (info["version"],))


def _package(folder: Path, info: dict[str, Any], versions: tuple[str, ...]) -> ScorePackage:
    return ScorePackage(
        id=info["id"],
        version=versions[0],
        all_versions=versions,
        path=folder,
        main=info["main"],
        info=info,
    )


# -- package.json --------------------------------------------------------------------------------


def read_package_json(folder: Path) -> dict[str, Any]:
    """Parse and validate `folder/package.json` and check that its main module exists."""
    path = folder / "package.json"
    if not path.is_file():
        raise PackageError(f"package.json not found in {folder}")
    if path.stat().st_size > MAX_PACKAGE_JSON_BYTES:
        raise PackageError(f"{path} is larger than {MAX_PACKAGE_JSON_BYTES} bytes")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise PackageUnreadable(f"cannot read {path}: {exc}") from None
    if not isinstance(info, dict):
        raise PackageError(f"{path} must hold a JSON object, not {type(info).__name__}")
    _check_fields(info, path)
    _check_main(folder, info["main"], path)
    return info


def _check_fields(info: dict[str, Any], path: Path) -> None:
    for field in _REQUIRED_FIELDS:
        value = info.get(field)
        if not isinstance(value, str) or not value:
            raise PackageError(f"{path}: field {field!r} must be a non-empty string")
    for field, kind in _OPTIONAL_FIELDS.items():
        if field in info and not isinstance(info[field], kind):
            raise PackageError(f"{path}: field {field!r} must be a JSON {_JSON_NAMES[kind]}")


def _check_main(folder: Path, main: str, path: Path) -> None:
    if not _MODULE.fullmatch(main):
        hint = " (without '.py')" if main.endswith(".py") else ""
        raise PackageError(f"{path}: field 'main' must be a Python module name{hint}, not {main!r}")
    if not (folder / f"{main}.py").is_file():
        raise PackageError(f"{path}: main module {main}.py not found in {folder}")


# -- zip -----------------------------------------------------------------------------------------


def _resolve_zip(archive: Path, target_root: Path) -> ScorePackage:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:32]
    folder = _unpack_once(target_root / f"zip-{digest}", lambda tmp: _extract_zip(archive, tmp))
    return _resolve_folder(_package_root(folder, str(archive)))


def _extract_zip(archive: Path, destination: Path) -> None:
    import zipfile  # here: only archives need it, and every peer and SCORE process imports this

    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            _check_sizes(len(members), sum(m.file_size for m in members), archive)
            for member in members:
                _check_member_name(member.filename, archive)
            zipped.extractall(destination)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:  # not OSError: see
        raise PackageError(f"cannot extract {archive}: {exc}") from None  # _unpack_once


def _check_sizes(count: int, total: int, source: Path) -> None:
    if count > MAX_PACKAGE_FILES:
        raise PackageError(f"{source} holds {count} files; at most {MAX_PACKAGE_FILES} are allowed")
    if total > MAX_PACKAGE_BYTES:
        raise PackageError(f"{source} unpacks to {total} bytes; at most {MAX_PACKAGE_BYTES}")


def _check_member_name(name: str, source: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or ":" in name:
        raise PackageError(f"{source} holds an unsafe path {name!r}")


def _package_root(folder: Path, source: str) -> Path:
    """The unpacked folder with package.json: the top level, or its single sub-folder."""
    if (folder / "package.json").is_file():
        return folder
    entries = [entry for entry in folder.iterdir() if entry.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "package.json").is_file():
        return entries[0]
    raise PackageError(
        f"package.json not found in {source}: it must be at the top level or in one top-level folder"
    )


def _unpack_once(target: Path, unpack: Callable[[Path], None]) -> Path:
    """Unpack into a fresh folder inside a folder this process keeps (UNPACK_PREFIX), synced, and
    rename it to `target`, unless `target` exists (a folder of that name is whole: it was synced
    before it was named). What unpacks killed midway left beside it is swept first (owned_dir.py).
    A failure of this machine's disk is a StorageError, not the package's fault: the SCORE process
    ends and loads again later, rather than record "not loaded" results no other peer records."""
    if target.is_dir():
        sweep_owned_dirs(target.parent, UNPACK_PREFIX)  # (OwnedDir.open sweeps when unpacking)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the SCORE work folder {target.parent}: {exc}") from None
    staging = OwnedDir(UNPACK_PREFIX, target.parent)
    try:
        temporary = staging.open() / "package"
        temporary.mkdir(mode=0o700)
        unpack(temporary)
        sync_tree(temporary)
        os.rename(temporary, target)
        sync_directory(target.parent)
    except OSError as exc:
        if not target.is_dir():  # else another loader renamed the same content first
            raise StorageError(f"cannot unpack the SCORE package into {target}: {exc}") from None
    finally:
        staging.close()
    return target


# -- git -----------------------------------------------------------------------------------------


def _is_git_repository(folder: Path) -> bool:
    if (folder / ".git").exists():
        return True
    return (
        (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()
    )


def _resolve_git(repo: Path, branch: str, target_root: Path) -> ScorePackage:
    head = _branch_head(repo, branch)
    history = _git(repo, "rev-list", "--topo-order", head).split()
    folder = _unpack_once(target_root / f"git-{head}", lambda tmp: _extract_commit(repo, head, tmp))
    package_folder = _package_root(folder, f"{repo} at branch {branch!r} ({head})")
    return _package(package_folder, read_package_json(package_folder), tuple(history))


def _branch_head(repo: Path, branch: str) -> str:
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        found = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if found:
            return found.strip()
    branches = _git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()
    raise PackageError(
        f"branch {branch!r} (DEFAULT_SCORE_BRANCH) not found in git repository {repo}; "
        f"its branches: {', '.join(branches) or 'none'}"
    )


def _extract_commit(repo: Path, commit: str, destination: Path) -> None:
    import tarfile  # here: only a git checkout needs it (see _extract_zip)

    raw = _git_bytes(repo, "archive", "--format=tar", commit)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = tar.getmembers()
            _check_sizes(len(members), sum(m.size for m in members), repo)
            tar.extractall(destination, filter="data")
    except tarfile.TarError as exc:  # an OSError is this disk's (see _unpack_once)
        raise PackageError(f"cannot check out {commit} of {repo}: {exc}") from None


def _git(repo: Path, *args: str, check: bool = True) -> str:
    return _git_bytes(repo, *args, check=check).decode("utf-8", errors="replace")


def _git_bytes(repo: Path, *args: str, check: bool = True) -> bytes:
    """Run a read-only git command in `repo` with a timeout; stdout, or b"" on failure if unchecked."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    env["GIT_CEILING_DIRECTORIES"] = str(repo.resolve().parent)
    command = ["git", "-C", str(repo), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=GIT_TIMEOUT_SECONDS, env=env, check=False
        )
    except FileNotFoundError:
        raise PackageError(f"git is not installed; it is needed to load {repo}") from None
    except subprocess.TimeoutExpired:
        raise PackageError(
            f"'git {' '.join(args)}' in {repo} timed out after {GIT_TIMEOUT_SECONDS:g} s"
        ) from None
    if done.returncode != 0:
        if not check:
            return b""
        message = done.stderr.decode("utf-8", errors="replace").strip()[-500:]
        raise PackageError(f"'git {' '.join(args)}' failed in {repo}: {message}")
    return done.stdout


# -- import --------------------------------------------------------------------------------------


def _import_main(package: ScorePackage) -> ModuleType:
    """Import `main` as a submodule of a synthetic package, so relative imports in it work."""
    safe_id = re.sub(r"\W", "_", package.id)
    parent_name = f"_loopchain_score_{next(_module_numbers)}_{safe_id}"
    parent_spec = ModuleSpec(parent_name, None, is_package=True)
    parent_spec.submodule_search_locations = [str(package.path)]
    parent = importlib.util.module_from_spec(parent_spec)
    main_path = package.path / f"{package.main}.py"
    spec = importlib.util.spec_from_file_location(f"{parent_name}.{package.main}", main_path)
    if spec is None or spec.loader is None:
        raise PackageError(f"cannot import {main_path}")
    try:
        main_path.read_bytes()  # (the loader's own read failing would look like the package's)
    except OSError as exc:
        raise PackageUnreadable(f"cannot read {main_path}: {exc}") from None
    module = importlib.util.module_from_spec(spec)
    sys.modules[parent_name] = parent
    sys.modules[spec.name] = module
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # never add __pycache__ to the user's folder
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        _forget_modules(parent_name)
        unreadable = unreadable_package_file(exc, package.path)
        if unreadable is not None:
            raise PackageUnreadable("cannot read {}: {}".format(*unreadable)) from None
        raise PackageError(
            f"importing {main_path} of SCORE package {package.id!r} failed: "
            f"{exception_name(exc)}: {exception_text(exc)}"
        ) from None
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


# what this machine's failing to read a package file says (not the package's fault, nor a
# transaction's: another peer reads it); any other error (a name too long, a loop of links, a
# missing file) is every peer's alike, and a client's input may cause it (review)
_UNREADABLE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ESTALE}
)


def exception_name(exc: BaseException) -> str:
    """The name of `exc`'s class, as `type` stores it (a metaclass's own `__name__` is not run)."""
    name = type.__dict__["__name__"].__get__(type(exc))
    return name if type(name) is str else "Exception"


def exception_text(exc: BaseException) -> str:
    """str(`exc`), or "(message unavailable)" when that raises or gives no plain str (SCORE code:
    called under the step meter)."""
    try:
        text = str(exc)
    except Exception:
        return "(message unavailable)"
    return text if type(text) is str else "(message unavailable)"


def exception_slot(cls: type, name: str, exc: BaseException) -> object:
    """`exc`'s field `name` as the built-in `cls` stores it (None when it has none): a SCORE's
    exception class may make the field a property of its own, SCORE code that raises or loops,
    which the engine must never run outside the step meter (review)."""
    if not issubclass(type(exc), cls):
        return None
    try:
        return cls.__dict__[name].__get__(exc, cls)  # type: ignore[no-any-return]
    except Exception:  # an unset field of some built-in types
        return None


def exception_chain(exc: BaseException, most: int = 16) -> list[BaseException]:
    """`exc` and what it was raised from or during (read as BaseException stores them), each
    once, at most `most`."""
    chain: list[BaseException] = []
    current: object = exc
    while isinstance(current, BaseException) and len(chain) < most:
        if any(current is seen for seen in chain):
            break
        chain.append(current)
        cause = exception_slot(BaseException, "__cause__", current)
        current = (
            cause if cause is not None else exception_slot(BaseException, "__context__", current)
        )
    return chain


def unreadable_package_file(exc: BaseException, folder: Path) -> tuple[str, str] | None:
    """(the file, why) when `exc` (or what it was raised from) says this machine could not read
    a file of the package in `folder` (a permission, an I/O error, the process's files or
    memory: not a missing file, which every peer misses alike): importing a module of the
    package after its main one, at load or in a call, failed so, and that was the package's
    fault ("not loaded", or a 9000 result, on this peer only; review). Only the built-in fields
    are read (exception_slot)."""
    for current in exception_chain(exc):
        code = exception_slot(OSError, "errno", current)
        name = exception_slot(OSError, "filename", current)
        if type(code) is not int or code not in _UNREADABLE_ERRNOS or type(name) is not str:
            continue  # (an errno of the SCORE's own type is never hashed: its code would run)
        if _inside(Path(name), folder) and _unreadable_here(name, code):
            return name, os.strerror(code)
    return None


# of those, the ones a file keeps (its permissions): read again before they are believed
_LASTING_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


def _unreadable_here(name: str, code: int) -> bool:
    """Whether this process cannot read the file `name`, as an OSError of `code` says: a SCORE
    raising one itself (PermissionError(EACCES, ..., its own file)) had its transactions and any
    client's query taken for this machine's failure, the process ended uncounted (review). A
    permission is checked by reading the file again; an error that passes (files or memory
    short, an I/O error) is believed: read again a moment later, the file reads, and this peer
    alone would record the transaction failed (review)."""
    if code not in _LASTING_ERRNOS:
        return True
    try:
        with open(name, "rb") as file:
            file.read(1)
    except OSError as exc:
        return exc.errno in _UNREADABLE_ERRNOS
    return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def _forget_modules(parent_name: str) -> None:
    for name in [n for n in sys.modules if n == parent_name or n.startswith(parent_name + ".")]:
        del sys.modules[name]


# Where a path in a message begins: at the start, or after a space, quote, bracket, '=', ',' or
# ':'; and where it ends (a path with a space in it is cut there: its rest stays)
_PATH_START = r"(?<![^\s'\"(\[=,:])"
_PATH_END = r"(?=$|[\s'\"()\[\],;:])"
_ABSOLUTE_PATH = re.compile(_PATH_START + r"/[^\s'\"()\[\],;:]*")
_OBJECT_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+\b")
PACKAGE_LABEL = "<package>"


def peer_independent(text: str, package: Path | None, folders: dict[Path, str]) -> str:
    """`text`, a reason a package cannot be used, worded alike on every peer (it is recorded in
    results every peer hashes): a path inside `package`'s folder as the path within it, each of
    `folders` (this peer's own, absolute or resolved) as its label, any other absolute path as
    ".../" and its last part, and an object's address as "at 0x...". The peer's log keeps the
    full detail. Only absolute paths are replaced: a folder named relatively ("score") is
    matched by its absolute forms, never by its relative name, which may be any word of the
    text on one peer and not on another; so `text` must name the peer's folders absolutely."""
    labels = dict(folders)
    if package is not None:
        labels[package] = PACKAGE_LABEL
    forms = {form: label for folder, label in labels.items() for form in _forms(folder)}
    for form in sorted(forms, key=len, reverse=True):  # a folder inside another one first
        label = forms[form]
        inside = "" if label == PACKAGE_LABEL else f"{label}/"
        text = re.sub(_PATH_START + re.escape(form) + "/", inside, text)
        text = re.sub(_PATH_START + re.escape(form) + _PATH_END, label, text)
    text = _ABSOLUTE_PATH.sub(lambda found: ".../" + found.group().rpartition("/")[2], text)
    return _OBJECT_ADDRESS.sub("at 0x...", text)


def _forms(folder: Path) -> set[str]:
    """The absolute ways `folder` may be written in a message: as given (made absolute from the
    working folder if relative) and resolved."""
    forms = {str(folder.absolute())}
    try:
        forms.add(str(folder.resolve()))
    except (OSError, RuntimeError):
        pass
    return {form for form in forms if form != "/"}


FIXED_FIELDS = ("id", "version", "main")  # a channel's settings never change what the package is


def merge_settings(info: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """package.json `info` with a channel's `settings` laid over it (objects merged key by key)."""
    fixed = sorted(set(settings) & set(FIXED_FIELDS))
    if fixed:
        raise PackageError(f"score_settings may not set {fixed}")
    return _merge(info, settings)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        merged[key] = (
            _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged
