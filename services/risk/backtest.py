"""Backtests: replay stored readings (``ingest.readings``) through rules and score the events
against reference events (what really happened, or what was really issued).

The replay runs the same pure engine as the live consumer, so a backtest gives exactly the events
the stream would have given. PostgreSQL does the gathering: one query per station returns each
metric's times and values as two ``float8[]`` arrays (binary, no per-row objects), which are merged
by time and fed to :func:`services.risk.engine.evaluate_point`.

Scoring, per station: a reference event (station, ts, level, hazard) is a *hit* when the rules
raised the station to at least that level (same hazard when given) within ``match_window`` before
or after it; the lead time is reference ts − event ts (positive: the rules were early). A reference
with no such event is a *miss*; a raise with no reference within the window is a *false alarm*.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, Field, model_validator

from services.risk.engine import (
    LevelChange,
    NoUpstream,
    StationPlan,
    StationState,
    evaluate_point,
)
from services.risk.packs import rules_for_station, shipped_packs
from services.risk.rules import Rule, RuleConfigError, parse_rules
from shared.contracts import AwareDatetime, Level, LevelName
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
    runtime_s: float


async def run_backtest(
    pool: asyncpg.Pool, req: BacktestRequest, *, region_prefix: str
) -> BacktestResult:
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
    changes: list[LevelChange] = []
    n_readings = 0
    start = req.from_.timestamp()
    async with pool.acquire() as conn:
        for row in rows:
            attrs = row["attributes"] if isinstance(row["attributes"], Mapping) else {}
            rules = (
                custom
                if custom is not None
                else list(rules_for_station(chosen, row["kind"], attrs).rules)
            )
            if not rules:
                continue
            plan = StationPlan.build(rules)
            warmup = _warmup(rules)
            metrics = sorted(plan.windows.keys() | {m for r in rules for m in r.metrics})
            series = await conn.fetch(
                """SELECT metric, array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS t,
                          array_agg(value ORDER BY ts) AS v
                     FROM ingest.readings
                    WHERE station_id = $1 AND metric = ANY($2::text[])
                      AND ts > $3 AND ts <= $4 AND quality < 2
                    GROUP BY metric""",
                row["id"],
                metrics,
                req.from_ - timedelta(seconds=warmup),
                req.to,
            )
            st = StationState(row["id"], row["region_code"])
            ctx = NoUpstream()
            for metric, ts, value in _merge(series):
                n_readings += 1
                for c in evaluate_point(plan, st, metric, ts, value, ctx):
                    if c.at > start:
                        changes.append(c)
    return _score(req, len(rows), n_readings, changes, time.perf_counter() - t0)


def _custom_rules(req: BacktestRequest) -> list[Rule] | None:
    if req.rules is None:
        return None
    try:
        return parse_rules(req.rules, pack="backtest")
    except RuleConfigError as exc:
        raise ValidationFailed(str(exc)) from exc


def _warmup(rules: list[Rule]) -> float:
    """Data before ``from`` that the windows need to be full at ``from``."""
    w = 0.0
    for r in rules:
        for s in r.signals:
            w = max(w, s.window_s * 86400 if s.agg == "days_running_min" else s.window_s)
    return w


def _merge(series: list[asyncpg.Record]) -> Iterator[tuple[str, float, float]]:
    """The metrics' points merged in time order."""
    streams = [
        ((t, m, v) for t, v in zip(r["t"], r["v"], strict=True))
        for r in series
        for m in [r["metric"]]
    ]
    for t, m, v in heapq.merge(*streams):
        yield m, t, v


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _score(
    req: BacktestRequest,
    n_stations: int,
    n_readings: int,
    changes: list[LevelChange],
    runtime: float,
) -> BacktestResult:
    events = [
        BacktestEvent(
            station_id=c.station_id,
            rule_id=c.rule.rule_id,
            hazard=c.rule.hazard,
            previous_level=c.previous.name,
            level=c.level.name,
            change=c.change,
            ts=_iso(c.at),
            value=c.evidence.get("value"),
        )
        for c in changes
    ]
    raises = [(c, e) for c, e in zip(changes, events, strict=True) if c.change == "raised"]
    counts = Counter(c.level.name for c, _ in raises)
    window = req.match_window_s
    used: set[int] = set()
    hits: list[Match] = []
    misses: list[Match] = []
    for ref in sorted(req.reference_events, key=lambda r: r.ts):
        rt = ref.ts.timestamp()
        want = Level[ref.level]
        found = None
        for i, (c, _e) in enumerate(raises):
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
    false_alarms = [
        e
        for i, (c, e) in enumerate(raises)
        if i not in used
        and not any(abs(c.at - rt) <= window for rt in refs_by_station.get(c.station_id, []))
    ]
    n_refs = len(req.reference_events)
    leads = [h.lead_time_s for h in hits if h.lead_time_s is not None]
    return BacktestResult(
        stations=n_stations,
        readings=n_readings,
        events=events if req.include_events else [],
        counts={lv.name: counts.get(lv.name, 0) for lv in Level if lv != Level.none},
        hits=hits,
        misses=misses,
        false_alarms=false_alarms,
        hit_rate=len(hits) / n_refs if n_refs else None,
        false_alarm_ratio=len(false_alarms) / len(raises) if raises else None,
        mean_lead_time_s=sum(leads) / len(leads) if leads else None,
        runtime_s=runtime,
    )
