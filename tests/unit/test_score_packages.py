"""SCORE package resolution (folder, zip, git, develop/) and loading, on real files and real git."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import ScoreContext
from loopchain.scoreservice.packages import (
    PackageError,
    ScorePackage,
    load_score_class,
    merge_settings,
    peer_independent,
    resolve_package,
)
from loopchain.storage.abc import StorageError
from score.testkit import MemoryBlocks, MemoryState

SCORE_SOURCE = """
from loopchain.blockchain import ScoreBase

MARK = {mark!r}


class UserScore(ScoreBase):
    def query(self, params):
        return MARK
"""

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git CLI not installed")


# -- helpers -------------------------------------------------------------------------------------


def write_package(
    folder: Path, version: str = "1.0", mark: str = "one", **extra: Any
) -> dict[str, Any]:
    """Write package.json and app.py (a UserScore whose query returns `mark`) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"id": "acme/app", "version": version, "main": "app", **extra}
    (folder / "package.json").write_text(json.dumps(info))
    (folder / "app.py").write_text(SCORE_SOURCE.format(mark=mark))
    return info


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` (git internals included) with a hash of its content."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_dir():
            digest[relative + "/"] = "dir"
        else:
            digest[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def query(package: ScorePackage, params: str = "{}") -> str:
    """Load and instantiate the package's UserScore with in-memory state and ask it a query."""
    score_class = load_score_class(package)
    context = ScoreContext(MemoryState(), MemoryBlocks(), logging.getLogger("t"), package.info)
    return score_class(context).query(params)


def resolve(repository: Path, name: str = "acme/app", **options: Any) -> ScorePackage:
    settings: dict[str, Any] = {
        "branch": "master",
        "allow_develop": False,
        "work_dir": repository.parent / "work",
    }
    settings.update(options)
    return resolve_package(repository, name, **settings)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    path = tmp_path / "score"
    path.mkdir()
    return path


# -- plain folders -------------------------------------------------------------------------------


def test_folder_is_used_in_place(repository: Path) -> None:
    info = write_package(repository / "acme" / "app", version="2.0", auth={"name": "a"})
    package = resolve(repository)
    assert package == ScorePackage(
        id="acme/app",
        version="2.0",
        all_versions=("2.0",),
        path=repository / "acme" / "app",
        main="app",
        info=info,
    )
    assert query(package) == "one"
    assert not (repository.parent / "work").exists()


def test_folder_wins_over_zip(repository: Path) -> None:
    write_package(repository / "acme" / "app", mark="folder")
    make_zip(repository / "acme_app.zip", {"package.json": b"{}"})
    assert query(resolve(repository)) == "folder"


def test_user_folder_is_never_modified(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = repository / "acme" / "app"
    write_package(folder)
    (folder / "helper.py").write_text("VALUE = 'from helper'\n")
    (folder / "app.py").write_text(
        "from loopchain.blockchain import ScoreBase\nfrom . import helper\n\n"
        "class UserScore(ScoreBase):\n    def query(self, params):\n        return helper.VALUE\n"
    )
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a host without PYTHONDONTWRITE…
    before = tree_digest(repository)
    path_before = list(sys.path)
    for _ in range(2):
        assert query(resolve(repository)) == "from helper"
    assert tree_digest(repository) == before  # no __pycache__, nothing deleted or rewritten
    assert sys.path == path_before
    assert sys.dont_write_bytecode is False


def test_same_main_name_in_two_packages_loads_two_modules(repository: Path) -> None:
    write_package(repository / "acme" / "app", mark="first")
    write_package(repository / "other" / "app", mark="second")
    first, second = resolve(repository), resolve(repository, "other/app")
    assert (query(first), query(second)) == ("first", "second")
    assert load_score_class(first) is not load_score_class(first)  # a fresh module per load


# -- zip -----------------------------------------------------------------------------------------


def make_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(name, content)


def package_files(version: str = "3.1", mark: str = "zipped", prefix: str = "") -> dict[str, bytes]:
    info = {"id": "acme/app", "version": version, "main": "app"}
    return {
        prefix + "package.json": json.dumps(info).encode(),
        prefix + "app.py": SCORE_SOURCE.format(mark=mark).encode(),
    }


@pytest.mark.parametrize("prefix", ["", "acme_app/"])
def test_zip_is_extracted_into_work_dir(repository: Path, prefix: str) -> None:
    make_zip(repository / "acme_app.zip", package_files(prefix=prefix))
    before = tree_digest(repository)
    package = resolve(repository)
    assert (package.version, package.all_versions) == ("3.1", ("3.1",))
    assert package.path.is_relative_to(repository.parent / "work")
    assert query(package) == "zipped"
    assert tree_digest(repository) == before


def test_zip_extraction_is_reused_and_follows_content(repository: Path) -> None:
    make_zip(repository / "acme_app.zip", package_files(version="1"))
    first = resolve(repository)
    assert resolve(repository).path == first.path
    make_zip(repository / "acme_app.zip", package_files(version="2", mark="new"))
    second = resolve(repository)
    assert second.path != first.path
    assert (second.version, query(second)) == ("2", "new")
    leftovers = [p.name for p in (repository.parent / "work" / "acme_app").iterdir()]
    assert not [name for name in leftovers if name.startswith(".unpack-")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot extract"),
        ({"../evil.py": b"x", **package_files()}, "unsafe path"),
        ({"/abs.py": b"x", **package_files()}, "unsafe path"),
        ({"readme.txt": b"x"}, "package.json not found"),
        ({"a/package.json": b"{}", "b/x.py": b""}, "package.json not found"),
    ],
)
def test_bad_zips(repository: Path, content: dict[str, bytes] | None, message: str) -> None:
    archive = repository / "acme_app.zip"
    if content is None:
        archive.write_bytes(b"this is not a zip")
    else:
        make_zip(archive, content)
    with pytest.raises(PackageError, match=message):
        resolve(repository)
    assert not (repository.parent / "evil.py").exists()


def test_zip_size_bound(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopchain.scoreservice import packages

    monkeypatch.setattr(packages, "MAX_PACKAGE_BYTES", 100)
    make_zip(repository / "acme_app.zip", {**package_files(), "big.bin": b"0" * 200})
    with pytest.raises(PackageError, match="at most 100"):
        resolve(repository)


# -- git -----------------------------------------------------------------------------------------


@pytest.fixture
def git_package(repository: Path) -> tuple[Path, list[str], str]:
    """repository/acme/app as a git repo: two commits on master, one on "feature" (from the first)."""
    repo = repository / "acme" / "app"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    write_package(repo, version="ignored-1", mark="c1")
    first = commit_all(repo, "first")
    write_package(repo, version="ignored-2", mark="c2")
    second = commit_all(repo, "second")
    git(repo, "checkout", "-q", "-b", "feature", first)
    write_package(repo, version="ignored-3", mark="c3")
    third = commit_all(repo, "third")
    git(repo, "checkout", "-q", "master")
    (repo / "app.py").write_text(SCORE_SOURCE.format(mark="uncommitted"))
    return repo, [second, first], third


@needs_git
def test_git_folder_checks_out_the_branch(
    repository: Path, git_package: tuple[Path, list[str], str]
) -> None:
    repo, master_history, feature_head = git_package
    before = tree_digest(repository)
    package = resolve(repository)
    assert package.version == master_history[0]
    assert package.all_versions == tuple(master_history)
    assert package.path.is_relative_to(repository.parent / "work")
    assert query(package) == "c2"  # the branch head, not the working tree
    feature = resolve(repository, branch="feature")
    assert (feature.version, feature.all_versions) == (
        feature_head,
        (feature_head, master_history[1]),
    )
    assert query(feature) == "c3"
    assert tree_digest(repository) == before
    assert git(repo, "status", "--porcelain") == "M app.py"


@needs_git
def test_git_repository_beside_the_folders(
    repository: Path, git_package: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    repo, master_history, _ = git_package
    bare = repository / "acme_app"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    shutil.rmtree(repo)
    before = tree_digest(repository)
    package = resolve(repository)
    assert (package.version, package.all_versions) == (master_history[0], tuple(master_history))
    assert query(package) == "c2"
    assert tree_digest(repository) == before


@needs_git
def test_git_unknown_branch(repository: Path, git_package: tuple[Path, list[str], str]) -> None:
    with pytest.raises(PackageError, match=r"branch 'release' .*branches: feature, master"):
        resolve(repository, branch="release")


@needs_git
def test_git_commit_without_package_json(repository: Path) -> None:
    repo = repository / "acme" / "app"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    (repo / "notes.txt").write_text("no package here")
    commit_all(repo, "notes")
    with pytest.raises(PackageError, match=r"package.json not found in .*branch 'master'"):
        resolve(repository)


# -- develop/ ------------------------------------------------------------------------------------


@needs_git
def test_develop_needs_permission_and_loads_as_is(repository: Path) -> None:
    folder = repository / "develop" / "app"
    write_package(folder, version="dev", mark="committed")
    git(folder, "init", "-q", "-b", "master")
    commit_all(folder, "first")
    (folder / "app.py").write_text(SCORE_SOURCE.format(mark="work in progress"))
    with pytest.raises(PackageError, match="ALLOW_LOAD_SCORE_IN_DEVELOP"):
        resolve(repository, "develop/app")
    package = resolve(repository, "develop/app", allow_develop=True)
    assert (package.path, package.version, package.all_versions) == (folder, "dev", ("dev",))
    assert query(package) == "work in progress"


def test_develop_missing_folder(repository: Path) -> None:
    with pytest.raises(PackageError, match="develop SCORE package 'develop/nope' not found"):
        resolve(repository, "develop/nope", allow_develop=True)


# -- names, locations, package.json --------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "app", "a/b/c", "../app", "acme/..", "acme/.app", "/app"])
def test_bad_names(repository: Path, name: str) -> None:
    with pytest.raises(PackageError, match="must be '<org>/<package>'"):
        resolve(repository, name)


def test_not_found_lists_the_places_looked_at(repository: Path) -> None:
    with pytest.raises(PackageError) as caught:
        resolve(repository, "acme/none")
    message = str(caught.value)
    for place in ("acme/none", "acme_none.zip", "acme_none"):
        assert str(repository / place) in message


def test_work_dir_inside_repository_is_refused(repository: Path) -> None:
    write_package(repository / "acme" / "app")
    with pytest.raises(PackageError, match="inside the SCORE repository"):
        resolve(repository, work_dir=repository / "cache")


@pytest.mark.parametrize(
    ("package_json", "message"),
    [
        (None, "package.json not found"),
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object, not list"),
        ('{"version": "1", "main": "app"}', "field 'id' must be a non-empty string"),
        ('{"id": 5, "version": "1", "main": "app"}', "field 'id' must be a non-empty string"),
        ('{"id": "a", "version": "", "main": "app"}', "field 'version' must be a non-empty string"),
        ('{"id": "a", "version": "1"}', "field 'main' must be a non-empty string"),
        ('{"id": "a", "version": "1", "main": "app.py"}', r"module name \(without '.py'\)"),
        ('{"id": "a", "version": "1", "main": "my-app"}', "module name, not 'my-app'"),
        ('{"id": "a", "version": "1", "main": "missing"}', "main module missing.py not found"),
        (
            '{"id": "a", "version": "1", "main": "app", "auth": "me"}',
            "'auth' must be a JSON object",
        ),
        ('{"id": "a", "version": "1", "main": "app", "description": 1}', "'description' must be"),
        ('{"id": "a", "version": "1", "main": "app", "function": []}', "'function' must be"),
    ],
)
def test_bad_package_json(repository: Path, package_json: str | None, message: str) -> None:
    folder = repository / "acme" / "app"
    write_package(folder)
    if package_json is None:
        (folder / "package.json").unlink()
    else:
        (folder / "package.json").write_text(package_json)
    with pytest.raises(PackageError, match=message) as caught:
        resolve(repository)
    assert str(folder) in str(caught.value)


# -- load_score_class ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("X = 1\n", "no UserScore class in app.py"),
        ("UserScore = 3\n", "UserScore does not subclass ScoreBase"),
        ("class UserScore:\n    pass\n", "UserScore does not subclass ScoreBase"),
        ("def broken(:\n", "failed: SyntaxError"),
        ("raise RuntimeError('boom at import')\n", "failed: RuntimeError: boom at import"),
        ("import no_such_module_for_score\n", "failed: ModuleNotFoundError"),
        ("raise SystemExit(3)\n", "failed: SystemExit: 3"),
    ],
)
def test_bad_main_modules(repository: Path, source: str, message: str) -> None:
    folder = repository / "acme" / "app"
    write_package(folder)
    (folder / "app.py").write_text(source)
    package = resolve(repository)
    modules_before = set(sys.modules)
    with pytest.raises(PackageError, match=message) as caught:
        load_score_class(package)
    assert "acme/app" in str(caught.value)
    assert not [m for m in set(sys.modules) - modules_before if m.startswith("_loopchain_score_")]


def test_loaded_class_is_a_score_base(repository: Path) -> None:
    write_package(repository / "acme" / "app")
    score_class = load_score_class(resolve(repository))
    assert issubclass(score_class, ScoreBase)
    assert score_class.__name__ == "UserScore"


def test_sample_packages_resolve(tmp_path: Path) -> None:
    samples = Path(__file__).resolve().parents[2] / "score"
    for name in (
        "loopchain/default",
        "sample/kvstore",
        "sample/token",
        "test/raises",
        "test/loop",
        "test/memory",
    ):
        package = resolve_package(
            samples, name, branch="master", allow_develop=False, work_dir=tmp_path
        )
        assert package.id == name
        assert issubclass(load_score_class(package), ScoreBase)


def test_channel_settings_merge_over_package_json() -> None:
    info = {"id": "a/b", "version": "1", "main": "m", "token": {"owner": "", "symbol": "S"}}
    merged = merge_settings(info, {"token": {"owner": "hx1"}, "extra": [1]})
    assert merged == {**info, "token": {"owner": "hx1", "symbol": "S"}, "extra": [1]}
    assert info["token"] == {"owner": "", "symbol": "S"}  # the package's own info is untouched
    with pytest.raises(PackageError, match="may not set"):
        merge_settings(info, {"main": "other"})


def test_an_unpacked_package_is_synced_before_it_is_named(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each unpacked file is synced before the folder is renamed to the name later loads reuse
    (after a power cut that name must not hold empty files)."""
    make_zip(repository / "acme_app.zip", package_files())
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(source: Any, target: Any) -> None:
        events.append(f"rename {target}")
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    package = resolve(repository)
    renamed = events.index(f"rename {package.path}")
    synced = [e for e in events[:renamed] if e.startswith("fsync ")]
    assert any(e.endswith("/app.py") for e in synced), events
    assert any(e.endswith("/package.json") for e in synced), events
    assert f"fsync {package.path.parent}" in events[renamed:]


@pytest.mark.parametrize("failing", ["extract", "rename"])
def test_a_disk_failure_while_unpacking_is_a_storage_error_not_the_packages(
    repository: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A full or failing disk is this machine's fault: StorageError (the SCORE process ends and
    loads again later), not PackageError (whose "not loaded" results no other peer records)."""
    make_zip(repository / "acme_app.zip", package_files())

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "extract":
        monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    else:
        monkeypatch.setattr(os, "rename", full)
    with pytest.raises(StorageError, match=r"cannot unpack the SCORE package into .*No space left"):
        resolve(repository)


def test_a_reason_is_worded_alike_whatever_the_peers_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two peers, one naming its repository relatively ("score", the default), word a reason
    alike once their own folders (named absolutely in the reason, as the runtime names them),
    other absolute paths and object addresses are taken out of it; the word "score" elsewhere in
    the reason stays on both (before, the relative peer replaced it as its repository)."""
    worded = set()
    for peer, relative in (("peer_7100", True), ("peer_7200", False)):
        (tmp_path / peer).mkdir()
        monkeypatch.chdir(tmp_path / peer)
        absolute = tmp_path / peer / "score"
        repository = Path("score") if relative else absolute
        package = absolute / "score" / "pkg"
        reason = (
            f"importing {package}/main.py of SCORE package 'score/pkg' failed: RuntimeError: "
            f"score is not configured: '{package}/data.json' in {package} "
            f"({tmp_path}/{peer}/lib/x.py) <f at 0x7f12ab>; the zip {absolute}/score_pkg.zip, "
            f"the folder {absolute}, score"
        )
        folders = {repository: "<repository>", tmp_path / peer / "work": "<score work>"}
        worded.add(peer_independent(reason, package, folders))
    assert worded == {
        "importing main.py of SCORE package 'score/pkg' failed: RuntimeError: score is not "
        "configured: 'data.json' in <package> (.../x.py) <f at 0x...>; the zip "
        "<repository>/score_pkg.zip, the folder <repository>, score"
    }


def test_a_package_file_unreadable_is_believed_as_the_error_says(tmp_path: Path) -> None:
    """What a SCORE's failure says of a file of its package: a permission error is checked by
    reading the file again (a SCORE may raise one itself: review); an error that passes (files
    or memory short, I/O) is believed, as reading again a moment later would succeed and this
    peer alone record the transaction failed (review); a file outside the package, or an errno
    of the SCORE's own type, is not this machine's failure."""
    import errno as errnos

    from loopchain.scoreservice.packages import unreadable_package_file

    folder = tmp_path / "pkg"
    folder.mkdir()
    module = folder / "m.py"
    module.write_text("x = 1\n")
    outside = tmp_path / "other.py"
    outside.write_text("")

    def says(code: int, name: Path) -> tuple[str, str] | None:
        return unreadable_package_file(OSError(code, "failed", str(name)), folder)

    assert says(errnos.EACCES, module) is None  # it reads: the SCORE said so itself
    for passing in (errnos.EMFILE, errnos.ENOMEM, errnos.EIO):
        assert says(passing, module) == (str(module), os.strerror(passing))
    assert says(errnos.EIO, outside) is None
    assert says(errnos.ENAMETOOLONG, module) is None

    class Code(int):
        pass

    odd = OSError("failed")
    odd.errno, odd.filename = Code(errnos.EIO), str(module)
    assert unreadable_package_file(odd, folder) is None
