"""Warnings a duty officer issues (会商研判, a patrol's finding, a higher level's instruction),
the pure part: what a draft says, whether it may be issued as it stands, which requests need a
second person's approval, and the texts the templates give.

A warning of an officer goes through the same lifecycle as one that risk raises — an ``Alert``,
``Update`` versions (level up or down, a new area, 继续发布 with a new expiry) and a ``Cancel``,
each a CAP version with ``references`` — but every version is asked for by a person, and one
whose level needs it is approved by another person first (four eyes). An officer may also take
over a warning risk raised; from then on the automatic path records its stations' levels but
decides nothing of it (:func:`automatic_may_decide`).

Its area is one or more 12-digit division codes (and, optionally, a CAP polygon that outlines
it); its group region is their nearest common division (:func:`common_region`), through which
scope and region filters see it. An area must lie inside the officer's own region."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from services.alerting.domain.lifecycle import HAZARD_CN
from services.alerting.domain.recipients import CODE_LEVELS
from shared import caprules
from shared.contracts import Level
from shared.errors import PermissionDenied, ValidationFailed

Action = Literal["issue", "update", "cancel"]

# GB/T 35965.1's event type of a hazard. 11B03 (rainstorm) and 11B06 (gale) are seen in the
# national release system's own messages (DOMAIN.md: a provincial gale Update). The others are
# secondary: the meteorological signals' numbering that a commercial weather API publishes for
# China (1001 typhoon … 1003 rainstorm, 1006 gale, 1009 heat, 1025 forest fire), whose 1003 and
# 1006 match 11B03 and 11B06, read as 11Bxx. Hazards outside the meteorological table (flood,
# geohazard, mine gas, chemicals, earthquake) get no guessed code: an officer's warning gives one,
# and the CAP otherwise carries none.
EVENT_TYPES: Mapping[str, str] = {
    "rainstorm": "11B03",
    "gale": "11B06",
    "heat": "11B09",  # secondary
    "forest_fire": "11B25",  # secondary
}

# what the templates say happened, per hazard, before the officer edits it
_FINDING: Mapping[str, str] = {
    "rainstorm": "经会商研判，预计{place}将出现强降雨",
    "flood": "经会商研判，{place}河段水位将持续上涨",
    "geohazard": "经会商研判，{place}地质灾害风险较高",
    "gale": "经会商研判，{place}将出现大风天气",
    "heat": "经会商研判，{place}将出现高温天气",
    "forest_fire": "经会商研判，{place}森林火险等级较高",
    "coal_mine_gas": "经现场核查，{place}煤矿瓦斯浓度异常",
    "hazardous_chemicals": "经现场核查，{place}危险化学品企业存在泄漏风险",
}
MAX_VALIDITY = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Content:
    """What a version of an officer's warning says. ``None`` texts come from the templates."""

    hazard: str
    level: Level
    areas: tuple[str, ...]
    expires: datetime
    polygon: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    effective: datetime | None = None
    event_type: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "hazard": self.hazard,
            "level": self.level.name,
            "areas": list(self.areas),
            "expires": self.expires.isoformat(),
            "polygon": self.polygon,
            "headline": self.headline,
            "description": self.description,
            "instruction": self.instruction,
            "effective": self.effective.isoformat() if self.effective else None,
            "event_type": self.event_type,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Content:
        def opt(key: str) -> str | None:
            v = d.get(key)
            return str(v) if v is not None else None

        effective = opt("effective")
        areas = d["areas"]
        assert isinstance(areas, list)
        return cls(
            hazard=str(d["hazard"]),
            level=Level.parse(str(d["level"])),
            areas=tuple(str(a) for a in areas),
            expires=datetime.fromisoformat(str(d["expires"])),
            polygon=opt("polygon"),
            headline=opt("headline"),
            description=opt("description"),
            instruction=opt("instruction"),
            effective=datetime.fromisoformat(effective) if effective else None,
            event_type=opt("event_type"),
        )


def common_region(areas: Iterable[str]) -> str:
    """The nearest division that holds every area, as a 12-digit code: two villages of one
    township → the township; two townships of one county → the county."""
    codes = list(areas)
    if not codes:
        raise ValueError("no area")
    prefix = codes[0]
    for code in codes[1:]:
        n = 0
        while n < min(len(prefix), len(code)) and prefix[n] == code[n]:
            n += 1
        prefix = prefix[:n]
    keep = max((n for n in CODE_LEVELS if n <= len(prefix)), default=0)
    return prefix[:keep].ljust(12, "0")


def normalise_areas(areas: Sequence[str]) -> tuple[str, ...]:
    """Each area once, in order; an area inside another listed one is dropped (the larger holds
    it)."""
    out: list[str] = []
    for code in areas:
        if code not in out:
            out.append(code)
    sig = {c: _significant(c) for c in out}
    return tuple(c for c in out if not any(o != c and sig[c].startswith(sig[o]) for o in out))


def _significant(code: str) -> str:
    for n in CODE_LEVELS:
        if not code[n:].strip("0"):
            return code[:n]
    return code


def check(
    content: Content, *, region_prefix: str, now: datetime, known_hazards: Iterable[str]
) -> Content:
    """The content as it may be issued, or the rule it breaks (a 422 naming the field; an area
    outside the officer's region is a 403). Fills in the event type the hazard is known by."""
    if content.hazard not in set(known_hazards):
        raise ValidationFailed(
            f"hazard {content.hazard!r} is not one of {', '.join(sorted(known_hazards))}"
        )
    if content.level == Level.none:
        raise ValidationFailed("level: an officer's warning has a level, blue to red")
    if not content.areas:
        raise ValidationFailed("areas: name at least one division code")
    for code in content.areas:
        if len(code) != 12 or not code.isdigit() or code == "0" * 12:
            raise ValidationFailed(f"areas: {code!r} is not a 12-digit division code")
        if not code.startswith(region_prefix):
            raise PermissionDenied(f"area {code} is outside your region {region_prefix or '-'}")
    if content.polygon is not None:
        try:
            caprules.polygon(content.polygon)
        except caprules.CapRuleBroken as exc:
            raise ValidationFailed(f"polygon: {exc}") from exc
    effective = content.effective or now
    if content.expires <= max(effective, now):
        raise ValidationFailed("expires: must be after effective and after now")
    if content.expires - effective > MAX_VALIDITY:
        raise ValidationFailed(
            f"expires: at most {MAX_VALIDITY.days} days after effective; continue it (继续发布) "
            "with an update"
        )
    event_type = content.event_type or EVENT_TYPES.get(content.hazard)
    return replace(content, areas=normalise_areas(content.areas), event_type=event_type)


def needs_approval(
    action: Action, *, level_after: Level, level_before: Level | None, levels: Iterable[str]
) -> bool:
    """Whether a request waits for a second person: an issue or update whose resulting level is
    among ``levels``; a cancel of a warning whose standing level is (lifting a red warning early
    is as weighty as raising one)."""
    wanted = set(levels)
    if action == "cancel":
        return level_before is not None and level_before.name in wanted
    return level_after.name in wanted


def may_decide(requested_by: str, decided_by: str) -> None:
    """Four eyes: the author of a request never approves or rejects it."""
    if requested_by == decided_by:
        raise PermissionDenied("a request is approved or rejected by someone other than its author")


def automatic_may_decide(controlled_by: str | None) -> bool:
    """Whether risk events may still issue versions of a warning: not once an officer decides
    it (their warning, or one they took over)."""
    return controlled_by is None


def held_by_officer(
    hold_level: Level | None, hold_until: datetime | None, level: Level, now: datetime
) -> bool:
    """Whether an event raising ``level`` is held back by an officer's cancel of the group's
    warning: at or below the level cancelled, until the hold ends."""
    if hold_level is None or hold_until is None or now >= hold_until:
        return False
    return Level.none < level <= hold_level


def description(
    hazard: str, level: Level, place: str, msg_type: str, *, reason: str | None = None
) -> str:
    """The template's description of a version."""
    name = HAZARD_CN.get(hazard, hazard)
    if msg_type == "Cancel":
        why = f"，原因：{reason}" if reason else ""
        return f"{place}{name}{level.chinese}预警解除{why}。"
    finding = _FINDING.get(hazard, "经会商研判，{place}" + name + "风险较高").format(place=place)
    return f"{finding}，{name}风险达到{level.chinese}预警（{level.roman}级）标准，请做好防范。"


def area_words(names: Sequence[str]) -> str:
    """Several places in words, as one text: 竹根镇、牛华镇."""
    return "、".join(names)
