"""``python -m bench`` runs every benchmark in this folder on a throw-away PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from bench import alerting, e2e_latency, gateway, ingest, push, risk
from shared.devstack.broker import TansuBroker
from shared.devstack.postgres import PostgresServer


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="qianshao-bench-"))
    pg = PostgresServer(work / "pgdata").start()
    broker = TansuBroker(work / "broker").start()
    try:
        print(
            f"# Qianshao benchmarks on {platform.node()} ({platform.machine()}, "
            f"Python {platform.python_version()}, {_cores()} cores)"
        )
        asyncio.run(ingest.run(pg.dsn, broker.bootstrap))
        asyncio.run(push.run(pg.dsn, broker.bootstrap))
        asyncio.run(gateway.run(pg.dsn, broker.bootstrap))
        asyncio.run(risk.run(pg.dsn))
        asyncio.run(e2e_latency.run(pg.dsn, broker.bootstrap))
        asyncio.run(alerting.run(pg.dsn, broker.bootstrap))
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
