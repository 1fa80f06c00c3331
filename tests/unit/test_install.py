"""The one-server install: the systemd units systemd itself accepts, and the environment-file
template that `qianshao check-config` accepts once its placeholders are filled (and refuses,
naming each problem, while they are not)."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
QIANSHAO = str(Path(sys.executable).with_name("qianshao"))


def test_systemd_accepts_every_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by make setup"
    exe = tmp_path / "bin" / "qianshao"
    exe.parent.mkdir()
    for name in ("qianshao", "kafka-server-start.sh", "kafka-server-stop.sh"):
        (exe.parent / name).write_text("#!/bin/sh\n")
        (exe.parent / name).chmod(0o755)
    env_file = tmp_path / "qianshao.env"
    shutil.copy(UNITS / "qianshao.env.example", env_file)
    units = [*sorted(UNITS.glob("*.service")), UNITS / "qianshao.target"]
    assert len(units) == 6  # the four services, the target, a single-node Kafka
    for unit in units:  # the install's paths, pointed at this test's copies
        text = unit.read_text().replace("/opt/qianshao/bin/qianshao", str(exe))
        text = text.replace("/opt/kafka/bin/kafka-server-st", str(exe.parent / "kafka-server-st"))
        (tmp_path / unit.name).write_text(text.replace("/etc/qianshao/qianshao.env", str(env_file)))
    out = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    assert out.stderr.strip() == "", out.stderr  # systemd warns on stderr and exits 0


def check_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}  # nothing of the test's own environment
    return subprocess.run(
        [QIANSHAO, "check-config", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_the_template_is_refused_until_its_placeholders_are_filled(tmp_path):
    template = (UNITS / "qianshao.env.example").read_text()
    raw = tmp_path / "raw.env"
    raw.write_text(template)
    refused = check_config(raw)
    assert refused.returncode == 1
    for name in (  # every weak secret named, not the first alone
        "QIANSHAO_INGEST_INTERNAL_SECRET",
        "QIANSHAO_GATEWAY_INTERNAL_SECRET",
        "QIANSHAO_GATEWAY_JWT_SECRET",
        "QIANSHAO_ALERTING_SENDER_CODE",  # a field of the wrong form, named too
    ):
        assert name in refused.stderr, name

    internal = secrets.token_hex(32)
    values = {
        "internal secret": internal,
        "sender code": "51111200000000",  # GB/T 35965.1: division, organisation, serial
        "bureau name": "五通桥区应急管理局",
        "gateway host": "warn.example.gov.cn",
    }
    filled = re.sub(r"<([^>]+)>", lambda m: values.get(m[1], secrets.token_hex(24)), template)
    good = tmp_path / "good.env"
    good.write_text(filled)
    ok = check_config(good)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": ok (production") == 4

    # one service with its own internal secret: the others could not check its identities
    bad = tmp_path / "bad.env"
    bad.write_text(
        filled.replace(
            f"QIANSHAO_RISK_INTERNAL_SECRET={internal}", f"QIANSHAO_RISK_INTERNAL_SECRET={'r' * 40}"
        )
    )
    differ = check_config(bad)
    assert differ.returncode == 1
    assert "INTERNAL_SECRET differ" in differ.stderr


@pytest.mark.parametrize("line", ["JUST A WORD", "1BAD=x"])
def test_a_malformed_env_file_names_the_line(tmp_path, line):
    f = tmp_path / "x.env"
    f.write_text(f"# a comment\n{line}\n")
    out = check_config(f)
    assert out.returncode != 0
    assert f"{f}:2" in out.stderr
