"""A plain model of the ingest checks, for the property tests of the compiled kernel: what a
batch's plans, rows, refusals and history summaries must be, written for reading, not speed.
The service runs the compiled kernel alone (services/ingest/domain/_native.c); this model is
the test's statement of what that code must do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ingest.domain.kernel import Checked, Planned
from services.ingest.domain.rows import Row
from services.ingest.domain.validation import CheckPlan, PlanCache, Recent, Scale, StationInfo

Key = tuple[str, str]


def plan_batch(
    topics: list[str], recs: list[Any], stations: dict[str, StationInfo], plans: PlanCache
) -> Planned:
    out: list[CheckPlan | None] = []
    judged: set[Key] = set()
    sources: dict[tuple[str, str], int] = {}
    for topic, raw in zip(topics, recs, strict=True):
        origin = (raw.source, topic)
        sources[origin] = sources.get(origin, 0) + 1
        station = stations.get(raw.station_id)
        if station is None:
            out.append(None)
            continue
        plan = plans.get(station, raw.metric)
        out.append(plan)
        if plan.judged_on_history and raw.kind == "observation":
            judged.add((raw.station_id, raw.metric))
    return Planned(out, judged, sources)


@dataclass
class Verdict:
    value: float = 0.0
    unit: str = ""
    refused: str | None = None
    checks: tuple[str, ...] = ()


def judge(raw: Any, plan: CheckPlan, latest: datetime) -> Verdict:
    value, unit = raw.value, raw.unit
    if plan.canonical is None:
        if unit is None:
            return Verdict(refused="missing_unit")
    elif unit is None:
        unit = plan.canonical
    else:
        conv = plan.converters.get(unit) or plan.converters.get(unit.strip().lower())
        if conv is None:
            return Verdict(refused="bad_unit")
        value = value * conv.factor if isinstance(conv, Scale) else conv(value)
        unit = plan.canonical
    if plan.hard is not None and not plan.hard[0] <= value <= plan.hard[1]:
        return Verdict(value=value, refused="out_of_hard_range")
    checks: list[str] = []
    if plan.soft is not None and not plan.soft[0] <= value <= plan.soft[1]:
        checks.append("soft_range")
    if raw.kind == "observation" and raw.ts > latest:
        checks.append("future_timestamp")
    if plan.maintenance:
        checks.append("maintenance")
    return Verdict(value, unit, None, tuple(checks))


def history(plan: CheckPlan, ts: datetime, value: float, last: Recent) -> tuple[str, ...]:
    if not last or ts <= last[0]:
        return ()
    last_ts, last_value, run = last
    out: tuple[str, ...] = ()
    if plan.max_rate_per_h is not None:
        hours = (ts - last_ts).total_seconds() / 3600.0
        if abs(value - last_value) > plan.max_rate_per_h * hours:
            out = ("spike",)
    n = plan.stuck_count
    if n is not None and n >= 2 and last_value == value and run >= n - 1:
        out = (*out, "stuck")
    return out


def check_batch(
    recs: list[Any],
    plans: list[CheckPlan | None],
    latest: datetime,
    recent: dict[Key, Recent],
    keep: int,
    seen: dict[str, datetime],
) -> Checked:
    rows: list[Row] = []
    forecasts: list[tuple[int, Row]] = []
    rejected: list[tuple[int, str, float | None]] = []
    for i, (raw, plan) in enumerate(zip(recs, plans, strict=True)):
        if plan is None:
            rejected.append((i, "unknown_station", None))
            continue
        v = judge(raw, plan, latest)
        if v.refused is not None:
            rejected.append((i, v.refused, v.value if v.refused == "out_of_hard_range" else None))
            continue
        quality = "doubtful" if {"soft_range", "future_timestamp"} & set(v.checks) else "good"
        checks = v.checks
        key = (raw.station_id, raw.metric)
        observation = raw.kind == "observation"
        if observation and recent and (prior := recent.get(key)) is not None:
            extra = history(plan, raw.ts, v.value, prior)
            if extra:
                quality, checks = "doubtful", (*checks, *extra)
            if quality == "good" and (not prior or raw.ts > prior[0]):
                run = min(prior[2] + 1, keep) if prior and prior[1] == v.value else 1
                recent[key] = (raw.ts, v.value, run)
        row = Row(raw.station_id, raw.metric, raw.ts, v.value, v.unit, quality, checks, raw.source)
        if not observation:
            forecasts.append((i, row))
            continue
        rows.append(row)
        if raw.station_id not in seen or raw.ts > seen[raw.station_id]:
            seen[raw.station_id] = raw.ts
    return Checked(rows, forecasts, rejected, seen)
