"""The 一张图 over HTTP: each registry read, written, imported and exported (CSV and Excel, with a
template); what is in and around a warning's area, as JSON or GeoJSON; and the online-monitoring
KPI of the enterprises that must be monitored. Region-scoped like the rest of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.ingest.adapters import atlas as repo
from services.ingest.adapters import health as health_repo
from services.ingest.adapters.surroundings import area_geojson, surroundings
from services.ingest.domain.atlas.area import Area, cap_polygon, feature_collection
from services.ingest.domain.atlas.kpi import KpiGroupBy, online_monitoring
from services.ingest.domain.atlas.records import (
    Record,
    RowError,
    export_row,
    parse_record,
    parse_rows,
    template_headings,
)
from services.ingest.domain.atlas.registries import HAZARDS, REGISTRIES, Registry
from shared import sheets
from shared.errors import DependencyError, PermissionDenied, ValidationFailed
from shared.http import PROBLEM, needs, problem
from shared.identity import Identity
from shared.places import Places

KindPath = Annotated[
    str, Path(pattern="^(" + "|".join(REGISTRIES) + ")$", description="the registry")
]
KeyPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        description="the record's id (the stock's is depot id/item)",
    ),
]
Region = Annotated[str, Query(pattern=r"^\d{0,12}$")]
SheetFormat = Literal["csv", "xlsx"]
GEOJSON = "application/geo+json"
HAZARD_PATTERN = "^(" + "|".join(HAZARDS) + ")$"


class FieldInfo(BaseModel):
    name: str
    label: str
    type: str
    required: bool
    choices: dict[str, str]


class RegistryInfo(BaseModel):
    kind: str
    title: str
    located: str
    key: list[str]
    fields: list[FieldInfo]


class ImportResult(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    dry_run: bool


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    via: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class SurroundingsQuery(BaseModel):
    regions: list[Annotated[str, Field(pattern=r"^\d{12}$")]] = Field(
        default_factory=list, max_length=500, description="the warning's division codes"
    )
    polygon: str | None = Field(
        default=None,
        max_length=100_000,
        description="the warning's CAP polygon, 'lat,lon lat,lon …' in WGS 84",
    )
    hazard: str | None = Field(
        default=None, pattern=HAZARD_PATTERN, description="plans for this hazard (and 总体预案)"
    )
    nearest: int = Field(default=5, ge=1, le=50, description="how many teams and depots")


class KpiGroupOut(BaseModel):
    group: str
    name: str
    required: int
    online: int
    rate: float | None
    target: float
    below_target: bool


class OfflineEnterprise(BaseModel):
    id: str
    name: str
    sector: str
    region_code: str
    place: str
    stations: int
    reason: Literal["no_station", "never_reported", "offline"]
    last_seen: datetime | None = Field(description="offline since: its stations' newest reading")


class OnlineMonitoring(BaseModel):
    by: str
    target: float
    required: int
    online: int
    rate: float | None
    below_target: bool
    groups: list[KpiGroupOut]
    offline: list[OfflineEnterprise]


_JSON_OR_GEOJSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, GEOJSON: {}}}
}
_SHEET: dict[int | str, dict[str, Any]] = {200: {"content": {sheets.XLSX: {}, "text/csv": {}}}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such record", "content": {PROBLEM: {}}}
}


def _pool(request: Request) -> asyncpg.Pool:
    unavailable: str | None = request.app.state.atlas_unavailable
    if unavailable:
        raise DependencyError(unavailable)
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


def _row_errors(errors: list[RowError]) -> JSONResponse:
    first = errors[0]
    where = f"row {first.row}" + (f", column {first.column}" if first.column else "")
    return problem(
        422,
        f"{len(errors)} problems in the file, nothing was imported; the first: {where}: "
        f"{first.reason}",
        type_="urn:qianshao:error:import",
        errors=[{"row": e.row, "column": e.column, "reason": e.reason} for e in errors],
    )


def _out_of_scope(registry: Registry, identity: Identity, record: Record) -> str | None:
    region = record.values.get("region_code")
    if isinstance(region, str) and not identity.can_see_region(region):
        return f"region {region} is outside your scope ({identity.region_prefix or 'all'})"
    return None


async def _in_scope(request: Request, identity: Identity, kind: str, key: str) -> Registry:
    """The registry, once the stored record (if there is one) is known to lie in the caller's
    region: a record is not read, replaced or deleted from outside its region."""
    registry = REGISTRIES[kind]
    region = await repo.region_of(_pool(request), registry, key)
    if region is not None:
        identity.require_region(region)
    return registry


def _download(data: bytes, fmt: SheetFormat, name: str) -> Response:
    return Response(
        data,
        media_type=sheets.MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/v1/atlas", tags=["atlas"])

    @r.get("/registries", response_model=list[RegistryInfo])
    async def list_atlas_registries(identity: Annotated[Identity, needs("atlas:read")]) -> Any:
        """What each registry holds: its fields, their Chinese headings and allowed values."""
        return [
            RegistryInfo(
                kind=g.kind,
                title=g.title,
                located=g.located,
                key=list(g.key),
                fields=[
                    FieldInfo(
                        name=f.name,
                        label=f.label,
                        type=f.type,
                        required=f.required,
                        choices=dict(f.choices),
                    )
                    for f in g.all_fields
                ],
            )
            for g in REGISTRIES.values()
        ]

    @r.get("/kpi/online-monitoring", response_model=OnlineMonitoring)
    async def get_online_monitoring(
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
        by: KpiGroupBy = "county",
        region_prefix: Region = "",
    ) -> OnlineMonitoring:
        """高危企业在线监测率: per county, township or sector, the enterprises that must be
        monitored online and have at least one station online, over all of them (one without a
        station counts against it), against the target; and those offline, since when."""
        settings = request.app.state.settings
        feeds = await health_repo.enterprise_feeds(
            _pool(request),
            region_prefix=identity.narrow(region_prefix),
            now=request.app.state.clock.now(),
            factor=settings.offline_factor,
        )
        target = settings.atlas_online_target
        places: Places = request.app.state.places
        groups = online_monitoring(feeds, by, target)
        named = await places.describe_many(
            [*(g.group for g in groups if by != "sector"), *(f.region_code for f in feeds)]
        )
        total = online_monitoring(feeds, "sector", target)
        required = sum(g.required for g in total)
        online = sum(g.online for g in total)
        rate = online / required if required else None
        return OnlineMonitoring(
            by=by,
            target=target,
            required=required,
            online=online,
            rate=rate,
            below_target=rate is not None and rate < target,
            groups=[
                KpiGroupOut(
                    group=g.group,
                    name=(
                        REGISTRIES["enterprises"].field("sector").choices.get(g.group, g.group)
                        if by == "sector"
                        else named[g.group].name
                    ),
                    required=g.required,
                    online=g.online,
                    rate=g.rate,
                    target=g.target,
                    below_target=g.below_target,
                )
                for g in groups
            ],
            offline=[
                OfflineEnterprise(
                    id=f.id,
                    name=f.name,
                    sector=f.sector,
                    region_code=f.region_code,
                    place=named[f.region_code].name,
                    stations=f.stations,
                    reason=f.why_offline or "offline",
                    last_seen=f.last_seen,
                )
                for f in feeds
                if not f.online
            ],
        )

    async def _surroundings(
        request: Request, area: Area, hazard: str | None, nearest: int, fmt: str
    ) -> Response:
        if hazard is not None and hazard not in HAZARDS:
            raise ValidationFailed(f"hazard {hazard!r} is not one of {', '.join(HAZARDS)}")
        settings = request.app.state.settings
        found = await surroundings(
            _pool(request),
            area,
            hazard=hazard,
            nearest=nearest,
            default_radius_m=settings.atlas_service_radius_m,
        )
        if fmt == "geojson":
            collection = feature_collection(found, await area_geojson(_pool(request), area))
            return JSONResponse(collection, media_type=GEOJSON)
        return JSONResponse(found)

    @r.post("/surroundings", responses=_JSON_OR_GEOJSON)
    async def atlas_surroundings(
        body: SurroundingsQuery,
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
        format: Literal["json", "geojson"] = "json",
    ) -> Response:
        """What is in and around a warning's area (its regions, or its polygon when it has
        one): protection targets and their population, geohazard sites, enterprises, the
        shelters serving it with capacity against population, the nearest teams and depots with
        their stock and distance, the plans that apply. ``format=geojson``: one
        FeatureCollection whose features name their ``layer``."""
        if not body.regions and body.polygon is None:
            raise ValidationFailed("name the area: regions, a polygon, or both")
        for code in body.regions:
            identity.require_region(code)
        polygon = None
        if body.polygon is not None:
            try:
                polygon = cap_polygon(body.polygon)
            except ValueError as exc:
                raise ValidationFailed(f"polygon: {exc}") from exc
            if identity.region_prefix and not body.regions:
                raise PermissionDenied(
                    "a region-scoped operator names the polygon's regions as well"
                )
        area = Area(tuple(body.regions), polygon)
        return await _surroundings(request, area, body.hazard, body.nearest, format)

    @r.get("/regions/{code}/surroundings", responses=_JSON_OR_GEOJSON)
    async def region_surroundings(
        code: Annotated[str, Path(pattern=r"^\d{12}$")],
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
        hazard: Annotated[str | None, Query(pattern=HAZARD_PATTERN)] = None,
        nearest: Annotated[int, Query(ge=1, le=50)] = 5,
        format: Literal["json", "geojson"] = "json",
    ) -> Response:
        """The same for one region, for the map."""
        identity.require_region(code)
        return await _surroundings(request, Area((code,)), hazard, nearest, format)

    @r.get("/audit/{kind}/{key:path}", response_model=list[AuditEntry])
    async def atlas_audit(
        kind: KindPath,
        key: KeyPath,
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
    ) -> Any:
        """Every change to the record: who, when, through what, before and after."""
        registry = REGISTRIES[kind]
        trail = await repo.audit_trail(_pool(request), registry, key)
        regions = {
            str(e[side]["region_code"])
            for e in trail
            for side in ("before", "after")
            if e[side] and "region_code" in e[side]
        }
        for code in regions:
            identity.require_region(code)
        return trail

    @r.get("/registries/{kind}/template", responses=_SHEET)
    async def atlas_template(
        kind: KindPath,
        identity: Annotated[Identity, needs("atlas:read")],
        format: SheetFormat = "xlsx",
    ) -> Response:
        """An empty sheet with the registry's columns (heading: 中文名（field）)."""
        registry = REGISTRIES[kind]
        data = sheets.write(template_headings(registry), [], format, registry.title)
        return _download(data, format, f"{kind}-template")

    @r.get("/registries/{kind}/export", responses=_SHEET)
    async def atlas_export(
        kind: KindPath,
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
        format: SheetFormat = "xlsx",
        region_prefix: Region = "",
    ) -> Response:
        """Every record within the prefix, in the template's columns: the file imports again
        unchanged."""
        registry = REGISTRIES[kind]
        records = await repo.list_(
            _pool(request),
            registry,
            region_prefix=identity.narrow(region_prefix),
            limit=sheets.MAX_ROWS,
        )
        rows = [export_row(registry, x) for x in records]
        data = sheets.write(template_headings(registry), rows, format, registry.title)
        return _download(data, format, kind)

    @r.post(
        "/registries/{kind}/import",
        response_model=ImportResult,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    sheets.XLSX: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def atlas_import(
        kind: KindPath,
        identity: Annotated[Identity, needs("atlas:write")],
        request: Request,
        filename: Annotated[str, Query(max_length=200)] = "",
        dry_run: bool = False,
    ) -> Response:
        """A CSV or Excel file (the template's columns; Chinese headings or field names) as the
        body. All or nothing: any bad row is reported with its row, column and reason and no row
        of the file is stored. Importing the same file again changes nothing."""
        registry = REGISTRIES[kind]
        fmt = sheets.format_of(request.headers.get("content-type", ""), filename)
        data = await request.body()
        parsed = parse_rows(registry, sheets.read(data, fmt))
        errors = list(parsed.errors)
        rows = {rec.key: parsed.rows[i] for i, rec in enumerate(parsed.records)}
        for rec in parsed.records:
            why = _out_of_scope(registry, identity, rec)
            if why:
                errors.append(RowError(rows[rec.key], "region_code", why))
        if errors:
            return _row_errors(sorted(errors, key=lambda e: e.row))
        if dry_run:
            return JSONResponse(
                ImportResult(
                    rows=len(parsed.records), created=0, updated=0, unchanged=0, dry_run=True
                ).model_dump()
            )
        try:
            stored = await repo.store(
                _pool(request),
                registry,
                parsed.records,
                actor=identity.subject,
                via=f"import:{filename or fmt}",
            )
        except repo.ReferencesMissing as exc:
            return _row_errors(
                sorted(
                    (RowError(rows[k], e.column, e.reason) for k, e in exc.missing.items()),
                    key=lambda e: e.row,
                )
            )
        return JSONResponse(
            ImportResult(
                rows=len(parsed.records),
                created=stored.created,
                updated=stored.updated,
                unchanged=stored.unchanged,
                dry_run=False,
            ).model_dump()
        )

    @r.get("/registries/{kind}/records", responses=_JSON_OR_GEOJSON)
    async def list_atlas_records(
        kind: KindPath,
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
        region_prefix: Region = "",
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        after: str = "",
        format: Literal["json", "geojson"] = "json",
    ) -> Response:
        """Records in id order within the prefix, a page at a time (``after``: the last id
        seen). ``format=geojson``: a FeatureCollection of the located ones."""
        registry = REGISTRIES[kind]
        records = await repo.list_(
            _pool(request),
            registry,
            region_prefix=identity.narrow(region_prefix),
            limit=limit,
            after=after,
        )
        if format == "geojson":
            return JSONResponse(feature_collection({kind: records}), media_type=GEOJSON)
        return JSONResponse(records)

    @r.get("/registries/{kind}/records/{key:path}", responses=_NOT_FOUND)
    async def get_atlas_record(
        kind: KindPath,
        key: KeyPath,
        identity: Annotated[Identity, needs("atlas:read")],
        request: Request,
    ) -> Response:
        registry = await _in_scope(request, identity, kind, key)
        return JSONResponse(await repo.get(_pool(request), registry, key))

    @r.put(
        "/registries/{kind}/records/{key:path}",
        responses={
            201: {"description": "created"},
            **_NOT_FOUND,
        },
    )
    async def put_atlas_record(
        kind: KindPath,
        key: KeyPath,
        identity: Annotated[Identity, needs("atlas:write")],
        request: Request,
        body: Annotated[dict[str, Any], Body()],
    ) -> Response:
        """Create or replace the record (its fields as JSON; ``crs``: gcj02 when the position
        is from a Chinese web map). The same record again changes nothing."""
        registry = REGISTRIES[kind]
        named = dict(zip(registry.key, key.split("/", len(registry.key) - 1), strict=False))
        for k, v in named.items():
            if k in body and str(body[k]) != v:
                raise ValidationFailed(f"{k} is {body[k]!r} in the body but {v!r} in the path")
        parsed = parse_record(registry, {**body, **named})
        if isinstance(parsed, list):
            return problem(
                422,
                f"{parsed[0].column}: {parsed[0].reason}",
                type_="urn:qianshao:error:validation",
                errors=[{"column": e.column, "reason": e.reason} for e in parsed],
            )
        why = _out_of_scope(registry, identity, parsed)
        if why:
            raise PermissionDenied(why)
        await _in_scope(request, identity, kind, parsed.key)
        try:
            stored = await repo.store(
                _pool(request), registry, [parsed], actor=identity.subject, via="api"
            )
        except repo.ReferencesMissing as exc:
            e = next(iter(exc.missing.values()))
            raise ValidationFailed(f"{e.column}: {e.reason}") from exc
        record = await repo.get(_pool(request), registry, parsed.key)
        return JSONResponse(record, status_code=201 if stored.created else 200)

    @r.delete("/registries/{kind}/records/{key:path}", status_code=204, responses=_NOT_FOUND)
    async def delete_atlas_record(
        kind: KindPath,
        key: KeyPath,
        identity: Annotated[Identity, needs("atlas:write")],
        request: Request,
    ) -> Response:
        registry = await _in_scope(request, identity, kind, key)
        await repo.delete(_pool(request), registry, key, actor=identity.subject)
        return Response(status_code=204)

    return r
