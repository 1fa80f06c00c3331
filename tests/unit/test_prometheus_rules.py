"""The alerts on the system itself: valid Prometheus rules, each firing on the series it is meant
for (promtool's rule unit tests), and every metric they read exported by the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

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
    assert "SUCCESS: 9 rules found" in checked.stdout
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


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule: lower case, punctuation
    dropped, spaces to hyphens)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_a_runbook_section_that_exists():
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    runbook = (ROOT / "deploy" / "RUNBOOK.md").read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) == 9
    for rule in alerts:
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "deploy/RUNBOOK.md", rule["alert"]
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in the runbook"
