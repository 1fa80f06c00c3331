"""risk's HTTP API (foundation): the current levels of a station, with their evidence."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from shared.contracts import Level
from shared.errors import NotFound
from shared.http import IdentityDep


class RuleLevel(BaseModel):
    rule_id: str
    hazard: str
    level: str
    since: str | None
    last_value: float | None
    evidence: dict[str, Any]


class StationRisk(BaseModel):
    station_id: str
    region_code: str
    level: str
    rules: list[RuleLevel]


def router() -> APIRouter:
    r = APIRouter(prefix="/v1/risk")

    @r.get("/stations/{station_id}", response_model=StationRisk)
    async def station_risk(station_id: str, identity: IdentityDep, request: Request) -> StationRisk:
        identity.require_scope("risk:read")
        rows = await request.app.state.runtime.pool.fetch(
            """SELECT rule_id, hazard, region_code, level, since, last_value, evidence
                 FROM risk.rule_state WHERE station_id = $1 ORDER BY rule_id""",
            station_id,
        )
        if not rows:
            raise NotFound(f"no risk state for station {station_id!r}")
        identity.require_region(rows[0]["region_code"])
        rules = [
            RuleLevel(
                rule_id=x["rule_id"],
                hazard=x["hazard"],
                level=Level(x["level"]).name,
                since=x["since"].isoformat() if x["since"] else None,
                last_value=x["last_value"],
                evidence=x["evidence"],
            )
            for x in rows
        ]
        top = max(Level(x["level"]) for x in rows)
        return StationRisk(
            station_id=station_id, region_code=rows[0]["region_code"], level=top.name, rules=rules
        )

    return r
