"""The stages of a risk event: from a station's level to its group's warning.

    Deduplicate  → LockGroup → WithdrawHeldCancel → LoadGroup
                 → IgnoreMuted(Maintenance, OfficerHold)
                 → Decide (Alert / Update / Cancel, or nothing)

A warning covers one (hazard, region) group; its level is the highest of its stations', and a
station's the highest of its rules' (``services.alerting.domain.lifecycle``). A warning an officer
decides takes its stations' levels but no version from risk events."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from services.alerting.adapters import stations as levels_store
from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit_many
from services.alerting.domain.lifecycle import apply_station_level, by_station, identifier
from services.alerting.domain.officer import EVENT_TYPES, automatic_may_decide
from services.alerting.domain.states import MsgType
from services.alerting.pipeline.items import Change, NewVersion, SetStage
from services.alerting.pipeline.mute import Muter, first_mutes
from shared.contracts import Level, RiskEvent, stable_id
from shared.db import Conn

log = logging.getLogger(__name__)

ACTOR = "system:risk"


class Deduplicate(SetStage[Change]):
    """A re-delivered event (its id applied before) does nothing."""

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        fresh = await store.first_seen_many(conn, [c.event.event_id for c in items])
        out = []
        for c in items:
            if c.event.event_id in fresh:
                fresh.discard(c.event.event_id)  # the first of two copies in one set
                out.append(c)
        return out


class LockGroup(SetStage[Change]):
    """The groups' locks, held to the end of the transaction: the consumer, the sweeps and
    every replica work on one group one at a time."""

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        await store.lock_groups(conn, [(c.event.hazard, c.region) for c in items])
        return list(items)


class WithdrawHeldCancel(SetStage[Change]):
    """A group rising again while its warning's all-clear still waits for its timer (flapping):
    the all-clear never went out, so it is withdrawn and the warning goes on — people hear
    neither the all-clear nor a new warning for the same thing."""

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        held = await store.held_cancels(conn, [(c.event.hazard, c.region) for c in items])
        entries: list[tuple[str, str, str | None, Mapping[str, object]]] = []
        for c in items:
            withdrawn = held.pop((c.event.hazard, c.region), None)
            if withdrawn is not None:
                wid, version = withdrawn
                await store.withdraw_cancel(conn, wid, version)
                entries.append(
                    (
                        "system:flapping",
                        "cancel.withdrawn",
                        wid,
                        {"withdrawn_version": version, "event_id": c.event.event_id},
                    )
                )
        await audit_many(conn, entries)
        return list(items)


class LoadGroup(SetStage[Change]):
    """The group's open warning (locked) and the (station, rule) levels standing in it."""

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        found = await store.open_warnings(conn, [(c.event.hazard, c.region) for c in items])
        levels = await levels_store.rule_levels_of(conn, [w.id for w in found.values()])
        for c in items:
            c.warning = found.get((c.event.hazard, c.region))
            if c.warning is not None:
                c.levels = dict(levels[c.warning.id])
        return list(items)


class IgnoreMuted(SetStage[Change]):
    """An event a muter mutes is ignored, and the audit log says so."""

    def __init__(self, muters: list[Muter[Change]]) -> None:
        self._muters = muters

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        going, muted = await first_mutes(conn, self._muters, items)
        await audit_many(
            conn,
            [
                (
                    ACTOR,
                    f"{mute.by}.ignored",
                    c.warning.id if c.warning is not None else None,
                    {
                        "event_id": c.event.event_id,
                        "station_id": c.station_id,
                        "level": c.event.level,
                    },
                )
                for c, mute in muted
            ],
        )
        return going


class Decide(SetStage[Change]):
    """What the event does to the group's warning (:func:`apply_station_level`): the station's
    level is written into the warning, and a version is called for when the warning's level
    changes — the first station opens it (``Alert``), a change of level is an ``Update``, the
    last station gone is the all-clear (``Cancel``)."""

    def __init__(self, *, sender_code: str, status: str) -> None:
        self._sender = sender_code
        self._status = status

    async def many(self, conn: Conn, items: Sequence[Change]) -> list[Change]:
        drops: list[tuple[str, str, str]] = []
        sets: list[tuple[str, RiskEvent]] = []
        entries: list[tuple[str, str, str | None, Mapping[str, object]]] = []
        issues: list[Change] = []
        going: list[Change] = []
        for c in items:
            ev, w, key = c.event, c.warning, (c.station_id, c.event.rule_id)
            level = Level.parse(ev.level)
            if w is not None and (c.station_id, "") in c.levels:
                # a row from before rules were told apart: this event, naming its rule,
                # replaces it
                del c.levels[(c.station_id, "")]
                drops.append((w.id, c.station_id, ""))
            c.decision = decision = apply_station_level(
                w.level if w is not None else None, c.levels, key, level
            )
            if w is not None:
                if level == Level.none:
                    drops.append((w.id, c.station_id, ev.rule_id))
                else:
                    sets.append((w.id, ev))
            if decision.action == "none":
                continue
            if w is not None and not automatic_may_decide(w.controlled_by):
                # an officer decides this warning: the level is recorded above, nothing is
                # issued
                entries.append(
                    (
                        ACTOR,
                        "automatic.deferred",
                        w.id,
                        {
                            "event_id": ev.event_id,
                            "station_id": c.station_id,
                            "would": decision.action,
                            "level": decision.level.name,
                            "controlled_by": w.controlled_by,
                        },
                    )
                )
                continue
            going.append(c)
            if decision.action == "issue":
                issues.append(c)
                continue
            assert w is not None
            c.new = NewVersion(
                warning=w,
                version=w.version + 1,
                msg_type=MsgType.Update if decision.action == "update" else MsgType.Cancel,
                level=decision.level,
                stations=by_station(decision.stations) or {c.station_id: level},
                previous_level=w.level,
                cause=(ev.event_id, ev.event_time),
                actor=ACTOR,
                now=c.now,
            )
        await levels_store.drop_stations(conn, drops)
        await levels_store.set_stations(conn, sets)
        await audit_many(conn, entries)
        if issues:
            await self._issue(conn, issues)
        return going

    async def _issue(self, conn: Conn, items: Sequence[Change]) -> None:
        """New warnings for the groups the items open, with their first versions to write."""
        serials = await store.next_serials(conn, len(items))
        rows = []
        for c, serial in zip(items, serials, strict=True):
            ev = c.event
            assert c.decision is not None
            rows.append(
                (
                    stable_id("warning", ev.hazard, c.region, ev.event_id),
                    ev.hazard,
                    c.region,
                    c.decision.level,
                    identifier(self._sender, c.now, serial),
                    self._status,
                    EVENT_TYPES.get(ev.hazard),
                )
            )
        made = await store.new_warnings(conn, rows)
        await levels_store.set_stations(
            conn, [(r[0], c.event) for r, c in zip(rows, items, strict=True)]
        )
        for r, c in zip(rows, items, strict=True):
            ev, decision = c.event, c.decision
            assert decision is not None
            c.new = NewVersion(
                warning=made[r[0]],
                version=1,
                msg_type=MsgType.Alert,
                level=decision.level,
                stations=by_station(decision.stations),
                previous_level=None,
                cause=(ev.event_id, ev.event_time),
                actor=ACTOR,
                now=c.now,
            )
