"""Backtests with the windows in SQL give exactly the events of the engine's replay.

The SQL route returns only the rows where a signal crosses one of a rule's trigger or restore
values, and judges those alone. These tests run both routes over the same stored readings — random,
irregular, with gaps, late-arriving bad-quality rows, and sums that land exactly on a threshold —
and compare every event, value and time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.ingest.app import MIGRATIONS as INGEST
from services.risk.adapters.backtest import run_backtest
from services.risk.domain.backtest import BacktestRequest, sql_capable
from services.risk.domain.rules import parse_rules
from shared.db import create_pool, migrate
from tests.helpers import store_readings

T0 = datetime(2026, 7, 1, tzinfo=UTC)
DAYS = 6


def _atom(metric: str, agg: str, window: str | None, value: float, **kw: Any) -> dict[str, Any]:
    sig: dict[str, Any] = {"metric": metric, "agg": agg}
    if window:
        sig["window"] = window
    return {"signal": sig, "value": value, **kw}


RULES: list[dict[str, Any]] = [
    {  # sums over three windows, restore values below the triggers
        "id": "t.rain",
        "hazard": "rainstorm",
        "levels": {
            "blue": _atom("rainfall", "sum", "1h", 10, restore=6),
            "yellow": _atom("rainfall", "sum", "3h", 20, restore=15),
            "orange": {
                "any": [
                    _atom("rainfall", "sum", "3h", 30),
                    _atom("rainfall", "sum", "6h", 45, restore=40),
                ]
            },
            "red": {
                "all": [_atom("rainfall", "sum", "3h", 40), _atom("rainfall", "sum", "6h", 50)]
            },
        },
    },
    {  # mean and count over one window, and "at most": a falling reservoir level
        "id": "t.level",
        "hazard": "flood",
        "levels": {
            "blue": _atom("water_level", "avg", "2h", 3.0, restore=2.8),
            "yellow": {
                "all": [
                    _atom("water_level", "avg", "2h", 3.5),
                    _atom("water_level", "count", "2h", 6),
                ]
            },
        },
    },
    {
        "id": "t.low",
        "hazard": "drought",
        "levels": {
            "blue": _atom("water_level", "last", None, 2.4, op="<=", restore=2.6),
            "orange": _atom("water_level", "last", None, 2.1, op="<="),
        },
    },
    {  # not for SQL: a max window and a sustained condition, replayed by the engine
        "id": "t.peak",
        "hazard": "flood",
        "levels": {
            "blue": _atom("water_level", "max", "3h", 3.8),
            "red": {**_atom("water_level", "last", None, 4.0), "sustain": "30min"},
        },
    },
]


async def _load(pool: asyncpg.Pool, seed: int) -> None:
    await migrate(pool, "ingest", INGEST, storage="native")
    await pool.executemany(
        "INSERT INTO ingest.stations (id, name, kind, region_code) VALUES ($1, $1, $2, $3)",
        [(f"S{i}", "weather_station", f"11010100100{i}") for i in range(3)],
    )
    rnd = random.Random(seed)
    recs = []
    for i in range(3):
        t = T0 - timedelta(hours=8)
        level = 3.0
        while t < T0 + timedelta(days=DAYS):
            t += timedelta(seconds=rnd.choice([300, 300, 300, 240, 600, 3600]))
            storm = (t.hour // 6 + i) % 4 == 0
            rain = round(rnd.choice([0.0, 0.1, 0.2, 0.5, 1.0]) * (8 if storm else 1), 1)
            quality = 2 if rnd.random() < 0.02 else 0  # bad rows: never part of a window
            recs.append((f"S{i}", "rainfall", t, rain, "mm", quality, [], "t"))
            level = min(4.6, max(1.8, level + rnd.gauss(0, 0.12)))
            recs.append((f"S{i}", "water_level", t, round(level, 3), "m", 0, [], "t"))
    async with pool.acquire() as conn:
        await store_readings(conn, recs)


def _request(mode: str, **extra: Any) -> BacktestRequest:
    return BacktestRequest.model_validate(
        {
            "rules": RULES,
            "region": "110101",
            "from": (T0 + timedelta(hours=1)).isoformat(),
            "to": (T0 + timedelta(days=DAYS)).isoformat(),
            "mode": mode,
            **extra,
        }
    )


def test_which_rules_the_sql_route_takes():
    by_id = {r.rule_id: r for r in parse_rules(RULES)}
    assert sql_capable(by_id["t.rain"])
    assert sql_capable(by_id["t.level"])
    assert sql_capable(by_id["t.low"])
    assert not sql_capable(by_id["t.peak"])  # max window, sustain


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_windows_give_the_engine_replays_events(database, seed):
    pool = await create_pool(database)
    try:
        await _load(pool, seed)
        fast = await run_backtest(pool, _request("auto"), region_prefix="110101")
        slow = await run_backtest(pool, _request("replay"), region_prefix="110101")
    finally:
        await pool.close()
    assert (fast.rules_in_sql, fast.rules_replayed) == (9, 3)
    assert (slow.rules_in_sql, slow.rules_replayed) == (0, 12)
    # the data are rich enough for the comparison to mean something
    reached = {(e.rule_id, e.level) for e in slow.events}
    assert {("t.rain", "red"), ("t.rain", "blue"), ("t.level", "yellow")} <= reached
    assert {("t.low", "orange"), ("t.peak", "red")} <= reached
    assert any(e.change == "lowered" for e in slow.events)
    assert fast.events == slow.events
    assert fast.counts == slow.counts


async def test_a_sum_of_tenths_reaches_the_threshold_exactly(database):
    """500 tips of 0.1 mm are 50 mm: both routes raise at the 500th tip (a float running sum
    stops at 49.99999999999929 and never would)."""
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST, storage="native")
        await pool.execute(
            "INSERT INTO ingest.stations (id, name, kind, region_code) "
            "VALUES ('RG', 'RG', 'rain_gauge', '110101001001')"
        )
        async with pool.acquire() as conn:
            await store_readings(
                conn,
                [
                    ("RG", "rainfall", T0 + timedelta(seconds=20 * k), 0.1, "mm", 0, [], "t")
                    for k in range(1, 520)
                ],
            )
        rule = [
            {
                "id": "t.fifty",
                "hazard": "rainstorm",
                "levels": {"blue": _atom("rainfall", "sum", "12h", 50)},
            }
        ]
        results = []
        for mode in ("auto", "replay"):
            req = BacktestRequest.model_validate(
                {
                    "rules": rule,
                    "stations": ["RG"],
                    "from": T0.isoformat(),
                    "to": (T0 + timedelta(hours=12)).isoformat(),
                    "mode": mode,
                }
            )
            results.append(await run_backtest(pool, req, region_prefix="11"))
    finally:
        await pool.close()
    for res in results:
        assert [(e.level, e.ts, e.value) for e in res.events] == [
            ("blue", (T0 + timedelta(seconds=20 * 500)).isoformat(), 50.0)
        ]
