"""Reading a station's data back: a series at any bucket, from the raw rows or from the roll-ups,
whichever fits; and the latest value of each metric.

The source is chosen from the bucket: a whole number of days reads the daily roll-ups, a whole
number of hours the hourly ones, anything finer (or ``raw``) the raw rows. Roll-up buckets are
combined exactly (min of minima, sum of sums, sum of counts, avg = sum / count), so a 3 h bucket
from hourly roll-ups equals the one from raw data. Buckets are aligned to Beijing midnight, and
hold ``[start, start + bucket)``. Bad readings are never part of a bucket; the raw series shows
them with their quality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from shared.errors import ValidationFailed

Agg = Literal["avg", "min", "max", "sum", "count"]
Source = Literal["raw", "1h", "1d"]

MAX_POINTS = 100_000
ORIGIN = datetime.fromisoformat("2000-01-01T00:00:00+08:00")  # Beijing midnight
_BUCKET = re.compile(r"^(\d{1,4})(s|min|h|d)$")
_UNIT = {"s": 1, "min": 60, "h": 3600, "d": 86400}
_RAW_AGG = {"avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)",
            "count": "count(*)::float8"}  # fmt: skip
_ROLLUP_AGG = {"avg": "sum(sum) / sum(count)", "min": "min(min)", "max": "max(max)",
               "sum": "sum(sum)", "count": "sum(count)::float8"}  # fmt: skip


def parse_bucket(text: str) -> timedelta | None:
    """``raw`` → None; ``5min``, ``1h``, ``3h``, ``1d`` … → the bucket length."""
    if text == "raw":
        return None
    m = _BUCKET.match(text)
    if not m or int(m.group(1)) == 0:
        raise ValidationFailed("bucket: 'raw' or a length such as 5min, 1h, 3h or 1d")
    return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])


def source_for(bucket: timedelta | None) -> Source:
    if bucket is None:
        return "raw"
    seconds = int(bucket.total_seconds())
    if seconds % 86400 == 0:
        return "1d"
    if seconds % 3600 == 0:
        return "1h"
    return "raw"


@dataclass(frozen=True, slots=True)
class Point:
    ts: datetime
    value: float
    quality: int | None = None  # raw points only: 0 good, 1 doubtful, 2 bad


async def series(
    pool: asyncpg.Pool,
    *,
    station_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta | None,
    agg: Agg,
) -> tuple[Source, list[Point]]:
    if end <= start:
        raise ValidationFailed("'to' must be after 'from'")
    src = source_for(bucket)
    span = (end - start) / (bucket or timedelta(minutes=1))
    if span > MAX_POINTS:
        raise ValidationFailed(
            f"about {int(span):,} points asked for; at most {MAX_POINTS:,}: use a larger bucket"
        )
    if bucket is None:
        rows = await pool.fetch(
            """SELECT ts, value, quality FROM ingest.readings
                WHERE station_id = $1 AND metric = $2 AND ts >= $3 AND ts < $4
                ORDER BY ts LIMIT $5""",
            station_id,
            metric,
            start,
            end,
            MAX_POINTS + 1,
        )
        if len(rows) > MAX_POINTS:
            raise ValidationFailed(f"more than {MAX_POINTS:,} raw points: use a bucket")
        return src, [Point(r["ts"], r["value"], r["quality"]) for r in rows]
    if src == "raw":
        query = f"""SELECT date_bin($5, ts, $6) AS t, {_RAW_AGG[agg]} AS v
                      FROM ingest.readings
                     WHERE station_id = $1 AND metric = $2 AND ts >= $3 AND ts < $4
                       AND quality < 2
                     GROUP BY 1 ORDER BY 1"""  # noqa: S608 - the aggregate comes from a fixed table
    else:
        table = "ingest.readings_1d" if src == "1d" else "ingest.readings_1h"
        query = f"""SELECT date_bin($5, bucket, $6) AS t, {_ROLLUP_AGG[agg]} AS v
                      FROM {table}
                     WHERE station_id = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4
                     GROUP BY 1 ORDER BY 1"""  # noqa: S608 - fixed names only
    rows = await pool.fetch(query, station_id, metric, start, end, bucket, ORIGIN)
    return src, [Point(r["t"], r["v"]) for r in rows]


@dataclass(frozen=True, slots=True)
class Latest:
    metric: str
    ts: datetime
    value: float
    unit: str
    quality: int


async def latest(pool: asyncpg.Pool, station_id: str) -> list[Latest]:
    """The newest reading of each of the station's metrics (any quality: a bad one is news too)."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (metric) metric, ts, value, unit, quality FROM ingest.readings
            WHERE station_id = $1 ORDER BY metric, ts DESC""",
        station_id,
    )
    return [Latest(r["metric"], r["ts"], r["value"], r["unit"], r["quality"]) for r in rows]
