"""Pure warning lifecycle decisions: what a risk event does to the open warning of its group.

A warning covers one (hazard, region) group. Its level is the most severe level among its stations.
A station's event sets the level of that station's rule (``none`` removes it); a station's
level is the highest of its rules' (a rain gauge has an observed and a forecast rainstorm rule).
The first station at a level opens the warning (CAP ``Alert``); a change of the warning's level
is an ``Update``; when no station is left, the warning is cancelled (``Cancel``).

Each version is valid until its CAP ``expires`` (sent + validity). Risk re-announces standing
levels periodically; a warning that risk still backs is renewed shortly before it expires (an
``Update`` at the same level), one that risk has stopped backing is ``expired`` when its time
runs out. See :func:`expiry_action`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Generic, Literal, TypeVar

from shared.contracts import Level

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

HAZARD_CN = {
    "rainstorm": "暴雨",
    "flood": "洪水",
    "gale": "大风",
    "heat": "高温",
    "coal_mine_gas": "煤矿瓦斯",
    "hazardous_chemicals": "危险化学品",
    "geohazard": "地质灾害",
    "forest_fire": "森林火险",
    "earthquake": "地震",
}

ADMIN_DIGITS = {"village": 12, "township": 9, "county": 6}


def group_region(region_code: str, admin_level: str) -> str:
    """The division code of the group a station's region belongs to, padded to 12 digits."""
    keep = ADMIN_DIGITS[admin_level]
    return region_code[:keep].ljust(12, "0")


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Decision(Generic[K]):
    action: Literal["none", "issue", "update", "cancel"]
    level: Level
    stations: Mapping[K, Level]


def apply_station_level(
    current_level: Level | None, stations: Mapping[K, Level], key: K, level: Level
) -> Decision[K]:
    """``current_level`` is the open warning's level, or None when the group has no open warning.
    ``stations`` holds the levels that stand, by key: a station, or (station, rule) where one
    station has several rules of the hazard (each stands on its own; the station's level is the
    highest of them, see :func:`by_station`)."""
    new = dict(stations)
    if level == Level.none:
        new.pop(key, None)
    else:
        new[key] = level
    top = max(new.values(), default=Level.none)
    if current_level is None:
        return Decision("issue" if top > Level.none else "none", top, new)
    if top == Level.none:
        return Decision("cancel", current_level, new)
    if top != current_level:
        return Decision("update", top, new)
    return Decision("none", top, new)


def by_station(levels: Mapping[tuple[str, str], Level]) -> dict[str, Level]:
    """Each station's level: the highest of its rules'."""
    out: dict[str, Level] = {}
    for (station, _rule), level in levels.items():
        if level > out.get(station, Level.none):
            out[station] = level
    return out


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    validity: timedelta  # a version's CAP expires = sent + validity
    renew_ahead: timedelta  # a backed warning is renewed this long before it expires
    evidence_timeout: timedelta  # how long risk may go without stating a level it still holds


ExpiryAction = Literal["wait", "renew", "expire", "hold"]


def expiry_action(
    *,
    expires_at: datetime,
    evidence_at: datetime | None,
    risk_heard_at: datetime | None,
    now: datetime,
    policy: ExpiryPolicy,
    controlled: bool = False,
) -> ExpiryAction:
    """What to do with an open warning as its expiry nears.

    ``evidence_at`` is when risk last stated the level of any of the warning's stations, and
    ``risk_heard_at`` when risk was last heard at all, both on risk's clock. Evidence is judged
    against risk's clock, not the wall's: after an outage of alerting or of the broker both lag
    together, and a warning is never expired for news that simply has not arrived yet.

    - ``wait``: not yet within ``renew_ahead`` of expiry, or stale but not yet expired;
    - ``hold``: risk itself has not been heard for ``evidence_timeout``; nothing says whether the
      level stands, so the warning is neither renewed nor expired (the next look decides);
    - ``renew``: risk stated one of its stations' levels within ``evidence_timeout`` of the last
      it said at all;
    - ``expire``: risk is alive but no longer backs the warning, and its time has run out.

    A warning an officer decides (``controlled``) is never renewed by evidence: it runs until
    the expiry the officer gave, then expires, unless the officer continues it (继续发布).
    """
    if now < expires_at - policy.renew_ahead:
        return "wait"
    if controlled:
        return "expire" if now >= expires_at else "wait"
    if risk_heard_at is None or risk_heard_at < now - policy.evidence_timeout:
        return "hold"
    if evidence_at is not None and evidence_at >= risk_heard_at - policy.evidence_timeout:
        return "renew"
    return "expire" if now >= expires_at else "wait"


def identifier(sender_code: str, sent: datetime, serial: int) -> str:
    """GB/T 35965.1 style identifier: sender code, Beijing time to the second, a serial number."""
    return f"{sender_code}_{sent.astimezone(BEIJING):%Y%m%d%H%M%S}_{serial}"


def headline(hazard: str, level: Level, place: str, msg_type: str, *, renewal: bool = False) -> str:
    """``place``: the region in words (五通桥区竹根镇), or its code when the registry has none."""
    name = HAZARD_CN.get(hazard, hazard)
    if msg_type == "Cancel":
        return f"{place}{name}预警解除"
    verb = "发布" if msg_type == "Alert" else "继续发布" if renewal else "变更为"
    return f"{place}{verb}{name}{level.chinese}预警（{level.roman}级）"


def description(hazard: str, level: Level, stations: Mapping[str, Level], msg_type: str) -> str:
    name = HAZARD_CN.get(hazard, hazard)
    if msg_type == "Cancel":
        return f"{name}监测值已回落至预警恢复值以下，预警解除。"
    listed = "、".join(f"{sid}（{lvl.chinese}）" for sid, lvl in sorted(stations.items()))
    return (
        f"{name}{level.chinese}预警：监测站点 {listed} 超过预警阈值，"
        "请相关责任人立即核查并做好防范。"
    )
