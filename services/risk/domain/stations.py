"""A station as risk sees it: its rule packs applied, with the region overrides that cover it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.risk.domain.engine import StationPlan
from services.risk.domain.packs import Pack, rules_for_station

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StationInfo:
    station_id: str
    region_code: str
    kind: str
    interval_s: int
    maintenance: bool
    plan: StationPlan
    problems: tuple[str, ...] = ()


def build_info(
    row: Mapping[str, Any],
    packs: Iterable[Pack],
    overrides: Iterable[tuple[str, str, str, float]],
    tolerance_s: float,
) -> StationInfo:
    """A station's plan from its row and the region overrides (prefix, rule, level, value) that
    cover its region."""
    region = str(row["region_code"])
    by_prefix: dict[str, dict[str, dict[str, float]]] = {}
    for prefix, rule_id, level, value in overrides:
        if region.startswith(prefix):
            by_prefix.setdefault(prefix, {}).setdefault(rule_id, {})[level] = value
    attributes = row["attributes"] if isinstance(row["attributes"], Mapping) else {}
    rules = rules_for_station(packs, str(row["kind"]), attributes, by_prefix.items())
    if rules.problems:
        log.warning(
            "station rules left out", extra={"station_id": row["id"], "problems": rules.problems}
        )
    return StationInfo(
        station_id=str(row["id"]),
        region_code=region,
        kind=str(row["kind"]),
        interval_s=int(row["interval_s"]),
        maintenance=bool(row["maintenance"]),
        plan=StationPlan.build(rules.rules, tolerance_s=tolerance_s),
        problems=rules.problems,
    )
