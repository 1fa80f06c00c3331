"""ingest's HTTP API: the push endpoint and the station registry. Thin: parsing, authorisation and
the call into the domain; no SQL here."""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, ValidationError

from services.ingest.adapters import health as health_repo
from services.ingest.adapters import series as series_repo
from services.ingest.adapters import stations as station_repo
from services.ingest.adapters.health import GroupBy, OnlineRate, SourceHealth
from services.ingest.adapters.series import Agg
from services.ingest.adapters.stations import (
    Source,
    SourceIn,
    Station,
    StationCache,
    StationIn,
    StationReplace,
)
from services.ingest.adapters.warnings import StoredWarning, WarningReceipt
from services.ingest.domain.cap import MAX_BYTES as MAX_CAP_BYTES
from services.ingest.domain.cap import CapRejected
from shared.api_types import iso_8601
from shared.clock import Clock
from shared.contracts import RawReading, Topics
from shared.errors import PermissionDenied, ValidationFailed
from shared.http import PROBLEM, needs, problem
from shared.identity import Identity
from shared.kafka import EventProducer

# a station id in the path, as the stations table takes it
StationPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Rejected(BaseModel):
    index: int
    reason: str


class PushResult(BaseModel):
    accepted: int
    rejected: list[Rejected]


class SeriesPoint(BaseModel):
    ts: datetime
    value: float
    quality: int | None = Field(default=None, description="raw points: 0 good, 1 doubtful, 2 bad")


class Series(BaseModel):
    station_id: str
    metric: str
    bucket: str
    agg: str | None
    source: Literal["raw", "1h", "1d"] = Field(description="what the points were computed from")
    points: list[SeriesPoint]


class LatestValue(BaseModel):
    metric: str
    ts: datetime
    value: float
    unit: str
    quality: int


class ReadingsIngress:
    """The HTTP edge of ingest: validate each item, write the good ones to the raw topic with
    acks=all, answer per item. The consumer is the only writer of ``ingest.readings``."""

    def __init__(
        self,
        *,
        producer: EventProducer,
        stations: StationCache,
        topics: Topics,
        clock: Clock,
        max_items: int,
        pool: asyncpg.Pool,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._stations = stations
        self._topics = topics
        self._clock = clock
        self._max_items = max_items

    async def push(self, body: Any, identity: Identity) -> PushResult:
        items, source = _envelope(body, self._max_items)
        if identity.kind == "api_client" and identity.sources and source not in identity.sources:
            raise PermissionDenied(f"this key may not push as source {source!r}")
        now = self._clock.now()
        rejected: list[Rejected] = []
        good: list[tuple[int, RawReading]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                rejected.append(Rejected(index=i, reason="item is not an object"))
                continue
            try:
                raw = RawReading.model_validate({**item, "source": source, "received_at": now})
            except ValidationError as exc:
                rejected.append(Rejected(index=i, reason=_reason(exc)))
                continue
            good.append((i, raw))
        known = await self._stations.get_many(r.station_id for _, r in good)
        unknown = [(r.station_id, r.source, r.metric) for _, r in good if r.station_id not in known]
        if unknown:  # a source allowed to register its new stations does so here
            known.update(await station_repo.auto_register(self._pool, self._stations, unknown))
        out: list[tuple[str, bytes]] = []
        for i, raw in good:
            st = known.get(raw.station_id)
            if st is None:
                rejected.append(Rejected(index=i, reason=f"unknown station {raw.station_id!r}"))
            elif not identity.can_see_region(st.region_code):
                rejected.append(Rejected(index=i, reason="station is outside your region"))
            else:
                out.append((raw.station_id, orjson.dumps(raw.model_dump(mode="json"))))
        await self._producer.send_many(self._topics.obs_sensor, out)
        rejected.sort(key=lambda r: r.index)
        return PushResult(accepted=len(out), rejected=rejected)


def _envelope(body: Any, max_items: int) -> tuple[list[Any], str]:
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be an object with 'source' and 'readings'")
    source = body.get("source")
    readings = body.get("readings")
    if not isinstance(source, str) or not 0 < len(source) <= 64:
        raise ValidationFailed("'source' must be a non-empty string of at most 64 characters")
    if not isinstance(readings, list):
        raise ValidationFailed("'readings' must be a list")
    if len(readings) > max_items:
        raise ValidationFailed(f"at most {max_items} readings per request, got {len(readings)}")
    return readings, source


def _reason(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ()))
    return f"{loc}: {e.get('msg')}" if loc else str(e.get("msg"))


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body up to ``limit`` bytes (after gzip), refusing more without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    data = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(data, limit + 1)
        except zlib.error as exc:
            raise ValueError("body is not valid gzip") from exc
        if len(data) > limit or d.unconsumed_tail:
            raise BodyTooLarge
    return data


def parse_body(data: bytes, content_type: str) -> Any:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        # NDJSON: a first line {"source": …} may name the source; every other line is a reading
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        docs = [orjson.loads(ln) for ln in lines]
        source = None
        if docs and isinstance(docs[0], dict) and set(docs[0]) == {"source"}:
            source = docs.pop(0)["source"]
        return {"source": source, "readings": docs}
    return orjson.loads(data)


def ingress(request: Request) -> ReadingsIngress:
    return request.app.state.ingress  # type: ignore[no-any-return]


def pool(request: Request) -> Any:
    return request.app.state.runtime.pool


def router(max_body_bytes: int, max_items: int) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.post(
        "/readings",
        status_code=202,
        response_model=PushResult,
        responses={
            400: {"description": "Malformed body", "content": {PROBLEM: {}}},
            413: {"description": "Body too large", "content": {PROBLEM: {}}},
            422: {"description": "Envelope invalid", "content": {PROBLEM: {}}},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["source", "readings"],
                            "properties": {
                                "source": {"type": "string", "minLength": 1, "maxLength": 64},
                                # each item is checked on its own: a bad one is answered in
                                # `rejected` and never blocks the good ones, so the envelope
                                # takes any item
                                "readings": {
                                    "type": "array",
                                    "maxItems": max_items,
                                    "items": {
                                        "description": "a reading, an object of the RawReading "
                                        "schema; anything else is answered in `rejected`"
                                    },
                                },
                            },
                        }
                    },
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def push_readings(
        request: Request,
        identity: Annotated[Identity, needs("readings:write")],
        edge: Annotated[ReadingsIngress, Depends(ingress)],
    ) -> Response:
        """Push a batch of readings. Each item is answered on its own; bad items never block good
        ones. Accepted readings are durable on the broker before the 202."""
        try:
            data = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            return problem(413, f"the body is larger than {max_body_bytes} bytes")
        except ValueError as exc:
            return problem(400, str(exc))
        try:
            body = parse_body(data, request.headers.get("content-type", "application/json"))
        except orjson.JSONDecodeError as exc:
            return problem(400, f"malformed JSON: {exc}")
        result = await edge.push(body, identity)
        return JSONResponse(result.model_dump(), status_code=202)

    @r.post(
        "/warnings",
        status_code=202,
        response_model=WarningReceipt,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/xml": {"schema": {"type": "string"}}},
            }
        },
        responses={
            413: {"description": "Body too large", "content": {PROBLEM: {}}},
            422: {"description": "Not valid CAP 1.2", "content": {PROBLEM: {}}},
        },
    )
    async def push_upstream_warning(
        identity: Annotated[Identity, needs("upstream_warnings:write")], request: Request
    ) -> Response | WarningReceipt:
        """An upstream warning as CAP 1.2 / GB/T 35965.1 XML: validated against the CAP 1.2
        schema, stored once, Updates and Cancels applied to what they reference, published on
        warnings.upstream.v1."""
        data = await request.body()
        if len(data) > MAX_CAP_BYTES:
            return problem(413, f"a CAP message is at most {MAX_CAP_BYTES} bytes")
        try:
            receipt: WarningReceipt = await request.app.state.warnings.receive(data, identity)
        except CapRejected as exc:
            raise ValidationFailed(str(exc)) from exc
        return receipt

    @r.get("/warnings", response_model=list[StoredWarning])
    async def list_upstream_warnings(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        state: Literal["active", "updated", "cancelled"] | None = None,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[StoredWarning]:
        """Upstream warnings received, newest first, those touching your region."""
        found: list[StoredWarning] = await request.app.state.warnings.list_(
            region_prefix=identity.narrow(region_prefix), state=state, limit=limit
        )
        return found

    @r.post(
        "/stations",
        status_code=201,
        response_model=Station,
        responses={409: {"description": "a station of that id exists"}},
    )
    async def create_station(
        body: StationIn, identity: Annotated[Identity, needs("stations:write")], request: Request
    ) -> Station:
        identity.require_region(body.region_code)
        st = await station_repo.create(pool(request), station=body)
        request.app.state.stations.invalidate(st.id)
        return st

    @r.put("/stations/{station_id}", response_model=Station)
    async def replace_station(
        station_id: StationPath,
        body: StationReplace,
        identity: Annotated[Identity, needs("stations:write")],
        request: Request,
    ) -> Station:
        """Replace a station's fields; its id is the path's."""
        if body.id is not None and body.id != station_id:
            raise ValidationFailed("the body's id must match the path")
        old = await station_repo.get(pool(request), station_id=station_id)
        identity.require_region(old.region_code)
        identity.require_region(body.region_code)
        station = StationIn(id=station_id, **body.model_dump(exclude={"id"}))
        st = await station_repo.replace(pool(request), station=station)
        request.app.state.stations.invalidate(st.id)
        return st

    @r.get("/stations/{station_id}", response_model=Station)
    async def get_station(
        station_id: StationPath,
        identity: Annotated[Identity, needs("stations:read")],
        request: Request,
    ) -> Station:
        st = await station_repo.get(pool(request), station_id=station_id)
        identity.require_region(st.region_code)
        return st

    @r.delete("/stations/{station_id}", status_code=204)
    async def delete_station(
        station_id: StationPath,
        identity: Annotated[Identity, needs("stations:write")],
        request: Request,
    ) -> Response:
        st = await station_repo.get(pool(request), station_id=station_id)
        identity.require_region(st.region_code)
        await station_repo.delete(pool(request), station_id=station_id)
        request.app.state.stations.invalidate(station_id)
        return Response(status_code=204)

    @r.get(
        "/stations/{station_id}/series",
        response_model=Series,
        responses={
            200: {"content": {"text/csv": {}}},
            422: {"description": "Bad query or too many points", "content": {PROBLEM: {}}},
        },
    )
    async def get_station_series(
        station_id: StationPath,
        identity: Annotated[Identity, needs("readings:read")],
        request: Request,
        metric: Annotated[str, Query(pattern=r"^[a-z0-9_]{1,64}$")],
        from_: Annotated[AwareDatetime, BeforeValidator(iso_8601), Query(alias="from")],
        to: Annotated[AwareDatetime, BeforeValidator(iso_8601)],
        bucket: Annotated[str, Query(max_length=16)] = "raw",
        agg: Agg = "avg",
        format: Literal["json", "csv"] = "json",
    ) -> Response | Series:
        """A station's series, raw or bucketed (``5min``, ``1h``, ``1d`` …, aligned to Beijing
        midnight) with ``agg`` over each bucket; from the hourly or daily roll-ups when the bucket
        is a whole number of hours or days. ``format=csv`` exports it."""
        st = await station_repo.get(pool(request), station_id=station_id)
        identity.require_region(st.region_code)
        step = series_repo.parse_bucket(bucket)
        src, points = await series_repo.series(
            pool(request),
            station_id=station_id,
            metric=metric,
            start=from_,
            end=to,
            bucket=step,
            agg=agg,
        )
        if format == "csv":
            lines = ["ts,value,quality" if step is None else f"ts,{agg}"]
            for p in points:
                row = f"{p.ts.isoformat()},{p.value!r}"
                lines.append(row + (f",{p.quality}" if step is None else ""))
            return Response(
                "\n".join(lines) + "\n",
                media_type="text/csv; charset=utf-8",
                headers={
                    "Content-Disposition": f'attachment; filename="{station_id}-{metric}.csv"'
                },
            )
        return Series(
            station_id=station_id,
            metric=metric,
            bucket=bucket,
            agg=agg if step is not None else None,
            source=src,
            points=[SeriesPoint(ts=p.ts, value=p.value, quality=p.quality) for p in points],
        )

    @r.get("/stations/{station_id}/latest", response_model=list[LatestValue])
    async def get_station_latest(
        station_id: StationPath,
        identity: Annotated[Identity, needs("readings:read")],
        request: Request,
    ) -> list[LatestValue]:
        """The newest reading of each metric of the station."""
        st = await station_repo.get(pool(request), station_id=station_id)
        identity.require_region(st.region_code)
        rows = await series_repo.latest(pool(request), station_id)
        return [
            LatestValue(metric=x.metric, ts=x.ts, value=x.value, unit=x.unit, quality=x.quality)
            for x in rows
        ]

    @r.get("/health/online-rate", response_model=list[OnlineRate])
    async def get_online_rate(
        identity: Annotated[Identity, needs("stations:read")],
        request: Request,
        by: GroupBy = "enterprise",
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
    ) -> list[OnlineRate]:
        """Stations online now, per enterprise or region; ``below_target`` under 85 %."""
        return await health_repo.online_rates(
            pool(request),
            by=by,
            region_prefix=identity.narrow(region_prefix),
            now=request.app.state.clock.now(),
            factor=request.app.state.health_factor,
        )

    @r.put("/sources/{source_id}", response_model=Source)
    async def put_source(
        source_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")],
        body: SourceIn,
        identity: Annotated[Identity, needs("stations:write")],
        request: Request,
    ) -> Source:
        """Configure an upstream source; with ``auto_register`` the stations it reports for the
        first time are registered in its ``region_code`` (with ``station_kind``, or the kind the
        metric usually comes from) instead of being refused."""
        if body.region_code is not None:
            identity.require_region(body.region_code)
        return await station_repo.put_source(pool(request), source_id=source_id, source=body)

    @r.get("/sources", response_model=list[Source])
    async def list_sources(
        identity: Annotated[Identity, needs("stations:read")], request: Request
    ) -> list[Source]:
        return await station_repo.list_sources(pool(request))

    @r.get("/health/sources", response_model=list[SourceHealth])
    async def list_source_health(
        identity: Annotated[Identity, needs("stations:read")], request: Request
    ) -> list[SourceHealth]:
        """Last seen and message rate per upstream source and topic."""
        return await health_repo.source_health(pool(request), now=request.app.state.clock.now())

    @r.get("/stations", response_model=list[Station])
    async def list_stations(
        identity: Annotated[Identity, needs("stations:read")],
        request: Request,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: str = "",
    ) -> list[Station]:
        prefix = identity.narrow(region_prefix)
        return await station_repo.list_(
            pool(request), region_prefix=prefix, limit=limit, after=after
        )

    return r
