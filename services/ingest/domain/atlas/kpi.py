"""高危企业在线监测率: the share of enterprises that must be monitored online and are."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ONLINE_TARGET = 0.85
KpiGroupBy = Literal["county", "township", "sector"]


@dataclass(frozen=True)
class EnterpriseFeed:
    """An enterprise that must be monitored online, and what its stations say now."""

    id: str
    name: str
    sector: str
    region_code: str
    stations: int
    online_stations: int
    last_seen: datetime | None  # the newest reading of any of its stations

    @property
    def online(self) -> bool:
        return self.online_stations > 0

    @property
    def why_offline(self) -> str | None:
        if self.online:
            return None
        if self.stations == 0:
            return "no_station"
        return "never_reported" if self.last_seen is None else "offline"


@dataclass(frozen=True)
class KpiGroup:
    group: str
    required: int
    online: int
    rate: float | None
    target: float
    below_target: bool


def group_of(feed: EnterpriseFeed, by: KpiGroupBy) -> str:
    if by == "sector":
        return feed.sector
    return feed.region_code[:6] + "0" * 6 if by == "county" else feed.region_code[:9] + "000"


def online_monitoring(
    feeds: Iterable[EnterpriseFeed], by: KpiGroupBy, target: float = ONLINE_TARGET
) -> list[KpiGroup]:
    """Per group: enterprises that must be monitored and have at least one station online, over
    all of them. An enterprise without a station counts against it."""
    totals: dict[str, list[int]] = {}
    for f in feeds:
        t = totals.setdefault(group_of(f, by), [0, 0])
        t[0] += 1
        t[1] += int(f.online)
    out = []
    for g, (required, online) in sorted(totals.items()):
        rate = online / required if required else None
        out.append(KpiGroup(g, required, online, rate, target, rate is not None and rate < target))
    return out
