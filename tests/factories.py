"""Test data, made one way: stations, people on duty, warnings with their versions, and an alerting
(consumer and sweeps) over a migrated database. Each factory writes through plain SQL into the
schema a test has migrated, and takes only what a test wants to say; the rest has a default
that a test of that thing would not care about."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.alerting.app import consumer_and_sweeps
from services.alerting.settings import AlertingSettings
from services.alerting.workers.consumer import AlertingHandler
from services.alerting.workers.sweeps import Sweeps
from shared.clock import Clock
from shared.contracts import Topics
from shared.kafka import BatchResult, Message

VILLAGE = "110101001001"
TOWNSHIP = "110101001000"
COUNTY = "110101000000"


async def add_station(
    db: Any,
    station_id: str,
    *,
    kind: str = "water_level",
    region_code: str = VILLAGE,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    **columns: Any,
) -> None:
    """A station in ``ingest.stations``; further columns (``interval_s``, ``owner_enterprise``,
    ``maintenance`` …) by name."""
    cols = {
        "id": station_id,
        "name": name or station_id,
        "kind": kind,
        "region_code": region_code,
        "attributes": dict(attributes or {}),
        **columns,
    }
    names = ", ".join(cols)
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    await db.execute(
        f"INSERT INTO ingest.stations ({names}) VALUES ({params})",  # noqa: S608 - test names
        *cols.values(),
    )


JURISDICTION_DIGITS = {
    "village_cadre": 12,
    "grid_worker": 12,
    "township_duty_officer": 9,
    "township_leader": 9,
    "county_duty_officer": 6,
    "county_leader": 6,
}


async def add_person(
    db: Any,
    *,
    name: str,
    role: str = "village_cadre",
    region_code: str = VILLAGE,
    phone: str | None = None,
    on_duty: tuple[datetime, datetime] | None = None,
    **columns: Any,
) -> int:
    """A person who receives warnings, in the jurisdiction their role has over
    ``region_code``; ``on_duty``: a duty roster entry (start, end). The person's id."""
    digits = JURISDICTION_DIGITS.get(role, 12)
    cols = {
        "name": name,
        "role": role,
        "region_code": region_code,
        "jurisdiction": region_code[:digits],
        "phone": phone,
        **columns,
    }
    names = ", ".join(cols)
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    pid: int = await db.fetchval(
        f"INSERT INTO alerting.persons ({names}) VALUES ({params}) RETURNING id",  # noqa: S608
        *cols.values(),
    )
    if on_duty is not None:
        await db.execute(
            "INSERT INTO alerting.duty_roster (person_id, starts_at, ends_at) VALUES ($1, $2, $3)",
            pid,
            *on_duty,
        )
    return pid


async def add_warning(
    db: Any,
    warning_id: str,
    *,
    hazard: str = "flood",
    region_code: str = TOWNSHIP,
    level: int = 4,
    state: str = "issued",
    identifier: str | None = None,
    kind: str = "internal",
    versions: Sequence[Mapping[str, Any]] = (),
    sent: datetime | None = None,
) -> None:
    """A warning in ``alerting.warnings`` and, with ``sent``, its first version (an Alert of
    station ``WL1``); ``versions``: further ``warning_versions`` columns for that version."""
    ident = identifier or f"ID-{warning_id}"
    await db.execute(
        """INSERT INTO alerting.warnings
               (id, hazard, region_code, level, state, identifier, kind)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        warning_id,
        hazard,
        region_code,
        level,
        state,
        ident,
        kind,
    )
    if sent is not None:
        extra = dict(versions[0]) if versions else {}
        cols = {
            "warning_id": warning_id,
            "version": 1,
            "msg_type": "Alert",
            "level": level,
            "identifier": ident,
            "sent": sent,
            "headline": "h",
            "description": "d",
            "station_ids": ["WL1"],
            "cause_event": "e1",
            **extra,
        }
        names = ", ".join(cols)
        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        await db.execute(
            f"INSERT INTO alerting.warning_versions ({names}) VALUES ({params})",  # noqa: S608
            *cols.values(),
        )


@dataclass
class Alerting:
    """One alerting's consumer and sweeps over a pool, as a test drives them."""

    handler: AlertingHandler
    sweeps: Sweeps

    async def process(self, batch: Sequence[Message]) -> BatchResult:
        return await self.handler.process(batch)

    async def dispatch_due(self) -> int:
        return await self.sweeps.dispatch_due()

    async def release_silenced(self) -> int:
        return await self.sweeps.release_silenced()

    async def send_digests(self) -> int:
        return await self.sweeps.send_digests()

    async def remind(self) -> int:
        return await self.sweeps.remind()

    async def expire_due(self) -> dict[str, int]:
        return await self.sweeps.expire_due()


def alerting(
    pool: Any,
    *,
    topics: Topics,
    clock: Clock,
    settings: AlertingSettings | None = None,
    on_new_deliveries: Callable[[], None] = lambda: None,
) -> Alerting:
    handler, sweeps = consumer_and_sweeps(
        pool, settings or AlertingSettings(), topics, clock, on_new_deliveries
    )
    return Alerting(handler, sweeps)


def duty(start: datetime, days: int = 3) -> tuple[datetime, datetime]:
    return (start, start + timedelta(days=days))
