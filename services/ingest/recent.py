"""The last trusted readings of each (station, metric), for the spike and stuck checks.

Readings are keyed by station on Kafka, so each replica sees all of its stations' readings and
keeps their recent values in memory; a key it has not seen since it started is loaded from
``ingest.readings`` once. A batch works on copies, which are kept only after the batch is stored:
a batch that fails and comes again is judged exactly as the first time."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime

import asyncpg

Key = tuple[str, str]  # station, metric
Recent = deque[tuple[datetime, float]]


class RecentReadings:
    def __init__(self, pool: asyncpg.Pool, *, keep: int, max_keys: int = 200_000) -> None:
        self._pool = pool
        self._keep = keep
        self._max_keys = max_keys
        self._data: OrderedDict[Key, Recent] = OrderedDict()

    async def working_copies(self, keys: Iterable[Key]) -> dict[Key, Recent]:
        wanted = set(keys)
        missing = [k for k in wanted if k not in self._data]
        if missing:
            rows = await self._pool.fetch(
                """SELECT k.s, k.m, x.ts, x.value
                     FROM unnest($1::text[], $2::text[]) AS k(s, m)
                     CROSS JOIN LATERAL (
                         SELECT ts, value FROM ingest.readings r
                          WHERE r.station_id = k.s AND r.metric = k.m AND r.quality = 0
                          ORDER BY ts DESC LIMIT $3) x
                    ORDER BY k.s, k.m, x.ts""",
                [k[0] for k in missing],
                [k[1] for k in missing],
                self._keep,
            )
            loaded: dict[Key, Recent] = {k: deque(maxlen=self._keep) for k in missing}
            for r in rows:
                loaded[(r["s"], r["m"])].append((r["ts"], r["value"]))
            self.keep(loaded)
        return {k: deque(self._data[k], maxlen=self._keep) for k in wanted}

    def keep(self, copies: dict[Key, Recent]) -> None:
        for k, d in copies.items():
            self._data[k] = d
            self._data.move_to_end(k)
        while len(self._data) > self._max_keys:
            self._data.popitem(last=False)
