"""The API contract, tested with schemathesis as its own process against the running stack: every
check, in the examples, coverage, fuzzing and stateful phases, 40 examples an operation, a pinned
seed — through the gateway as an admin (its merged document, every public operation of every
service), and each service's own document called directly with a signed internal identity.

0 failures: no 5xx, every documented status, content type and schema holds, a schema-valid
request is served and a schema-violating one refused, an invalid or missing credential is a 401
(also beside a valid one), an undeclared method a 405. The few rules a JSON Schema cannot state
are named in schemathesis.toml beside this file.

One worker: with two, hypothesis's lambda descriptions run ``ast.parse`` on two threads at once,
which CPython 3.11 can fail ("AST constructor recursion depth mismatch"), a fault of neither
side; the run takes under a minute either way."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared.devstack.inprocess import Stack, running_stack
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET
from tests.e2e.test_auth import token
from tests.e2e.test_slice import STATION

BIN = str(Path(sys.executable).parent)
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = "20261124"
EXAMPLES = "40"
# far above what the run sends: a 429 would be a legitimate answer, but it tests nothing
NO_LIMITS = {
    name: 1_000_000
    for name in (
        "ingest:write",
        "ingest:read",
        "risk:read",
        "risk:write",
        "alerting:read",
        "alerting:write",
        "auth:token",
    )
}


@pytest.fixture
async def contract_stack(database: str, broker, topic_prefix: str) -> AsyncIterator[Stack]:
    async with running_stack(
        database, broker.bootstrap, topic_prefix, rate_limits=NO_LIMITS
    ) as stack:
        yield stack


async def schemathesis(location: str, header: str, workdir: Path) -> str:
    exe = shutil.which("schemathesis", path=BIN) or shutil.which("schemathesis")
    assert exe, "schemathesis is a dev dependency"
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--config-file",
        str(CONFIG),
        "run",
        location,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        EXAMPLES,
        "--workers",
        "1",
        "--seed",
        SEED,
        "--suppress-health-check",
        "all",
        "--header",
        header,
        "--no-color",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)},
    )
    out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0, text
    return text


def _summary(report: str) -> tuple[int, int]:
    """(cases generated, cases passed) from the report's last lines."""
    found = re.search(r"(\d+) generated, (\d+) passed", report)
    assert found, report[-2000:]
    return int(found[1]), int(found[2])


async def test_the_contract_holds_through_the_gateway_and_at_each_service(contract_stack, tmp_path):
    stack = contract_stack
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        assert (await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)).is_success
    report = await schemathesis(
        f"{stack.gateway}/api/v1/openapi.json", f"Authorization: {admin['Authorization']}", tmp_path
    )
    generated, passed = _summary(report)
    assert generated == passed
    assert generated > 2000, "the run was cut short"
    assert "Rate limited" not in report
    identity = Identity(subject="operator:fuzz", kind="operator", roles=["admin"])
    for url in stack.services.values():
        signed = sign(identity, DEV_INTERNAL_SECRET, datetime.now(UTC), ttl_s=1800)
        report = await schemathesis(
            f"{url}/openapi.json", f"X-Qianshao-Identity: {signed}", tmp_path
        )
        generated, passed = _summary(report)
        assert generated == passed > 50
