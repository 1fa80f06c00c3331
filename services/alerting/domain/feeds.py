"""Feeds gone silent, as pure decisions.

A station is offline while either of two signals says so: ingest's health sweep
(``stations.health.v1``) or risk's no-data event (``kind=no_data``). Both usually fire together;
either alone is enough, and the station is back when neither holds.

One **incident** per subject lasts from the subject's first station going offline to its last
coming back. The subject is the enterprise the station belongs to (its credit code), or the
station itself when it belongs to none: an enterprise whose five sensors fall silent together
is one incident and one notice, not five.

Who is told, once per incident:

- the enterprise's safety officer (from the 一张图's enterprise registry);
- the on-duty duty officers of the station's region — the township's, or the nearest level above
  it that has anyone on duty;
- after ``escalate_after`` still offline, the on-duty officers of the level above those;
- when the last station is back, everyone who was told, with how long it lasted.

A silence holds the offline notice and the escalation (``hazard`` ``feed_offline``, a region, a
station); a station in maintenance raises nothing; storm mode's limit applies to people as for
warnings. A back-online notice goes to whoever heard the offline one, and to nobody else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.alerting.domain.lifecycle import BEIJING
from services.alerting.domain.recipients import DUTY_ROLES, Person, ancestors, jurisdiction

FEED_HAZARD = "feed_offline"
Source = Literal["health", "no_data"]
Step = Literal["open", "join", "leave", "close", "none"]
# a notice's version in the ledger: ``feed:<incident id>`` / 1, 2, 3
OFFLINE, ESCALATION, BACK = 1, 2, 3


@dataclass(frozen=True, slots=True)
class Signal:
    """One station's signal from one source: offline or back, at ``at``."""

    event_id: str
    station_id: str
    source: Source
    offline: bool
    region_code: str
    enterprise: str | None
    at: datetime
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    subject: str
    enterprise: str | None
    region_code: str
    title: str
    opened_at: datetime
    notified_at: datetime | None = None
    notified_level: str | None = None
    escalated_at: datetime | None = None
    # the (station, source) signals offline in it
    offline: frozenset[tuple[str, str]] = frozenset()

    @property
    def stations(self) -> list[str]:
        return sorted({s for s, _ in self.offline})


def subject_of(station_id: str, enterprise: str | None) -> str:
    return f"enterprise:{enterprise}" if enterprise else f"station:{station_id}"


def step(incident: Incident | None, s: Signal) -> Step:
    """What a signal does to its subject's open incident (None: there is none)."""
    key = (s.station_id, s.source)
    if s.offline:
        if incident is None:
            return "open"
        return "none" if key in incident.offline else "join"
    if incident is None or key not in incident.offline:
        return "none"
    return "close" if incident.offline == {key} else "leave"


def duty_level(region_code: str, on_duty: Sequence[Person]) -> tuple[str, list[Person]]:
    """The on-duty duty officers of the region's own jurisdiction, or of the nearest level above
    it that has any; with that level (the region's own when nobody is on duty anywhere)."""
    area = jurisdiction(region_code)
    for level in (area, *ancestors(area)):
        found = [p for p in on_duty if _on_duty_at(p, level)]
        if found:
            return level, found
    return area, []


def escalation_level(notified_level: str, on_duty: Sequence[Person]) -> tuple[str, list[Person]]:
    """The on-duty duty officers of the nearest level above ``notified_level`` that has any."""
    for level in ancestors(notified_level):
        found = [p for p in on_duty if _on_duty_at(p, level)]
        if found:
            return level, found
    return notified_level, []


def _on_duty_at(p: Person, level: str) -> bool:
    return p.role in DUTY_ROLES and p.on_duty and p.jurisdiction == level


def escalation_due(incident: Incident, now: datetime, after: timedelta) -> bool:
    return (
        incident.notified_at is not None
        and incident.escalated_at is None
        and now - incident.opened_at >= after
    )


def span_cn(d: timedelta) -> str:
    """A duration as people say it: ``2小时15分钟``, ``3天4小时``, ``不足1分钟``."""
    minutes = int(d.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}天{hours}小时" if hours else f"{days}天"
    if hours:
        return f"{hours}小时{mins}分钟" if mins else f"{hours}小时"
    return f"{mins}分钟" if mins else "不足1分钟"


def _stations(stations: Sequence[str]) -> str:
    shown = "、".join(stations[:5])
    return f"{shown}等{len(stations)}个站点" if len(stations) > 5 else shown


def offline_text(incident: Incident) -> str:
    since = incident.opened_at.astimezone(BEIJING)
    return (
        f"【监测离线】{incident.title}的在线监测自{since:%m月%d日%H:%M}起中断"
        f"（{_stations(incident.stations)}）。请核实设备与传输，尽快恢复。"
    )


def escalation_text(incident: Incident, now: datetime) -> str:
    return (
        f"【离线升级】{incident.title}的在线监测已中断{span_cn(now - incident.opened_at)}，"
        f"尚未恢复（{_stations(incident.stations)}）。请督促落实整改。"
    )


def back_text(incident: Incident, now: datetime) -> str:
    return (
        f"【恢复在线】{incident.title}的在线监测已恢复，中断{span_cn(now - incident.opened_at)}。"
    )
