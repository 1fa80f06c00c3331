"""Upstream warnings pushed as CAP XML: stored once by identifier, Updates and Cancels applied to
the warnings they reference, published to ``warnings.upstream.v1`` (acks=all) before answering.

A repeat of the same message is harmless: it is stored once and published again under the same
event id, which consumers de-duplicate. A publish failure answers 503 and the sender retries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from services.ingest.domain.cap import parse_cap
from services.ingest.domain.model import CapWarning
from shared.clock import Clock
from shared.contracts import LevelName, Topics, UpstreamWarning, stable_id
from shared.errors import PermissionDenied
from shared.identity import Identity
from shared.kafka import EventProducer
from shared.places import Places


class WarningReceipt(BaseModel):
    identifier: str
    msg_type: str
    status: str
    level: LevelName
    region_codes: list[str]
    duplicate: bool
    references_applied: list[str]
    references_unknown: list[str]


class StoredWarning(BaseModel):
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    event: str
    level: str
    region_codes: list[str]
    references: list[str]
    expires: datetime | None
    state: str
    replaced_by: str | None
    region_names: list[str] = Field(
        default_factory=list, description="each region in words (its code when unknown)"
    )


class WarningsIngress:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        producer: EventProducer,
        topics: Topics,
        clock: Clock,
        trusted_ca: str | None = None,
    ) -> None:
        self._trusted_ca = trusted_ca
        self._pool = pool
        self._places = Places(pool)
        self._producer = producer
        self._topics = topics
        self._clock = clock

    async def receive(self, data: bytes, identity: Identity) -> WarningReceipt:
        cap = parse_cap(data, trusted_ca=self._trusted_ca)  # CapRejected → 422
        outside = [c for c in cap.region_codes if not identity.can_see_region(c)]
        if outside:
            raise PermissionDenied(f"regions outside your scope: {', '.join(outside)}")
        refs = cap.referenced_identifiers
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO ingest.upstream_warnings
                       (identifier, sender, sent, status, msg_type, event, level, region_codes,
                        refs, expires, source, xml)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   ON CONFLICT (identifier) DO NOTHING RETURNING identifier""",
                cap.identifier,
                cap.sender,
                cap.sent,
                cap.status,
                cap.msg_type,
                cap.event,
                cap.level,
                cap.region_codes,
                cap.references,
                cap.expires,
                identity.subject,
                data.decode("utf-8", errors="replace"),
            )
            known = await conn.fetch(
                "SELECT identifier FROM ingest.upstream_warnings WHERE identifier = ANY($1)",
                refs,
            )
            if refs and cap.msg_type in ("Update", "Cancel"):
                await conn.execute(
                    """UPDATE ingest.upstream_warnings SET state = $2, replaced_by = $3
                        WHERE identifier = ANY($1) AND state = 'active'""",
                    refs,
                    "cancelled" if cap.msg_type == "Cancel" else "updated",
                    cap.identifier,
                )
        await self._producer.send_json(
            self._topics.warnings_upstream, [(cap.identifier, self._event(cap))]
        )
        found = {r["identifier"] for r in known}
        return WarningReceipt(
            identifier=cap.identifier,
            msg_type=cap.msg_type,
            status=cap.status,
            level=cap.level,
            region_codes=cap.region_codes,
            duplicate=inserted is None,
            references_applied=[r for r in refs if r in found],
            references_unknown=[r for r in refs if r not in found],
        )

    def _event(self, cap: CapWarning) -> dict[str, Any]:
        ev = UpstreamWarning(
            event_id=stable_id("upstream", cap.identifier),
            produced_at=self._clock.now(),
            identifier=cap.identifier,
            sender=cap.sender,
            sent=cap.sent,
            msg_type=cap.msg_type,
            status=cap.status,
            event=cap.event,
            level=cap.level,
            region_codes=cap.region_codes,
            references=cap.references,
            headline=cap.headline,
            expires=cap.expires,
        )
        return ev.model_dump(mode="json")

    async def list_(
        self, *, region_prefix: str, state: str | None, limit: int
    ) -> list[StoredWarning]:
        rows = await self._pool.fetch(
            """SELECT identifier, sender, sent, status, msg_type, event, level, region_codes,
                      refs, expires, state, replaced_by
                 FROM ingest.upstream_warnings
                WHERE ($1 = '' OR EXISTS (
                         -- a warning for the county is one for each of its townships too
                         SELECT 1 FROM unnest(region_codes) c
                          WHERE c LIKE $1 || '%'
                             OR $1 LIKE (CASE WHEN c LIKE '%000000' THEN left(c, 6)
                                              WHEN c LIKE '%000' THEN left(c, 9)
                                              ELSE c END) || '%'))
                  AND ($2::text IS NULL OR state = $2)
                ORDER BY sent DESC LIMIT $3""",
            region_prefix,
            state,
            limit,
        )
        places = await self._places.describe_many({c for r in rows for c in r["region_codes"]})
        return [
            StoredWarning(
                **{**dict(r), "references": list(r["refs"])},
                region_names=[places[c].name for c in r["region_codes"]],
            )
            for r in rows
        ]
