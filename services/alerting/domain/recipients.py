"""Who receives a warning, on which channels, who must confirm it (叫应), and to whom an
unconfirmed one escalates. Pure functions over plain data; the consumer loads the people.

Regions are 12-digit administrative codes: province 2 digits, city 4, county 6, township 9,
village 12. A person's *jurisdiction* is the significant prefix of their code (a county duty
officer's ``110101000000`` is ``110101``). A person is in scope of a warning when either one's
area contains the other's: a village cadre inside a township warning, and the county duty officer
above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from shared.contracts import Level

Role = Literal[
    "village_cadre",
    "grid_worker",
    "info_officer",
    "enterprise_safety_officer",
    "township_duty_officer",
    "county_duty_officer",
    "leader",
]
ROLES: tuple[Role, ...] = get_args(Role)
DUTY_ROLES = frozenset({"township_duty_officer", "county_duty_officer"})
PersonChannel = Literal["sms", "wechat_mp", "wecom_app", "email"]
CODE_LEVELS = (2, 4, 6, 9, 12)


def jurisdiction(region_code: str) -> str:
    """The significant prefix of a 12-digit code: ``110101001000`` → ``110101001``."""
    for n in CODE_LEVELS:
        if not region_code[n:].strip("0"):
            return region_code[:n]
    return region_code


def ancestors(prefix: str) -> list[str]:
    """The jurisdictions above ``prefix``, nearest first: ``110101001`` → ``110101``, ``1101``,
    ``11``."""
    return [prefix[:n] for n in reversed(CODE_LEVELS) if n < len(prefix)]


def in_scope(person_jurisdiction: str, warning_region: str) -> bool:
    area = jurisdiction(warning_region)
    return area.startswith(person_jurisdiction) or person_jurisdiction.startswith(area)


@dataclass(frozen=True, slots=True)
class Subscription:
    hazard: str | None
    min_level: Level
    channels: tuple[PersonChannel, ...]


DEFAULT_SUBSCRIPTIONS = (Subscription(None, Level.blue, ("sms",)),)


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    name: str
    role: Role
    region_code: str
    phone: str | None = None
    wechat_openid: str | None = None
    wecom_userid: str | None = None
    email: str | None = None
    drill: bool = False
    on_duty: bool = False
    subscriptions: tuple[Subscription, ...] = ()

    @property
    def jurisdiction(self) -> str:
        return jurisdiction(self.region_code)

    def target(self, channel: PersonChannel) -> str | None:
        return {
            "sms": self.phone,
            "wechat_mp": self.wechat_openid,
            "wecom_app": self.wecom_userid,
            "email": self.email,
        }[channel]


@dataclass(frozen=True, slots=True)
class Send:
    person: Person
    channel: PersonChannel
    target: str


@dataclass(frozen=True, slots=True)
class Fanout:
    sends: list[Send] = field(default_factory=list)
    # people who must confirm receipt (叫应)
    confirmers: list[Person] = field(default_factory=list)


def receives(person: Person, *, drill: bool) -> bool:
    if drill and not person.drill:
        return False
    # duty officers are reached through the roster: only while on duty
    return person.role not in DUTY_ROLES or person.on_duty


def needs_confirmation(level: Level, msg_type: str, *, confirm_orange: bool) -> bool:
    if msg_type == "Cancel":
        return False
    return level == Level.red or (confirm_orange and level == Level.orange)


def fan_out(
    persons: Iterable[Person],
    *,
    hazard: str,
    level: Level,
    region_code: str,
    msg_type: str,
    drill: bool,
    confirm_orange: bool = False,
) -> Fanout:
    """The sends of one warning version, and who must confirm it.

    A person gets the union of the channels of their subscriptions that match the hazard and
    level (no subscription: every hazard, from blue, by SMS); a channel they have no address for
    is skipped. Everyone in scope inside the warning's area, leaders aside, must confirm a red
    warning (and an orange one when configured).
    """
    out = Fanout()
    area = jurisdiction(region_code)
    confirm = needs_confirmation(level, msg_type, confirm_orange=confirm_orange)
    for p in persons:
        if not in_scope(p.jurisdiction, region_code) or not receives(p, drill=drill):
            continue
        channels: list[PersonChannel] = []
        for s in p.subscriptions or DEFAULT_SUBSCRIPTIONS:
            if (s.hazard is None or s.hazard == hazard) and level >= s.min_level:
                channels.extend(c for c in s.channels if c not in channels)
        sends = [Send(p, c, t) for c in channels if (t := p.target(c))]
        out.sends.extend(sends)
        if confirm and sends and p.role != "leader" and p.jurisdiction.startswith(area):
            out.confirmers.append(p)
    return out


def fan_out_areas(
    persons: Iterable[Person],
    *,
    areas: Sequence[str],
    hazard: str,
    level: Level,
    msg_type: str,
    drill: bool,
    confirm_orange: bool = False,
) -> Fanout:
    """:func:`fan_out` over a warning of several divisions: a person in scope of any of them
    gets it once on each of their channels, and confirms it once."""
    people = list(persons)
    if len(areas) == 1:
        return fan_out(
            people,
            hazard=hazard,
            level=level,
            region_code=areas[0],
            msg_type=msg_type,
            drill=drill,
            confirm_orange=confirm_orange,
        )
    out = Fanout()
    sent: set[tuple[int, str]] = set()
    confirming: set[int] = set()
    for code in areas:
        part = fan_out(
            people,
            hazard=hazard,
            level=level,
            region_code=code,
            msg_type=msg_type,
            drill=drill,
            confirm_orange=confirm_orange,
        )
        for s in part.sends:
            if (s.person.id, s.channel) not in sent:
                sent.add((s.person.id, s.channel))
                out.sends.append(s)
        for p in part.confirmers:
            if p.id not in confirming:
                confirming.add(p.id)
                out.confirmers.append(p)
    return out


@dataclass(frozen=True, slots=True)
class ConfirmTask:
    id: int
    person_id: int
    jurisdiction: str
    created_at: datetime
    confirmed_at: datetime | None = None
    voice_at: datetime | None = None
    escalated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConfirmPolicy:
    voice_after: timedelta = timedelta(minutes=10)  # T1
    escalate_after: timedelta = timedelta(minutes=30)  # T2


def due_actions(
    tasks: Iterable[ConfirmTask], now: datetime, policy: ConfirmPolicy
) -> list[tuple[ConfirmTask, Literal["voice", "escalate"]]]:
    """Unconfirmed after T1: a voice call. After T2: escalate. Each happens once per task."""
    out: list[tuple[ConfirmTask, Literal["voice", "escalate"]]] = []
    for t in tasks:
        if t.confirmed_at is not None:
            continue
        age = now - t.created_at
        if t.voice_at is None and age >= policy.voice_after:
            out.append((t, "voice"))
        if t.escalated_at is None and age >= policy.escalate_after:
            out.append((t, "escalate"))
    return out


def escalation_targets(person_jurisdiction: str, on_duty: Sequence[Person]) -> list[Person]:
    """The on-duty duty officers of the nearest level above the person that has any."""
    for up in ancestors(person_jurisdiction):
        found = [p for p in on_duty if p.role in DUTY_ROLES and p.jurisdiction == up]
        if found:
            return found
    return []
