"""Services as real processes, for the fault-injection tests that SIGKILL them."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.helpers import eventually


def start_service(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(url: str, what: str = "service") -> None:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as c:
                return (await c.get(f"{url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, timeout_s=60, what=f"{what} ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
