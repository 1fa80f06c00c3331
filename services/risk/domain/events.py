"""Risk events as the engine's decisions put them on ``risk.events.v1``: a level change, a
no-data change, and the standing announcements. Pure: data and ``now`` in, events out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from services.risk.domain.engine import LevelChange
from shared.contracts import Evidence, Level, RiskEvent, stable_id


def to_event(change: LevelChange, now: datetime) -> RiskEvent:
    ev = change.evidence
    return RiskEvent(
        event_id=stable_id(
            "risk",
            change.station_id,
            change.rule.rule_id,
            change.previous.name,
            change.level.name,
            repr(change.at),
        ),
        produced_at=now,
        scope="station",
        station_id=change.station_id,
        region_code=change.region_code,
        hazard=change.rule.hazard,
        rule_id=change.rule.rule_id,
        previous_level=change.previous.name,
        level=change.level.name,
        change=change.change,
        urgency="Expected" if change.rule.expected else "Immediate",
        event_time=change.event_time,
        evidence=evidence_of(change.rule.rule_id, ev, below=_op(change) == "<="),
    )


def evidence_of(rule_id: str, ev: dict[str, Any], *, below: bool) -> Evidence:
    """The event's evidence from a rule state's evidence (what the engine recorded)."""
    reading = ev.get("reading")
    criteria = list(ev.get("criteria", []))
    return Evidence(
        rule_id=rule_id,
        metric=reading["metric"] if reading else "",
        value=float(ev["value"]) if ev.get("value") is not None else 0.0,
        threshold=ev.get("threshold"),
        direction="below" if below else "above",
        readings=[reading] if reading else [],
        source_clause="; ".join(c["source"] for c in criteria if c.get("source")),
        signal=str(ev.get("signal", "")),
        criteria=criteria,
    )


def _op(change: LevelChange) -> str:
    for _lvl, c in change.rule.criteria():
        return c.op
    return ">="


def nodata_event(
    station_id: str, region_code: str, last_seen: float | None, silent: bool, now: datetime
) -> RiskEvent:
    seen = datetime.fromtimestamp(last_seen, UTC) if last_seen is not None else now
    return RiskEvent(
        event_id=stable_id("nodata", station_id, silent, repr(last_seen)),
        produced_at=now,
        kind="no_data",
        scope="station",
        station_id=station_id,
        region_code=region_code,
        hazard="no_data",
        rule_id="no_data",
        previous_level="none" if silent else "blue",
        level="blue" if silent else "none",
        change="raised" if silent else "cleared",
        event_time=now if silent else seen,
        evidence=Evidence(
            rule_id="no_data",
            metric="last_seen",
            value=last_seen or 0.0,
            source_clause="silent for more than k × the station's reporting interval",
            readings=[{"last_seen": seen.isoformat()}],
        ),
    )


def station_standing(row: Mapping[str, Any], now: datetime, period: int) -> RiskEvent:
    level = Level(row["level"])
    evidence = row["evidence"] if isinstance(row["evidence"], dict) else {}
    criteria = evidence.get("criteria") or []
    below = bool(criteria) and isinstance(criteria[0], dict) and criteria[0].get("op") == "<="
    return RiskEvent(
        event_id=stable_id("standing", row["station_id"], row["rule_id"], level.name, period),
        produced_at=now,
        scope="station",
        station_id=str(row["station_id"]),
        region_code=str(row["region_code"]),
        hazard=str(row["hazard"]),
        rule_id=str(row["rule_id"]),
        previous_level=level.name,
        level=level.name,
        change="standing",
        urgency="Expected" if row["urgency"] == "Expected" else "Immediate",
        event_time=now,
        evidence=evidence_of(str(row["rule_id"]), evidence, below=below),
    )


def county_standing(row: Mapping[str, Any], now: datetime, period: int) -> RiskEvent:
    level = Level(row["level"])
    counts = row["counts"] if isinstance(row["counts"], dict) else {}
    return RiskEvent(
        event_id=stable_id("standing", row["region_code"], row["hazard"], level.name, period),
        produced_at=now,
        scope="region",
        region_code=str(row["region_code"]),
        hazard=str(row["hazard"]),
        rule_id="rollup:county",
        previous_level=level.name,
        level=level.name,
        change="standing",
        event_time=now,
        evidence=Evidence(
            rule_id="rollup:county",
            metric="station_levels",
            value=float(counts.get(level.name, 0)),
            source_clause="most severe station level in the county",
            signal=f"max(station level) over county {row['region_code']}",
            criteria=[{"counts": counts}],
        ),
    )


class RebuildResult(BaseModel):
    """What rebuilding a station's state found: the readings replayed, the levels announced."""

    station_id: str
    readings: int
    changes: list[RiskEvent]
