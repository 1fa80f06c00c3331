"""The stages of a version on its way out: from "it may go now" to ledger rows.

    SupersedeEarlier → HoldMuted(Inhibition, Silences) → Recipients → StormHold → Ledger

A version held back goes to ``alerts.v1`` only (upper-level platforms see every version) and
waits until what holds it lets go (:mod:`services.alerting.workers.sweeps`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter as Metric

from services.alerting.adapters import ledger
from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.adapters.people import endpoints_for, persons_for_areas, subscriptions
from services.alerting.domain.recipients import Person, fan_out_areas
from services.alerting.domain.states import Delivery, Dispatch, MsgType
from services.alerting.pipeline.items import Outgoing, SetStage
from services.alerting.pipeline.mute import Mute, Muter, PersonRow, StormLimit, first_mutes
from shared.db import Conn

HELD = Metric(
    "qianshao_warning_versions_held_total", "Versions held back, by silence or inhibition", ["by"]
)


class SupersedeEarlier(SetStage[Outgoing]):
    """Earlier versions not yet out never will be (this one says what stands now); the
    all-clear of a warning nobody heard of is not sent either."""

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        told = await store.supersede_earlier_many(
            conn, [(o.alert.warning_id, o.alert.version) for o in items]
        )
        going: list[Outgoing] = []
        unheard: list[tuple[str, int]] = []
        for o in items:
            a = o.alert
            o.told = a.warning_id in told
            if a.msg_type == MsgType.Cancel and not o.told:
                unheard.append((a.warning_id, a.version))
            else:
                going.append(o)
        await store.set_dispatch_many(conn, unheard, Dispatch.superseded)
        return going


class HoldMuted(SetStage[Outgoing]):
    """The first muter that mutes the version holds it: its state says by whom."""

    def __init__(self, muters: Sequence[Muter[Outgoing]], *, topic: str) -> None:
        self._muters = muters
        self._topic_row = ("topic:alerts", "kafka", topic)

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        going, muted = await first_mutes(conn, self._muters, items)
        for o, mute in muted:
            await self._hold(conn, o, mute)
        return going

    async def _hold(self, conn: Conn, o: Outgoing, mute: Mute) -> None:
        a = o.alert
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


class Recipients(SetStage[Outgoing]):
    """Who gets the version: the endpoints subscribed to its region, level and hazard, the
    ``alerts.v1`` topic, and the people in scope on the channels they subscribed (and who of
    them must confirm it: 叫应)."""

    def __init__(self, *, topic: str, confirm_orange: bool) -> None:
        self._topic_row = ("topic:alerts", "kafka", topic)
        self._confirm_orange = confirm_orange

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        if not items:
            return []
        subs = await subscriptions(conn)
        # people are read as of each version's sending; a set is of one moment (the consumer's)
        by_sent: dict[datetime, list[int]] = {}
        for i, o in enumerate(items):
            by_sent.setdefault(o.alert.sent, []).append(i)
        persons: list[list[Person]] = [[] for _ in items]
        for sent, idx in by_sent.items():
            found = await persons_for_areas(conn, [items[i].alert.area_codes for i in idx], sent)
            for i, people in zip(idx, found, strict=True):
                persons[i] = people
        for o, people in zip(items, persons, strict=True):
            a = o.alert
            o.endpoints = endpoints_for(subs, a.area_codes, o.level, a.hazard)
            if not o.again:
                o.endpoints.append(self._topic_row)
            plan = fan_out_areas(
                people,
                areas=a.area_codes,
                hazard=a.hazard,
                level=o.level,
                msg_type=a.msg_type,
                drill=a.status == "Exercise",
                confirm_orange=self._confirm_orange,
            )
            o.people = [(f"person:{s.person.id}", s.channel, s.target) for s in plan.sends]
            o.confirmers = plan.confirmers
        return list(items)


class StormHold(SetStage[Outgoing]):
    """Storm mode: rows to people over their limit wait for their digest. The versions of a
    set are judged in order, each counting the rows the ones before it will send."""

    def __init__(self, limit: StormLimit) -> None:
        self._limit = limit

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        if not self._limit.on:
            return list(items)
        pending: Counter[tuple[str, str]] = Counter()
        for o in items:
            must = {f"person:{p.id}" for p in o.confirmers}
            rows = [PersonRow(r, ch, o.level, r in must, o.now) for r, ch, _ in o.people]
            mutes = await self._limit.mutes(conn, rows, pending)
            o.held = {(r.recipient, r.channel) for r, m in zip(rows, mutes, strict=True) if m}
            pending.update(
                (r.recipient, r.channel) for r in rows if (r.recipient, r.channel) not in o.held
            )
        return list(items)


class Ledger(SetStage[Outgoing]):
    """The versions' ledger rows, their 叫应 tasks (older versions' open tasks close: the new
    version is what people confirm now), and their dispatch state."""

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        for now in dict.fromkeys(o.now for o in items):  # one, from the consumer
            await self._write(conn, [o for o in items if o.now == now], now)
        return list(items)

    async def _write(self, conn: Conn, items: Sequence[Outgoing], now: datetime) -> None:
        rows: list[tuple[str, int, str, str, str]] = []
        held: list[tuple[str, int, str, str, str]] = []
        tasks: list[tuple[str, int, int, int, str]] = []
        for o in items:
            a = o.alert
            mine = [*o.endpoints, *(r for r in o.people if (r[0], r[1]) not in o.held)]
            rows += [(a.warning_id, a.version, *r) for r in mine]
            held += [(a.warning_id, a.version, *r) for r in o.people if (r[0], r[1]) in o.held]
            tasks += [
                (a.warning_id, a.version, int(o.level), p.id, p.region_code) for p in o.confirmers
            ]
            o.created = len(mine)
            if o.held:
                HELD.labels("storm").inc(len(o.held))
        await ledger.insert_many(conn, rows, now=now)
        await ledger.insert_many(conn, held, now=now, state=Delivery.held)
        versions = [(o.alert.warning_id, o.alert.version) for o in items]
        await ledger.close_confirm_tasks_many(conn, versions)
        await ledger.open_confirm_tasks_many(conn, tasks, now)
        again = [(o.alert.warning_id, o.alert.version) for o in items if o.again]
        first = [(o.alert.warning_id, o.alert.version) for o in items if not o.again]
        await store.set_dispatch_many(conn, again, Dispatch.released)
        await store.set_dispatch_many(conn, first, Dispatch.dispatched)
        await store.dispatched_many(conn, [o.alert.warning_id for o in items], now)
