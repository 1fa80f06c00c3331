"""A station's own thresholds (``attributes.thresholds``) as rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.risk.domain.rules import ACTIVE, Rule, RuleConfigError, parse_rule

# the hazard a metric's threshold speaks to, when a station does not say
HAZARD_OF_METRIC = {
    "rainfall": "rainstorm",
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


def threshold_rules_from_attributes(attributes: Mapping[str, Any]) -> list[Rule]:
    """A station's own thresholds, one rule per metric::

        {"thresholds": {"water_level": {"blue": 3.0, "yellow": 3.5, "orange": 4.0, "red": 4.5,
                                         "direction": "above", "restore": {"blue": 2.9},
                                         "hazard": "flood", "source": "…"}}}

    Levels must be ordered (more severe = further in the direction); restore values must not be
    past their trigger. Invalid specs raise :class:`RuleConfigError`.
    """
    specs = attributes.get("thresholds") or {}
    if not isinstance(specs, Mapping):
        raise RuleConfigError("attributes.thresholds must be an object keyed by metric")
    rules: list[Rule] = []
    for metric, spec in specs.items():
        if not isinstance(spec, Mapping):
            raise RuleConfigError(f"thresholds.{metric} must be an object")
        direction = spec.get("direction", "above")
        if direction not in ("above", "below"):
            raise RuleConfigError(f"thresholds.{metric}.direction must be above or below")
        restore = spec.get("restore") or {}
        if not isinstance(restore, Mapping):
            raise RuleConfigError(f"thresholds.{metric}.restore must be an object")
        for name in restore:
            if name not in spec:
                raise RuleConfigError(f"thresholds.{metric}.restore.{name} has no trigger")
        source = spec.get("source", "station attribute thresholds")
        levels = {
            lvl.name: {
                "value": spec[lvl.name],
                "restore": restore.get(lvl.name),
                "source": source,
            }
            for lvl in ACTIVE
            if spec.get(lvl.name) is not None
        }
        if not levels:
            raise RuleConfigError(f"thresholds.{metric} names no level")
        rules.append(
            parse_rule(
                {
                    "id": f"threshold:{metric}",
                    "hazard": str(spec.get("hazard") or HAZARD_OF_METRIC.get(metric, metric)),
                    "signal": {"metric": metric},
                    "op": ">=" if direction == "above" else "<=",
                    "levels": {
                        k: {**v, "op": ">=" if direction == "above" else "<="}
                        for k, v in levels.items()
                    },
                },
                pack="station",
                path=f"thresholds.{metric}",
            )
        )
    return rules
