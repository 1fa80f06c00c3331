"""The console's live updates: what alerting's NOTIFY triggers (migration 0015_live.sql) cost the
statements the storm path runs most.

Each round writes the way the pipeline and the delivery lanes do, a batch of 200 at a time:
warnings inserted and then updated (a new version), their ledger rows (five per warning)
inserted, claimed (pending → sending) and marked sent. A connection listens on the channel, as
the gateway does, and counts what it hears.

Baseline in the same run: the same statements on a second database with the triggers disabled
(``ALTER TABLE … DISABLE TRIGGER USER``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import asyncpg

from bench.scratch import scratch_database
from services.alerting.app import MIGRATIONS as ALERTING
from shared.db import create_pool, migrate

WARNINGS, PER_WARNING, BATCH, ROUNDS = 4_000, 5, 200, 3
TABLES = ("warnings", "warning_requests", "publications", "confirm_tasks", "deliveries")


async def _round(pool: asyncpg.Pool, tag: str) -> dict[str, float]:
    """Seconds per statement kind for one round over fresh rows."""
    spent = {
        "insert warnings": 0.0,
        "update warnings": 0.0,
        "insert ledger": 0.0,
        "claim": 0.0,
        "mark sent": 0.0,
    }
    ids = [f"{tag}-{i:06d}" for i in range(WARNINGS)]
    for start in range(0, WARNINGS, BATCH):
        batch = ids[start : start + BATCH]
        # one open warning per (hazard, region): a region per warning, a hazard per round
        regions = [f"5111{i:08d}" for i in range(start, start + len(batch))]
        async with pool.acquire() as conn:
            t = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO alerting.warnings (id, hazard, region_code, level, state,
                                                      identifier)
                       SELECT w, $3, r, 4, 'issued', w
                         FROM unnest($1::text[], $2::text[]) AS u(w, r)""",
                    batch,
                    regions,
                    f"rainstorm-{tag}",
                )
            spent["insert warnings"] += time.perf_counter() - t
            t = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    """UPDATE alerting.warnings SET version = version + 1, state = 'updated'
                        WHERE id = ANY($1::text[])""",
                    batch,
                )
            spent["update warnings"] += time.perf_counter() - t
            t = time.perf_counter()
            async with conn.transaction():
                rows = await conn.fetch(
                    """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel,
                                                        target, idempotency_key)
                       SELECT w, 2, 'p' || n, 'sms', '1380000' || lpad(n::text, 4, '0'),
                              w || ':' || n
                         FROM unnest($1::text[]) AS w, generate_series(1, $2) AS n
                       RETURNING id""",
                    batch,
                    PER_WARNING,
                )
            spent["insert ledger"] += time.perf_counter() - t
            row_ids = [r["id"] for r in rows]
            for kind, state in (("claim", "sending"), ("mark sent", "sent")):
                t = time.perf_counter()
                for at in range(0, len(row_ids), BATCH):
                    await conn.execute(
                        "UPDATE alerting.deliveries SET state = $2 WHERE id = ANY($1::bigint[])",
                        row_ids[at : at + BATCH],
                        state,
                    )
                spent[kind] += time.perf_counter() - t
    return spent


async def _measure(dsn: str, live: bool) -> tuple[dict[str, float], int]:
    pool = await create_pool(dsn, max_size=4)
    heard = 0

    def count(*_: Any) -> None:
        nonlocal heard
        heard += 1

    listener = await asyncpg.connect(dsn)
    try:
        await migrate(pool, "alerting", ALERTING)
        if not live:
            for table in TABLES:
                await pool.execute(f"ALTER TABLE alerting.{table} DISABLE TRIGGER USER")
        await listener.add_listener("qianshao_live", count)
        await _round(pool, "warm")  # plans and caches
        runs = [await _round(pool, f"r{n}") for n in range(ROUNDS)]
        await asyncio.sleep(0.2)
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}, heard
    finally:
        await listener.close()
        await pool.close()


async def _run(admin_dsn: str) -> dict[str, float]:
    async with scratch_database(admin_dsn, "live_on") as on_dsn:
        on, heard = await _measure(on_dsn, live=True)
    async with scratch_database(admin_dsn, "live_off") as off_dsn:
        off, silent = await _measure(off_dsn, live=False)
    rows = WARNINGS * PER_WARNING
    print(
        f"## live updates: the NOTIFY triggers on {WARNINGS:,} warnings and {rows:,} ledger rows "
        f"a round, batches of {BATCH} (median of {ROUNDS} rounds)\n"
    )
    print("| statements | triggers off (baseline) | triggers on | ratio |")
    print("|---|---|---|---|")
    out: dict[str, float] = {}
    for kind in on:
        ratio = on[kind] / off[kind] if off[kind] else float("nan")
        out[f"{kind} ratio"] = ratio
        print(f"| {kind} | {off[kind] * 1000:,.0f} ms | {on[kind] * 1000:,.0f} ms | {ratio:.2f}× |")
    total_on, total_off = sum(on.values()), sum(off.values())
    out["total ratio"] = total_on / total_off
    print(
        f"| all | {total_off * 1000:,.0f} ms | {total_on * 1000:,.0f} ms | "
        f"{total_on / total_off:.2f}× |\n"
    )
    print(
        f"notifications heard: {heard:,} with the triggers on (one per statement that changed "
        f"something worth telling), {silent} with them off\n"
    )
    return out


async def run(admin_dsn: str) -> dict[str, float]:
    return await _run(admin_dsn)
