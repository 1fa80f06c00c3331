"""Loading warning versions from the database as the ``alerts.v1`` contract."""

from __future__ import annotations

import asyncpg

from services.alerting.domain.feeds import BACK, ESCALATION, FEED_HAZARD, OFFLINE
from shared.contracts import AlertVersion, Level, stable_id
from shared.db import Conn


async def load_versions(
    db: asyncpg.Pool | Conn, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], AlertVersion]:
    """Warning versions as the ``alerts.v1`` contract, by (warning id, version). Relayed
    warnings (``relay:<identifier>``) come back as their sender's, marked ``relayed_from``; the
    notices of a feed incident (``feed:<id>``) as a blue warning of hazard ``feed_offline``."""
    relay = {k for k in keys if k[0].startswith("relay:")}
    feeds = {k for k in keys if k[0].startswith("feed:")}
    keys = keys - relay - feeds
    out = await _relayed(db, relay) if relay else {}
    if feeds:
        out.update(await _feeds(db, feeds))
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


_FEED_HEADLINE = {OFFLINE: "在线监测离线", ESCALATION: "在线监测离线未恢复", BACK: "在线监测恢复"}
_FEED_MSG_TYPE = {OFFLINE: "Alert", ESCALATION: "Update", BACK: "Cancel"}


async def _feeds(
    db: asyncpg.Pool | Conn, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], AlertVersion]:
    rows = await db.fetch(
        """SELECT i.id, i.region_code, i.title, i.opened_at, i.escalated_at, i.closed_at,
                  coalesce((SELECT array_agg(DISTINCT m.station_id ORDER BY m.station_id)
                              FROM alerting.feed_members m WHERE m.incident_id = i.id), '{}')
                      AS stations
             FROM alerting.feed_incidents i WHERE i.id = ANY($1::bigint[])""",
        sorted({int(k[0].removeprefix("feed:")) for k in keys}),
    )
    by_id = {r["id"]: r for r in rows}
    out = {}
    for wid, version in keys:
        r = by_id.get(int(wid.removeprefix("feed:")))
        if r is None or version not in _FEED_MSG_TYPE:
            continue
        sent = {ESCALATION: r["escalated_at"], BACK: r["closed_at"]}.get(version) or r["opened_at"]
        headline = f"{r['title']}{_FEED_HEADLINE[version]}"
        out[(wid, version)] = AlertVersion(
            event_id=stable_id("feed", wid, version),
            produced_at=sent,
            warning_id=wid,
            identifier=f"feed-{r['id']}-{version}",
            version=version,
            msg_type=_FEED_MSG_TYPE[version],
            hazard=FEED_HAZARD,
            level=Level.blue.name,
            region_code=r["region_code"],
            station_ids=list(r["stations"]),
            sent=sent,
            headline=headline,
            description=headline,
        )
    return out
