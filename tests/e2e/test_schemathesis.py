"""Property-based API tests with schemathesis, run as its own process against the running stack:
the gateway's merged OpenAPI document (every public operation of every service, through the
gateway, as an admin), and each service's own document called directly with a signed internal
identity. No response may be a 5xx, and every documented response schema must hold."""

from __future__ import annotations

import asyncio
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET
from tests.e2e.test_auth import token
from tests.e2e.test_slice import STATION

BIN = str(Path(sys.executable).parent)
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
EXAMPLES = "12"


async def schemathesis(location: str, header: str, workdir: Path) -> str:
    exe = shutil.which("schemathesis", path=BIN) or shutil.which("schemathesis")
    assert exe, "schemathesis is a dev dependency"
    proc = await asyncio.create_subprocess_exec(
        exe,
        "run",
        location,
        "--checks",
        CHECKS,
        "--max-examples",
        EXAMPLES,
        "--phases",
        "examples,fuzzing",
        "--workers",
        "2",
        "--seed",
        "20261124",
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


async def test_no_5xx_and_every_documented_schema_holds(stack, tmp_path):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        assert (await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)).is_success
    report = await schemathesis(
        f"{stack.gateway}/api/v1/openapi.json", f"Authorization: {admin['Authorization']}", tmp_path
    )
    assert "passed" in report.lower()
    identity = Identity(subject="operator:fuzz", kind="operator", roles=["admin"])
    for name, url in stack.services.items():
        signed = sign(identity, DEV_INTERNAL_SECRET, datetime.now(UTC), ttl_s=1800)
        await schemathesis(f"{url}/openapi.json", f"X-Qianshao-Identity: {signed}", tmp_path)
        del name
