"""Every benchmark module imports: ``python -m bench`` is not part of ``make test``, so a name a
refactoring moved would otherwise surface only when someone measures."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench


@pytest.mark.parametrize(
    "name", sorted({m.name for m in pkgutil.iter_modules(bench.__path__)} | {"__main__"})
)
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}"


def test_every_benchmark_is_registered() -> None:
    main = importlib.import_module("bench.__main__")
    assert {"burst", "alerting", "atlas", "steady"} <= set(main.BENCHES)
