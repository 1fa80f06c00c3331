"""Station rules for risk, read from ``ingest.stations`` (ingest's published read model),
cached."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import asyncpg

from services.risk.engine import RuleConfigError, ThresholdRule, threshold_rules_from_attributes

log = logging.getLogger(__name__)


class StationRules:
    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 30.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, list[ThresholdRule]]] = {}

    async def get_many(self, ids: Iterable[str]) -> dict[str, list[ThresholdRule]]:
        now = time.monotonic()
        out: dict[str, list[ThresholdRule]] = {}
        missing = []
        for sid in set(ids):
            e = self._entries.get(sid)
            if e is not None and e[0] > now:
                out[sid] = e[1]
            else:
                missing.append(sid)
        if missing:
            rows = await self._pool.fetch(
                "SELECT id, attributes FROM ingest.stations WHERE id = ANY($1::text[])", missing
            )
            seen = set()
            for r in rows:
                seen.add(r["id"])
                try:
                    rules = threshold_rules_from_attributes(r["attributes"])
                except (RuleConfigError, ValueError, TypeError) as exc:
                    log.warning(
                        "station has invalid thresholds; no rule applied",
                        extra={"station_id": r["id"], "error": str(exc)},
                    )
                    rules = []
                out[r["id"]] = rules
                self._entries[r["id"]] = (now + self._ttl, rules)
            for sid in missing:
                if sid not in seen:
                    out[sid] = []
                    self._entries[sid] = (now + min(self._ttl, 2.0), [])
        return out
