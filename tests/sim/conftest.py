"""Options of the simulation tier: `--seeds N` (how many seeds), `--seed S` (replay one)."""

from __future__ import annotations

import pytest

DEFAULT_SEEDS = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seeds", type=int, default=DEFAULT_SEEDS, help="number of simulation seeds")
    parser.addoption("--seed", type=int, default=None, help="replay one simulation seed")
    parser.addoption("--seed-offset", type=int, default=0, help="first seed of a --seeds run")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        one = metafunc.config.getoption("--seed")
        offset = metafunc.config.getoption("--seed-offset")
        count = metafunc.config.getoption("--seeds")
        seeds = [one] if one is not None else range(offset, offset + count)
        metafunc.parametrize("seed", seeds, ids=[f"seed-{s}" for s in seeds])
