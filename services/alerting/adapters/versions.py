"""Loading warning versions from the database as the ``alerts.v1`` contract."""

from __future__ import annotations

import asyncpg

from shared.contracts import AlertVersion, Level, stable_id
from shared.db import Conn


async def load_versions(
    db: asyncpg.Pool | Conn, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], AlertVersion]:
    """Warning versions as the ``alerts.v1`` contract, by (warning id, version). Relayed
    warnings (``relay:<identifier>``) come back as their sender's, marked ``relayed_from``."""
    relay = {k for k in keys if k[0].startswith("relay:")}
    keys = keys - relay
    out = await _relayed(db, relay) if relay else {}
    rows = await db.fetch(
        """SELECT v.warning_id, v.version, v.msg_type, v.level, v.identifier, v.sent,
                  v.headline, v.description, v.refs, v.station_ids, w.hazard, w.region_code,
                  w.status, v.cause_time, v.expires, v.area_desc, v.areas, v.polygon,
                  v.instruction, v.effective, w.event_type, w.origin
             FROM alerting.warning_versions v
             JOIN alerting.warnings w ON w.id = v.warning_id
             JOIN unnest($1::text[], $2::int[]) AS k(wid, ver)
               ON v.warning_id = k.wid AND v.version = k.ver""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    for r in rows:
        out[(r["warning_id"], r["version"])] = AlertVersion(
            event_id=stable_id("alert", r["warning_id"], r["version"]),
            produced_at=r["sent"],
            warning_id=r["warning_id"],
            identifier=r["identifier"],
            version=r["version"],
            msg_type=r["msg_type"],
            status=r["status"],
            hazard=r["hazard"],
            level=Level(r["level"]).name,
            region_code=r["region_code"],
            station_ids=list(r["station_ids"]),
            references=list(r["refs"]),
            sent=r["sent"],
            headline=r["headline"],
            description=r["description"],
            cause_time=r["cause_time"],
            expires=r["expires"],
            area_desc=r["area_desc"],
            areas=list(r["areas"]),
            polygon=r["polygon"],
            instruction=r["instruction"],
            effective=r["effective"],
            event_type=r["event_type"],
            origin=r["origin"],
        )
    return out


async def _relayed(
    db: asyncpg.Pool | Conn, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], AlertVersion]:
    rows = await db.fetch(
        """SELECT identifier, sender, sent, msg_type, status, hazard, level, region_code,
                  headline, refs
             FROM alerting.relayed WHERE identifier = ANY($1::text[])""",
        [k[0].removeprefix("relay:") for k in keys],
    )
    out = {}
    for r in rows:
        wid = f"relay:{r['identifier']}"
        out[(wid, 1)] = AlertVersion(
            event_id=stable_id("relay", r["identifier"]),
            produced_at=r["sent"],
            warning_id=wid,
            identifier=r["identifier"],
            version=1,
            msg_type=r["msg_type"],
            status=r["status"],
            hazard=r["hazard"],
            level=Level(r["level"]).name,
            region_code=r["region_code"],
            station_ids=[],
            references=list(r["refs"]),
            sent=r["sent"],
            headline=r["headline"],
            description=r["headline"],
            relayed_from=r["sender"],
        )
    return out
