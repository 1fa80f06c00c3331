"""The division registry over HTTP: a code named in words, with its parents; search by name or
by the code above."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from services.ingest.adapters import divisions as registry
from shared.errors import NotFound
from shared.http import needs
from shared.identity import Identity
from shared.places import LEVELS, Places, chain

Code = Annotated[str, Path(pattern=r"^\d{12}$", description="a 12-digit division code")]


class Division(BaseModel):
    code: str
    name: str = Field(description="the registry's own name of this level (竹根镇)")
    level: str = Field(description="province, city, county, township or village")
    parent: str | None
    retired_in: str | None = Field(description="the edition that no longer has this code")


class DivisionDetail(Division):
    place: str = Field(description="the place in words, as texts name it (五通桥区竹根镇)")
    parents: list[Division]
    edition: str | None = Field(description="the edition the registry holds")


def _division(r: dict[str, object]) -> Division:
    return Division(
        code=str(r["code"]),
        name=str(r["name"]),
        level=LEVELS[int(str(r["level"])) - 1],
        parent=None if r["parent"] is None else str(r["parent"]),
        retired_in=None if r["retired_in"] is None else str(r["retired_in"]),
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/v1/divisions", tags=["divisions"])

    @r.get("", response_model=list[Division])
    async def search_divisions(
        identity: Annotated[Identity, needs("stations:read")],
        request: Request,
        q: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
        parent: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[Division]:
        """Divisions whose name holds ``q`` and/or that lie directly under ``parent``."""
        rows = await registry.search(
            request.app.state.runtime.pool, q=q, parent=parent, limit=limit
        )
        return [_division(dict(x.items())) for x in rows]

    @r.get("/{code}", response_model=DivisionDetail)
    async def get_division(
        code: Code, identity: Annotated[Identity, needs("stations:read")], request: Request
    ) -> DivisionDetail:
        """One code in words, with every level above it."""
        pool = request.app.state.runtime.pool
        rows = await pool.fetch(
            """SELECT code, name, level, parent, retired_in FROM ingest.divisions
                WHERE code = ANY($1::text[]) ORDER BY level""",
            chain(code),
        )
        found = {x["code"]: dict(x.items()) for x in rows}
        if code not in found:
            raise NotFound(f"no division {code} in the registry")
        place = await Places(pool, ttl_s=0).describe(code)
        edition = await registry.loaded_edition(pool)
        return DivisionDetail(
            **_division(found[code]).model_dump(),
            place=place.name,
            parents=[_division(v) for k, v in found.items() if k != code],
            edition=edition["edition"] if edition else None,
        )

    return r
