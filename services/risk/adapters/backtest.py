"""Backtests: replay stored readings (``ingest.readings``) through rules and score the events
against reference events (what really happened, or what was really issued).

A backtest gives exactly the events the live stream would have given, by two routes:

- **In SQL** (the default, for the rules it can take): a rule on one metric whose signals are the
  last value or a sum/avg/count over sliding windows, with no sustain time and no dependence on
  upstream warnings or other rules. PostgreSQL computes every window with window functions — a
  running sum minus the running sum up to ``t − W`` (two frames that start unbounded, so each is
  O(1) per row; a frame ``RANGE W PRECEDING`` recomputes each window and measured 5× slower) — then
  puts each signal into its *band* between the rule's trigger and restore values
  (``width_bucket``), and returns only the rows whose bands differ from the row before. A level
  depends only on the bands and the level before, and judging the same bands twice changes
  nothing, so the engine judges those rows alone (about 4 % of rainfall data) and gives the
  same events, to the last digit of every value: SQL sums whole millionths of the unit, as the
  engine's windows do.
- **Replay** for the rest (max/min/rate windows, sustained conditions, several metrics in one
  rule, compound and raise rules): one query per station returns each metric's times and values as
  two ``float8[]`` arrays, merged by time and fed to the engine's ``evaluate_point``.

Forecast rules give nothing here: the replay is of stored observations. ``mode="replay"`` sends
every rule through the engine (the reference the SQL route is tested against).

The scoring is in :mod:`services.risk.domain.backtest`.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from services.risk.domain.backtest import BacktestRequest, BacktestResult, score, split_rules
from services.risk.domain.engine import (
    Eval,
    LevelChange,
    NoUpstream,
    StationPlan,
    StationState,
    evaluate_point,
    judge,
)
from services.risk.domain.packs import rules_for_station, shipped_packs
from services.risk.domain.rules import Rule, RuleConfigError, Signal, parse_rules
from services.risk.domain.windows import MICRO
from shared.db import Conn
from shared.errors import NotFound, ValidationFailed


async def run_backtest(
    pool: asyncpg.Pool, req: BacktestRequest, *, region_prefix: str, concurrency: int = 2
) -> BacktestResult:
    """``concurrency`` stations are worked on at once, each on its own connection: the SQL
    windows cost the server about as much CPU as the gathering, so two keep two cores busy."""
    t0 = time.perf_counter()
    custom = _custom_rules(req)
    rows = await pool.fetch(
        """SELECT id, kind, region_code, attributes FROM ingest.stations
            WHERE region_code LIKE $1 || '%' AND ($2::text[] IS NULL OR id = ANY($2::text[]))
            ORDER BY id""",
        region_prefix,
        req.stations,
    )
    if not rows:
        raise NotFound("no station matches the backtest")
    packs = shipped_packs()
    if req.pack is not None and req.pack not in packs:
        raise ValidationFailed(f"no pack {req.pack!r}")
    chosen = [packs[req.pack]] if req.pack else list(packs.values())
    jobs: list[_Job] = []
    for row in rows:
        attrs = row["attributes"] if isinstance(row["attributes"], Mapping) else {}
        if custom is None:
            custom_or_pack = list(rules_for_station(chosen, row["kind"], attrs).rules)
        else:
            custom_or_pack = custom
        rules = [r for r in custom_or_pack if not r.expected]
        if rules:
            jobs.append(_Job(row["id"], row["region_code"], *split_rules(rules, req.mode)))
    results: list[_Done] = [_Done()] * len(jobs)
    nxt = iter(range(len(jobs)))

    async def worker() -> None:
        async with pool.acquire() as conn:
            for i in nxt:
                results[i] = await _station(conn, jobs[i], req)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
    changes = [c for d in results for c in d.changes]
    return score(
        req,
        len(rows),
        sum(d.readings for d in results),
        changes,
        time.perf_counter() - t0,
        in_sql=sum(len(j.sql) for j in jobs),
        replayed=sum(len(j.replay) for j in jobs),
    )


@dataclass(slots=True)
class _Job:
    station_id: str
    region_code: str
    sql: list[Rule]
    replay: list[Rule]


@dataclass(slots=True)
class _Done:
    readings: int = 0
    changes: list[LevelChange] = field(default_factory=list)


async def _station(conn: Conn, job: _Job, req: BacktestRequest) -> _Done:
    done = _Done()
    start = req.from_.timestamp()
    by_metric: dict[str, list[Rule]] = {}
    for r in job.sql:
        by_metric.setdefault(next(iter(r.metrics)), []).append(r)
    for metric, rules in sorted(by_metric.items()):
        n, changes = await _sql_windows(conn, job, metric, rules, req)
        done.readings += n
        done.changes.extend(c for c in changes if c.at > start)
    if job.replay:
        n, changes = await _replay(conn, job, req)
        done.readings += n
        done.changes.extend(c for c in changes if c.at > start)
    done.changes.sort(key=lambda c: c.at)
    return done


async def _sql_windows(
    conn: Conn, job: _Job, metric: str, rules: list[Rule], req: BacktestRequest
) -> tuple[int, list[LevelChange]]:
    signals: dict[str, Signal] = {}
    bounds: dict[str, set[float]] = {}
    for r in rules:
        for _lvl, c in r.criteria():
            signals.setdefault(c.signal.key, c.signal)
            b = bounds.setdefault(c.signal.key, set())
            for v in (c.value, c.restore if c.restore is not None else c.value):
                # x >= v is "bucket past v"; x <= v is "bucket before the next float after v"
                b.add(v if c.op == ">=" else math.nextafter(v, math.inf))
    sigs = list(signals.values())
    windows = sorted({s.window_s for s in sigs if s.agg != "last"})
    counted = {s.window_s for s in sigs if s.agg in ("avg", "count")}
    wcol = {w: i for i, w in enumerate(windows)}
    frames = []
    for i, w in enumerate(windows):
        upto = f"(ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND ${5 + i} PRECEDING)"
        frames.append(f"coalesce(sum(micro) OVER {upto}, 0) AS c{i}")
        if w in counted:
            frames.append(f"count(*) OVER {upto} AS n{i}")
    cols = ["ts", "value", "sum(micro) OVER w AS c", "count(*) OVER w AS n", *frames]
    nb = 5 + len(windows)
    xs = ", ".join(f"{_signal_sql(s, wcol)} AS x{j}" for j, s in enumerate(sigs))
    bands = ", ".join(f"width_bucket(x{j}, ${nb + j}::float8[])" for j in range(len(sigs)))
    # the last row comes back too: it carries the count of readings (judging it again is a no-op)
    query = f"""
        WITH c AS (
            SELECT {", ".join(cols)}
              FROM (SELECT ts, value, round(value * {MICRO}) AS micro FROM ingest.readings
                     WHERE station_id = $1 AND metric = $2 AND ts > $3 AND ts <= $4
                       AND quality < 2) r
            WINDOW w AS (ORDER BY ts ROWS UNBOUNDED PRECEDING)),
        s AS (SELECT ts, n, {xs} FROM c),
        b AS (SELECT s.*, ARRAY[{bands}] AS band FROM s),
        d AS (SELECT b.*, lag(band) OVER o AS prev, lead(ts) OVER o IS NULL AS final
                FROM b WINDOW o AS (ORDER BY ts))
        SELECT extract(epoch FROM ts)::float8 AS t, n,
               {", ".join(f"x{j}" for j in range(len(sigs)))}
          FROM d WHERE prev IS DISTINCT FROM band OR final ORDER BY ts"""  # noqa: S608 - no input
    params: list[Any] = [
        job.station_id,
        metric,
        req.from_ - timedelta(seconds=_warmup(job.sql + job.replay)),
        req.to,
        *(timedelta(seconds=w) for w in windows),
        *(sorted(bounds[s.key]) for s in sigs),
    ]
    out = await conn.fetch(query, *params)
    plan = StationPlan.build(rules)
    st = StationState(job.station_id, job.region_code)
    ctx = NoUpstream()
    changes: list[LevelChange] = []
    keys = [s.key for s in sigs]
    for row in out:
        ev = Eval(plan, st, ctx)
        ev.cache = {k: row[2 + j] for j, k in enumerate(keys)}
        at = row["t"]
        for rule in rules:
            judge(rule, ev, at, None, changes)
    return (out[-1]["n"] if out else 0), changes


def _signal_sql(s: Signal, wcol: Mapping[float, int]) -> str:
    """The signal as the engine's windows compute it: sums of whole millionths, exact in float8
    up to 2^53 of them, so SQL and the engine give the same number to the last bit."""
    if s.agg == "last":
        return "value"
    i = wcol[s.window_s]
    if s.agg == "count":
        return f"(n - n{i})::float8"
    if s.agg == "sum":
        return f"(c - c{i}) / {MICRO}"
    return f"(c - c{i}) / (n - n{i}) / {MICRO}"  # avg


async def _replay(conn: Conn, job: _Job, req: BacktestRequest) -> tuple[int, list[LevelChange]]:
    plan = StationPlan.build(job.replay)
    metrics = sorted(plan.windows.keys() | {m for r in job.replay for m in r.metrics})
    series = await conn.fetch(
        """SELECT metric, array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS t,
                  array_agg(value ORDER BY ts) AS v
             FROM ingest.readings
            WHERE station_id = $1 AND metric = ANY($2::text[])
              AND ts > $3 AND ts <= $4 AND quality < 2
            GROUP BY metric""",
        job.station_id,
        metrics,
        req.from_ - timedelta(seconds=_warmup(job.sql + job.replay)),
        req.to,
    )
    st = StationState(job.station_id, job.region_code)
    ctx = NoUpstream()
    n = 0
    changes: list[LevelChange] = []
    for metric, ts, value in _merge(series):
        n += 1
        changes.extend(evaluate_point(plan, st, metric, ts, value, ctx))
    return n, changes


def _custom_rules(req: BacktestRequest) -> list[Rule] | None:
    if req.rules is None:
        return None
    try:
        return parse_rules(req.rules, pack="backtest")
    except RuleConfigError as exc:
        raise ValidationFailed(str(exc)) from exc


def _warmup(rules: list[Rule]) -> float:
    """Data before ``from`` that the windows need to be full at ``from``: the longest window of
    the station's rules, the same for every rule and route, so that levels carried over from
    before ``from`` (hysteresis) start from the same history."""
    w = 0.0
    for r in rules:
        for s in r.signals:
            w = max(w, s.window_s * 86400 if s.agg == "days_running_min" else s.window_s)
    return w


def _merge(series: list[asyncpg.Record]) -> Iterator[tuple[str, float, float]]:
    """The metrics' points merged in time order."""
    streams = [_points(r["metric"], r["t"], r["v"]) for r in series]
    for t, m, v in heapq.merge(*streams):
        yield m, t, v


def _points(metric: str, ts: list[float], vs: list[float]) -> Iterator[tuple[float, str, float]]:
    # a function, not a generator expression in a loop: each stream binds its own metric
    for t, v in zip(ts, vs, strict=True):
        yield t, metric, v
