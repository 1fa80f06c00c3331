"""Gauges read from the database every so often: warnings by state, and the 叫应 picture
(the confirmation rate over the last day, and how many people have yet to confirm)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from prometheus_client import Gauge

from shared.clock import Clock

WARNINGS = Gauge(
    "qianshao_warnings", "Warnings by state (open ones by level too)", ["state", "level"]
)
CONFIRM_RATE = Gauge(
    "qianshao_confirm_rate_ratio", "Share of 叫应 tasks of the last 24 h confirmed (0–1)"
)
CONFIRM_PENDING = Gauge("qianshao_confirm_pending", "People who must confirm and have not yet")

STATES = ("issued", "updated", "cancelled", "expired")
LEVELS = ("blue", "yellow", "orange", "red")


async def refresh(pool: asyncpg.Pool, clock: Clock) -> None:
    rows = await pool.fetch(
        "SELECT state, level, count(*) AS n FROM alerting.warnings GROUP BY 1, 2"
    )
    seen = {
        (r["state"], LEVELS[r["level"] - 1] if 1 <= r["level"] <= 4 else "none"): r["n"]
        for r in rows
    }
    for state in STATES:
        for level in LEVELS:
            WARNINGS.labels(state, level).set(seen.get((state, level), 0))
    t = await pool.fetchrow(
        """SELECT count(*) AS required, count(confirmed_at) AS confirmed,
                  count(*) FILTER (WHERE confirmed_at IS NULL AND NOT closed) AS pending
             FROM alerting.confirm_tasks WHERE created_at > $1""",
        clock.now() - timedelta(hours=24),
    )
    assert t is not None
    CONFIRM_RATE.set(t["confirmed"] / t["required"] if t["required"] else 1.0)
    CONFIRM_PENDING.set(t["pending"])
