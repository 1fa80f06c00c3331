"""Writing readings: idempotent on (station, metric, ts); first value wins, conflicts are kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from prometheus_client import Histogram

from services.ingest.domain.kernel import Kernel, default
from services.ingest.domain.rows import COLUMNS, QUALITY_CODE, Row
from shared.db import Conn, DailyPartitions, day_start
from shared.errors import DatabaseError

WRITE_SECONDS = Histogram(
    "qianshao_ingest_db_write_duration_seconds",
    "Time to store one batch of readings",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: list[Row]  # newly stored, or already stored with the same value (harmless repeat)
    conflicts: list[tuple[Row, float]]  # (rejected row, the value that was kept)


class ReadingStore:
    def __init__(self, pool: asyncpg.Pool, *, storage: str, kernel: Kernel | None = None) -> None:
        self._pool = pool
        self._storage = storage
        self._kernel = kernel if kernel is not None else default()
        self._partitions = DailyPartitions("ingest.readings")

    async def write(self, rows: list[Row]) -> WriteResult:
        """Store a batch in one transaction. Repeats of a stored reading with the same value count
        as stored (so a re-delivered batch re-publishes them); another value is a conflict."""
        conflicts: list[tuple[Row, float]] = []
        if not rows:
            return WriteResult([], conflicts)
        payload, no_repeats = self._kernel.copy_rows(rows)
        if no_repeats:  # the usual batch
            unique = rows
        else:
            first: dict[tuple[str, str, datetime], Row] = {}
            for r in rows:
                key = r[:3]  # (station_id, metric, ts), as Row.key, without a property call
                prev = first.get(key)
                if prev is None:
                    first[key] = r
                elif prev.value != r.value:
                    conflicts.append((r, prev.value))
            unique = list(first.values())
            payload = self._kernel.copy_rows(unique)[0]
        try:
            with WRITE_SECONDS.time():
                return await self._write(unique, payload, conflicts)
        except asyncpg.CheckViolationError as exc:
            if "no partition" not in str(exc):
                raise DatabaseError(f"writing readings failed: {exc!r}") from exc
            # a partition this writer had seen was dropped (retention, elsewhere): look again
            self._partitions.forget()
            return await self._write(unique, payload, conflicts)

    async def _write(
        self, unique: list[Row], payload: bytes, conflicts: list[tuple[Row, float]]
    ) -> WriteResult:
        conflicts = list(conflicts)
        try:
            async with self._pool.acquire() as conn:
                if self._storage == "native":
                    await self._partitions.ensure(conn, {day_start(r.ts) for r in unique})
                async with conn.transaction():
                    stored = await _copy_new(conn, unique, payload)
                    if stored is None:  # some were stored before: row by row, first value wins
                        stored = await _insert_or_compare(conn, unique, conflicts)
                    if conflicts:
                        await conn.executemany(
                            """INSERT INTO ingest.reading_conflicts
                                   (station_id, metric, ts, kept_value, rejected_value, source)
                               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                            [
                                (r.station_id, r.metric, r.ts, kept, r.value, r.source)
                                for r, kept in conflicts
                            ],
                        )
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"writing readings failed: {exc!r}") from exc
        except asyncpg.CheckViolationError:
            raise
        except asyncpg.PostgresError as exc:
            raise DatabaseError(f"writing readings failed: {exc!r}") from exc
        return WriteResult(stored, conflicts)

    async def write_forecasts(self, rows: list[tuple[Row, datetime]]) -> None:
        if not rows:
            return
        try:
            await self._pool.executemany(
                """INSERT INTO ingest.forecasts
                       (station_id, metric, issued_at, ts, value, unit, source)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (station_id, metric, issued_at, ts) DO NOTHING""",
                [
                    (r.station_id, r.metric, issued, r.ts, r.value, r.unit, r.source)
                    for r, issued in rows
                ],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"writing forecasts failed: {exc!r}") from exc


async def _copy_new(conn: Conn, rows: list[Row], payload: bytes) -> list[Row] | None:
    """The fast path: the batch's binary COPY stream (made by the kernel), all or nothing (in a
    savepoint). ``None`` when a key was stored already, which happens after a re-delivery and
    hardly otherwise."""
    try:
        async with conn.transaction():
            await conn.copy_to_table(
                "readings",
                schema_name="ingest",
                columns=COLUMNS,
                # any buffer but bytes (which asyncpg would take for a file name); its stubs
                # know only files and iterables
                source=memoryview(payload),  # type: ignore[arg-type]
                format="binary",
            )
    except asyncpg.UniqueViolationError:
        return None
    return rows


async def _insert_or_compare(
    conn: Conn, unique: list[Row], conflicts: list[tuple[Row, float]]
) -> list[Row]:
    """Insert what is new; a repeat with the stored value counts as stored, another value is
    appended to ``conflicts``."""
    existing = await conn.fetch(
        """INSERT INTO ingest.readings
               (station_id, metric, ts, value, unit, quality, checks, source)
           SELECT s, m, t, v, u, q, string_to_array(c, ','), src
             FROM unnest($1::text[], $2::text[], $3::timestamptz[],
                         $4::float8[], $5::text[], $6::int2[], $7::text[],
                         $8::text[]) AS x(s, m, t, v, u, q, c, src)
           ON CONFLICT (station_id, metric, ts) DO NOTHING
           RETURNING station_id, metric, ts""",
        [r.station_id for r in unique],
        [r.metric for r in unique],
        [r.ts for r in unique],
        [r.value for r in unique],
        [r.unit for r in unique],
        [QUALITY_CODE[r.quality] for r in unique],
        [",".join(r.checks) for r in unique],
        [r.source for r in unique],
    )
    inserted = {(e["station_id"], e["metric"], e["ts"]) for e in existing}
    repeats = [r for r in unique if r.key not in inserted]
    stored = [r for r in unique if r.key in inserted]
    if repeats:
        kept = await conn.fetch(
            """SELECT r.station_id, r.metric, r.ts, r.value
                 FROM ingest.readings r
                 JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS x(s, m, t)
                   ON r.station_id = x.s AND r.metric = x.m AND r.ts = x.t""",
            [r.station_id for r in repeats],
            [r.metric for r in repeats],
            [r.ts for r in repeats],
        )
        kept_value = {(k["station_id"], k["metric"], k["ts"]): k["value"] for k in kept}
        for r in repeats:
            v = kept_value.get(r.key)
            if v is None or v == r.value:
                stored.append(r)
            else:
                conflicts.append((r, v))
    return stored
