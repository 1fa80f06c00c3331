"""Regions: a 12-digit division code's prefix names its region at each administrative level, and
station levels roll up to the most severe level of a region's stations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shared.contracts import Level

AdminLevel = Literal["village", "township", "county"]


def admin_prefix(code: str, level: AdminLevel) -> str:
    """The prefix of a 12-digit code that names its region at ``level``."""
    return code[: {"county": 6, "township": 9, "village": 12}[level]]


def region_of(code: str, level: AdminLevel) -> str:
    """The 12-digit code of the region at ``level`` that contains ``code``."""
    return admin_prefix(code, level).ljust(12, "0")


@dataclass(frozen=True, slots=True)
class RegionLevel:
    region_code: str
    hazard: str
    level: Level
    counts: Mapping[str, int]  # stations per level name, "none" included


def rollup(
    stations: Iterable[tuple[str, str, Level]], admin_level: AdminLevel
) -> dict[tuple[str, str], RegionLevel]:
    """Station levels (region code, hazard, level) rolled up to ``admin_level``: the most severe
    level of the region's stations, with the count of stations at each level."""
    acc: dict[tuple[str, str], dict[str, int]] = {}
    for code, hazard, level in stations:
        key = (region_of(code, admin_level), hazard)
        counts = acc.setdefault(key, {lv.name: 0 for lv in Level})
        counts[level.name] += 1
    out = {}
    for (region, hazard), counts in acc.items():
        top = max((lv for lv in Level if counts[lv.name]), default=Level.none)
        out[(region, hazard)] = RegionLevel(region, hazard, top, counts)
    return out
