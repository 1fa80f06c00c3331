"""Suppression behind one interface, as Alertmanager's ``Muter``: what holds something back.

    Maintenance  a station in maintenance raises nothing        (a risk event)
    OfficerHold  what an officer cancelled is not raised again   (a risk event)
    Inhibition   a higher warning of a source hazard mutes this  (a version)
    Silences     a silence that matches holds this              (a version)
    StormLimit   a person over their hourly limit waits         (a version's rows to people)

Each muter reads what it needs on the transaction's connection and asks its pure decision in
``services.alerting.domain``; the stages (``hold_muted`` and the storm hold) record what it says.
Subjects come in a sequence, so that a muter answers for many at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from services.alerting.adapters import ledger, requests
from services.alerting.adapters import stations as levels_store
from services.alerting.adapters import warnings as store
from services.alerting.domain.grouping import inhibited_by
from services.alerting.domain.lifecycle import by_station
from services.alerting.domain.officer import held_by_officer
from services.alerting.domain.silences import maintenance_ignores, silenced_by
from services.alerting.domain.states import Dispatch, MsgType
from services.alerting.domain.storm import StormPolicy, to_hold
from services.alerting.pipeline.items import Change, Outgoing
from shared.contracts import Level
from shared.db import Conn


@dataclass(frozen=True, slots=True)
class Mute:
    """Why a subject is held back: by which muter, and what of it (a silence's id, the
    inhibiting warning's id)."""

    by: str
    ref: int | str | None = None


S_contra = TypeVar("S_contra", contravariant=True)


class Muter(Protocol[S_contra]):
    async def mutes(self, conn: Conn, subjects: Sequence[S_contra]) -> list[Mute | None]:
        """For each subject, what mutes it, or None."""
        ...


S = TypeVar("S")


async def first_mutes(
    conn: Conn, muters: Sequence[Muter[S]], subjects: Sequence[S]
) -> tuple[list[S], list[tuple[S, Mute]]]:
    """The subjects no muter mutes, in order; and each muted one with what the first muter
    that mutes it says."""
    going, muted = list(subjects), []
    for muter in muters:
        if not going:
            break
        kept = []
        for subject, mute in zip(going, await muter.mutes(conn, going), strict=True):
            if mute is None:
                kept.append(subject)
            else:
                muted.append((subject, mute))
        going = kept
    return going, muted


class Maintenance:
    """A station in maintenance: its events that would raise its level in a warning are ignored;
    those that lower it still apply, so a warning never sticks on a station under maintenance."""

    async def mutes(self, conn: Conn, subjects: Sequence[Change]) -> list[Mute | None]:
        if not subjects:
            return []
        under = await levels_store.in_maintenance_many(
            conn, [(c.station_id, c.event.event_time) for c in subjects]
        )
        out: list[Mute | None] = []
        for c, maintained in zip(subjects, under, strict=True):
            current = by_station(c.levels).get(c.station_id, Level.none)
            ignored = maintenance_ignores(maintained, int(current), int(Level.parse(c.event.level)))
            out.append(Mute("maintenance") if ignored else None)
        return out


class OfficerHold:
    """An officer cancelled the group's warning that risk raised: events at or below the level
    cancelled raise no new warning until the hold ends (:func:`held_by_officer`); a higher
    level does."""

    async def mutes(self, conn: Conn, subjects: Sequence[Change]) -> list[Mute | None]:
        asking = [
            (c.event.hazard, c.region)
            for c in subjects
            if c.warning is None and Level.parse(c.event.level) > Level.none
        ]
        holds = await requests.group_holds(conn, asking)
        out: list[Mute | None] = []
        for c in subjects:
            level = Level.parse(c.event.level)
            hold = (
                holds.get((c.event.hazard, c.region))
                if c.warning is None and level > Level.none
                else None
            )
            held = hold is not None and held_by_officer(hold[0], hold[1], level, c.now)
            out.append(Mute("officer_hold") if held else None)
        return out


class Inhibition:
    """A standing warning of a source hazard at a higher level, on the same region, mutes a
    warning of the target hazard (``INHIBIT_RULES``). An all-clear is never inhibited."""

    def __init__(self, rules: Sequence[tuple[str, str]]) -> None:
        self._rules = rules
        self._targets = {t for _, t in rules}

    async def mutes(self, conn: Conn, subjects: Sequence[Outgoing]) -> list[Mute | None]:
        out: list[Mute | None] = []
        for o in subjects:
            a = o.alert
            if a.msg_type == MsgType.Cancel or a.hazard not in self._targets:
                out.append(None)
                continue
            by = inhibited_by(
                hazard=a.hazard,
                region_code=a.region_code,
                level=o.level,
                open_warnings=await store.standing_in_region(conn, a.region_code, a.hazard),
                rules=self._rules,
            )
            out.append(Mute(Dispatch.inhibited, by.id) if by is not None else None)
        return out


class Silences:
    """A silence whose matchers all hold; the all-clear of a warning people heard is never
    held."""

    async def mutes(self, conn: Conn, subjects: Sequence[Outgoing]) -> list[Mute | None]:
        if not subjects:
            return []
        now = subjects[0].now
        silences = await store.active_silences(conn, now)
        out: list[Mute | None] = []
        for o in subjects:
            s = silenced_by(
                silences,
                hazard=o.alert.hazard,
                region_code=o.alert.region_code,
                station_ids=o.alert.station_ids,
                msg_type=o.alert.msg_type,
                earlier_dispatched=o.told,
                now=o.now,
            )
            out.append(Mute(Dispatch.silenced, s.id) if s is not None else None)
        return out


@dataclass(frozen=True, slots=True)
class PersonRow:
    """A version's row to a person, as storm mode judges it."""

    recipient: str
    channel: str
    level: Level
    must_confirm: bool
    now: datetime


class StormLimit:
    """Storm mode: a person who had ``limit`` messages on a channel within the window waits for
    a digest. Red, and whatever the person must confirm, is never held."""

    def __init__(self, policy: StormPolicy) -> None:
        self._policy = policy

    @property
    def window(self) -> timedelta:
        return self._policy.window

    @property
    def on(self) -> bool:
        return self._policy.limit > 0

    async def mutes(
        self,
        conn: Conn,
        subjects: Sequence[PersonRow],
        pending: Mapping[tuple[str, str], int] | None = None,
    ) -> list[Mute | None]:
        """``pending``: rows per (recipient, channel) decided in this transaction and not yet
        in the ledger, counted as if they were."""
        if not subjects or self._policy.limit <= 0:
            return [None] * len(subjects)
        judged = [s for s in subjects if s.level < Level.red]
        if not judged:
            return [None] * len(subjects)
        # every row of one call is of one version, so of one level
        level = max(s.level for s in subjects)
        counts = await ledger.recent_counts(
            conn, [s.recipient for s in judged], subjects[0].now - self._policy.window
        )
        for k, n in (pending or {}).items():
            counts[k] = counts.get(k, 0) + n
        hold = to_hold(
            counts,
            [(s.recipient, s.channel) for s in judged],
            level=level,
            must_confirm={s.recipient for s in judged if s.must_confirm},
            policy=self._policy,
        )
        return [Mute("storm") if (s.recipient, s.channel) in hold else None for s in subjects]
