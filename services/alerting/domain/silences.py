"""Silences and maintenance, as pure decisions.

A silence holds back the notifications of warning versions it matches, from its start to its
end: the warning itself lives on (the map, the API, the CAP feed and ``alerts.v1`` show it).
Its matchers — a station, a region prefix, a hazard — must all hold; a station matcher holds
when every station of the version is that station. When the silence ends and the warning is
still open, its latest version goes out then.

An all-clear is never held back once people were told of the warning: they must hear the end of
what they heard the start of.

A station in maintenance raises no warning: its events that would raise its level in a warning
are ignored; events that lower it still apply, so a warning is never stuck on a station under
maintenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    starts_at: datetime
    ends_at: datetime
    station_id: str | None = None
    region_prefix: str | None = None
    hazard: str | None = None

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, hazard: str, region_code: str, station_ids: Sequence[str]) -> bool:
        if self.hazard is not None and self.hazard != hazard:
            return False
        if self.region_prefix is not None and not region_code.startswith(self.region_prefix):
            return False
        return self.station_id is None or (
            bool(station_ids) and all(s == self.station_id for s in station_ids)
        )


def silenced_by(
    silences: Iterable[Silence],
    *,
    hazard: str,
    region_code: str,
    station_ids: Sequence[str],
    msg_type: str,
    earlier_dispatched: bool,
    now: datetime,
) -> Silence | None:
    """The silence that holds this version back, if any."""
    if msg_type == "Cancel" and earlier_dispatched:
        return None
    for s in silences:
        if s.active(now) and s.matches(hazard, region_code, station_ids):
            return s
    return None


def maintenance_ignores(in_maintenance: bool, current: int, new: int) -> bool:
    """Whether a station event is ignored: in maintenance, only a lower level applies."""
    return in_maintenance and new > current
