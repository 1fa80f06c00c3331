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


async def persons_for_areas(
    conn: Conn, areas: Sequence[Sequence[str]], now: datetime
) -> list[list[Person]]:
    """:func:`load_persons_in` for several warnings' areas in one statement: for each, the
    active people in scope of any of its divisions, each once, by id."""
    scopes = {code: jurisdiction(code) for codes in areas for code in codes}
    wanted = sorted({j for area in scopes.values() for j in (*ancestors(area), area)})
    rows = await conn.fetch(
        f"""SELECT p.jurisdiction AS scope_of, {PERSON_COLUMNS} FROM alerting.persons p
             WHERE p.active AND (p.jurisdiction = ANY($2::text[])
                                 OR p.region_code LIKE ANY($3::text[]))
             ORDER BY p.id""",  # noqa: S608 - a constant column list
        now,
        wanted,
        sorted({f"{a}%" for a in scopes.values()}),
    )
    # who is where, looked up per area rather than scanned: a wave's areas times its people
    # was a tenth of the service's CPU in a 叫应 burst
    by_scope: dict[str, list[Person]] = {}
    by_prefix: dict[tuple[int, str], list[Person]] = {}
    lengths = {len(a) for a in scopes.values()}
    for r in rows:
        p = person_from_row(r)
        by_scope.setdefault(r["scope_of"], []).append(p)
        for n in lengths:
            by_prefix.setdefault((n, p.region_code[:n]), []).append(p)
    out: list[list[Person]] = []
    for codes in areas:
        mine = {scopes[c] for c in codes}
        found: dict[int, Person] = {}
        for a in mine:
            for j in (*ancestors(a), a):
                found.update((p.id, p) for p in by_scope.get(j, ()))
            found.update((p.id, p) for p in by_prefix.get((len(a), a), ()))
        out.append([found[i] for i in sorted(found)])
    return out


async def subscriptions(conn: Conn) -> list[tuple[int, str, str, str, Level, str | None]]:
    """The active endpoint subscriptions: (id, channel, target, region prefix, min level,
    hazard), by id — for :func:`endpoints_for`."""
    rows = await conn.fetch(
        """SELECT id, channel, target, region_prefix, min_level, hazard
             FROM alerting.subscriptions WHERE active ORDER BY id"""
    )
    return [
        (r["id"], r["channel"], r["target"], r["region_prefix"], Level(r["min_level"]), r["hazard"])
        for r in rows
    ]


def endpoints_for(
    subs: Sequence[tuple[int, str, str, str, Level, str | None]],
    areas: Sequence[str],
    level: Level,
    hazard: str,
) -> list[tuple[str, str, str]]:
    """What :func:`subscribed` answers, from :func:`subscriptions` read once."""
    return [
        (f"sub:{sid}", channel, target)
        for sid, channel, target, prefix, min_level, hz in subs
        if min_level <= level
        and (hz is None or hz == hazard)
        and any(a.startswith(prefix) for a in areas)
    ]
