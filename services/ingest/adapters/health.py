"""Health of stations and sources.

- **Recording** (:func:`record_batch`), by the consumer after a batch is stored: each station's
  newest observation time, and the messages per source and topic per minute.
- **Judging** is the health sweep's (``services.ingest.workers.health``). A registered station
  that never reported counts as offline in the rates.
- **Queries**: online rates per enterprise or region (the bureaus' plans ask ≥ 85 % for high-risk
  enterprises), and last seen and message rate per source and topic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import asyncpg
from prometheus_client import Gauge
from pydantic import BaseModel

from services.ingest.domain.atlas.kpi import EnterpriseFeed
from shared.db import Conn

log = logging.getLogger(__name__)

ONLINE_TARGET = 0.85
SOURCE_LAST_SEEN = Gauge(
    "qianshao_ingest_source_last_seen_timestamp_seconds",
    "When a message of the source last arrived on the topic (Unix time)",
    ["source", "topic"],
)


async def record_batch(
    conn: Conn,
    *,
    seen: dict[str, datetime],
    messages: Mapping[tuple[str, str], int],
    now: datetime,
) -> None:
    """``seen``: station → newest observation time in the batch; ``messages``: how many
    messages each (source, topic) sent in it."""
    if seen:
        await conn.execute(
            """INSERT INTO ingest.station_health (station_id, last_seen)
               SELECT s, least(t, $3) FROM unnest($1::text[], $2::timestamptz[]) AS x(s, t)
               ON CONFLICT (station_id) DO UPDATE
                   SET last_seen = greatest(station_health.last_seen, EXCLUDED.last_seen)""",
            list(seen),
            list(seen.values()),
            now,
        )
    for source, topic in messages:
        SOURCE_LAST_SEEN.labels(source, topic).set(now.timestamp())
    if messages:
        minute = now.replace(second=0, microsecond=0)
        await conn.execute(
            """INSERT INTO ingest.source_minutes (source, topic, minute, messages, last_seen)
               SELECT s, t, $3, n, $4 FROM unnest($1::text[], $2::text[], $5::bigint[])
                   AS x(s, t, n)
               ON CONFLICT (source, topic, minute) DO UPDATE
                   SET messages = source_minutes.messages + EXCLUDED.messages,
                       last_seen = greatest(source_minutes.last_seen, EXCLUDED.last_seen)""",
            [k[0] for k in messages],
            [k[1] for k in messages],
            minute,
            now,
            list(messages.values()),
        )


class OnlineRate(BaseModel):
    group: str
    stations: int
    online: int
    rate: float
    below_target: bool


GroupBy = Literal["enterprise", "county", "township", "village"]
_GROUP_SQL = {
    "enterprise": "coalesce(s.owner_enterprise, '')",
    "county": "left(s.region_code, 6)",
    "township": "left(s.region_code, 9)",
    "village": "s.region_code",
}


async def online_rates(
    pool: asyncpg.Pool,
    *,
    by: GroupBy,
    region_prefix: str,
    now: datetime,
    factor: float,
) -> list[OnlineRate]:
    """Online now (judged at query time, not at the last sweep) per group."""
    rows = await pool.fetch(
        f"""SELECT {_GROUP_SQL[by]} AS grp, count(*) AS n,
                   count(*) FILTER (WHERE h.last_seen >= $2::timestamptz - make_interval(
                       secs => s.interval_s * $3)) AS online
              FROM ingest.stations s
              LEFT JOIN ingest.station_health h ON h.station_id = s.id
             WHERE s.region_code LIKE $1 || '%' AND NOT s.maintenance
               AND ($4 <> 'enterprise' OR s.owner_enterprise IS NOT NULL)
             GROUP BY 1 ORDER BY 1""",  # noqa: S608 - the grouping comes from a fixed table
        region_prefix,
        now,
        factor,
        by,
    )
    return [
        OnlineRate(
            group=r["grp"],
            stations=r["n"],
            online=r["online"],
            rate=r["online"] / r["n"],
            below_target=r["online"] / r["n"] < ONLINE_TARGET,
        )
        for r in rows
    ]


class SourceHealth(BaseModel):
    source: str
    topic: str
    last_seen: datetime
    messages_5min: int
    per_second: float


async def source_health(pool: asyncpg.Pool, *, now: datetime) -> list[SourceHealth]:
    rows = await pool.fetch(
        """SELECT source, topic, max(last_seen) AS last_seen,
                  coalesce(sum(messages) FILTER (
                      WHERE minute >= $1::timestamptz - interval '5 minutes'), 0)::bigint AS recent
             FROM ingest.source_minutes GROUP BY source, topic ORDER BY source, topic""",
        now,
    )
    return [
        SourceHealth(
            source=r["source"],
            topic=r["topic"],
            last_seen=r["last_seen"],
            messages_5min=r["recent"],
            per_second=r["recent"] / 300.0,
        )
        for r in rows
    ]


async def enterprise_feeds(
    pool: asyncpg.Pool, *, region_prefix: str, now: datetime, factor: float
) -> list[EnterpriseFeed]:
    """Every enterprise that must be monitored online within the prefix, with its stations
    (those whose ``owner_enterprise`` is its credit code) counted as online when not in
    maintenance and heard from within ``factor`` × their interval."""
    rows = await pool.fetch(
        """SELECT e.id, e.name, e.sector, e.region_code, count(s.id) AS stations,
                  count(s.id) FILTER (WHERE NOT s.maintenance AND h.last_seen >=
                      $2::timestamptz - make_interval(secs => s.interval_s * $3)) AS online,
                  max(h.last_seen) AS last_seen
             FROM atlas.enterprises e
             LEFT JOIN ingest.stations s ON s.owner_enterprise = e.id
             LEFT JOIN ingest.station_health h ON h.station_id = s.id
            WHERE e.monitoring_required AND e.region_code LIKE $1 || '%'
            GROUP BY e.id ORDER BY e.region_code, e.id""",
        region_prefix,
        now,
        factor,
    )
    return [
        EnterpriseFeed(
            id=r["id"],
            name=r["name"],
            sector=r["sector"],
            region_code=r["region_code"],
            stations=r["stations"],
            online_stations=r["online"],
            last_seen=r["last_seen"],
        )
        for r in rows
    ]
