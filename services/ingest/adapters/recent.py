"""What the spike and stuck checks need of each (station, metric)'s trusted readings: the last
one's time and value, and how many in a row had that value (:data:`validation.Recent`).

Readings are keyed by station on Kafka, so each replica sees all of its stations' readings and
keeps this in memory; a key it has not seen since it started is loaded from ``ingest.readings``
once (its last ``keep`` trusted readings, summarised). A batch works on a dict of the summaries
and replaces a key's as it judges (nothing is copied to be read), the dict becomes the history
once the batch is judged (the next batch is judged on it while this one is stored), and a batch
that fails is undone with :meth:`RecentReadings.restore`, so that when it comes again it is
judged exactly as the first time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from services.ingest.domain.validation import Key, Recent, summary

# A run of one value is counted this far at most: further than any stuck check, and costing no
# memory (a key holds its count, not its readings).
RUN_CAP = 1 << 20
Undo = dict[Key, Recent | None]  # what ``keep`` replaced (None: nothing was there)


class RecentReadings:
    def __init__(self, pool: asyncpg.Pool, *, keep: int, max_keys: int = 200_000) -> None:
        self._pool = pool
        self._keep = keep
        self._max_keys = max_keys
        self._data: OrderedDict[Key, Recent] = OrderedDict()

    @property
    def run_cap(self) -> int:
        """The longest run of one value that is counted. A key loaded from the database starts
        from the run of its last ``keep`` readings, and counts on from there."""
        return RUN_CAP

    async def working_copies(self, keys: Iterable[Key]) -> dict[Key, Recent]:
        """The summaries of ``keys``, for a batch to judge on and update (by replacing them)."""
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
            found: dict[Key, list[tuple[datetime, float]]] = {k: [] for k in missing}
            for r in rows:
                found[(r["s"], r["m"])].append((r["ts"], r["value"]))
            self.keep({k: summary(v, self._keep) for k, v in found.items()})
        data = self._data
        return {k: data[k] for k in wanted}

    def keep(self, copies: dict[Key, Recent]) -> Undo:
        """Make the summaries the history; return what they replaced, for :meth:`restore`. A
        summary the batch did not replace is the one already kept: nothing to do."""
        undo: Undo = {}
        data = self._data
        for k, d in copies.items():
            old = data.get(k)
            if old is d:
                continue
            undo[k] = old
            data[k] = d
            data.move_to_end(k)
        while len(self._data) > self._max_keys:
            self._data.popitem(last=False)
        return undo

    def restore(self, undo: Undo) -> None:
        """Undo a :meth:`keep` (the later of two first)."""
        for k, d in undo.items():
            if d is None:
                self._data.pop(k, None)
            else:
                self._data[k] = d
