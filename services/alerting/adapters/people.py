"""Who receives what: the people in scope of a warning, with their subscriptions and whether they
are on duty, and the endpoints (webhooks, group robots) subscribed to a region."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.alerting.domain.recipients import (
    DUTY_ROLES,
    Person,
    Subscription,
    ancestors,
    jurisdiction,
)
from shared.contracts import Level
from shared.db import Conn

# a person row with ``on_duty`` at $1 and the person's subscriptions
PERSON_COLUMNS = """p.id, p.name, p.role, p.region_code, p.phone, p.wechat_openid, p.wecom_userid,
       p.email, p.drill,
       EXISTS (SELECT 1 FROM alerting.duty_roster r
                WHERE r.person_id = p.id AND r.starts_at <= $1 AND r.ends_at > $1) AS on_duty,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'hazard', s.hazard, 'min_level', s.min_level, 'channels', s.channels))
                   FROM alerting.person_subscriptions s WHERE s.person_id = p.id),
                '[]'::jsonb) AS subs"""


def person_from_row(r: Any) -> Person:
    return Person(
        id=r["id"],
        name=r["name"],
        role=r["role"],
        region_code=r["region_code"],
        phone=r["phone"],
        wechat_openid=r["wechat_openid"],
        wecom_userid=r["wecom_userid"],
        email=r["email"],
        drill=r["drill"],
        on_duty=r["on_duty"],
        subscriptions=tuple(
            Subscription(s["hazard"], Level(s["min_level"]), tuple(s["channels"]))
            for s in r["subs"]
        ),
    )


async def load_persons(conn: Conn, region_code: str, now: datetime) -> list[Person]:
    """Active people in scope of a warning on ``region_code``: inside its area, or above it."""
    area = jurisdiction(region_code)
    rows = await conn.fetch(
        f"""SELECT {PERSON_COLUMNS} FROM alerting.persons p
             WHERE p.active AND (p.jurisdiction = ANY($2::text[]) OR p.region_code LIKE $3 || '%')
             ORDER BY p.id""",  # noqa: S608 - a constant column list
        now,
        [*ancestors(area), area],
        area,
    )
    return [person_from_row(r) for r in rows]


async def duty_officers(conn: Conn, jurisdictions: Sequence[str], now: datetime) -> list[Person]:
    """The active duty officers (township and county) of these jurisdictions, on duty or not:
    ``Person.on_duty`` says."""
    rows = await conn.fetch(
        f"""SELECT {PERSON_COLUMNS} FROM alerting.persons p
             WHERE p.active AND p.jurisdiction = ANY($2::text[])
               AND p.role = ANY($3::text[])
             ORDER BY p.id""",  # noqa: S608 - a constant column list
        now,
        list(jurisdictions),
        sorted(DUTY_ROLES),
    )
    return [person_from_row(r) for r in rows]


async def subscribed(
    conn: Conn, region_code: str | Sequence[str], level: Level, hazard: str
) -> list[tuple[str, str, str]]:
    """The endpoints subscribed to a warning of ``hazard`` at ``level`` on ``region_code`` (or
    on any of several divisions), as ledger recipients (``sub:<id>``, channel, target)."""
    codes = [region_code] if isinstance(region_code, str) else list(region_code)
    rows = await conn.fetch(
        """SELECT id, channel, target FROM alerting.subscriptions s
            WHERE active AND min_level <= $2 AND (hazard IS NULL OR hazard = $3)
              AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS a(code)
                           WHERE a.code LIKE s.region_prefix || '%')
            ORDER BY id""",
        codes,
        int(level),
        hazard,
    )
    return [(f"sub:{s['id']}", s["channel"], s["target"]) for s in rows]


async def load_persons_in(conn: Conn, areas: Sequence[str], now: datetime) -> list[Person]:
    """Active people in scope of a warning on any of ``areas``, each once."""
    if len(areas) == 1:
        return await load_persons(conn, areas[0], now)
    seen: dict[int, Person] = {}
    for code in areas:
        for p in await load_persons(conn, code, now):
            seen.setdefault(p.id, p)
    return list(seen.values())
