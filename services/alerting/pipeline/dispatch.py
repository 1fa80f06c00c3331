"""The stages of a version on its way out: from "it may go now" to ledger rows.

    SupersedeEarlier → HoldMuted(Inhibition, Silences) → Recipients → StormHold → Ledger

A version held back goes to ``alerts.v1`` only (upper-level platforms see every version) and
waits until what holds it lets go (:mod:`services.alerting.workers.sweeps`)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from services.alerting.adapters import ledger
from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.adapters.people import load_persons_in, subscribed
from services.alerting.domain.recipients import fan_out_areas
from services.alerting.domain.states import Delivery, Dispatch, MsgType
from services.alerting.pipeline.items import Outgoing
from services.alerting.pipeline.mute import Muter, PersonRow, StormLimit
from shared.db import Conn

HELD = Counter(
    "qianshao_warning_versions_held_total", "Versions held back, by silence or inhibition", ["by"]
)


class SupersedeEarlier:
    """Earlier versions not yet out never will be (this one says what stands now); the
    all-clear of a warning nobody heard of is not sent either."""

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        a = o.alert
        o.told = await store.supersede_earlier(conn, a.warning_id, a.version)
        if a.msg_type == MsgType.Cancel and not o.told:
            await store.set_dispatch(conn, a.warning_id, a.version, Dispatch.superseded)
            return False
        return True


class HoldMuted:
    """The first muter that mutes the version holds it: its state says by whom."""

    def __init__(self, muters: Sequence[Muter[Outgoing]], *, topic: str) -> None:
        self._muters = muters
        self._topic_row = ("topic:alerts", "kafka", topic)

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        a = o.alert
        for muter in self._muters:
            [mute] = await muter.mutes(conn, [o])
            if mute is None:
                continue
            state = Dispatch(mute.by)
            silence_id = mute.ref if state == Dispatch.silenced else None
            inhibitor_id = mute.ref if state == Dispatch.inhibited else None
            if not o.again:
                await ledger.insert(conn, a.warning_id, a.version, [self._topic_row], now=o.now)
            await store.set_dispatch(
                conn,
                a.warning_id,
                a.version,
                state,
                silence_id=silence_id if isinstance(silence_id, int) else None,
                inhibitor_id=inhibitor_id if isinstance(inhibitor_id, str) else None,
            )
            if not o.again:
                await audit(
                    conn,
                    f"system:{'inhibition' if state == Dispatch.inhibited else 'silence'}",
                    state,
                    {"version": a.version, "silence_id": silence_id, "inhibited_by": inhibitor_id},
                    warning_id=a.warning_id,
                )
                HELD.labels(state).inc()
            return False
        return True


class Recipients:
    """Who gets the version: the endpoints subscribed to its region, level and hazard, the
    ``alerts.v1`` topic, and the people in scope on the channels they subscribed (and who of
    them must confirm it: 叫应)."""

    def __init__(self, *, topic: str, confirm_orange: bool) -> None:
        self._topic_row = ("topic:alerts", "kafka", topic)
        self._confirm_orange = confirm_orange

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        a = o.alert
        o.endpoints = await subscribed(conn, a.area_codes, o.level, a.hazard)
        if not o.again:
            o.endpoints.append(self._topic_row)
        plan = fan_out_areas(
            await load_persons_in(conn, a.area_codes, a.sent),
            areas=a.area_codes,
            hazard=a.hazard,
            level=o.level,
            msg_type=a.msg_type,
            drill=a.status == "Exercise",
            confirm_orange=self._confirm_orange,
        )
        o.people = [(f"person:{s.person.id}", s.channel, s.target) for s in plan.sends]
        o.confirmers = plan.confirmers
        return True


class StormHold:
    """Storm mode: rows to people over their limit wait for their digest."""

    def __init__(self, limit: StormLimit) -> None:
        self._limit = limit

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        must = {f"person:{p.id}" for p in o.confirmers}
        rows = [PersonRow(r, ch, o.level, r in must, o.now) for r, ch, _ in o.people]
        mutes = await self._limit.mutes(conn, rows)
        o.held = {(r.recipient, r.channel) for r, m in zip(rows, mutes, strict=True) if m}
        return True


class Ledger:
    """The version's ledger rows, its 叫应 tasks (older versions' open tasks close: the new
    version is what people confirm now), and its dispatch state."""

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        a = o.alert
        rows = [*o.endpoints, *(r for r in o.people if (r[0], r[1]) not in o.held)]
        await ledger.insert(conn, a.warning_id, a.version, rows, now=o.now)
        if o.held:
            await ledger.insert(
                conn,
                a.warning_id,
                a.version,
                [r for r in o.people if (r[0], r[1]) in o.held],
                now=o.now,
                state=Delivery.held,
            )
            HELD.labels("storm").inc(len(o.held))
        await ledger.close_confirm_tasks(conn, a.warning_id, a.version)
        if o.confirmers:
            await ledger.open_confirm_tasks(
                conn,
                a.warning_id,
                a.version,
                int(o.level),
                [(p.id, p.region_code) for p in o.confirmers],
                o.now,
            )
        await store.set_dispatch(
            conn, a.warning_id, a.version, Dispatch.released if o.again else Dispatch.dispatched
        )
        await store.dispatched(conn, a.warning_id, o.now)
        o.created = len(rows)
        return True
