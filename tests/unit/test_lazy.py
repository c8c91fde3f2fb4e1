"""Modules loaded on first use: when they run, that a RadioStation without a CA never loads
cryptography (about 10 MB of its memory) until a certificate job needs it, and that no process
loads at start the modules only a rare job needs (unpacking a SCORE archive, rotating a log
file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loopchain.lazy import lazy_module


def test_a_lazy_module_runs_when_an_attribute_is_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lazy_probe.py").write_text(
        "import builtins\nbuiltins.lazy_probe_runs += 1\nX = 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("builtins.lazy_probe_runs", 0, raising=False)
    monkeypatch.delitem(sys.modules, "lazy_probe", raising=False)
    import builtins

    module = lazy_module("lazy_probe")
    assert builtins.lazy_probe_runs == 0  # type: ignore[attr-defined]
    assert module.X == 7
    assert module.X == 7
    assert builtins.lazy_probe_runs == 1  # type: ignore[attr-defined]
    assert lazy_module("lazy_probe") is sys.modules["lazy_probe"]
    monkeypatch.delitem(sys.modules, "lazy_probe")


def test_a_lazy_submodule_is_named_by_its_package_as_an_import_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "part.py").write_text("Y = 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    parent = importlib.import_module("lazy_pkg")
    module = lazy_module("lazy_pkg.part")
    assert parent.part is module  # type: ignore[attr-defined]
    assert parent.part.Y == 5  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "lazy_pkg.part")
    monkeypatch.delitem(sys.modules, "lazy_pkg")


def test_a_missing_module_is_an_import_error_at_once() -> None:
    with pytest.raises(ImportError, match="no_such_module_here"):
        lazy_module("no_such_module_here")


def test_a_radiostation_without_a_ca_loads_cryptography_only_for_a_certificate_job(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from loopchain.configure import load_config
        from loopchain.radiostation import main

        config = load_config(environ={{}}, overrides={{"DEFAULT_STORAGE_PATH": {str(tmp_path)!r}}})
        certs = main.create_certificates(config, None)
        print("no CA", certs.describe_state().startswith("no CA"))
        print("loaded before", "cryptography" in sys.modules)
        print("issued", certs.issue_ca()["cert_type"])
        print("loaded after", "cryptography" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "no CA True",
        "loaded before False",
        "issued CA",
        "loaded after True",
    ], done.stdout


# What each of the network's processes imports when it starts
PROCESS_MODULES = (
    "loopchain.peer.main",
    "loopchain.rest.main",
    "loopchain.radiostation.main",
    "loopchain.scoreservice.process",
)
# Modules only a rare job needs, ~0.2-0.7 MB each in every process that would import them
RARE_JOB_MODULES = ("tarfile", "zipfile", "logging.handlers")


@pytest.mark.parametrize("process", PROCESS_MODULES)
def test_a_process_does_not_load_at_start_what_only_a_rare_job_needs(process: str) -> None:
    script = f"import sys, {process}; print([m for m in {RARE_JOB_MODULES!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
