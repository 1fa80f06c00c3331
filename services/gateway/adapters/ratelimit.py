"""The rate limits' shared counters, in PostgreSQL (``gateway.rate_windows``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.gateway.domain.ratelimit import WINDOW_S, Reserve


def postgres_reserve(pool: asyncpg.Pool) -> Reserve:
    async def reserve(key: str, window: datetime, block: int, limit: int) -> int:
        granted: int = await pool.fetchval(
            """INSERT INTO gateway.rate_windows AS w (key, window_start, used, last_grant)
                 VALUES ($1, $2, least($3::int, $4::int), least($3::int, $4::int))
               ON CONFLICT (key, window_start) DO UPDATE
                 SET used = least(w.used + $3::int, $4::int),
                     last_grant = least(w.used + $3::int, $4::int) - w.used
               RETURNING last_grant""",
            key,
            window,
            block,
            limit,
        )
        return granted

    return reserve


async def purge(pool: asyncpg.Pool, now: datetime) -> None:
    """Forget windows that ended."""
    await pool.execute(
        """DELETE FROM gateway.rate_windows
            WHERE window_start < $1::timestamptz - make_interval(secs => $2::float8)""",
        now,
        2 * WINDOW_S,
    )
