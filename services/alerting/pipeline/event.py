"""The stages of a risk event: from a station's level to its group's warning.

    Deduplicate  → LockGroup → WithdrawHeldCancel → LoadGroup
                 → IgnoreMuted(Maintenance, OfficerHold)
                 → Decide (Alert / Update / Cancel, or nothing)

A warning covers one (hazard, region) group; its level is the highest of its stations', and a
station's the highest of its rules' (``services.alerting.domain.lifecycle``). A warning an officer
decides takes its stations' levels but no version from risk events."""

from __future__ import annotations

import logging

from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.domain.lifecycle import apply_station_level, by_station, identifier
from services.alerting.domain.officer import EVENT_TYPES, automatic_may_decide
from services.alerting.domain.states import MsgType
from services.alerting.pipeline.items import Change, NewVersion
from services.alerting.pipeline.mute import Muter
from shared.contracts import Level, stable_id
from shared.db import Conn

log = logging.getLogger(__name__)

ACTOR = "system:risk"


class Deduplicate:
    """A re-delivered event (its id applied before) does nothing."""

    async def __call__(self, conn: Conn, c: Change) -> bool:
        return await store.first_seen(conn, c.event.event_id)


class LockGroup:
    """The group's lock, held to the end of the transaction: the consumer, the sweeps and every
    replica work on one group one at a time."""

    async def __call__(self, conn: Conn, c: Change) -> bool:
        await store.lock_groups(conn, [(c.event.hazard, c.region)])
        return True


class WithdrawHeldCancel:
    """A group rising again while its warning's all-clear still waits for its timer (flapping):
    the all-clear never went out, so it is withdrawn and the warning goes on — people hear
    neither the all-clear nor a new warning for the same thing."""

    async def __call__(self, conn: Conn, c: Change) -> bool:
        withdrawn = await store.withdraw_held_cancel(conn, c.event.hazard, c.region)
        if withdrawn is not None:
            wid, version = withdrawn
            await audit(
                conn,
                "system:flapping",
                "cancel.withdrawn",
                {"withdrawn_version": version, "event_id": c.event.event_id},
                warning_id=wid,
            )
        return True


class LoadGroup:
    """The group's open warning (locked) and the (station, rule) levels standing in it."""

    async def __call__(self, conn: Conn, c: Change) -> bool:
        c.warning = await store.open_warning(conn, c.event.hazard, c.region)
        if c.warning is not None:
            c.levels = await store.rule_levels(conn, c.warning.id)
        return True


class IgnoreMuted:
    """An event a muter mutes is ignored, and the audit log says so."""

    def __init__(self, muters: list[Muter[Change]]) -> None:
        self._muters = muters

    async def __call__(self, conn: Conn, c: Change) -> bool:
        for muter in self._muters:
            [mute] = await muter.mutes(conn, [c])
            if mute is not None:
                await audit(
                    conn,
                    ACTOR,
                    f"{mute.by}.ignored",
                    {
                        "event_id": c.event.event_id,
                        "station_id": c.station_id,
                        "level": c.event.level,
                    },
                    warning_id=c.warning.id if c.warning is not None else None,
                )
                return False
        return True


class Decide:
    """What the event does to the group's warning (:func:`apply_station_level`): the station's
    level is written into the warning, and a version is called for when the warning's level
    changes — the first station opens it (``Alert``), a change of level is an ``Update``, the
    last station gone is the all-clear (``Cancel``)."""

    def __init__(self, *, sender_code: str, status: str) -> None:
        self._sender = sender_code
        self._status = status

    async def __call__(self, conn: Conn, c: Change) -> bool:
        ev, w, key = c.event, c.warning, (c.station_id, c.event.rule_id)
        level = Level.parse(ev.level)
        if w is not None and (c.station_id, "") in c.levels:
            # a row from before rules were told apart: this event, naming its rule, replaces it
            del c.levels[(c.station_id, "")]
            await store.drop_station(conn, w.id, c.station_id, "")
        c.decision = decision = apply_station_level(
            w.level if w is not None else None, c.levels, key, level
        )
        if w is not None:
            if level == Level.none:
                await store.drop_station(conn, w.id, c.station_id, ev.rule_id)
            else:
                await store.set_station(conn, w.id, ev)
        if decision.action == "none":
            return False
        if w is not None and not automatic_may_decide(w.controlled_by):
            # an officer decides this warning: the level is recorded above, nothing is issued
            await audit(
                conn,
                ACTOR,
                "automatic.deferred",
                {
                    "event_id": ev.event_id,
                    "station_id": c.station_id,
                    "would": decision.action,
                    "level": decision.level.name,
                    "controlled_by": w.controlled_by,
                },
                warning_id=w.id,
            )
            return False
        stations = by_station(decision.stations)
        if decision.action == "issue":
            serial = await store.next_serial(conn)
            w = await store.new_warning(
                conn,
                stable_id("warning", ev.hazard, c.region, ev.event_id),
                ev.hazard,
                c.region,
                decision.level,
                identifier(self._sender, c.now, serial),
                self._status,
                event_type=EVENT_TYPES.get(ev.hazard),
            )
            await store.set_station(conn, w.id, ev)
            c.new = NewVersion(
                warning=w,
                version=1,
                msg_type=MsgType.Alert,
                level=decision.level,
                stations=stations,
                previous_level=None,
                cause=(ev.event_id, ev.event_time),
                actor=ACTOR,
                now=c.now,
            )
            return True
        assert w is not None
        c.new = NewVersion(
            warning=w,
            version=w.version + 1,
            msg_type=MsgType.Update if decision.action == "update" else MsgType.Cancel,
            level=decision.level,
            stations=stations or {c.station_id: level},
            previous_level=w.level,
            cause=(ev.event_id, ev.event_time),
            actor=ACTOR,
            now=c.now,
        )
        return True
