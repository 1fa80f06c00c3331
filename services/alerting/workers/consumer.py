"""The alerting consumer: risk events in; warnings, their versions and delivery-ledger rows out.

Everything a batch does is written in one transaction, keyed by the event id, before the offsets
are committed: a re-delivered event finds its id in ``processed_events`` and does nothing.
Delivery happens afterwards, from the ledger (:mod:`services.alerting.workers.delivery`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from services.alerting.adapters.publications import request_publication
from services.alerting.adapters.versions import load_versions
from services.alerting.domain.grouping import OpenWarning, dispatch_time, inhibited_by, repeat_due
from services.alerting.domain.lifecycle import (
    BEIJING,
    ExpiryAction,
    apply_station_level,
    by_station,
    description,
    expiry_action,
    group_region,
    headline,
    identifier,
)
from services.alerting.domain.messages import drill_prefix_for, sms_text
from services.alerting.domain.recipients import (
    Person,
    Subscription,
    ancestors,
    fan_out,
    jurisdiction,
)
from services.alerting.domain.relay import relay_plan
from services.alerting.domain.silences import Silence, maintenance_ignores, silenced_by
from services.alerting.domain.storm import StormPolicy, digest_text, to_hold
from services.alerting.settings import AlertingSettings
from shared.clock import Clock
from shared.contracts import AlertVersion, Level, RiskEvent, Topics, UpstreamWarning, stable_id
from shared.db import Conn
from shared.errors import DatabaseError
from shared.kafka import BatchResult, InvalidMessage, Message, no_value

log = logging.getLogger(__name__)

RELAYED = Counter("qianshao_upstream_relayed_total", "Upstream warnings relayed to recipients")
HELD = Counter(
    "qianshao_warning_versions_held_total", "Versions held back, by silence or inhibition", ["by"]
)
VERSIONS = Counter(
    "qianshao_warning_versions_total", "Warning versions created", ["msg_type", "level"]
)
EXPIRED = Counter("qianshao_warnings_expired_total", "Warnings expired, their evidence lapsed")
EXPIRY_HELD = Gauge(
    "qianshao_warnings_expiry_held",
    "Warnings due to be renewed or expired, held because risk has not been heard from",
)


# a warning row as _write_version reads it
WARNING_COLUMNS = (
    "id, hazard, region_code, level, version, identifier, status, kind, last_dispatch_at"
)


class AlertingHandler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: AlertingSettings,
        topics: Topics,
        clock: Clock,
        on_new_deliveries: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._topics = topics
        self._clock = clock
        self._wake = on_new_deliveries
        self._policy = settings.group_policy()
        self._expiry = settings.expiry_policy()
        self._storm = StormPolicy(settings.storm_limit, timedelta(seconds=settings.storm_window_s))
        self._status: Literal["Actual", "Exercise"] = "Exercise" if settings.drill else "Actual"

    async def process(self, batch: Sequence[Message]) -> BatchResult:
        dead: list[InvalidMessage] = []
        events: list[RiskEvent] = []
        upstream: list[UpstreamWarning] = []
        for m in batch:
            if m.value is None:
                dead.append(no_value(m))
                continue
            try:
                if m.topic == self._topics.warnings_upstream:
                    upstream.append(UpstreamWarning.model_validate_json(m.value))
                else:
                    events.append(RiskEvent.model_validate_json(m.value))
            except ValidationError as exc:
                reason = (
                    "invalid_upstream_warning"
                    if m.topic == self._topics.warnings_upstream
                    else "invalid_risk_event"
                )
                dead.append(InvalidMessage(m, reason, str(exc)[:500]))
        if upstream:
            try:
                relayed = await self._relay(upstream)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise DatabaseError(f"alerting relay failed: {exc!r}") from exc
            if relayed:
                self._wake()
        station_events = [
            e for e in events if e.scope == "station" and e.station_id and e.kind == "level"
        ]
        heard = max((e.produced_at for e in events), default=None)
        try:
            created = await self._apply(station_events, heard)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"alerting write failed: {exc!r}") from exc
        if created:
            self._wake()
        return BatchResult(dead_letters=dead)

    async def _apply(self, events: list[RiskEvent], heard: datetime | None) -> int:
        """Applies the station events in one transaction; then records when risk was last
        heard (the newest ``produced_at`` of the batch, whatever its kind or scope). That is a
        transaction of its own, so replicas do not queue on its one row: lost in a crash, it
        only lags, and a lagging time holds expiries back, never brings them forward."""
        created = await self._apply_events(events) if events else 0
        if heard is not None:
            await self._pool.execute(
                """INSERT INTO alerting.risk_heard (heard_at) VALUES ($1)
                   ON CONFLICT (one) DO UPDATE
                   SET heard_at = greatest(risk_heard.heard_at, EXCLUDED.heard_at)
                   WHERE risk_heard.heard_at < EXCLUDED.heard_at""",
                heard,
            )
        return created

    async def _apply_events(self, events: list[RiskEvent]) -> int:
        """Changes one by one, in order; then the standing announcements that confirm what a
        warning holds, in one statement (risk announces every standing level each period, and
        one by one they held the changes behind them for seconds). An announcement that does
        not confirm (a station alerting does not hold at that level) takes the full path; one
        older than a change of the same station and rule in the batch is dropped."""
        now = self._clock.now()
        created = 0
        last_change: dict[tuple[str | None, str], int] = {}
        standing: dict[tuple[str | None, str, str], tuple[int, RiskEvent]] = {}
        for i, ev in enumerate(events):
            if ev.change == "standing":
                standing[(ev.station_id, ev.rule_id, ev.hazard)] = (i, ev)
            else:
                last_change[(ev.station_id, ev.rule_id)] = i
        async with self._pool.acquire() as conn, conn.transaction():
            for ev in events:
                if ev.change != "standing":
                    created += await self._apply_fresh(conn, ev, now)
            current = [
                ev
                for i, ev in standing.values()
                if last_change.get((ev.station_id, ev.rule_id), -1) < i
            ]
            for ev in await self._confirm_standing(conn, current):
                created += await self._apply_fresh(conn, ev, now)
        return created

    async def _apply_fresh(self, conn: Conn, ev: RiskEvent, now: datetime) -> int:
        fresh = await conn.fetchval(
            """INSERT INTO alerting.processed_events (event_id) VALUES ($1)
               ON CONFLICT DO NOTHING RETURNING true""",
            ev.event_id,
        )
        return await self._apply_one(conn, ev, now) if fresh else 0

    async def _confirm_standing(self, conn: Conn, events: list[RiskEvent]) -> list[RiskEvent]:
        """Marks the (station, rule) rows the announcements confirm as seen; returns the
        announcements that confirmed nothing."""
        if not events:
            return []
        rows = await conn.fetch(
            """UPDATE alerting.warning_stations ws
                  SET seen_at = greatest(ws.seen_at, x.at)
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[],
                             $5::timestamptz[]) AS x(s, r, hz, l, at),
                      alerting.warnings w
                WHERE ws.station_id = x.s AND ws.rule_id = x.r AND ws.level = x.l
                  AND w.id = ws.warning_id AND w.hazard = x.hz
                  AND w.state IN ('draft', 'pending_approval', 'issued', 'updated')
            RETURNING ws.station_id, ws.rule_id, w.hazard""",
            [e.station_id for e in events],
            [e.rule_id for e in events],
            [e.hazard for e in events],
            [int(Level.parse(e.level)) for e in events],
            [e.produced_at for e in events],
        )
        confirmed = {(r["station_id"], r["rule_id"], r["hazard"]) for r in rows}
        return [e for e in events if (e.station_id, e.rule_id, e.hazard) not in confirmed]

    async def _apply_one(self, conn: Conn, ev: RiskEvent, now: datetime) -> int:
        assert ev.station_id is not None
        region = group_region(ev.region_code, self._settings.group_admin_level)
        # serialise work on one group across replicas
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{ev.hazard}:{region}")
        await self._withdraw_held_cancel(conn, ev.hazard, region, ev.event_id)
        w = await conn.fetchrow(
            f"""SELECT {WARNING_COLUMNS} FROM alerting.warnings
                WHERE hazard = $1 AND region_code = $2
                  AND state IN ('draft', 'pending_approval', 'issued', 'updated')
                FOR UPDATE""",  # noqa: S608 - a constant column list
            ev.hazard,
            region,
        )
        levels = await _rule_levels(conn, w["id"]) if w is not None else {}
        stations = by_station(levels)
        in_maintenance = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM alerting.maintenance WHERE station_id = $1
                                 AND starts_at <= $2 AND ends_at > $2)""",
            ev.station_id,
            ev.event_time,
        )
        if maintenance_ignores(
            in_maintenance, int(stations.get(ev.station_id, Level.none)), int(Level.parse(ev.level))
        ):
            await conn.execute(
                """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
                   VALUES ('system:risk', 'maintenance.ignored', $1, $2)""",
                w["id"] if w is not None else None,
                {"event_id": ev.event_id, "station_id": ev.station_id, "level": ev.level},
            )
            return 0
        if w is not None and (ev.station_id, "") in levels:
            # a row from before rules were told apart: this event, naming its rule, replaces it
            del levels[(ev.station_id, "")]
            await conn.execute(
                """DELETE FROM alerting.warning_stations
                    WHERE warning_id = $1 AND station_id = $2 AND rule_id = ''""",
                w["id"],
                ev.station_id,
            )
        decision = apply_station_level(
            Level(w["level"]) if w is not None else None,
            levels,
            (ev.station_id, ev.rule_id),
            Level.parse(ev.level),
        )
        if w is not None:
            wid = w["id"]
            if ev.level == "none":
                await conn.execute(
                    """DELETE FROM alerting.warning_stations
                        WHERE warning_id = $1 AND station_id = $2 AND rule_id = $3""",
                    wid,
                    ev.station_id,
                    ev.rule_id,
                )
            else:
                await self._set_station(conn, wid, ev)
        if decision.action == "none":
            return 0
        new_stations = by_station(decision.stations)

        if decision.action == "issue":
            serial = await conn.fetchval("SELECT nextval('alerting.warning_serial')")
            wid = stable_id("warning", ev.hazard, region, ev.event_id)
            await conn.execute(
                """INSERT INTO alerting.warnings
                       (id, hazard, region_code, level, state, identifier, version, status)
                   VALUES ($1, $2, $3, $4, 'issued', $5, 1, $6)""",
                wid,
                ev.hazard,
                region,
                int(decision.level),
                identifier(self._settings.sender_code, now, int(serial)),
                self._status,
            )
            await self._set_station(conn, wid, ev)
            w_new = await conn.fetchrow(
                f"SELECT {WARNING_COLUMNS} FROM alerting.warnings WHERE id = $1",  # noqa: S608
                wid,
            )
            assert w_new is not None
            return await self._write_version(
                conn,
                w_new,
                version=1,
                msg_type="Alert",
                level=decision.level,
                stations=new_stations,
                previous_level=None,
                cause=(ev.event_id, ev.event_time),
                actor="system:risk",
                now=now,
            )
        assert w is not None
        msg_type: Literal["Update", "Cancel"] = (
            "Update" if decision.action == "update" else "Cancel"
        )
        return await self._write_version(
            conn,
            w,
            version=w["version"] + 1,
            msg_type=msg_type,
            level=decision.level,
            stations=new_stations or {ev.station_id: Level.parse(ev.level)},
            previous_level=Level(w["level"]),
            cause=(ev.event_id, ev.event_time),
            actor="system:risk",
            now=now,
        )

    async def _write_version(
        self,
        conn: Conn,
        w: asyncpg.Record,
        *,
        version: int,
        msg_type: Literal["Alert", "Update", "Cancel"],
        level: Level,
        stations: Mapping[str, Level],
        previous_level: Level | None,
        cause: tuple[str, datetime | None],
        actor: str,
        now: datetime,
        renewal: bool = False,
    ) -> int:
        """A new version of warning ``w`` (its row as it was before this version; for an
        ``Alert``, as just written): the version row, the warning's new state, the audit entry,
        then dispatch now or at its group timer. Returns the ledger rows created."""
        wid, hazard, region = w["id"], w["hazard"], w["region_code"]
        sent = now
        expires = None if msg_type == "Cancel" else sent + self._expiry.validity
        refs: list[str] = []
        ident = w["identifier"]
        if msg_type != "Alert":
            ident = f"{w['identifier']}_v{version}"
            prev = await conn.fetch(
                """SELECT identifier, sent FROM alerting.warning_versions
                    WHERE warning_id = $1 ORDER BY version""",
                wid,
            )
            refs = [
                f"{self._settings.sender_code},{p['identifier']},{p['sent'].isoformat()}"
                for p in prev
            ]
        state = {"Alert": "issued", "Update": "updated", "Cancel": "cancelled"}[msg_type]
        await conn.execute(
            """UPDATE alerting.warnings SET level=$2, version=$3, state=$4, updated_at=now(),
                   closed_at = CASE WHEN $4 = 'cancelled' THEN now() END, expires_at = $5
                WHERE id=$1""",
            wid,
            int(level),
            version,
            state,
            expires,
        )
        station_ids = sorted(stations)
        head = headline(hazard, level, region, msg_type, renewal=renewal)
        desc = description(hazard, level, stations, msg_type)
        cause_event, cause_time = cause
        await conn.execute(
            """INSERT INTO alerting.warning_versions
                   (warning_id, version, msg_type, level, identifier, sent, headline, description,
                    refs, station_ids, cause_event, cause_time, expires)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
            wid,
            version,
            msg_type,
            int(level),
            ident,
            sent,
            head,
            desc,
            refs,
            station_ids,
            cause_event,
            cause_time,
            expires,
        )
        await conn.execute(
            """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
               VALUES ($1, $2, $3, $4)""",
            actor,
            "renew" if renewal else msg_type.lower(),
            wid,
            {"event_id": cause_event, "level": level.name, "version": version},
        )
        VERSIONS.labels(msg_type, level.name).inc()
        alert = AlertVersion(
            event_id=stable_id("alert", wid, version),
            produced_at=sent,
            warning_id=wid,
            identifier=ident,
            version=version,
            msg_type=msg_type,
            hazard=hazard,
            level=level.name,
            region_code=region,
            station_ids=station_ids,
            references=refs,
            sent=sent,
            headline=head,
            description=desc,
            status=w["status"],
            cause_time=cause_time,
            expires=expires,
        )
        recent = await conn.fetchval(
            """SELECT count(*) FROM alerting.warning_versions v
                 JOIN alerting.warnings w ON w.id = v.warning_id
                WHERE w.hazard = $1 AND w.region_code = $2 AND v.sent > $3""",
            hazard,
            region,
            now - self._policy.flap_window,
        )
        when = dispatch_time(
            now=now,
            msg_type=msg_type,
            level=level,
            previous_level=previous_level,
            last_dispatch_at=w["last_dispatch_at"],
            recent_versions=int(recent),
            policy=self._policy,
        )
        if when <= now:
            created = await self._dispatch(conn, alert, level)
        else:
            await conn.execute(
                """UPDATE alerting.warning_versions SET dispatch = 'scheduled', dispatch_at = $3
                    WHERE warning_id = $1 AND version = $2""",
                wid,
                version,
                when,
            )
            created = 0
        if msg_type != "Alert" and w["kind"] == "public":
            # each later version of a public warning goes to residents after approval again
            await request_publication(
                conn,
                warning_id=wid,
                requested_by="system:new-version",
                now=now,
                approval_levels=self._settings.approval_levels,
            )
        return created

    async def _set_station(self, conn: Conn, wid: str, ev: RiskEvent) -> None:
        await conn.execute(
            """INSERT INTO alerting.warning_stations
                   (warning_id, station_id, rule_id, level, event_id, seen_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (warning_id, station_id, rule_id)
               DO UPDATE SET level = EXCLUDED.level, event_id = EXCLUDED.event_id,
                             updated_at = now(),
                             seen_at = greatest(warning_stations.seen_at, EXCLUDED.seen_at)""",
            wid,
            ev.station_id,
            ev.rule_id,
            int(Level.parse(ev.level)),
            ev.event_id,
            ev.produced_at,
        )

    async def _dispatch(
        self, conn: Conn, alert: AlertVersion, level: Level, *, again: bool = False
    ) -> int:
        """Sends a version now, unless something holds it back. Earlier versions not yet out
        are superseded by it; an all-clear of a warning nobody heard of is not sent. A version
        a higher warning inhibits, or a silence matches, goes to ``alerts.v1`` only and waits
        (``again`` is the later look at a held version: ``alerts.v1`` already has it)."""
        wid, version = alert.warning_id, alert.version
        await conn.execute(
            """UPDATE alerting.warning_versions SET dispatch = 'superseded'
                WHERE warning_id = $1 AND version < $2
                  AND dispatch IN ('scheduled', 'silenced', 'inhibited')""",
            wid,
            version,
        )
        told = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM alerting.warning_versions
                               WHERE warning_id = $1 AND version < $2
                                 AND dispatch IN ('dispatched', 'released'))""",
            wid,
            version,
        )
        if alert.msg_type == "Cancel" and not told:
            await self._mark(conn, alert, "superseded")
            return 0
        topic_row = ("topic:alerts", "kafka", self._topics.alerts)
        # the all-clear of a warning people heard is never held back
        inhibitor = (
            None if alert.msg_type == "Cancel" else await self._inhibitor(conn, alert, level)
        )
        silence = None if inhibitor else await self._silence_for(conn, alert, told)
        if inhibitor is not None or silence is not None:
            if not again:
                await self._insert_deliveries(conn, alert, [topic_row])
            state = "inhibited" if inhibitor is not None else "silenced"
            await conn.execute(
                """UPDATE alerting.warning_versions
                      SET dispatch = $3, silenced_by = $4, inhibited_by = $5
                    WHERE warning_id = $1 AND version = $2""",
                wid,
                version,
                state,
                silence.id if silence is not None else None,
                inhibitor.id if inhibitor is not None else None,
            )
            if not again:
                await conn.execute(
                    """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
                       VALUES ($1, $2, $3, $4)""",
                    f"system:{'inhibition' if inhibitor else 'silence'}",
                    state,
                    wid,
                    {
                        "version": version,
                        "silence_id": silence.id if silence else None,
                        "inhibited_by": inhibitor.id if inhibitor else None,
                    },
                )
                HELD.labels(state).inc()
            return 0
        n = await self._enqueue_deliveries(conn, alert, level, with_topic=not again)
        await self._mark(conn, alert, "released" if again else "dispatched")
        await conn.execute(
            "UPDATE alerting.warnings SET last_dispatch_at = $2 WHERE id = $1",
            wid,
            self._clock.now(),
        )
        return n

    async def _mark(self, conn: Conn, alert: AlertVersion, state: str) -> None:
        await conn.execute(
            """UPDATE alerting.warning_versions SET dispatch = $3
                WHERE warning_id = $1 AND version = $2""",
            alert.warning_id,
            alert.version,
            state,
        )

    async def _inhibitor(self, conn: Conn, alert: AlertVersion, level: Level) -> OpenWarning | None:
        rules = self._settings.inhibit_rules
        if not any(t == alert.hazard for _, t in rules):
            return None
        rows = await conn.fetch(
            """SELECT id, hazard, region_code, level FROM alerting.warnings
                WHERE region_code = $1 AND hazard <> $2 AND state IN ('issued', 'updated')""",
            alert.region_code,
            alert.hazard,
        )
        return inhibited_by(
            hazard=alert.hazard,
            region_code=alert.region_code,
            level=level,
            open_warnings=[
                OpenWarning(r["id"], r["hazard"], r["region_code"], Level(r["level"])) for r in rows
            ],
            rules=rules,
        )

    async def _withdraw_held_cancel(
        self, conn: Conn, hazard: str, region: str, event_id: str
    ) -> None:
        """A group rising again while its warning's all-clear is still held (flapping): the
        all-clear never went out, so it is withdrawn and the warning goes on."""
        w = await conn.fetchrow(
            """SELECT w.id, w.version FROM alerting.warnings w
                 JOIN alerting.warning_versions v ON v.warning_id = w.id AND v.version = w.version
                WHERE w.hazard = $1 AND w.region_code = $2 AND w.state = 'cancelled'
                  AND v.msg_type = 'Cancel' AND v.dispatch = 'scheduled'
                ORDER BY w.closed_at DESC LIMIT 1
                FOR UPDATE OF w""",
            hazard,
            region,
        )
        if w is None:
            return
        prev = await conn.fetchrow(
            """SELECT version, level, msg_type FROM alerting.warning_versions
                WHERE warning_id = $1 AND version = $2""",
            w["id"],
            w["version"] - 1,
        )
        assert prev is not None
        await conn.execute(
            "DELETE FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
            w["id"],
            w["version"],
        )
        await conn.execute(
            """UPDATE alerting.warnings SET state = $2, level = $3, version = $4, closed_at = NULL
                WHERE id = $1""",
            w["id"],
            "issued" if prev["msg_type"] == "Alert" else "updated",
            prev["level"],
            prev["version"],
        )
        await conn.execute(
            """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
               VALUES ('system:flapping', 'cancel.withdrawn', $1, $2)""",
            w["id"],
            {"withdrawn_version": w["version"], "event_id": event_id},
        )

    async def dispatch_due(self) -> int:
        """Sends the versions whose group timer has run out (the latest of each warning; the
        older are superseded when it goes)."""
        now = self._clock.now()
        n = 0
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """SELECT v.warning_id, v.version, v.level FROM alerting.warning_versions v
                     JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
                    WHERE v.dispatch = 'scheduled' AND v.dispatch_at <= $1
                    ORDER BY v.dispatch_at LIMIT 200""",
                now,
            )
            if not due:
                return 0
            alerts = await load_versions(conn, {(d["warning_id"], d["version"]) for d in due})
            for d in due:
                alert = alerts[(d["warning_id"], d["version"])]
                if await self._still(conn, alert, ("scheduled",)):
                    n += await self._dispatch(conn, alert, Level(d["level"]))
        if n:
            self._wake()
        return len(due)

    async def _still(self, conn: Conn, alert: AlertVersion, states: tuple[str, ...]) -> str | None:
        """Under the group's lock (the consumer's too): the version's dispatch state, if it is
        still the warning's latest and in one of ``states``."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"{alert.hazard}:{alert.region_code}"
        )
        state: str | None = await conn.fetchval(
            """SELECT v.dispatch FROM alerting.warning_versions v
                 JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
                WHERE v.warning_id = $1 AND v.version = $2 AND v.dispatch = ANY($3::text[])""",
            alert.warning_id,
            alert.version,
            list(states),
        )
        return state

    async def _enqueue_deliveries(
        self, conn: Conn, alert: AlertVersion, level: Level, *, with_topic: bool = True
    ) -> int:
        """Ledger rows for the endpoints subscribed (webhooks, group robots), the people in scope
        and the ``alerts.v1`` topic; 叫应 tasks for those who must confirm. Older versions'
        open tasks close: the new version is what people confirm now."""
        topic_row = ("topic:alerts", "kafka", self._topics.alerts)
        subs = await conn.fetch(
            """SELECT id, channel, target FROM alerting.subscriptions
                WHERE active AND $1 LIKE region_prefix || '%' AND min_level <= $2
                  AND (hazard IS NULL OR hazard = $3)""",
            alert.region_code,
            int(level),
            alert.hazard,
        )
        rows = [(f"sub:{s['id']}", s["channel"], s["target"]) for s in subs]
        if with_topic:
            rows.append(topic_row)
        persons = await load_persons(conn, alert.region_code, alert.sent)
        plan = fan_out(
            persons,
            hazard=alert.hazard,
            level=level,
            region_code=alert.region_code,
            msg_type=alert.msg_type,
            drill=alert.status == "Exercise",
            confirm_orange=self._settings.confirm_orange,
        )
        people: list[tuple[str, str, str]] = [
            (f"person:{s.person.id}", s.channel, s.target) for s in plan.sends
        ]
        hold = await self._storm_hold(conn, alert, level, people, plan.confirmers)
        rows += [r for r in people if (r[0], r[1]) not in hold]
        await self._insert_deliveries(conn, alert, rows)
        if hold:
            await self._insert_deliveries(
                conn, alert, [r for r in people if (r[0], r[1]) in hold], state="held"
            )
            HELD.labels("storm").inc(len(hold))
        await conn.execute(
            """UPDATE alerting.confirm_tasks SET closed = true
                WHERE warning_id = $1 AND version < $2 AND confirmed_at IS NULL AND NOT closed""",
            alert.warning_id,
            alert.version,
        )
        if plan.confirmers:
            await conn.execute(
                """INSERT INTO alerting.confirm_tasks
                       (warning_id, version, person_id, region_code, level, created_at)
                   SELECT $1, $2, u.pid, u.region, $3, $4
                     FROM unnest($5::bigint[], $6::text[]) AS u(pid, region)
                   ON CONFLICT DO NOTHING""",
                alert.warning_id,
                alert.version,
                int(level),
                self._clock.now(),
                [p.id for p in plan.confirmers],
                [p.region_code for p in plan.confirmers],
            )
        return len(rows)

    async def _relay(self, warnings: list[UpstreamWarning]) -> int:
        """Relays others' warnings to the people in scope and the endpoints subscribed, marked
        as the sender's: never re-issued as our own (no warning, no CAP of ours, not on
        ``alerts.v1``). Test, system and draft messages are not relayed; a drill goes to drill
        recipients only. A re-delivered message finds its identifier and does nothing."""
        now = self._clock.now()
        rows_total = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for u in warnings:
                if u.status not in ("Actual", "Exercise") or not u.region_codes:
                    continue
                if u.level == "none" and u.msg_type != "Cancel":
                    continue
                plan = relay_plan(u)
                fresh = await conn.fetchval(
                    """INSERT INTO alerting.relayed (identifier, sender, sent, msg_type, status,
                           event, hazard, level, region_code, region_codes, headline, refs,
                           relayed_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    u.identifier,
                    u.sender,
                    u.sent,
                    u.msg_type,
                    u.status,
                    u.event,
                    plan.hazard,
                    int(plan.level),
                    plan.region_code,
                    u.region_codes,
                    plan.headline,
                    u.references,
                    now,
                )
                if not fresh:
                    continue
                rows: dict[tuple[str, str], str] = {}
                for region in u.region_codes:
                    subs = await conn.fetch(
                        """SELECT id, channel, target FROM alerting.subscriptions
                            WHERE active AND $1 LIKE region_prefix || '%' AND min_level <= $2
                              AND (hazard IS NULL OR hazard = $3)""",
                        region.ljust(12, "0"),
                        max(1, int(plan.level)),
                        plan.hazard,
                    )
                    for s in subs:
                        rows[(f"sub:{s['id']}", s["channel"])] = s["target"]
                    persons = await load_persons(conn, region.ljust(12, "0"), now)
                    out = fan_out(
                        persons,
                        hazard=plan.hazard,
                        level=max(plan.level, Level.blue),
                        region_code=region.ljust(12, "0"),
                        msg_type=u.msg_type,
                        drill=u.status == "Exercise",
                    )
                    for send in out.sends:
                        rows[(f"person:{send.person.id}", send.channel)] = send.target
                await conn.execute(
                    """INSERT INTO alerting.deliveries
                           (warning_id, version, recipient, channel, target, idempotency_key,
                            purpose, message, next_attempt_at)
                       SELECT $1::text, 1, u.recipient, u.channel, u.target,
                              $1::text || ':' || u.recipient || ':' || u.channel, 'relay', $5, $6
                         FROM unnest($2::text[], $3::text[], $4::text[])
                              AS u(recipient, channel, target)
                       ON CONFLICT DO NOTHING""",
                    f"relay:{u.identifier}",
                    [k[0] for k in rows],
                    [k[1] for k in rows],
                    list(rows.values()),
                    plan.text,
                    now,
                )
                await conn.execute(
                    "UPDATE alerting.relayed SET recipients = $2 WHERE identifier = $1",
                    u.identifier,
                    len(rows),
                )
                await conn.execute(
                    """INSERT INTO alerting.audit_log (actor, action, detail)
                       VALUES ('system:upstream', 'relay', $1)""",
                    {"identifier": u.identifier, "sender": u.sender, "recipients": len(rows)},
                )
                RELAYED.inc()
                rows_total += len(rows)
        return rows_total

    async def _silence_for(self, conn: Conn, alert: AlertVersion, told: bool) -> Silence | None:
        now = self._clock.now()
        rows = await conn.fetch(
            """SELECT id, starts_at, ends_at, station_id, region_prefix, hazard
                 FROM alerting.silences WHERE starts_at <= $1 AND ends_at > $1""",
            now,
        )
        if not rows:
            return None
        return silenced_by(
            [Silence(**dict(r.items())) for r in rows],
            hazard=alert.hazard,
            region_code=alert.region_code,
            station_ids=alert.station_ids,
            msg_type=alert.msg_type,
            earlier_dispatched=told,
            now=now,
        )

    async def release_silenced(self) -> int:
        """Sends the latest version of each warning held back by a silence or an inhibition
        that no longer holds it (ended, deleted, the higher warning gone)."""
        released = 0
        async with self._pool.acquire() as conn, conn.transaction():
            held = await conn.fetch(
                """SELECT v.warning_id, v.version, v.level FROM alerting.warning_versions v
                     JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
                    WHERE v.dispatch IN ('silenced', 'inhibited')
                      AND w.state IN ('issued', 'updated') LIMIT 200"""
            )
            if not held:
                return 0
            alerts = await load_versions(conn, {(h["warning_id"], h["version"]) for h in held})
            for h in held:
                alert = alerts[(h["warning_id"], h["version"])]
                before = await self._still(conn, alert, ("silenced", "inhibited"))
                if before is None:
                    continue
                await self._dispatch(conn, alert, Level(h["level"]), again=True)
                after = await conn.fetchval(
                    """SELECT dispatch FROM alerting.warning_versions
                        WHERE warning_id = $1 AND version = $2""",
                    h["warning_id"],
                    h["version"],
                )
                released += int(after != before)
        if released:
            self._wake()
        return released

    async def _insert_deliveries(
        self,
        conn: Conn,
        alert: AlertVersion,
        rows: list[tuple[str, str, str]],
        *,
        purpose: str = "warning",
        message: str | None = None,
        key_part: str = "",
        state: str = "pending",
    ) -> None:
        await conn.execute(
            """INSERT INTO alerting.deliveries
                   (warning_id, version, recipient, channel, target, idempotency_key,
                    next_attempt_at, purpose, message, state, created_at)
               SELECT $1::text, $2::int, u.recipient, u.channel, u.target,
                      $2::int || ':' || $1::text || ':' || $7 || u.recipient || ':' || u.channel,
                      $6, $8, $9, $10, $6
                 FROM unnest($3::text[], $4::text[], $5::text[]) AS u(recipient, channel, target)
               ON CONFLICT DO NOTHING""",
            alert.warning_id,
            alert.version,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            self._clock.now(),
            key_part,
            purpose,
            message,
            state,
        )

    async def _storm_hold(
        self,
        conn: Conn,
        alert: AlertVersion,
        level: Level,
        people: list[tuple[str, str, str]],
        confirmers: list[Person],
    ) -> set[tuple[str, str]]:
        if not people or self._storm.limit <= 0 or level >= Level.red:
            return set()
        counts = await conn.fetch(
            """SELECT recipient, channel, count(*) AS n FROM alerting.deliveries
                WHERE recipient = ANY($1::text[]) AND created_at > $2
                  AND purpose IN ('warning', 'reminder', 'digest') AND state <> 'held'
                GROUP BY 1, 2""",
            sorted({p[0] for p in people}),
            self._clock.now() - self._storm.window,
        )
        return to_hold(
            {(r["recipient"], r["channel"]): r["n"] for r in counts},
            [(p[0], p[1]) for p in people],
            level=level,
            must_confirm={f"person:{p.id}" for p in confirmers},
            policy=self._storm,
        )

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
                     FROM alerting.deliveries WHERE state = 'held'
                    GROUP BY 1, 2 LIMIT 500"""
            )
            for g in groups:
                recent = await conn.fetchval(
                    """SELECT count(*) FROM alerting.deliveries
                        WHERE recipient = $1 AND channel = $2 AND created_at > $3
                          AND purpose IN ('warning', 'reminder', 'digest')
                          AND state NOT IN ('held', 'digested')""",
                    g["recipient"],
                    g["channel"],
                    now - self._storm.window,
                )
                if recent >= self._storm.limit:
                    continue
                locked = await conn.fetch(
                    """UPDATE alerting.deliveries SET state = 'digested'
                        WHERE id = ANY($1::bigint[]) AND state = 'held' RETURNING id""",
                    list(g["ids"]),
                )
                if not locked:
                    continue
                keys = set(zip(g["wids"], g["vers"], strict=True))
                versions = await load_versions(conn, keys)
                ordered = [versions[k] for k in zip(g["wids"], g["vers"], strict=True)]
                last = ordered[-1]
                await self._insert_deliveries(
                    conn,
                    last,
                    [(g["recipient"], g["channel"], g["target"])],
                    purpose="digest",
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
        if self._policy.repeat_interval <= timedelta(0):
            return 0
        now = self._clock.now()
        n = 0
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """SELECT w.id, w.version, w.level, w.reminders, w.last_dispatch_at
                     FROM alerting.warnings w
                     JOIN alerting.warning_versions v ON v.warning_id = w.id
                                                    AND v.version = w.version
                    WHERE w.state IN ('issued', 'updated')
                      AND v.dispatch IN ('dispatched', 'released')
                      AND w.last_dispatch_at <= $1 LIMIT 100""",
                now - self._policy.repeat_interval,
            )
            if not due:
                return 0
            alerts = await load_versions(conn, {(d["id"], d["version"]) for d in due})
            for d in due:
                alert = alerts[(d["id"], d["version"])]
                if await self._still(conn, alert, ("dispatched", "released")) is None:
                    continue
                last = await conn.fetchval(
                    "SELECT last_dispatch_at FROM alerting.warnings WHERE id = $1", d["id"]
                )
                if not repeat_due(last, now, self._policy):
                    continue
                level = Level(d["level"])
                plan = fan_out(
                    await load_persons(conn, alert.region_code, now),
                    hazard=alert.hazard,
                    level=level,
                    region_code=alert.region_code,
                    msg_type=alert.msg_type,
                    drill=alert.status == "Exercise",
                )
                k = d["reminders"] + 1
                await self._insert_deliveries(
                    conn,
                    alert,
                    [(f"person:{s.person.id}", s.channel, s.target) for s in plan.sends],
                    purpose="reminder",
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
            """SELECT w.id, w.expires_at FROM alerting.warnings w
                WHERE w.state IN ('issued', 'updated') AND w.expires_at <= $1
                ORDER BY w.expires_at LIMIT 200""",
            now + self._expiry.renew_ahead,
        )
        for d in due:
            async with self._pool.acquire() as conn, conn.transaction():
                action = await self._expiry_one(conn, d["id"], d["expires_at"], now)
            if action in done:
                done[action] += 1
        EXPIRY_HELD.set(done["hold"])
        if done["renew"] or done["expire"]:
            self._wake()
        return done

    async def _expiry_one(
        self, conn: Conn, wid: str, expires_at: datetime, now: datetime
    ) -> ExpiryAction | None:
        g = await conn.fetchrow(
            "SELECT hazard, region_code FROM alerting.warnings WHERE id = $1", wid
        )
        assert g is not None
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"{g['hazard']}:{g['region_code']}"
        )
        w = await conn.fetchrow(
            f"""SELECT {WARNING_COLUMNS}, expires_at,
                       (SELECT max(s.seen_at) FROM alerting.warning_stations s
                         WHERE s.warning_id = w.id) AS evidence_at
                  FROM alerting.warnings w
                 WHERE id = $1 AND state IN ('issued', 'updated') AND expires_at = $2
                   FOR UPDATE""",  # noqa: S608 - a constant column list
            wid,
            expires_at,
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
        )
        if action == "renew":
            stations = by_station(await _rule_levels(conn, wid))
            level = Level(w["level"])
            await self._write_version(
                conn,
                w,
                version=w["version"] + 1,
                msg_type="Update",
                level=level,
                stations=stations,
                previous_level=level,
                cause=(f"renew:{wid}:{w['version']}", None),
                actor="system:expiry",
                now=now,
                renewal=True,
            )
        elif action == "expire":
            await self._expire(conn, w, heard, now)
        return action

    async def _expire(
        self, conn: Conn, w: asyncpg.Record, heard: datetime | None, now: datetime
    ) -> None:
        """The warning's time ran out and risk no longer backs it: ``expired`` (not an
        all-clear: nothing said the danger is over), its 叫应 tasks and any broadcast waiting for
        approval closed, the duty officers over its region told by SMS to check the ground."""
        wid = w["id"]
        await conn.execute(
            """UPDATE alerting.warnings SET state = 'expired', closed_at = $2, updated_at = $2
                WHERE id = $1""",
            wid,
            now,
        )
        await conn.execute(
            """UPDATE alerting.confirm_tasks SET closed = true
                WHERE warning_id = $1 AND confirmed_at IS NULL AND NOT closed""",
            wid,
        )
        # a broadcast still waiting for its approver would tell residents of a lapsed warning
        await conn.execute(
            """UPDATE alerting.publications SET state = 'superseded', decided_at = $2,
                      decided_by = 'system:expiry', reason = 'the warning expired'
                WHERE warning_id = $1 AND state = 'pending_approval'""",
            wid,
            now,
        )
        evidence_at: datetime | None = w["evidence_at"]
        await conn.execute(
            """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
               VALUES ('system:expiry', 'expire', $1, $2)""",
            wid,
            {
                "version": w["version"],
                "expires_at": w["expires_at"].isoformat(),
                "evidence_at": evidence_at.isoformat() if evidence_at else None,
                "risk_heard_at": heard.isoformat() if heard else None,
                "reason": "risk has not re-announced the level of any of its stations",
            },
        )
        EXPIRED.inc()
        head = await conn.fetchval(
            "SELECT headline FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
            wid,
            w["version"],
        )
        area = jurisdiction(w["region_code"])
        rows = await conn.fetch(
            f"""SELECT {PERSON_COLUMNS} FROM alerting.persons p
                 WHERE p.active AND p.jurisdiction = ANY($2::text[])
                   AND p.role IN ('township_duty_officer', 'county_duty_officer')""",  # noqa: S608
            now,
            [area, *ancestors(area)],
        )
        officers = [p for p in map(person_from_row, rows) if p.on_duty and p.phone]
        if not officers:
            log.warning("no duty officer on duty to tell of an expiry", extra={"warning_id": wid})
            return
        since = f"{evidence_at.astimezone(BEIJING):%m月%d日%H:%M}" if evidence_at else "发布"
        text = (
            f"{drill_prefix_for(w['status'])}【预警过期】{head}已于"
            f"{w['expires_at'].astimezone(BEIJING):%m月%d日%H:%M}到期。风险研判自{since}起"
            "未再确认其站点等级，预警已终止（并非解除）。请核实现场情况，必要时重新发布。"
        )
        await conn.executemany(
            """INSERT INTO alerting.deliveries
                   (warning_id, version, recipient, channel, target, idempotency_key,
                    purpose, message, next_attempt_at)
               VALUES ($1, $2, $3, 'sms', $4, $5, 'expiry', $6, $7)
               ON CONFLICT DO NOTHING""",
            [
                (wid, w["version"], f"person:{p.id}", p.phone, f"expiry:{wid}:{p.id}", text, now)
                for p in officers
            ],
        )


async def _rule_levels(conn: Conn, wid: str) -> dict[tuple[str, str], Level]:
    """The levels that stand in a warning, by (station, rule)."""
    rows = await conn.fetch(
        "SELECT station_id, rule_id, level FROM alerting.warning_stations WHERE warning_id = $1",
        wid,
    )
    return {(r["station_id"], r["rule_id"]): Level(r["level"]) for r in rows}


PERSON_COLUMNS = """p.id, p.name, p.role, p.region_code, p.phone, p.wechat_openid, p.wecom_userid,
       p.email, p.drill,
       EXISTS (SELECT 1 FROM alerting.duty_roster r
                WHERE r.person_id = p.id AND r.starts_at <= $1 AND r.ends_at > $1) AS on_duty,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'hazard', s.hazard, 'min_level', s.min_level, 'channels', s.channels))
                   FROM alerting.person_subscriptions s WHERE s.person_id = p.id),
                '[]'::jsonb) AS subs"""


def person_from_row(r: asyncpg.Record) -> Person:
    return Person(
        id=r["id"],
        name=r["name"],
        role=r["role"],
        region_code=r["region_code"],
        phone=r["phone"],
        wechat_openid=r["wechat_openid"],
        wecom_userid=r["wecom_userid"],
        email=r["email"],
        drill=r["drill"],
        on_duty=r["on_duty"],
        subscriptions=tuple(
            Subscription(s["hazard"], Level(s["min_level"]), tuple(s["channels"]))
            for s in r["subs"]
        ),
    )


async def load_persons(conn: Conn, region_code: str, now: datetime) -> list[Person]:
    """Active people in scope of a warning on ``region_code``: inside its area, or above it."""
    area = jurisdiction(region_code)
    rows = await conn.fetch(
        f"""SELECT {PERSON_COLUMNS} FROM alerting.persons p
             WHERE p.active AND (p.jurisdiction = ANY($2::text[]) OR p.region_code LIKE $3 || '%')
             ORDER BY p.id""",  # noqa: S608 - a constant column list
        now,
        [*ancestors(area), area],
        area,
    )
    return [person_from_row(r) for r in rows]
