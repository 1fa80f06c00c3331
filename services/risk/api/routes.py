"""risk's HTTP API: station levels with evidence, the four-colour map, rule packs, region
overrides and backtests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.risk.adapters.backtest import run_backtest
from services.risk.domain.backtest import BacktestRequest, BacktestResult
from services.risk.domain.events import RebuildResult
from services.risk.domain.packs import Pack, apply_overrides, resolve_rule, shipped_packs
from services.risk.domain.rules import RuleConfigError, parse_rule
from shared.api_types import Number
from shared.contracts import Level
from shared.errors import NotFound, ValidationFailed
from shared.http import needs
from shared.identity import Identity


class RuleLevel(BaseModel):
    rule_id: str
    pack: str
    hazard: str
    level: str
    urgency: str
    since: str | None
    last_value: float | None
    evidence: dict[str, Any]


class StationRisk(BaseModel):
    station_id: str
    region_code: str
    level: str
    no_data: bool
    last_seen: str | None
    hazards: dict[str, str]
    rules: list[RuleLevel]


class StationLevel(BaseModel):
    station_id: str
    region_code: str
    level: str = Field(description="the most severe level over its hazards")
    hazards: dict[str, str]
    no_data: bool


class RegionCell(BaseModel):
    region_code: str
    region_name: str = Field(default="", description="the region in words (its code when unknown)")
    hazard: str
    level: str
    colour: str
    counts: dict[str, int]
    no_data: int = Field(description="stations of the region that are silent")


class RiskMap(BaseModel):
    admin_level: str
    hazard: str | None
    generated_at: str
    regions: list[RegionCell]


class PackRule(BaseModel):
    id: str
    hazard: str
    applies_to: dict[str, Any]
    description: str
    rule: dict[str, Any]


class PackDoc(BaseModel):
    id: str
    title: str
    mapping: str
    documents: dict[str, str]
    rules: list[PackRule]


class OverrideIn(BaseModel):
    region_prefix: str = Field(pattern=r"^\d{2,12}$")
    rule_id: str = Field(min_length=1, max_length=96)
    level: Literal["blue", "yellow", "orange", "red"]
    value: Number
    reason: str = Field(min_length=1, max_length=500)


class Override(OverrideIn):
    author: str
    created_at: str


COLOUR = {"none": "", "blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}
PREFIX_LEN = {"village": 12, "township": 9, "county": 6}


def _pack_doc(p: Pack) -> PackDoc:
    return PackDoc(
        id=p.id,
        title=p.title,
        mapping=p.mapping,
        documents=dict(p.documents),
        rules=[
            PackRule(
                id=str(r["id"]),
                hazard=str(r["hazard"]),
                applies_to=dict(r.get("applies_to") or {}),
                description=str(r.get("description", "")),
                rule=dict(r),
            )
            for r in p.rules
        ],
    )


def check_override(o: OverrideIn) -> None:
    """Refuse an override of an unknown rule or a looser value than the pack's own (citing it).
    Values a pack takes from station attributes are checked per station when the rules are built."""
    for pack in shipped_packs().values():
        raw = pack.rule(o.rule_id)
        if raw is None:
            continue
        level_spec = (raw.get("levels") or {}).get(o.level)
        if level_spec is not None and _is_constant(level_spec):
            resolved = resolve_rule(raw, pack, {})
            official = parse_rule(resolved, pack=pack.id, path=o.rule_id)
            try:
                apply_overrides(resolved, official, {o.level: o.value}, who=o.region_prefix)
            except RuleConfigError as exc:
                raise ValidationFailed(str(exc)) from exc
        return
    raise ValidationFailed(f"no shipped rule {o.rule_id!r}")


def _is_constant(spec: Any) -> bool:
    if isinstance(spec, dict):
        return all(_is_constant(v) for k, v in spec.items() if k != "source") and "attr" not in spec
    if isinstance(spec, list):
        return all(_is_constant(v) for v in spec)
    return True


def _obj(value: Any) -> dict[str, Any]:
    """A jsonb value as a dict, whether or not the pool decodes jsonb."""
    return dict(orjson.loads(value) if isinstance(value, str | bytes) else value)


def router() -> APIRouter:
    r = APIRouter(prefix="/v1/risk")

    @r.get("/stations", response_model=list[StationLevel])
    async def list_station_levels(
        identity: Annotated[Identity, needs("risk:read")],
        request: Request,
        region: str = Query(default="", pattern=r"^\d{0,12}$"),
        limit: Annotated[int, Query(ge=1, le=20000)] = 5000,
    ) -> list[StationLevel]:
        """Every station's level per hazard in the caller's region (the map's stations by
        level), most severe first."""
        rows = await request.app.state.runtime.pool.fetch(
            """SELECT r.station_id, min(r.region_code) AS region_code,
                      jsonb_object_agg(r.hazard, r.lvl) AS hazards, max(r.lvl) AS lvl,
                      coalesce(bool_or(st.silent), false) AS silent
                 FROM (SELECT station_id, region_code, hazard, max(level) AS lvl
                         FROM risk.rule_state WHERE region_code LIKE $1 || '%'
                        GROUP BY station_id, region_code, hazard) r
                 LEFT JOIN risk.station_state st USING (station_id)
                GROUP BY r.station_id ORDER BY max(r.lvl) DESC, r.station_id LIMIT $2""",
            identity.narrow(region),
            limit,
        )
        return [
            StationLevel(
                station_id=x["station_id"],
                region_code=x["region_code"],
                level=Level(x["lvl"]).name,
                hazards={h: Level(int(v)).name for h, v in _obj(x["hazards"]).items()},
                no_data=x["silent"],
            )
            for x in rows
        ]

    @r.get("/stations/{station_id}", response_model=StationRisk)
    async def get_station_risk(
        station_id: str, identity: Annotated[Identity, needs("risk:read")], request: Request
    ) -> StationRisk:
        pool = request.app.state.runtime.pool
        rows = await pool.fetch(
            """SELECT rule_id, pack, hazard, region_code, level, urgency, since, last_value,
                      evidence
                 FROM risk.rule_state WHERE station_id = $1 ORDER BY hazard, rule_id""",
            station_id,
        )
        if not rows:
            raise NotFound(f"no risk state for station {station_id!r}")
        identity.require_region(rows[0]["region_code"])
        st = await pool.fetchrow(
            "SELECT silent, last_seen FROM risk.station_state WHERE station_id = $1", station_id
        )
        hazards: dict[str, Level] = {}
        for x in rows:
            hazards[x["hazard"]] = max(hazards.get(x["hazard"], Level.none), Level(x["level"]))
        rules = [
            RuleLevel(
                rule_id=x["rule_id"],
                pack=x["pack"],
                hazard=x["hazard"],
                level=Level(x["level"]).name,
                urgency=x["urgency"],
                since=x["since"].isoformat() if x["since"] else None,
                last_value=x["last_value"],
                evidence=x["evidence"],
            )
            for x in rows
        ]
        top = max(hazards.values(), default=Level.none)
        return StationRisk(
            station_id=station_id,
            region_code=rows[0]["region_code"],
            level=top.name,
            no_data=bool(st and st["silent"]),
            last_seen=st["last_seen"].isoformat() if st and st["last_seen"] else None,
            hazards={h: lv.name for h, lv in hazards.items()},
            rules=rules,
        )

    @r.post("/stations/{station_id}/rebuild", response_model=RebuildResult)
    async def rebuild_station(
        station_id: str, identity: Annotated[Identity, needs("rules:write")], request: Request
    ) -> RebuildResult:
        """Rebuild the station's state from the readings ingest stored (its longest window's
        worth), for example after its rules or overrides changed. Every rule whose rebuilt
        level differs from the published one is announced on risk.events.v1."""
        infos = await request.app.state.plans.get_many([station_id])
        if station_id not in infos:
            raise NotFound(f"no station {station_id!r}")
        identity.require_region(infos[station_id].region_code)
        result: RebuildResult = await request.app.state.handler.rebuild(station_id)
        return result

    @r.get("/map", response_model=RiskMap)
    async def get_risk_map(
        identity: Annotated[Identity, needs("risk:read")],
        request: Request,
        admin_level: Literal["village", "township", "county"] = "township",
        hazard: str | None = Query(default=None, max_length=64),
        region: str = Query(default="", pattern=r"^\d{0,12}$"),
    ) -> RiskMap:
        """The four-colour map (四色图): per region at ``admin_level`` and hazard, the most severe
        station level, the number of stations at each level, and how many are silent."""
        prefix = identity.narrow(region)
        n = PREFIX_LEN[admin_level]
        pool = request.app.state.runtime.pool
        rows = await pool.fetch(
            """WITH s AS (
                   SELECT station_id, region_code, hazard, max(level) AS lvl
                     FROM risk.rule_state
                    WHERE region_code LIKE $1 || '%' AND ($2::text IS NULL OR hazard = $2)
                    GROUP BY station_id, region_code, hazard)
               SELECT left(s.region_code, $3) AS p, s.hazard, s.lvl, count(*) AS n,
                      count(*) FILTER (WHERE st.silent) AS silent
                 FROM s LEFT JOIN risk.station_state st USING (station_id)
                GROUP BY 1, 2, 3 ORDER BY 1, 2""",
            prefix,
            hazard,
            n,
        )
        cells: dict[tuple[str, str], RegionCell] = {}
        for x in rows:
            key = (x["p"], x["hazard"])
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = RegionCell(
                    region_code=x["p"].ljust(12, "0"),
                    hazard=x["hazard"],
                    level="none",
                    colour="",
                    counts={lv.name: 0 for lv in Level},
                    no_data=0,
                )
            cell.counts[Level(x["lvl"]).name] += x["n"]
            cell.no_data += x["silent"]
            if Level(x["lvl"]) > Level[cell.level]:
                cell.level = Level(x["lvl"]).name
                cell.colour = COLOUR[cell.level]
        names = await request.app.state.places.describe_many(
            {c.region_code for c in cells.values()}
        )
        for cell in cells.values():
            cell.region_name = names[cell.region_code].name
        return RiskMap(
            admin_level=admin_level,
            hazard=hazard,
            generated_at=datetime.now(UTC).isoformat(),
            regions=list(cells.values()),
        )

    @r.get("/packs", response_model=list[PackDoc])
    async def list_packs(identity: Annotated[Identity, needs("risk:read")]) -> list[PackDoc]:
        return [_pack_doc(p) for p in shipped_packs().values()]

    @r.get("/packs/{pack_id}", response_model=PackDoc)
    async def get_pack(pack_id: str, identity: Annotated[Identity, needs("risk:read")]) -> PackDoc:
        pack = shipped_packs().get(pack_id)
        if pack is None:
            raise NotFound(f"no pack {pack_id!r}")
        return _pack_doc(pack)

    @r.get("/overrides", response_model=list[Override])
    async def list_overrides(
        identity: Annotated[Identity, needs("risk:read")], request: Request
    ) -> list[Override]:
        rows = await request.app.state.runtime.pool.fetch(
            """SELECT * FROM risk.overrides WHERE region_prefix LIKE $1 || '%'
                ORDER BY region_prefix, rule_id, level""",
            identity.region_prefix,
        )
        return [_override(x) for x in rows]

    @r.put("/overrides", response_model=Override)
    async def put_override(
        body: OverrideIn, identity: Annotated[Identity, needs("rules:write")], request: Request
    ) -> Override:
        """Set a stricter value for a rule's level in a region. A looser one is refused with the
        clause it would loosen."""
        if not body.region_prefix.startswith(identity.region_prefix):
            identity.require_region(body.region_prefix.ljust(12, "0"))
        check_override(body)
        row = await request.app.state.runtime.pool.fetchrow(
            """INSERT INTO risk.overrides (region_prefix, rule_id, level, value, author, reason)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (region_prefix, rule_id, level) DO UPDATE SET
                   value = EXCLUDED.value, author = EXCLUDED.author, reason = EXCLUDED.reason,
                   created_at = now()
               RETURNING *""",
            body.region_prefix,
            body.rule_id,
            body.level,
            body.value,
            identity.subject,
            body.reason,
        )
        request.app.state.plans.invalidate()
        return _override(row)

    @r.post(
        "/backtests",
        response_model=BacktestResult,
        responses={404: {"description": "no station matches the stations or region given"}},
    )
    async def backtest_rules(
        body: BacktestRequest, identity: Annotated[Identity, needs("risk:read")], request: Request
    ) -> BacktestResult:
        """Replay stored readings through rules: events, counts per level, and hits, misses and
        false alarms against reference events, with lead times."""
        return await run_backtest(
            request.app.state.runtime.pool, body, region_prefix=identity.narrow(body.region or "")
        )

    return r


def _override(x: Any) -> Override:
    return Override(
        region_prefix=x["region_prefix"],
        rule_id=x["rule_id"],
        level=x["level"],
        value=x["value"],
        reason=x["reason"],
        author=x["author"],
        created_at=x["created_at"].isoformat(),
    )
