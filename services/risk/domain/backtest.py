"""Backtests, the pure part: the request and result, which rules SQL can judge, and the scoring of
the events against reference events (see :mod:`services.risk.adapters.backtest` for the two
routes that produce the events).

Scoring, per station: a reference event (station, ts, level, hazard) is a *hit* when the rules
raised the station to at least that level (same hazard when given) within ``match_window`` before
or after it; the lead time is reference ts − event ts (positive: the rules were early). A reference
with no such event is a *miss*; a raise with no reference within the window is a *false alarm*.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, model_validator

from services.risk.domain.engine import LevelChange
from services.risk.domain.rules import Rule
from shared.api_types import Flag, Number
from shared.contracts import AwareDatetime, Level, LevelName

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
    match_window_s: Number = Field(default=6 * 3600, ge=0, le=7 * 86400)
    include_events: Flag = True
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


SQL_AGGS = frozenset({"last", "sum", "avg", "count"})


def sql_capable(rule: Rule) -> bool:
    """The rule's level follows from its signals' bands alone, and SQL can compute them."""
    return (
        not rule.compound
        and len(rule.metrics) == 1
        and all(s.kind == "observation" and s.agg in SQL_AGGS for s in rule.signals)
        and not any(spec.sustain_s for spec in rule.levels)
    )


def split_rules(rules: list[Rule], mode: str) -> tuple[list[Rule], list[Rule]]:
    if mode == "replay" or any(r.compound for r in rules):
        return [], rules  # rules that read other rules' levels need every rule in one engine
    return [r for r in rules if sql_capable(r)], [r for r in rules if not sql_capable(r)]


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


def score(
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
