"""The upstream warnings in force, as risk recorded them (``risk.upstream_warnings``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.risk.domain.upstream import UpstreamView
from shared.contracts import Level


async def load_upstream(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, now: datetime
) -> UpstreamView:
    rows = await conn.fetch(
        """SELECT hazard, level, region_codes FROM risk.upstream_warnings
            WHERE active AND (expires IS NULL OR expires > $1)""",
        now,
    )
    return UpstreamView((r["hazard"], Level(r["level"]), list(r["region_codes"])) for r in rows)
