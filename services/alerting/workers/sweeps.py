"""The timers of warnings, each a sweep that enters the pipeline where its work begins:

- :meth:`Sweeps.dispatch_due`: a version whose group timer ran out goes through ``dispatch``;
- :meth:`Sweeps.release_silenced`: a version a silence or an inhibition held, once nothing holds
  it any more, goes through ``dispatch`` again;
- :meth:`Sweeps.send_digests`: storm mode's held rows go out as one digest per person and channel;
- :meth:`Sweeps.remind`: an open warning is said again ``repeat_interval`` after people last heard;
- :meth:`Sweeps.expire_due`: a warning near its expiry is renewed (``version`` → ``schedule`` →
  ``dispatch``), or expired, or held while risk itself is silent;
- :meth:`Sweeps.feeds_due`: a feed's offline notice that was held and may go now, and the
  escalation of a feed offline too long (:mod:`services.alerting.pipeline.feeds`).

Each works under the locks of the groups it touches, taken together and in one order, so the
consumer and other replicas see each decision whole."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter, Gauge

from services.alerting.adapters import ledger
from services.alerting.adapters import stations as levels_store
from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.adapters.people import duty_officers, load_persons_in
from services.alerting.adapters.publications import supersede_pending
from services.alerting.adapters.versions import load_versions
from services.alerting.domain.grouping import GroupPolicy, repeat_due
from services.alerting.domain.lifecycle import (
    BEIJING,
    ExpiryAction,
    ExpiryPolicy,
    by_station,
    expiry_action,
)
from services.alerting.domain.messages import drill_prefix_for, sms_text
from services.alerting.domain.recipients import ancestors, fan_out_areas, jurisdiction
from services.alerting.domain.states import (
    COUNTED,
    HELD,
    STANDING,
    TOLD,
    Delivery,
    Dispatch,
    MsgType,
    Purpose,
    WarningState,
)
from services.alerting.domain.storm import StormPolicy, digest_text
from services.alerting.pipeline.builder import Pipeline
from services.alerting.pipeline.feeds import FeedWatch
from services.alerting.pipeline.items import NewVersion, Outgoing
from shared.clock import Clock
from shared.contracts import AlertVersion, Level
from shared.db import Conn

log = logging.getLogger(__name__)

EXPIRED = Counter("qianshao_warnings_expired_total", "Warnings expired, their evidence lapsed")
EXPIRY_HELD = Gauge(
    "qianshao_warnings_expiry_held",
    "Warnings due to be renewed or expired, held because risk has not been heard from",
)


class Sweeps:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        pipeline: Pipeline,
        clock: Clock,
        group: GroupPolicy,
        expiry: ExpiryPolicy,
        storm: StormPolicy,
        on_new_deliveries: Callable[[], None],
        feeds: FeedWatch | None = None,
    ) -> None:
        self._feeds = feeds
        self._pool = pool
        self._pipeline = pipeline
        self._clock = clock
        self._group = group
        self._expiry = expiry
        self._storm = storm
        self._wake = on_new_deliveries

    async def feeds_due(self) -> int:
        if self._feeds is None:
            return 0
        n = await self._feeds.sweep(self._pool, self._clock.now())
        if n:
            self._wake()
        return n

    async def dispatch_due(self) -> int:
        """Sends the versions whose group timer has run out (the latest of each warning; the
        older are superseded when it goes)."""
        now = self._clock.now()
        n = 0
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """SELECT v.warning_id, v.version, v.level FROM alerting.warning_versions v
                     JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
                    WHERE v.dispatch = $2 AND v.dispatch_at <= $1
                    ORDER BY v.dispatch_at LIMIT 200""",
                now,
                Dispatch.scheduled,
            )
            if not due:
                return 0
            alerts = await self._locked(conn, {(d["warning_id"], d["version"]) for d in due})
            for d in due:
                alert = alerts[(d["warning_id"], d["version"])]
                if await store.still(conn, alert.warning_id, alert.version, [Dispatch.scheduled]):
                    out = Outgoing(alert, Level(d["level"]), self._clock.now())
                    await self._pipeline.dispatch.run(conn, out)
                    n += out.created
        if n:
            self._wake()
        return len(due)

    async def release_silenced(self) -> int:
        """Sends the latest version of each warning held back by a silence or an inhibition
        that no longer holds it (ended, deleted, the higher warning gone)."""
        released = 0
        async with self._pool.acquire() as conn, conn.transaction():
            held = await conn.fetch(
                """SELECT v.warning_id, v.version, v.level FROM alerting.warning_versions v
                     JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
                    WHERE v.dispatch = ANY($1::text[]) AND w.state = ANY($2::text[]) LIMIT 200""",
                list(HELD),
                list(STANDING),
            )
            if not held:
                return 0
            alerts = await self._locked(conn, {(h["warning_id"], h["version"]) for h in held})
            for h in held:
                alert = alerts[(h["warning_id"], h["version"])]
                before = await store.still(conn, alert.warning_id, alert.version, HELD)
                if before is None:
                    continue
                out = Outgoing(alert, Level(h["level"]), self._clock.now(), again=True)
                await self._pipeline.dispatch.run(conn, out)
                after = await store.dispatch_of(conn, alert.warning_id, alert.version)
                released += int(after != before)
        if released:
            self._wake()
        return released

    async def send_digests(self) -> int:
        """One digest per person and channel whose held messages may go now (fewer than the
        limit sent within the window), naming the warnings held."""
        now = self._clock.now()
        sent = 0
        async with self._pool.acquire() as conn, conn.transaction():
            groups = await conn.fetch(
                """SELECT recipient, channel, min(target) AS target,
                          array_agg(id ORDER BY id) AS ids,
                          array_agg(warning_id ORDER BY id) AS wids,
                          array_agg(version ORDER BY id) AS vers
                     FROM alerting.deliveries WHERE state = $1
                    GROUP BY 1, 2 LIMIT 500""",
                Delivery.held,
            )
            for g in groups:
                recent = await conn.fetchval(
                    """SELECT count(*) FROM alerting.deliveries
                        WHERE recipient = $1 AND channel = $2 AND created_at > $3
                          AND purpose = ANY($4::text[]) AND state <> ALL($5::text[])""",
                    g["recipient"],
                    g["channel"],
                    now - self._storm.window,
                    list(COUNTED),
                    [Delivery.held, Delivery.digested],
                )
                if recent >= self._storm.limit:
                    continue
                locked = await conn.fetch(
                    """UPDATE alerting.deliveries SET state = $2
                        WHERE id = ANY($1::bigint[]) AND state = $3 RETURNING id""",
                    list(g["ids"]),
                    Delivery.digested,
                    Delivery.held,
                )
                if not locked:
                    continue
                keys = set(zip(g["wids"], g["vers"], strict=True))
                versions = await load_versions(conn, keys)
                ordered = [versions[k] for k in zip(g["wids"], g["vers"], strict=True)]
                last = ordered[-1]
                await ledger.insert(
                    conn,
                    last.warning_id,
                    last.version,
                    [(g["recipient"], g["channel"], g["target"])],
                    now=self._clock.now(),
                    purpose=Purpose.digest,
                    message=digest_text([v.headline for v in ordered], last.status == "Exercise"),
                    key_part=f"digest{min(g['ids'])}:",
                )
                sent += 1
        if sent:
            self._wake()
        return sent

    async def remind(self) -> int:
        """Repeats each open warning to its people ``repeat_interval`` after they last heard
        of it, marked 【持续】 (those still to confirm are asked again)."""
        if self._group.repeat_interval <= timedelta(0):
            return 0
        now = self._clock.now()
        n = 0
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """SELECT w.id, w.version, w.level, w.reminders, w.last_dispatch_at
                     FROM alerting.warnings w
                     JOIN alerting.warning_versions v ON v.warning_id = w.id
                                                    AND v.version = w.version
                    WHERE w.state = ANY($2::text[]) AND v.dispatch = ANY($3::text[])
                      AND w.last_dispatch_at <= $1 LIMIT 100""",
                now - self._group.repeat_interval,
                list(STANDING),
                list(TOLD),
            )
            if not due:
                return 0
            alerts = await self._locked(conn, {(d["id"], d["version"]) for d in due})
            for d in due:
                alert = alerts[(d["id"], d["version"])]
                if await store.still(conn, alert.warning_id, alert.version, TOLD) is None:
                    continue
                last = await conn.fetchval(
                    "SELECT last_dispatch_at FROM alerting.warnings WHERE id = $1", d["id"]
                )
                if not repeat_due(last, now, self._group):
                    continue
                plan = fan_out_areas(
                    await load_persons_in(conn, alert.area_codes, now),
                    areas=alert.area_codes,
                    hazard=alert.hazard,
                    level=Level(d["level"]),
                    msg_type=alert.msg_type,
                    drill=alert.status == "Exercise",
                )
                k = d["reminders"] + 1
                await ledger.insert(
                    conn,
                    alert.warning_id,
                    alert.version,
                    [(f"person:{s.person.id}", s.channel, s.target) for s in plan.sends],
                    now=self._clock.now(),
                    purpose=Purpose.reminder,
                    message=f"【持续】{sms_text(alert)}",
                    key_part=f"reminder{k}:",
                )
                await conn.execute(
                    """UPDATE alerting.warnings SET reminders = $2, last_dispatch_at = $3
                        WHERE id = $1""",
                    d["id"],
                    k,
                    now,
                )
                n += 1
        if n:
            self._wake()
        return n

    async def expire_due(self) -> dict[str, int]:
        """Looks at the open warnings near their expiry (:func:`expiry_action`): renews those
        risk still backs, expires those it no longer backs once their time has run out, and
        holds both while risk itself is silent. One transaction per warning, under its group's
        lock, so the consumer and other replicas see each decision whole."""
        now = self._clock.now()
        done = {"renew": 0, "expire": 0, "hold": 0}
        due = await self._pool.fetch(
            """SELECT w.id, w.hazard, w.region_code, w.expires_at FROM alerting.warnings w
                WHERE w.state = ANY($2::text[]) AND w.expires_at <= $1
                ORDER BY w.expires_at LIMIT 200""",
            now + self._expiry.renew_ahead,
            list(STANDING),
        )
        for d in due:
            async with self._pool.acquire() as conn, conn.transaction():
                await store.lock_groups(conn, [(d["hazard"], d["region_code"])])
                action = await self._expiry_one(conn, d["id"], d["expires_at"], now)
            if action in done:
                done[action] += 1
        EXPIRY_HELD.set(done["hold"])
        if done["renew"] or done["expire"]:
            self._wake()
        return done

    async def _locked(
        self, conn: Conn, keys: set[tuple[str, int]]
    ) -> dict[tuple[str, int], AlertVersion]:
        """The versions, with their groups locked."""
        alerts = await load_versions(conn, keys)
        await store.lock_groups(conn, {(a.hazard, a.region_code) for a in alerts.values()})
        return alerts

    async def _expiry_one(
        self, conn: Conn, wid: str, expires_at: datetime, now: datetime
    ) -> ExpiryAction | None:
        w = await conn.fetchrow(
            """SELECT w.version, w.level, w.expires_at, w.region_code, w.status, w.controlled_by,
                      (SELECT max(s.seen_at) FROM alerting.warning_stations s
                        WHERE s.warning_id = w.id) AS evidence_at
                 FROM alerting.warnings w
                WHERE id = $1 AND state = ANY($3::text[]) AND expires_at = $2
                  FOR UPDATE""",
            wid,
            expires_at,
            list(STANDING),
        )
        if w is None:
            return None  # changed meanwhile (a new version, a cancel, another replica)
        heard = await conn.fetchval("SELECT heard_at FROM alerting.risk_heard")
        action = expiry_action(
            expires_at=expires_at,
            evidence_at=w["evidence_at"],
            risk_heard_at=heard,
            now=now,
            policy=self._expiry,
            controlled=w["controlled_by"] is not None,
        )
        if action == "renew":
            level = Level(w["level"])
            await self._pipeline.new_version(
                conn,
                NewVersion(
                    warning=await store.warning(conn, wid),
                    version=w["version"] + 1,
                    msg_type=MsgType.Update,
                    level=level,
                    stations=by_station(await levels_store.rule_levels(conn, wid)),
                    previous_level=level,
                    cause=(f"renew:{wid}:{w['version']}", None),
                    actor="system:expiry",
                    now=now,
                    renewal=True,
                ),
            )
        elif action == "expire":
            await self._expire(conn, wid, w, heard, now)
        return action

    async def _expire(
        self, conn: Conn, wid: str, w: asyncpg.Record, heard: datetime | None, now: datetime
    ) -> None:
        """The warning's time ran out and risk no longer backs it: ``expired`` (not an
        all-clear: nothing said the danger is over), its 叫应 tasks and any broadcast waiting for
        approval closed, the duty officers over its region told by SMS to check the ground."""
        await conn.execute(
            """UPDATE alerting.warnings SET state = $3, closed_at = $2, updated_at = $2
                WHERE id = $1""",
            wid,
            now,
            WarningState.expired,
        )
        await ledger.close_confirm_tasks(conn, wid, None)
        # a broadcast still waiting for its approver would tell residents of a lapsed warning
        await supersede_pending(
            conn, wid, now=now, by="system:expiry", reason="the warning expired"
        )
        evidence_at: datetime | None = w["evidence_at"]
        by_officer = w["controlled_by"] is not None
        await audit(
            conn,
            "system:expiry",
            "expire",
            {
                "version": w["version"],
                "expires_at": w["expires_at"].isoformat(),
                "evidence_at": evidence_at.isoformat() if evidence_at else None,
                "risk_heard_at": heard.isoformat() if heard else None,
                "reason": "the expiry its officer gave has passed"
                if by_officer
                else "risk has not re-announced the level of any of its stations",
            },
            warning_id=wid,
        )
        EXPIRED.inc()
        head = await conn.fetchval(
            "SELECT headline FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
            wid,
            w["version"],
        )
        area = jurisdiction(w["region_code"])
        officers = [
            p for p in await duty_officers(conn, [area, *ancestors(area)], now) if p.on_duty
        ]
        officers = [p for p in officers if p.phone]
        if not officers:
            log.warning("no duty officer on duty to tell of an expiry", extra={"warning_id": wid})
            return
        since = f"{evidence_at.astimezone(BEIJING):%m月%d日%H:%M}" if evidence_at else "发布"
        why = "发布人未继续发布" if by_officer else f"风险研判自{since}起未再确认其站点等级"
        text = (
            f"{drill_prefix_for(w['status'])}【预警过期】{head}已于"
            f"{w['expires_at'].astimezone(BEIJING):%m月%d日%H:%M}到期。{why}，"
            "预警已终止（并非解除）。请核实现场情况，必要时重新发布。"
        )
        await ledger.insert_keyed(
            conn,
            wid,
            w["version"],
            [
                ((f"person:{p.id}", "sms", p.phone), f"expiry:{wid}:{p.id}")
                for p in officers
                if p.phone
            ],
            now=now,
            purpose=Purpose.expiry,
            message=text,
        )
