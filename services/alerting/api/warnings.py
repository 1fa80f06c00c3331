"""alerting's HTTP API (foundation): warnings, subscriptions and the delivery ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AnyHttpUrl, BaseModel, Field

from services.alerting.domain.capout import CapVersion, atom_feed, cap_xml
from services.alerting.domain.states import Delivery
from shared.contracts import ActiveLevelName, Level
from shared.errors import NotFound, PermissionDenied
from shared.http import needs, public_url
from shared.identity import Identity


class WarningOut(BaseModel):
    id: str
    identifier: str
    hazard: str
    level: str
    region_code: str
    state: str
    kind: str
    status: str
    version: int
    station_ids: list[str]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = Field(
        default=None,
        description="the current version's CAP expires: renewed before then while risk still "
        "backs the warning, otherwise the warning expires",
    )
    closed_at: datetime | None = None
    origin: Literal["sensor", "officer"] = Field(
        default="sensor", description="raised by risk events, or issued by a duty officer"
    )
    areas: list[str] = Field(
        default_factory=list, description="the divisions it covers (empty: its region_code)"
    )
    event_type: str | None = Field(default=None, description="GB/T 35965.1 event type")
    area_desc: str | None = Field(default=None, description="its area in words (current version)")
    headline: str | None = Field(default=None, description="the current version's headline")
    controlled_by: str | None = Field(
        default=None,
        description="the officer who decides it (risk events no longer issue its versions)",
    )


class VersionOut(BaseModel):
    version: int
    msg_type: str
    level: str
    identifier: str
    sent: datetime
    headline: str
    description: str
    references: list[str]
    station_ids: list[str]
    expires: datetime | None = None
    area_desc: str | None = None
    areas: list[str] = Field(default_factory=list)
    polygon: str | None = None
    instruction: str | None = None
    effective: datetime | None = None


class WarningDetail(WarningOut):
    versions: list[VersionOut]


class SubscriptionIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    channel: Literal["webhook", "wecom_robot", "cap_push", "national_push"] = Field(
        description="cap_push: an upper-level platform that takes CAP 1.2 documents; "
        "national_push: one that takes the national release system's GB/T 35965.1 messages"
    )
    target: AnyHttpUrl
    secret: str | None = Field(default=None, min_length=16, max_length=200)
    region_prefix: str = Field(default="", pattern=r"^\d{0,12}$")
    min_level: ActiveLevelName = "blue"
    hazard: str | None = None


class SubscriptionOut(BaseModel):
    id: int
    name: str
    channel: str
    target: str
    region_prefix: str
    min_level: str
    hazard: str | None
    active: bool


class DeliveryOut(BaseModel):
    id: int
    warning_id: str
    version: int
    recipient: str
    channel: str
    state: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


_WARNING_SQL = """
SELECT w.id, w.identifier, w.hazard, w.level, w.region_code, w.state, w.kind, w.status,
       w.version, w.created_at, w.updated_at, w.expires_at, w.closed_at, w.origin, w.areas,
       w.event_type, w.controlled_by,
       coalesce(cur.station_ids, '{}') AS station_ids, cur.area_desc, cur.headline
  FROM alerting.warnings w
  LEFT JOIN LATERAL (SELECT v.station_ids, v.area_desc, v.headline
                       FROM alerting.warning_versions v
                      WHERE v.warning_id = w.id ORDER BY v.version DESC LIMIT 1) cur ON true
"""


def _warning(r: Any) -> dict[str, Any]:
    d = dict(r.items())
    d["level"] = Level(d["level"]).name
    d["station_ids"] = list(d["station_ids"])
    d["areas"] = list(d["areas"])
    return d


def router() -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/warnings", response_model=list[WarningOut])
    async def list_warnings(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        state: Annotated[
            Literal["open", "closed", "all"], Query(description="open, closed or all")
        ] = "all",
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        hazard: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        """Warnings in the caller's region, newest first."""
        prefix = identity.narrow(region_prefix)
        states = {
            "open": ["draft", "pending_approval", "issued", "updated"],
            "closed": ["cancelled", "expired"],
            "all": ["draft", "pending_approval", "issued", "updated", "cancelled", "expired"],
        }[state]
        rows = await _pool(request).fetch(
            _WARNING_SQL
            + """ WHERE w.region_code LIKE $1 || '%' AND w.state = ANY($2::text[])
                    AND ($3::text IS NULL OR w.hazard = $3)
                  ORDER BY w.created_at DESC LIMIT $4""",
            prefix,
            states,
            hazard,
            limit,
        )
        return [_warning(x) for x in rows]

    @r.get("/warnings/{warning_id}", response_model=WarningDetail)
    async def get_warning(
        warning_id: str, identity: Annotated[Identity, needs("warnings:read")], request: Request
    ) -> dict[str, Any]:
        pool = _pool(request)
        row = await pool.fetchrow(_WARNING_SQL + " WHERE w.id = $1", warning_id)
        if row is None or not identity.can_see_region(row["region_code"]):
            raise NotFound(f"no warning {warning_id!r}")
        versions = await pool.fetch(
            """SELECT version, msg_type, level, identifier, sent, headline, description,
                      refs AS references, station_ids, expires, area_desc, areas, polygon,
                      instruction, effective
                 FROM alerting.warning_versions WHERE warning_id = $1 ORDER BY version""",
            warning_id,
        )
        d = _warning(row)
        d["versions"] = [
            {
                **dict(v.items()),
                "level": Level(v["level"]).name,
                "references": list(v["references"]),
                "station_ids": list(v["station_ids"]),
                "areas": list(v["areas"]),
            }
            for v in versions
        ]
        return d

    @r.post("/subscriptions", status_code=201, response_model=SubscriptionOut)
    async def create_subscription(
        body: SubscriptionIn,
        identity: Annotated[Identity, needs("subscriptions:write")],
        request: Request,
    ) -> dict[str, Any]:
        prefix = body.region_prefix or identity.region_prefix
        if not prefix.startswith(identity.region_prefix):
            raise PermissionDenied(f"region prefix {prefix!r} is outside your scope")
        row = await _pool(request).fetchrow(
            """INSERT INTO alerting.subscriptions
                   (name, channel, target, secret, region_prefix, min_level, hazard)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               RETURNING id, name, channel, target, region_prefix, min_level, hazard, active""",
            body.name,
            body.channel,
            str(body.target),
            body.secret,
            prefix,
            int(Level.parse(body.min_level)),
            body.hazard,
        )
        assert row is not None
        return {**dict(row.items()), "min_level": Level(row["min_level"]).name}

    @r.get("/subscriptions", response_model=list[SubscriptionOut])
    async def list_subscriptions(
        identity: Annotated[Identity, needs("subscriptions:read")], request: Request
    ) -> list[dict[str, Any]]:
        rows = await _pool(request).fetch(
            """SELECT id, name, channel, target, region_prefix, min_level, hazard, active
                 FROM alerting.subscriptions WHERE region_prefix LIKE $1 || '%' ORDER BY id""",
            identity.region_prefix,
        )
        return [{**dict(x.items()), "min_level": Level(x["min_level"]).name} for x in rows]

    @r.get("/deliveries", response_model=list[DeliveryOut])
    async def list_deliveries(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        warning_id: str | None = None,
        state: Delivery | None = None,
        channel: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        rows = await _pool(request).fetch(
            """SELECT d.id, d.warning_id, d.version, d.recipient, d.channel, d.state, d.attempts,
                      d.last_error, d.sent_at
                 FROM alerting.deliveries d JOIN alerting.warnings w ON w.id = d.warning_id
                WHERE w.region_code LIKE $1 || '%' AND ($2::text IS NULL OR d.warning_id = $2)
                  AND ($4::text IS NULL OR d.state = $4) AND ($5::text IS NULL OR d.channel = $5)
                ORDER BY d.id DESC LIMIT $3""",
            identity.region_prefix,
            warning_id,
            limit,
            state,
            channel,
        )
        return [dict(x.items()) for x in rows]

    @r.get(
        "/cap/feed",
        response_class=Response,
        responses={200: {"content": {"application/atom+xml": {}}}},
        tags=["cap"],
    )
    async def get_cap_feed(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Response:
        """An Atom feed of warning versions in the caller's region, newest first; each entry
        links its CAP 1.2 document."""
        versions = await _cap_versions(
            request,
            "w.region_code LIKE $1 || '%' ORDER BY v.sent DESC, v.identifier LIMIT $2",
            identity.narrow(region_prefix),
            limit,
        )
        return _feed(request, versions, "feed", "预警信息", "cap/")

    @r.get(
        "/public/cap/feed",
        response_class=Response,
        responses={200: {"content": {"application/atom+xml": {}}}},
        tags=["cap"],
        openapi_extra={"security": []},
    )
    async def get_public_cap_feed(
        request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> Response:
        """The public feed, for anyone: versions released to the public (a public warning's
        approved publications), never internal alarms, drills or tests; newest first."""
        versions = await _cap_versions(
            request, PUBLIC + " ORDER BY v.sent DESC, v.identifier LIMIT $1", limit
        )
        return _feed(request, versions, "public", "公众预警信息", "public/cap/")

    @r.get(
        "/public/cap/{identifier}.xml",
        response_class=Response,
        responses={200: {"content": {"application/cap+xml": {}}}},
        tags=["cap"],
        openapi_extra={"security": []},
    )
    async def get_public_cap_document(identifier: str, request: Request) -> Response:
        """One version released to the public, as CAP 1.2."""
        found = await _cap_versions(request, PUBLIC + " AND v.identifier = $1", identifier)
        if not found:
            raise NotFound(f"no public warning version {identifier!r}")
        return Response(cap_xml(found[0]), media_type="application/cap+xml")

    @r.get(
        "/cap/{identifier}.xml",
        response_class=Response,
        responses={200: {"content": {"application/cap+xml": {}}}},
        tags=["cap"],
    )
    async def get_cap_document(
        identifier: str, identity: Annotated[Identity, needs("warnings:read")], request: Request
    ) -> Response:
        """One warning version as a CAP 1.2 document (GB/T 35965.1 profile)."""
        found = await _cap_versions(request, "v.identifier = $1", identifier)
        if not found or not identity.can_see_region(found[0].region_code):
            raise NotFound(f"no warning version {identifier!r}")
        return Response(cap_xml(found[0]), media_type="application/cap+xml")

    return r


def _feed(request: Request, versions: list[CapVersion], name: str, title: str, at: str) -> Response:
    """An Atom feed of ``versions`` whose links (``at`` + ``feed`` / ``{identifier}.xml``) are
    the gateway's address as the client reached it."""
    settings = request.app.state.settings
    body = atom_feed(
        versions,
        feed_id=f"urn:qianshao:{settings.sender_code}:{name}",
        title=f"{settings.sender_name} {title}",
        self_url=public_url(request, at + "feed"),
        cap_url=public_url(request, at + "{identifier}.xml"),
    )
    return Response(body, media_type="application/atom+xml")


# a version released to the public: an Actual public warning whose publication was approved
PUBLIC = """w.kind = 'public' AND w.status = 'Actual'
    AND EXISTS (SELECT 1 FROM alerting.publications p
                 WHERE p.warning_id = w.id AND p.version = v.version AND p.state = 'approved')"""


async def _cap_versions(request: Request, where: str, *args: Any) -> list[CapVersion]:
    settings = request.app.state.settings
    rows = await _pool(request).fetch(
        f"""SELECT v.identifier, v.sent, v.msg_type, v.level, v.refs, v.headline, v.description,
                   v.station_ids, v.expires, v.area_desc, w.status, w.kind, w.hazard,
                   w.region_code, v.areas, v.polygon, v.instruction, v.effective, w.event_type
              FROM alerting.warning_versions v JOIN alerting.warnings w ON w.id = v.warning_id
             WHERE {where}""",  # noqa: S608 - fixed fragments; values are parameters
        *args,
    )
    return [
        CapVersion(
            identifier=x["identifier"],
            sender=settings.sender_code,
            sender_name=settings.sender_name,
            sent=x["sent"],
            status=x["status"],
            msg_type=x["msg_type"],
            kind=x["kind"],
            references=list(x["refs"]),
            hazard=x["hazard"],
            level=Level(x["level"]),
            region_code=x["region_code"],
            headline=x["headline"],
            description=x["description"],
            station_ids=list(x["station_ids"]),
            expires=x["expires"],
            area_desc=x["area_desc"],
            areas=list(x["areas"]),
            polygon=x["polygon"],
            instruction=x["instruction"],
            effective=x["effective"],
            event_type=x["event_type"],
        )
        for x in rows
    ]
