"""Gauges read from the database every so often: warnings by state, the 叫应 picture (the
confirmation rate over the last day, and how many people have yet to confirm), and the delivery
ledger's backlog: rows not yet handed to a provider, and how long the oldest has waited — what
says "warnings are queued but not leaving" when a provider, a worker or a lease is stuck."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

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

LEDGER_UNDELIVERED = Gauge(
    "qianshao_ledger_undelivered",
    "Delivery ledger rows not yet accepted by a provider, by channel and state "
    "(queued in a broadcast batch, pending, sending under a lease, held for a storm digest)",
    ["channel", "state"],
)
LEDGER_OLDEST_AGE = Gauge(
    "qianshao_ledger_oldest_undelivered_age_seconds",
    "Age of the oldest ledger row of a channel still queued, pending or sending "
    "(held rows wait for their digest on purpose and are not counted)",
    ["channel"],
)

STATES = ("issued", "updated", "cancelled", "expired")
# one query per state group, so each reads its partial index of alerting.deliveries
BACKLOG_SQL = """
    SELECT channel, state, count(*) AS n, min(created_at) AS oldest
      FROM alerting.deliveries WHERE state IN ('pending', 'sending') GROUP BY 1, 2
    UNION ALL
    SELECT channel, state, count(*), min(created_at)
      FROM alerting.deliveries WHERE state = 'queued' GROUP BY 1, 2
    UNION ALL
    SELECT channel, state, count(*), min(created_at)
      FROM alerting.deliveries WHERE state = 'held' GROUP BY 1, 2"""
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


class LedgerBacklog:
    """Sets the ledger gauges from one read; a channel whose backlog has cleared goes back to 0
    rather than keeping its last value, and the configured channels show 0 from the start."""

    def __init__(self, channels: Iterable[str] = ()) -> None:
        self._aged: set[str] = set(channels)
        self._counted: set[tuple[str, str]] = {(ch, "pending") for ch in self._aged}

    async def refresh(self, pool: asyncpg.Pool, clock: Clock) -> None:
        rows = await pool.fetch(BACKLOG_SQL)
        now = clock.now()
        counts = {(r["channel"], r["state"]): r["n"] for r in rows}
        oldest: dict[str, datetime] = {}
        for r in rows:
            if r["state"] != "held":
                ch = r["channel"]
                oldest[ch] = min(oldest.get(ch, r["oldest"]), r["oldest"])
        for key in self._counted | counts.keys():
            LEDGER_UNDELIVERED.labels(*key).set(counts.get(key, 0))
        for ch in self._aged | oldest.keys():
            age = (now - oldest[ch]).total_seconds() if ch in oldest else 0.0
            LEDGER_OLDEST_AGE.labels(ch).set(max(age, 0.0))
        self._counted |= counts.keys()
        self._aged |= oldest.keys()
