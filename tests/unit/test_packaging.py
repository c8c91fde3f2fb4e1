"""The project is an installable package: entry points on .venv/bin, hashed locks, no sys.path edits."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tools.procs import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", re.MULTILINE)


def _pins(text: str) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in _PIN.findall(text)}


def test_no_module_of_the_project_edits_sys_path() -> None:
    edits = []
    for path in [
        *ROOT.glob("*.py"),
        *ROOT.glob("loopchain/**/*.py"),
        *ROOT.glob("tools/**/*.py"),
        *ROOT.glob("score/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
    ]:
        if "protos" in path.parts or path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"sys\.path\.(insert|append|extend)|sys\.path\s*=(?!=)|sys\.path\[", line):
                edits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not edits, "\n".join(edits)


def test_every_entry_point_names_a_main_that_exists() -> None:
    assert {"loopchain-peer", "loopchain-radiostation", "loopchain-rest-proxy"} <= set(SCRIPTS)
    for name, target in SCRIPTS.items():
        module, _, attr = target.partition(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{name}: {path} is missing"
        assert re.search(rf"^def {attr}\(", path.read_text(), re.MULTILINE), f"{name}: no {attr}()"


def test_installed_entry_points_run_from_any_directory(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    for name in (
        "loopchain-peer",
        "loopchain-radiostation",
        "loopchain-rest-proxy",
        "loopchain-loadtool",
    ):
        script = bindir / name
        assert script.is_file(), f"{script} is not installed: run ./setup.sh"
        done = subprocess.run(
            [str(script), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout.lower(), done.stdout


def test_locks_are_pinned_with_hashes_and_agree_with_their_inputs() -> None:
    runtime = (ROOT / "requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    runtime_pins, dev_pins = _pins(runtime), _pins(dev)
    for lock in (runtime, dev):
        requirements = [line for line in lock.splitlines() if line and line[0] not in " #"]
        assert requirements and all(re.match(r"^\S+==\S+ \\$", r) for r in requirements), (
            requirements
        )
        assert lock.count("--hash=sha256:") >= len(requirements)
    # the development lock is the runtime lock plus more, at the same versions
    assert all(dev_pins.get(name) == version for name, version in runtime_pins.items())
    # every direct requirement is locked at the version its input file pins
    for source, pins in (("requirements.in", runtime_pins), ("requirements-dev.in", dev_pins)):
        for name, version in _pins((ROOT / source).read_text()).items():
            assert pins.get(name) == version, f"{source}: {name}=={version} not locked"
    # the runtime lock carries no test tool
    assert not {"pytest", "hypothesis", "ruff", "mypy", "playwright", "matplotlib"} & set(
        runtime_pins
    )
