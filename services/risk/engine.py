"""The pure rule engine: ``evaluate(state, reading, now) -> (state, events)``.

No Kafka, no database: rules and state are plain data, and the same reading applied twice gives the
same state and no second event, so re-delivered messages are harmless.

Threshold rule (this module): one trigger value per level and a direction. The level is the most
severe one whose trigger is crossed. Hysteresis: a level, once reached, holds until the value falls
back past that level's *restore* value (DOMAIN.md: "A level ends when the value falls below its
restore value, not merely below the trigger"). Readings older than the last one evaluated for the
same rule do not move the level (late data is stored, but cannot clear a newer alarm).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from shared.contracts import Level

Direction = Literal["above", "below"]

ACTIVE = (Level.blue, Level.yellow, Level.orange, Level.red)

# the hazard a metric's threshold speaks to, when a station does not say
HAZARD_OF_METRIC = {
    "rainfall": "rainstorm",
    "rainfall_1h": "rainstorm",
    "rainfall_3h": "rainstorm",
    "rainfall_6h": "rainstorm",
    "rainfall_12h": "rainstorm",
    "rainfall_24h": "rainstorm",
    "water_level": "flood",
    "wind_speed": "gale",
    "wind_gust": "gale",
    "temperature": "heat",
    "ch4": "coal_mine_gas",
    "co": "coal_mine_gas",
    "combustible_gas": "hazardous_chemicals",
    "toxic_gas": "hazardous_chemicals",
    "displacement": "geohazard",
    "crack_width": "geohazard",
    "fire_danger": "forest_fire",
}


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    rule_id: str
    metric: str
    hazard: str
    triggers: Mapping[Level, float]
    restores: Mapping[Level, float]
    direction: Direction = "above"
    source_clause: str = ""

    def crossed(self, value: float, bound: float) -> bool:
        return value >= bound if self.direction == "above" else value <= bound

    def restored(self, value: float, level: Level) -> bool:
        bound = self.restores.get(level, self.triggers[level])
        return value < bound if self.direction == "above" else value > bound

    def classify(self, value: float, current: Level) -> Level:
        raised = Level.none
        for lvl in ACTIVE:
            t = self.triggers.get(lvl)
            if t is not None and self.crossed(value, t):
                raised = lvl
        if raised >= current:
            return raised
        # below the current trigger: hold each level until its restore value is passed
        for lvl in sorted((lv for lv in ACTIVE if raised < lv <= current), reverse=True):
            if lvl in self.triggers and not self.restored(value, lvl):
                return lvl
        return raised


@dataclass(frozen=True, slots=True)
class RuleState:
    level: Level = Level.none
    since: datetime | None = None
    last_ts: datetime | None = None
    last_value: float | None = None


@dataclass(frozen=True, slots=True)
class ReadingIn:
    station_id: str
    region_code: str
    metric: str
    ts: datetime
    value: float
    quality: str = "good"
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class LevelChange:
    station_id: str
    region_code: str
    rule: ThresholdRule
    previous: Level
    level: Level
    reading: ReadingIn
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def change(self) -> Literal["raised", "lowered", "cleared"]:
        if self.level == Level.none:
            return "cleared"
        return "raised" if self.level > self.previous else "lowered"


def evaluate(
    rule: ThresholdRule, state: RuleState, reading: ReadingIn, now: datetime
) -> tuple[RuleState, list[LevelChange]]:
    """Apply one reading to one rule's state."""
    del now  # threshold rules judge by the reading's own time; kept for the common signature
    if reading.metric != rule.metric or reading.quality == "bad":
        return state, []
    if state.last_ts is not None and reading.ts <= state.last_ts:
        return state, []  # late or repeated: cannot move the level
    new_level = rule.classify(reading.value, state.level)
    if new_level == state.level:
        return replace(state, last_ts=reading.ts, last_value=reading.value), []
    new_state = RuleState(
        level=new_level, since=reading.ts, last_ts=reading.ts, last_value=reading.value
    )
    threshold = (
        rule.triggers.get(new_level)
        if new_level != Level.none
        else rule.restores.get(state.level, rule.triggers.get(state.level))
    )
    change = LevelChange(
        station_id=reading.station_id,
        region_code=reading.region_code,
        rule=rule,
        previous=state.level,
        level=new_level,
        reading=reading,
        evidence={"threshold": threshold},
    )
    return new_state, [change]


class RuleConfigError(ValueError):
    pass


def threshold_rules_from_attributes(attributes: Mapping[str, Any]) -> list[ThresholdRule]:
    """Read a station's threshold rules from its attributes::

        {"thresholds": {"water_level": {"blue": 3.0, "yellow": 3.5, "orange": 4.0, "red": 4.5,
                                         "direction": "above", "restore": {"blue": 2.9},
                                         "hazard": "flood", "source": "…"}}}

    Levels must be ordered (more severe = further in the direction). Invalid specs raise
    :class:`RuleConfigError`.
    """
    specs = attributes.get("thresholds") or {}
    if not isinstance(specs, Mapping):
        raise RuleConfigError("attributes.thresholds must be an object keyed by metric")
    rules = []
    for metric, spec in specs.items():
        if not isinstance(spec, Mapping):
            raise RuleConfigError(f"thresholds.{metric} must be an object")
        direction = spec.get("direction", "above")
        if direction not in ("above", "below"):
            raise RuleConfigError(f"thresholds.{metric}.direction must be above or below")
        triggers = {lvl: float(spec[lvl.name]) for lvl in ACTIVE if spec.get(lvl.name) is not None}
        if not triggers:
            raise RuleConfigError(f"thresholds.{metric} names no level")
        ordered = [triggers[lv] for lv in ACTIVE if lv in triggers]
        sign = 1 if direction == "above" else -1
        if any(sign * (b - a) <= 0 for a, b in itertools.pairwise(ordered)):
            raise RuleConfigError(f"thresholds.{metric}: levels must grow more severe in order")
        restore_spec = spec.get("restore") or {}
        restores = {Level.parse(k): float(v) for k, v in restore_spec.items()}
        for lvl, r in restores.items():
            if lvl not in triggers:
                raise RuleConfigError(f"thresholds.{metric}.restore.{lvl.name} has no trigger")
            if sign * (triggers[lvl] - r) < 0:
                raise RuleConfigError(
                    f"thresholds.{metric}.restore.{lvl.name} must not be past its trigger"
                )
        rules.append(
            ThresholdRule(
                rule_id=f"threshold:{metric}",
                metric=metric,
                hazard=str(spec.get("hazard") or HAZARD_OF_METRIC.get(metric, metric)),
                triggers=triggers,
                restores=restores,
                direction=direction,
                source_clause=str(spec.get("source", "station attribute thresholds")),
            )
        )
    return rules
