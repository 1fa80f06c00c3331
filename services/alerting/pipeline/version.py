"""A new version of a warning, and when it goes out.

    WriteVersion → RequestRepublication → GroupTimer → (the dispatch stages, now or later)

A version is written whole in the transaction that decided it: its row (CAP identifier,
``references`` to every earlier version, headline, description, ``expires``), the warning's new
state and the audit entry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import Counter

from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.adapters.publications import request_publication
from services.alerting.domain import officer
from services.alerting.domain.capout import cap_time
from services.alerting.domain.grouping import GroupPolicy, dispatch_time
from services.alerting.domain.lifecycle import ExpiryPolicy, description, headline
from services.alerting.domain.states import Dispatch, MsgType
from services.alerting.pipeline.items import NewVersion, Outgoing
from shared.contracts import AlertVersion, stable_id
from shared.db import Conn
from shared.places import PlaceNames

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
                for i, at in await store.earlier_versions(conn, w.id)
            ]
        await store.set_latest(
            conn, w.id, level=level, version=v.version, msg_type=v.msg_type, expires=expires
        )
        station_ids = sorted(v.stations)
        areas = c.areas if c is not None else w.area_codes
        place, area_desc = await self._area(conn, areas)
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
        await store.insert_version(
            conn,
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
            ),
            area_desc=area_desc,
            instruction=instruction,
            effective=c.effective if c is not None else None,
            areas=list(c.areas) if c is not None else [],
            polygon=c.polygon if c is not None else None,
        )
        detail: dict[str, object] = {"event_id": cause_event, "level": level.name}
        detail["version"] = v.version
        if v.approved_by is not None:
            detail["approved_by"] = v.approved_by
        if v.reason is not None:
            detail["reason"] = v.reason
        await audit(
            conn,
            v.actor,
            "renew" if v.renewal and c is None else v.msg_type.lower(),
            detail,
            warning_id=w.id,
        )
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
        return Outgoing(
            alert,
            level,
            now,
            kind=w.kind,
            previous_level=v.previous_level,
            last_dispatch_at=w.last_dispatch_at,
            by_officer=c is not None,
        )

    async def _area(self, conn: Conn, areas: Sequence[str]) -> tuple[str, str | None]:
        """The area in words for texts (a code stands for a place the registry does not know),
        and as CAP ``areaDesc`` (None when no place of it is known)."""
        if self._places is None:
            return officer.area_words(areas), None
        places = [await self._places.describe(code, conn) for code in areas]
        words = officer.area_words([p.name for p in places])
        if not any(p.known for p in places):
            return words, None
        return words, officer.area_words([p.area_desc for p in places])


class RequestRepublication:
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


class GroupTimer:
    """Now, or at the group's timer (:func:`dispatch_time`: group wait, group interval, the
    flapping hold); a raise never waits. A version that waits is ``scheduled``."""

    def __init__(self, policy: GroupPolicy) -> None:
        self._policy = policy

    async def __call__(self, conn: Conn, o: Outgoing) -> bool:
        if o.by_officer:
            return True  # a person decided it now: no group wait, no flapping hold
        a = o.alert
        when = dispatch_time(
            now=o.now,
            msg_type=a.msg_type,
            level=o.level,
            previous_level=o.previous_level,
            last_dispatch_at=o.last_dispatch_at,
            recent_versions=await store.recent_versions(
                conn, a.hazard, a.region_code, o.now - self._policy.flap_window
            ),
            policy=self._policy,
        )
        if when <= o.now:
            return True
        await store.set_dispatch(conn, a.warning_id, a.version, Dispatch.scheduled, at=when)
        return False
