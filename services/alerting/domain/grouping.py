"""When a warning version goes out, and what holds it back: group timers, flapping, inhibition.

Pure decisions, in the manner of Alertmanager's route timers, adapted to warnings:

- ``group_wait``: a new warning waits this long before it goes out, so that the stations of one
  storm crossing at once make one message (default 0: a warning goes out at once).
- ``group_interval``: a warning's next version (lower, or the all-clear) goes out no sooner than
  this after its last one. A *raise* goes out at once: a warning that gets worse never waits.
- ``repeat_interval``: an open warning is repeated to its people this long after they last
  heard of it (0: never).
- Flapping: a group (hazard, region) with ``flap_threshold`` versions within ``flap_window`` is
  flapping; its lowering and all-clear versions are held ``flap_hold``. An all-clear still held
  when the group rises again is withdrawn (it never went out) and the warning goes on, so people
  hear neither the all-clear nor a new warning for the same thing.
- A version superseded before it went out is never sent; an all-clear of a warning that never
  went out is never sent either.
- Inhibition: an open warning of a *source* hazard mutes a lower-level warning of a *target*
  hazard in the same region (a red flood warning mutes the blue rainstorm warning there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import Level


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    group_wait: timedelta = timedelta(0)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(0)
    flap_window: timedelta = timedelta(minutes=30)
    flap_threshold: int = 4
    flap_hold: timedelta = timedelta(minutes=15)


def dispatch_time(
    *,
    now: datetime,
    msg_type: str,
    level: Level,
    previous_level: Level | None,
    last_dispatch_at: datetime | None,
    recent_versions: int,
    policy: GroupPolicy,
) -> datetime:
    """When a new version should go out."""
    if msg_type == "Alert":
        return now + policy.group_wait
    if previous_level is not None and level > previous_level and msg_type == "Update":
        return now
    t = now if last_dispatch_at is None else max(now, last_dispatch_at + policy.group_interval)
    if recent_versions >= policy.flap_threshold:
        t = max(t, now + policy.flap_hold)
    return t


def repeat_due(last_dispatch_at: datetime | None, now: datetime, policy: GroupPolicy) -> bool:
    if policy.repeat_interval <= timedelta(0) or last_dispatch_at is None:
        return False
    return now - last_dispatch_at >= policy.repeat_interval


@dataclass(frozen=True, slots=True)
class OpenWarning:
    id: str
    hazard: str
    region_code: str
    level: Level


def inhibited_by(
    *,
    hazard: str,
    region_code: str,
    level: Level,
    open_warnings: Iterable[OpenWarning],
    rules: Sequence[tuple[str, str]],
) -> OpenWarning | None:
    """The open warning that mutes this one, if any: a rule (source, target) with this hazard
    as target, a warning of the source hazard in the same region at a higher level."""
    sources = {s for s, t in rules if t == hazard}
    if not sources:
        return None
    for w in open_warnings:
        if w.hazard in sources and w.region_code == region_code and w.level > level:
            return w
    return None
