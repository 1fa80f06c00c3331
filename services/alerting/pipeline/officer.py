"""An officer's warnings, through the pipeline: each request a person makes of a warning ends as
a version written by the same stages as a risk event's (``version`` → ``schedule`` →
``dispatch``), under its group's lock, after a second person's approval where its level needs one.

    draft ─submit─▶ [pending_approval ─approve─▶] issue → Alert
    update ───────▶ [pending_approval ─approve─▶] apply → Update (继续发布 at the same level)
    cancel ───────▶ [pending_approval ─approve─▶] apply → Cancel, with its reason

A request on a warning risk raised takes it over: from then on risk events record its stations'
levels but issue none of its versions, and after an officer's cancel the same evidence does not
raise it again until the cancelled warning would have expired (``OfficerHold``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.alerting.adapters import requests as desk
from services.alerting.adapters import stations as levels_store
from services.alerting.adapters import warnings as store
from services.alerting.adapters.audit import audit
from services.alerting.adapters.publications import decide as decide_publication
from services.alerting.adapters.publications import request_publication
from services.alerting.domain import officer
from services.alerting.domain.lifecycle import by_station, identifier
from services.alerting.domain.officer import Action, Content
from services.alerting.domain.states import STANDING, MsgType, WarningState
from services.alerting.pipeline.builder import Pipeline
from services.alerting.pipeline.items import NewVersion
from shared.contracts import Level, stable_id
from shared.db import Conn
from shared.errors import Conflict, NotFound, ValidationFailed


@dataclass(frozen=True, slots=True)
class Changes:
    """What an update asks to change; None keeps what stands (texts left out are written
    afresh from the templates)."""

    level: Level | None = None
    areas: tuple[str, ...] | None = None
    polygon: str | None = None
    expires: datetime | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None


class Desk:
    """The duty officers' desk over one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        sender_code: str,
        approval_levels: Iterable[str],
        publication_levels: Iterable[str],
        hazards: Iterable[str],
        validity: timedelta,
        drill: bool = False,
    ) -> None:
        self._pipeline = pipeline
        self._sender = sender_code
        self._approval = tuple(approval_levels)
        self._publication = tuple(publication_levels)
        self._hazards = frozenset(hazards)
        self._validity = validity
        self._drill = drill

    # drafts -------------------------------------------------------------------------------

    async def draft(
        self,
        conn: Conn,
        content: Content,
        *,
        public: bool,
        drill: bool,
        by: str,
        region_prefix: str,
        now: datetime,
    ) -> desk.Request:
        content = self._check(content, region_prefix, now)
        wid = stable_id("officer", by, now.isoformat(), await store.next_serial(conn))
        req = await desk.create_draft(
            conn,
            warning_id=wid,
            content=content,
            region_code=officer.common_region(content.areas),
            kind="public" if public else "internal",
            status="Exercise" if drill or self._drill else "Actual",
            by=by,
            now=now,
        )
        await audit(conn, by, "draft.create", {"request_id": req.id}, warning_id=wid)
        return req

    async def edit(
        self,
        conn: Conn,
        warning_id: str,
        content: Content,
        *,
        by: str,
        region_prefix: str,
        now: datetime,
    ) -> desk.Request:
        draft = await self._draft(conn, warning_id)
        content = self._check(content, region_prefix, now)
        await desk.set_draft(conn, draft.id, content, officer.common_region(content.areas))
        await audit(conn, by, "draft.edit", {"request_id": draft.id}, warning_id=warning_id)
        return await desk.request(conn, draft.id)

    async def submit(
        self, conn: Conn, warning_id: str, *, by: str, region_prefix: str, now: datetime
    ) -> desk.Request:
        """The draft asked to be issued: at once, or after an approver where its level needs."""
        draft = await self._draft(conn, warning_id)
        content = self._check(Content.from_json(draft.content), region_prefix, now)
        await desk.set_request_state(conn, draft.id, "pending_approval")
        await desk.set_warning_state(conn, warning_id, WarningState.pending_approval)
        await audit(conn, by, "request.submit", {"request_id": draft.id}, warning_id=warning_id)
        req = replace(draft, requested_by=by, state="pending_approval")
        if draft.requested_by != by:
            # whoever submits is the request's author: they may not approve it either
            await conn.execute(
                "UPDATE alerting.warning_requests SET requested_by = $2 WHERE id = $1",
                draft.id,
                by,
            )
        if officer.needs_approval(
            "issue", level_after=content.level, level_before=None, levels=self._approval
        ):
            return await desk.request(conn, draft.id)
        return await self._carry_out(conn, req, approved_by=None, now=now)

    # changes to an issued warning -----------------------------------------------------------

    async def change(
        self,
        conn: Conn,
        warning_id: str,
        action: Action,
        *,
        changes: Changes | None = None,
        reason: str | None = None,
        by: str,
        region_prefix: str,
        now: datetime,
    ) -> desk.Request:
        """An update or an early cancel asked of a standing warning (an officer's, or one risk
        raised, which this takes over)."""
        w, current = await self._standing(conn, warning_id, now)
        if action == "cancel":
            if not reason or not reason.strip():
                raise ValidationFailed("reason: an early cancel says why")
            content = current
        else:
            content = officer.check(
                self._merge(current, changes or Changes()),
                region_prefix=region_prefix,
                now=now,
                known_hazards=self._hazards | {w.hazard},
            )
            if w.origin == "sensor" and content.areas != current.areas:
                raise ValidationFailed(
                    "areas: a warning risk raised keeps its group's area; issue a warning of "
                    "your own for another area"
                )
        body = {**content.to_json(), "reason": reason}
        req = await desk.insert_request(conn, warning_id, action, body, by, now)
        await audit(
            conn,
            by,
            f"request.{action}",
            {"request_id": req.id, "reason": reason},
            warning_id=warning_id,
        )
        if officer.needs_approval(
            action, level_after=content.level, level_before=w.level, levels=self._approval
        ):
            return req
        return await self._carry_out(conn, req, approved_by=None, now=now)

    # approvals --------------------------------------------------------------------------------

    async def decide(
        self, conn: Conn, rid: int, *, approve: bool, by: str, reason: str | None, now: datetime
    ) -> desk.Request:
        req = await desk.request(conn, rid, lock=True)
        if req.state != "pending_approval":
            raise Conflict(f"request {rid} is {req.state}")
        officer.may_decide(req.requested_by, by)
        if approve:
            await audit(conn, by, "request.approve", {"request_id": rid}, warning_id=req.warning_id)
            return await self._carry_out(conn, req, approved_by=by, now=now)
        await desk.set_request_state(conn, rid, "rejected", by=by, at=now, reason=reason)
        await audit(
            conn,
            by,
            "request.reject",
            {"request_id": rid, "reason": reason},
            warning_id=req.warning_id,
        )
        if req.action == "issue":
            # back to a draft its author may edit and submit again
            await desk.set_warning_state(conn, req.warning_id, WarningState.draft)
            await desk.insert_request(
                conn, req.warning_id, "issue", req.content, req.requested_by, now, "draft"
            )
        return await desk.request(conn, rid)

    async def withdraw(self, conn: Conn, rid: int, *, by: str, now: datetime) -> desk.Request:
        """The author takes back a request still waiting for approval (a draft stays a draft)."""
        req = await desk.request(conn, rid, lock=True)
        if req.state != "pending_approval":
            raise Conflict(f"request {rid} is {req.state}")
        if req.requested_by != by:
            raise Conflict("only its author withdraws a request; an approver rejects it")
        await desk.set_request_state(conn, rid, "withdrawn", by=by, at=now)
        await audit(conn, by, "request.withdraw", {"request_id": rid}, warning_id=req.warning_id)
        if req.action == "issue":
            await desk.set_warning_state(conn, req.warning_id, WarningState.draft)
            await desk.insert_request(
                conn, req.warning_id, "issue", req.content, req.requested_by, now, "draft"
            )
        return await desk.request(conn, rid)

    # the version a request makes ----------------------------------------------------------------

    async def _carry_out(
        self, conn: Conn, req: desk.Request, *, approved_by: str | None, now: datetime
    ) -> desk.Request:
        content = Content.from_json(req.content)
        reason = req.content.get("reason")
        if req.action == "issue":
            version = await self._issue(conn, req, content, approved_by, now)
        else:
            version = await self._apply(
                conn, req, content, str(reason) if reason else None, approved_by, now
            )
        await desk.set_request_state(
            conn, req.id, "done", by=approved_by, at=now if approved_by else None, version=version
        )
        return await desk.request(conn, req.id)

    async def _issue(
        self,
        conn: Conn,
        req: desk.Request,
        content: Content,
        approved_by: str | None,
        now: datetime,
    ) -> int:
        region = officer.common_region(content.areas)
        await store.lock_groups(conn, [(content.hazard, region)])
        standing = await store.open_warning(conn, content.hazard, region)
        if standing is not None:
            raise Conflict(
                f"warning {standing.id} stands for this hazard on {region}: update it instead"
            )
        ident = identifier(self._sender, now, await store.next_serial(conn))
        await desk.prepare_issue(conn, req.warning_id, ident, region)
        w = await store.warning(conn, req.warning_id)
        await self._pipeline.new_version(
            conn,
            NewVersion(
                warning=w,
                version=1,
                msg_type=MsgType.Alert,
                level=content.level,
                stations={},
                previous_level=None,
                cause=(f"request:{req.id}", None),
                actor=req.requested_by,
                now=now,
                content=content,
                approved_by=approved_by,
            ),
        )
        if w.kind == "public":
            await request_publication(
                conn,
                warning_id=w.id,
                requested_by=req.requested_by,
                now=now,
                approval_levels=self._publication,
            )
        await self._approve_publication(conn, w.id, 1, approved_by, now)
        return 1

    async def _apply(
        self,
        conn: Conn,
        req: desk.Request,
        content: Content,
        reason: str | None,
        approved_by: str | None,
        now: datetime,
    ) -> int:
        w, current = await self._standing(conn, req.warning_id, now)
        await desk.take_control(conn, w.id, req.requested_by, now)
        cancel = req.action == "cancel"
        if not cancel and content.areas != w.area_codes and w.origin == "officer":
            await desk.set_area(conn, w.id, list(content.areas))
        version = w.version + 1
        stations = by_station(await levels_store.rule_levels(conn, w.id))
        if cancel and w.origin == "sensor":
            await desk.hold_group(
                conn,
                hazard=w.hazard,
                region_code=w.region_code,
                level=w.level,
                until=current.expires,  # when the cancelled warning would have expired
                warning_id=w.id,
                by=req.requested_by,
            )
        level = w.level if cancel else content.level
        await self._pipeline.new_version(
            conn,
            NewVersion(
                warning=w,
                version=version,
                msg_type=MsgType.Cancel if cancel else MsgType.Update,
                level=level,
                stations=stations,
                previous_level=w.level,
                cause=(f"request:{req.id}", None),
                actor=req.requested_by,
                now=now,
                renewal=not cancel and level == w.level,
                content=content,
                reason=reason,
                approved_by=approved_by,
            ),
        )
        await self._approve_publication(conn, w.id, version, approved_by, now)
        return version

    async def _approve_publication(
        self, conn: Conn, warning_id: str, version: int, approved_by: str | None, now: datetime
    ) -> None:
        """A public warning's version that an approver let out goes to residents on that same
        approval (its publication request, made with the version, is theirs to decide too)."""
        if approved_by is None:
            return
        pid = await conn.fetchval(
            """SELECT id FROM alerting.publications
                WHERE warning_id = $1 AND version = $2 AND state = 'pending_approval'""",
            warning_id,
            version,
        )
        if pid is not None:
            await decide_publication(
                conn, pid, approve=True, by=approved_by, now=now, reason="approved with the version"
            )

    # reading ----------------------------------------------------------------------------------

    def _check(self, content: Content, region_prefix: str, now: datetime) -> Content:
        return officer.check(
            content, region_prefix=region_prefix, now=now, known_hazards=self._hazards
        )

    async def _draft(self, conn: Conn, warning_id: str) -> desk.Request:
        draft = await desk.draft_of(conn, warning_id)
        if draft is None:
            raise Conflict(f"warning {warning_id} has no draft: it was submitted or issued")
        return draft

    async def _standing(
        self, conn: Conn, warning_id: str, now: datetime
    ) -> tuple[store.WarningRow, Content]:
        """The warning, locked, if it stands, and what it says now."""
        row = await conn.fetchrow(
            """SELECT hazard, region_code, state, expires_at FROM alerting.warnings
                WHERE id = $1""",
            warning_id,
        )
        if row is None:
            raise NotFound(f"no warning {warning_id!r}")
        await store.lock_groups(conn, [(row["hazard"], row["region_code"])])
        w = await store.open_warning(conn, row["hazard"], row["region_code"])
        if w is None or w.id != warning_id or row["state"] not in STANDING:
            raise Conflict(f"warning {warning_id} is {row['state']}: it does not stand")
        latest = await conn.fetchrow(
            """SELECT instruction, polygon FROM alerting.warning_versions
                WHERE warning_id = $1 AND version = $2""",
            w.id,
            w.version,
        )
        current = Content(
            hazard=w.hazard,
            level=w.level,
            areas=w.area_codes,
            expires=row["expires_at"] or now + self._validity,
            polygon=latest["polygon"] if latest else None,
            instruction=latest["instruction"] if latest else None,
            event_type=w.event_type,
        )
        return w, current

    @staticmethod
    def _merge(current: Content, changes: Changes) -> Content:
        return replace(
            current,
            level=changes.level if changes.level is not None else current.level,
            areas=changes.areas if changes.areas is not None else current.areas,
            polygon=changes.polygon if changes.polygon is not None else current.polygon,
            expires=changes.expires if changes.expires is not None else current.expires,
            headline=changes.headline,
            description=changes.description,
            instruction=(
                changes.instruction if changes.instruction is not None else current.instruction
            ),
            effective=None,
        )
