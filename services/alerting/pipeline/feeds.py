"""Feeds gone silent, acted on (the decisions are :mod:`services.alerting.domain.feeds`).

    signal ─▶ Deduplicate (event id) ─▶ learn the station's enterprise ─▶ lock the subject
           ─▶ open / join / leave / close its incident
           ─▶ offline notice (unless held) · back-online notice to whoever was told
    sweep  ─▶ an offline notice that was held and may go now · an escalation that is due

Every notice is a ledger row of warning id ``feed:<incident>`` (version 1 offline, 2 escalation,
3 back online) written in the transaction that decides it, so the delivery worker sends it
like any other, once: a re-delivered signal is dropped by its event id, and a row's
idempotency key makes a second write of it nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter

from services.alerting.adapters import feeds as store
from services.alerting.adapters import ledger
from services.alerting.adapters.audit import audit
from services.alerting.adapters.people import duty_officers
from services.alerting.adapters.stations import in_maintenance
from services.alerting.adapters.warnings import active_silences, first_seen
from services.alerting.domain.feeds import (
    BACK,
    ESCALATION,
    FEED_HAZARD,
    OFFLINE,
    Incident,
    Signal,
    back_text,
    duty_level,
    escalation_due,
    escalation_level,
    escalation_text,
    offline_text,
    step,
    subject_of,
)
from services.alerting.domain.recipients import ancestors, jurisdiction
from services.alerting.domain.silences import silenced_by
from services.alerting.domain.states import Delivery, Purpose
from services.alerting.pipeline.mute import PersonRow, StormLimit
from shared.contracts import Level
from shared.db import Conn

log = logging.getLogger(__name__)

ACTOR = "system:feeds"
FEED_NOTICES = Counter(
    "qianshao_feed_notices_total",
    "Notices of feeds gone offline, escalated and back online (ledger rows written)",
    ["kind"],
)


def feed_id(incident_id: int) -> str:
    return f"feed:{incident_id}"


class FeedWatch:
    def __init__(self, *, storm: StormLimit, escalate_after: timedelta) -> None:
        self._storm = storm
        self._escalate_after = escalate_after

    async def apply(self, conn: Conn, signals: Sequence[Signal], now: datetime) -> int:
        """A batch's signals, in order, in the caller's transaction; the ledger rows written."""
        fresh = [s for s in signals if await first_seen(conn, s.event_id)]
        for s in fresh:
            if s.source == "health":
                await store.learn_owner(conn, s)
        known = await store.owners(conn, [s.station_id for s in fresh if s.source == "no_data"])
        fresh = [
            replace(s, enterprise=known.get(s.station_id)) if s.source == "no_data" else s
            for s in fresh
        ]
        await store.lock_subjects(conn, [subject_of(s.station_id, s.enterprise) for s in fresh])
        rows = 0
        for s in fresh:
            rows += await self._signal(conn, s, now)
        return rows

    async def _signal(self, conn: Conn, s: Signal, now: datetime) -> int:
        subject = subject_of(s.station_id, s.enterprise)
        if s.offline and await in_maintenance(conn, s.station_id, s.at):
            await audit(
                conn,
                ACTOR,
                "feed.maintenance.ignored",
                {"station_id": s.station_id, "source": s.source, "event_id": s.event_id},
            )
            return 0
        inc = await store.open_incident(conn, subject)
        what = step(inc, s)
        if what == "none":
            return 0
        detail = {"station_id": s.station_id, "source": s.source, "event_id": s.event_id}
        if what == "open":
            ent = await store.enterprise(conn, s.enterprise) if s.enterprise else None
            title = ent.name if ent else (f"企业{s.enterprise}" if s.enterprise else s.station_id)
            iid = await store.create(conn, subject, s, title)
            await store.set_member(conn, iid, s)
            await audit(conn, ACTOR, "feed.offline", detail, warning_id=feed_id(iid))
            opened = await store.incident(conn, iid)
            assert opened is not None
            return await self.notify(conn, opened, now)
        assert inc is not None
        await store.set_member(conn, inc.id, s)
        if what != "close":
            await audit(conn, ACTOR, f"feed.{what}", detail, warning_id=feed_id(inc.id))
            return 0
        await store.close(conn, inc.id, s.at)
        await audit(conn, ACTOR, "feed.back", detail, warning_id=feed_id(inc.id))
        if inc.notified_at is None:
            return 0  # nobody heard it go: nobody hears it come back
        told = await store.told(conn, inc.id)
        return await self._write(conn, inc, BACK, told, back_text(inc, s.at), now)

    async def notify(self, conn: Conn, inc: Incident, now: datetime) -> int:
        """The offline notice, once, unless something holds it: then the sweep tries again."""
        if inc.notified_at is not None:
            return 0
        why = await self._held(conn, inc, now, "Alert")
        area = jurisdiction(inc.region_code)
        level, duty = duty_level(
            inc.region_code,
            await duty_officers(conn, [area, *ancestors(area)], now),
        )
        recipients = [(f"person:{p.id}", "sms", p.phone) for p in duty if p.phone]
        officer = await self._safety_officer(conn, inc)
        if officer is not None:
            recipients.append(officer)
        if why is None and not recipients:
            why = "nobody"
        if why is not None:
            return await self._hold(conn, inc, why)
        n = await self._write(conn, inc, OFFLINE, recipients, offline_text(inc), now)
        await store.mark_notified(conn, inc.id, now, level)
        return n

    async def escalate(self, conn: Conn, inc: Incident, now: datetime) -> int:
        """An incident open longer than ``escalate_after``: the level above those told."""
        if not escalation_due(inc, now, self._escalate_after) or inc.notified_level is None:
            return 0
        why = await self._held(conn, inc, now, "Update")
        level, ups = escalation_level(
            inc.notified_level, await duty_officers(conn, ancestors(inc.notified_level), now)
        )
        recipients = [(f"person:{p.id}", "sms", p.phone) for p in ups if p.phone]
        if why is None and not recipients:
            why = "nobody_above"
        if why is not None:
            return await self._hold(conn, inc, why)
        n = await self._write(conn, inc, ESCALATION, recipients, escalation_text(inc, now), now)
        await store.mark_escalated(conn, inc.id, now)
        await audit(conn, ACTOR, "feed.escalated", {"level": level}, warning_id=feed_id(inc.id))
        return n

    async def sweep(self, pool: asyncpg.Pool, now: datetime, limit: int = 100) -> int:
        """Offline notices held until now and escalations due: each incident in a transaction
        of its own, under its subject's lock; the ledger rows written."""
        async with pool.acquire() as conn:
            ids = await store.due(conn, now - self._escalate_after, limit)
            rows = 0
            for iid in ids:
                async with conn.transaction():
                    inc = await store.incident(conn, iid)
                    if inc is None:
                        continue
                    await store.lock_subjects(conn, [inc.subject])
                    inc = await store.incident(conn, iid)  # as it is under the lock
                    if inc is None:
                        continue
                    rows += await self.notify(conn, inc, now)
                    rows += await self.escalate(conn, inc, now)
        return rows

    async def _hold(self, conn: Conn, inc: Incident, why: str) -> int:
        """A notice waits (the sweep tries again); the audit log says why, once per reason."""
        if await store.mark_held(conn, inc.id, why):
            await audit(conn, ACTOR, "feed.held", {"by": why}, warning_id=feed_id(inc.id))
        return 0

    async def _held(self, conn: Conn, inc: Incident, now: datetime, msg_type: str) -> str | None:
        if await store.all_in_maintenance(conn, inc.stations, now):
            return "maintenance"
        s = silenced_by(
            await active_silences(conn, now),
            hazard=FEED_HAZARD,
            region_code=inc.region_code,
            station_ids=inc.stations,
            msg_type=msg_type,
            earlier_dispatched=inc.notified_at is not None,
            now=now,
        )
        return f"silence:{s.id}" if s is not None else None

    async def _safety_officer(self, conn: Conn, inc: Incident) -> tuple[str, str, str] | None:
        """The enterprise's safety officer as a ledger recipient: the registered person with
        that number, else the enterprise itself."""
        if inc.enterprise is None:
            return None
        ent = await store.enterprise(conn, inc.enterprise)
        if ent is None or not ent.officer_phone:
            return None
        pid = await store.person_with_phone(conn, ent.officer_phone)
        who = f"person:{pid}" if pid is not None else f"enterprise:{inc.enterprise}"
        return (who, "sms", ent.officer_phone)

    async def _write(
        self,
        conn: Conn,
        inc: Incident,
        version: int,
        recipients: Sequence[tuple[str, str, str]],
        text: str,
        now: datetime,
    ) -> int:
        """The notice's ledger rows; storm mode holds people over their limit for a digest."""
        unique = list(dict.fromkeys(recipients))
        mutes = await self._storm.mutes(
            conn, [PersonRow(r, ch, Level.blue, False, now) for r, ch, _ in unique]
        )
        go = [r for r, m in zip(unique, mutes, strict=True) if m is None]
        wait = [r for r, m in zip(unique, mutes, strict=True) if m is not None]
        for rows, state in ((go, Delivery.pending), (wait, Delivery.held)):
            if rows:
                await ledger.insert(
                    conn,
                    feed_id(inc.id),
                    version,
                    rows,
                    now=now,
                    purpose=Purpose.feed,
                    message=text,
                    state=state,
                )
        kind = {OFFLINE: "offline", ESCALATION: "escalation", BACK: "back"}[version]
        FEED_NOTICES.labels(kind).inc(len(unique))
        await audit(
            conn,
            ACTOR,
            f"feed.notice.{kind}",
            {"to": [r for r, _, _ in unique], "held": [r for r, _, _ in wait]},
            warning_id=feed_id(inc.id),
        )
        return len(go)
