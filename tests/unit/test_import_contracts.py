"""The layers hold: pure decisions import no I/O (directly or through what they import), no
service imports another, and the runtime part of shared/ imports no service. The contracts are
in pyproject.toml (``[tool.importlinter]``); import-linter reads every module's imports without
running any, and names the chain of imports behind a broken contract."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_the_layer_contracts_are_kept():
    out = subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_service_and_every_runtime_module_is_under_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    services = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "app.py").exists())
    assert services == ["alerting", "gateway", "ingest", "risk"]
    for name in services:  # the layers are folders, the same in every service
        for layer in ("domain", "adapters", "api"):
            assert (ROOT / "services" / name / layer / "__init__.py").exists(), (name, layer)
    [independent] = [c for c in contracts if c["type"] == "independence"]
    assert sorted(independent["modules"]) == sorted(f"services.{s}" for s in services)
    [runtime] = [c for c in contracts if c["name"].startswith("the runtime part of shared")]
    modules = {
        f"shared.{p.stem}" if p.is_file() else f"shared.{p.name}"
        for p in (ROOT / "shared").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    # the dev stack, the CLI and the dashboards' builder may import the services
    assert modules - {"shared.devstack", "shared.cli", "shared.ops"} == set(
        runtime["source_modules"]
    )
