"""Test helpers: run an ASGI app on a real port, sign identities, wait for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from services.ingest.settings import IngestSettings
from services.risk.settings import RiskSettings
from shared.db import DailyPartitions
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

T = TypeVar("T")


def identity_header(
    *,
    scopes: list[str] | None = None,
    roles: list[str] | None = None,
    region_prefix: str = "",
    subject: str = "test",
    kind: str = "operator",
    secret: str = DEV_INTERNAL_SECRET,
) -> dict[str, str]:
    ident = Identity(
        subject=subject,
        kind=kind,  # type: ignore[arg-type]
        roles=roles or ["admin"],  # type: ignore[arg-type]
        scopes=scopes or [],
        region_prefix=region_prefix,
    )
    return {"X-Qianshao-Identity": sign(ident, secret, datetime.now(UTC))}


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; return it. Fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")


READING_COLUMNS = ["station_id", "metric", "ts", "value", "unit", "quality", "checks", "source"]


async def store_readings(conn: Any, records: list[tuple[Any, ...]]) -> None:
    """COPY rows (station, metric, ts, value, unit, quality, checks, source) into
    ``ingest.readings`` (plain-PostgreSQL path), creating the daily partitions they need."""
    await DailyPartitions("ingest.readings").ensure(conn, {r[2].date() for r in records})
    await conn.copy_records_to_table(
        "readings", schema_name="ingest", records=records, columns=READING_COLUMNS
    )


def ingest_settings(
    database: str, broker: Any, topic_prefix: str, **overrides: Any
) -> IngestSettings:
    """Settings of an ingest app on the test database and broker (native storage)."""
    return IngestSettings(
        database_url=database,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=topic_prefix,
        consumer_group=f"{topic_prefix}ingest",
        storage="native",
        **overrides,
    )


def risk_settings(database: str, broker: Any, topic_prefix: str, **overrides: Any) -> RiskSettings:
    """Settings of a risk app on the test database and broker: a quick outbox, no no-data sweep
    and no standing announcements unless asked for."""
    return RiskSettings(
        **{
            "database_url": database,
            "kafka_bootstrap": broker.bootstrap,
            "topic_prefix": topic_prefix,
            "consumer_group": f"{topic_prefix}risk",
            "outbox_poll_s": 0.1,
            "nodata_sweep_s": 0,
            "standing_every_s": 0,
            **overrides,
        }
    )
