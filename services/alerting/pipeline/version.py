"""A new version of a warning, and when it goes out.

    WriteVersion → RequestRepublication → GroupTimer → (the dispatch stages, now or later)

A version is written whole in the transaction that decided it: its row (CAP identifier,
``references`` to every earlier version, headline, description, ``expires``), the warning's new
state and the audit entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from prometheus_client import Counter

from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit_many
from services.alerting.adapters.publications import request_publication
from services.alerting.domain import officer
from services.alerting.domain.capout import cap_time
from services.alerting.domain.grouping import GroupPolicy, dispatch_time
from services.alerting.domain.lifecycle import ExpiryPolicy, description, headline
from services.alerting.domain.states import Dispatch, MsgType
from services.alerting.pipeline.items import ItemStage, NewVersion, Outgoing, SetStage
from shared.contracts import AlertVersion, Level, stable_id
from shared.db import Conn
from shared.places import Place, PlaceNames

VERSIONS = Counter(
    "qianshao_warning_versions_total", "Warning versions created", ["msg_type", "level"]
)


class WriteVersion:
    def __init__(
        self, *, sender_code: str, expiry: ExpiryPolicy, places: PlaceNames | None = None
    ) -> None:
        self._sender = sender_code
        self._expiry = expiry
        self._places = places

    async def __call__(self, conn: Conn, v: NewVersion) -> Outgoing:
        [out] = await self.many(conn, [v])
        return out

    async def many(self, conn: Conn, news: Sequence[NewVersion]) -> list[Outgoing]:
        """Versions of different warnings, written in a few statements; what goes on to the
        schedule, in order."""
        later = [v.warning.id for v in news if v.msg_type != MsgType.Alert]
        earlier = await store.earlier_versions_of(conn, later)
        places = await self._places_of(conn, news)
        latest: list[tuple[str, Level, int, MsgType, datetime | None]] = []
        rows: list[tuple[object, ...]] = []
        entries: list[tuple[str, str, str | None, Mapping[str, object]]] = []
        outs: list[Outgoing] = []
        for v in news:
            w, level, now, c = v.warning, v.level, v.now, v.content
            sent = now
            if v.msg_type == MsgType.Cancel:
                expires = None
            else:
                expires = c.expires if c is not None else sent + self._expiry.validity
            refs: list[str] = []
            ident = w.identifier
            if v.msg_type != MsgType.Alert:
                ident = f"{w.identifier}_v{v.version}"
                refs = [
                    # the earlier version's CAP `sent`, as its document gives it (CAP 1.2 3.2.1)
                    f"{self._sender},{i},{cap_time(at)}"
                    for i, at in earlier[w.id]
                ]
            latest.append((w.id, level, v.version, v.msg_type, expires))
            station_ids = sorted(v.stations)
            areas = c.areas if c is not None else w.area_codes
            place, area_desc = self._area(areas, places)
            head = (
                c.headline
                if c is not None and c.headline and v.msg_type != MsgType.Cancel
                else headline(w.hazard, level, place, v.msg_type, renewal=v.renewal)
            )
            if c is None:
                desc = description(w.hazard, level, v.stations, v.msg_type)
            elif c.description and v.msg_type != MsgType.Cancel:
                desc = c.description
            else:
                desc = officer.description(w.hazard, level, place, v.msg_type, reason=v.reason)
            instruction = c.instruction if c is not None and v.msg_type != MsgType.Cancel else None
            cause_event, cause_time = v.cause
            rows.append(
                (
                    w.id,
                    v.version,
                    v.msg_type,
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
                    area_desc,
                    instruction,
                    c.effective if c is not None else None,
                    list(c.areas) if c is not None else [],
                    c.polygon if c is not None else None,
                )
            )
            detail: dict[str, object] = {"event_id": cause_event, "level": level.name}
            detail["version"] = v.version
            if v.approved_by is not None:
                detail["approved_by"] = v.approved_by
            if v.reason is not None:
                detail["reason"] = v.reason
            action = "renew" if v.renewal and c is None else v.msg_type.lower()
            entries.append((v.actor, action, w.id, detail))
            VERSIONS.labels(v.msg_type, level.name).inc()
            alert = AlertVersion(
                event_id=stable_id("alert", w.id, v.version),
                produced_at=sent,
                warning_id=w.id,
                identifier=ident,
                version=v.version,
                msg_type=v.msg_type,
                hazard=w.hazard,
                level=level.name,
                region_code=w.region_code,
                station_ids=station_ids,
                references=refs,
                sent=sent,
                headline=head,
                description=desc,
                area_desc=area_desc,
                status=w.status,
                cause_time=cause_time,
                expires=expires,
                areas=list(c.areas) if c is not None else [],
                polygon=c.polygon if c is not None else None,
                instruction=instruction,
                effective=c.effective if c is not None else None,
                event_type=c.event_type if c is not None else w.event_type,
                origin="officer" if w.origin == "officer" else "sensor",
            )
            outs.append(
                Outgoing(
                    alert,
                    level,
                    now,
                    kind=w.kind,
                    previous_level=v.previous_level,
                    last_dispatch_at=w.last_dispatch_at,
                    by_officer=c is not None,
                )
            )
        await store.set_latest_many(conn, latest)
        await store.insert_versions(conn, rows)
        await audit_many(conn, entries)
        return outs

    async def _places_of(self, conn: Conn, news: Sequence[NewVersion]) -> dict[str, Place]:
        if self._places is None:
            return {}
        codes = {
            code
            for v in news
            for code in (v.content.areas if v.content is not None else v.warning.area_codes)
        }
        return await self._places.describe_many(codes, conn)

    def _area(self, areas: Sequence[str], places: Mapping[str, Place]) -> tuple[str, str | None]:
        """The area in words for texts (a code stands for a place the registry does not know),
        and as CAP ``areaDesc`` (None when no place of it is known)."""
        if self._places is None:
            return officer.area_words(areas), None
        found = [places[code] for code in areas]
        words = officer.area_words([p.name for p in found])
        if not any(p.known for p in found):
            return words, None
        return words, officer.area_words([p.area_desc for p in found])


class RequestRepublication(ItemStage[Outgoing]):
    """Each later version of a public warning goes to residents after approval again."""

    def __init__(self, approval_levels: Iterable[str]) -> None:
        self._levels = list(approval_levels)

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        if o.alert.msg_type != MsgType.Alert and o.kind == "public":
            await request_publication(
                conn,
                warning_id=o.alert.warning_id,
                requested_by="system:new-version",
                now=o.now,
                approval_levels=self._levels,
            )
        return True


class GroupTimer(SetStage[Outgoing]):
    """Now, or at the group's timer (:func:`dispatch_time`: group wait, group interval, the
    flapping hold); a raise never waits. A version that waits is ``scheduled``."""

    def __init__(self, policy: GroupPolicy) -> None:
        self._policy = policy

    async def many(self, conn: Conn, items: Sequence[Outgoing]) -> list[Outgoing]:
        timed = [o for o in items if not o.by_officer]  # a person decided it now: no wait
        recent: dict[tuple[datetime, str, str], int] = {}
        for now in {o.now for o in timed}:  # one, from the consumer
            counts = await store.recent_versions_many(
                conn,
                [(o.alert.hazard, o.alert.region_code) for o in timed if o.now == now],
                now - self._policy.flap_window,
            )
            recent.update({(now, h, r): n for (h, r), n in counts.items()})
        going: list[Outgoing] = []
        for o in items:
            if o.by_officer:
                going.append(o)
                continue
            a = o.alert
            when = dispatch_time(
                now=o.now,
                msg_type=a.msg_type,
                level=o.level,
                previous_level=o.previous_level,
                last_dispatch_at=o.last_dispatch_at,
                recent_versions=recent.get((o.now, a.hazard, a.region_code), 0),
                policy=self._policy,
            )
            if when <= o.now:
                going.append(o)
            else:
                await store.set_dispatch(conn, a.warning_id, a.version, Dispatch.scheduled, at=when)
        return going
