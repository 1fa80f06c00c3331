"""The alerts on the system itself: valid Prometheus rules, each firing on the series it is meant
for (promtool's rule unit tests), and every metric they read exported by the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus package"
    return subprocess.run(
        [exe, *args], cwd=RULES, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_rules_are_valid_and_their_unit_tests_pass():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_metric_the_rules_read_is_exported():
    used = set(re.findall(r"\bqianshao_[a-z_]+", (RULES / "alerts.yml").read_text()))
    source = "\n".join(
        p.read_text(encoding="utf-8")
        for d in ("services", "shared")
        for p in (ROOT / d).rglob("*.py")
    )
    defined = set(re.findall(r'"(qianshao_[a-z_]+)"', source))
    assert used, "no metric found in the rules"
    assert used <= defined, f"metrics no service exports: {sorted(used - defined)}"
