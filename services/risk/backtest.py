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
  two ``float8[]`` arrays, merged by time and fed to :func:`services.risk.engine.evaluate_point`.

Forecast rules give nothing here: the replay is of stored observations. ``mode="replay"`` sends
every rule through the engine (the reference the SQL route is tested against).

Scoring, per station: a reference event (station, ts, level, hazard) is a *hit* when the rules
raised the station to at least that level (same hazard when given) within ``match_window`` before
or after it; the lead time is reference ts − event ts (positive: the rules were early). A reference
with no such event is a *miss*; a raise with no reference within the window is a *false alarm*.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import asyncpg
from pydantic import BaseModel, Field, model_validator

from services.risk.engine import (
    Eval,
    LevelChange,
    NoUpstream,
    StationPlan,
    StationState,
    evaluate_point,
    judge,
)
from services.risk.packs import rules_for_station, shipped_packs
from services.risk.rules import Rule, RuleConfigError, Signal, parse_rules
from services.risk.windows import MICRO
from shared.contracts import AwareDatetime, Level, LevelName
from shared.db import Conn
from shared.errors import NotFound, ValidationFailed

MAX_SPAN = timedelta(days=366)
MAX_STATIONS = 5000


class ReferenceEvent(BaseModel):
    station_id: str
    ts: AwareDatetime
    level: LevelName = "blue"
    hazard: str | None = None


class BacktestRequest(BaseModel):
    pack: str | None = Field(default=None, description="a shipped pack id; default: all packs")
    rules: list[dict[str, Any]] | None = Field(
        default=None, description="rules in the pack format, applied to every station given"
    )
    stations: list[str] | None = Field(default=None, max_length=MAX_STATIONS)
    region: str | None = Field(default=None, pattern=r"^\d{2,12}$")
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime
    reference_events: list[ReferenceEvent] = Field(default_factory=list)
    match_window_s: float = Field(default=6 * 3600, ge=0, le=7 * 86400)
    include_events: bool = True
    mode: Literal["auto", "replay"] = Field(
        default="auto",
        description="auto: windows in SQL where a rule allows it; replay: every rule in Python",
    )

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _check(self) -> BacktestRequest:
        if self.to <= self.from_:
            raise ValueError("'to' must be after 'from'")
        if self.to - self.from_ > MAX_SPAN:
            raise ValueError("a backtest spans at most 366 days")
        if not self.stations and not self.region:
            raise ValueError("name stations or a region")
        return self


class BacktestEvent(BaseModel):
    station_id: str
    rule_id: str
    hazard: str
    previous_level: LevelName
    level: LevelName
    change: str
    ts: str
    value: float | None


class Match(BaseModel):
    station_id: str
    reference_ts: str
    level: LevelName
    event_ts: str | None = None
    lead_time_s: float | None = None


class BacktestResult(BaseModel):
    stations: int
    readings: int
    events: list[BacktestEvent]
    counts: dict[str, int] = Field(description="raise events per level reached")
    hits: list[Match]
    misses: list[Match]
    false_alarms: list[BacktestEvent]
    hit_rate: float | None
    false_alarm_ratio: float | None
    mean_lead_time_s: float | None
    rules_in_sql: int = Field(description="(station, rule) pairs judged from SQL windows")
    rules_replayed: int = Field(description="(station, rule) pairs replayed through the engine")
    runtime_s: float


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
            jobs.append(_Job(row["id"], row["region_code"], *_split(rules, req.mode)))
    results: list[_Done] = [_Done()] * len(jobs)
    nxt = iter(range(len(jobs)))

    async def worker() -> None:
        async with pool.acquire() as conn:
            for i in nxt:
                results[i] = await _station(conn, jobs[i], req)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
    changes = [c for d in results for c in d.changes]
    return _score(
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


SQL_AGGS = frozenset({"last", "sum", "avg", "count"})


def sql_capable(rule: Rule) -> bool:
    """The rule's level follows from its signals' bands alone, and SQL can compute them."""
    return (
        not rule.compound
        and len(rule.metrics) == 1
        and all(s.kind == "observation" and s.agg in SQL_AGGS for s in rule.signals)
        and not any(spec.sustain_s for spec in rule.levels)
    )


def _split(rules: list[Rule], mode: str) -> tuple[list[Rule], list[Rule]]:
    if mode == "replay" or any(r.compound for r in rules):
        return [], rules  # rules that read other rules' levels need every rule in one engine
    return [r for r in rules if sql_capable(r)], [r for r in rules if not sql_capable(r)]


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


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _event(c: LevelChange) -> BacktestEvent:
    return BacktestEvent.model_construct(  # built from typed engine output: nothing to validate
        station_id=c.station_id,
        rule_id=c.rule.rule_id,
        hazard=c.rule.hazard,
        previous_level=cast(LevelName, c.previous.name),
        level=cast(LevelName, c.level.name),
        change=c.change,
        ts=_iso(c.at),
        value=c.evidence.get("value"),
    )


def _score(
    req: BacktestRequest,
    n_stations: int,
    n_readings: int,
    changes: list[LevelChange],
    runtime: float,
    *,
    in_sql: int,
    replayed: int,
) -> BacktestResult:
    raises = [c for c in changes if c.change == "raised"]
    counts = Counter(c.level.name for c in raises)
    window = req.match_window_s
    used: set[int] = set()
    hits: list[Match] = []
    misses: list[Match] = []
    for ref in sorted(req.reference_events, key=lambda r: r.ts):
        rt = ref.ts.timestamp()
        want = Level[ref.level]
        found = None
        for i, c in enumerate(raises):
            if (
                c.station_id == ref.station_id
                and c.level >= want
                and (ref.hazard is None or ref.hazard == c.rule.hazard)
                and abs(c.at - rt) <= window
            ):
                found = (i, c)
                break
        m = Match(station_id=ref.station_id, reference_ts=ref.ts.isoformat(), level=ref.level)
        if found is None:
            misses.append(m)
            continue
        used.add(found[0])
        m.event_ts = _iso(found[1].at)
        m.lead_time_s = rt - found[1].at
        hits.append(m)
    refs_by_station: dict[str, list[float]] = {}
    for ref in req.reference_events:
        refs_by_station.setdefault(ref.station_id, []).append(ref.ts.timestamp())
    # false alarms are judged against the reference events; without any there is nothing to judge
    false_alarms = [
        _event(c)
        for i, c in enumerate(raises)
        if req.reference_events
        and i not in used
        and not any(abs(c.at - rt) <= window for rt in refs_by_station.get(c.station_id, []))
    ]
    n_refs = len(req.reference_events)
    leads = [h.lead_time_s for h in hits if h.lead_time_s is not None]
    return BacktestResult(
        stations=n_stations,
        readings=n_readings,
        events=[_event(c) for c in changes] if req.include_events else [],
        counts={lv.name: counts.get(lv.name, 0) for lv in Level if lv != Level.none},
        hits=hits,
        misses=misses,
        false_alarms=false_alarms,
        hit_rate=len(hits) / n_refs if n_refs else None,
        false_alarm_ratio=(
            len(false_alarms) / len(raises) if raises and req.reference_events else None
        ),
        mean_lead_time_s=sum(leads) / len(leads) if leads else None,
        rules_in_sql=in_sql,
        rules_replayed=replayed,
        runtime_s=runtime,
    )
