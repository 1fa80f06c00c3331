"""Risk benchmarks.

1. The pure engine with a realistic pack mix (500 stations: rain gauges, weather stations, water
   levels, gas detectors, methane sensors), readings in time order. Baseline in the same run: the
   same stream through one plain threshold rule per station (the least an engine can do), so the
   ratio shows what windows, multi-level criteria and evidence cost.
2. A backtest over 90 days × 100 stations × 5-minute rainfall (2.6 M readings) stored in
   PostgreSQL, with the windows in SQL (the default) and replayed through the engine. Baseline in
   the same run: the gathering query alone (the arrays fetched, no engine).
"""

from __future__ import annotations

import gc
import random
import time
from datetime import UTC, date, datetime, timedelta

from services.ingest.app import MIGRATIONS as INGEST
from services.risk.adapters.backtest import run_backtest
from services.risk.domain.backtest import BacktestRequest
from services.risk.domain.engine import NoUpstream, StationPlan, StationState, evaluate_point
from services.risk.domain.packs import rules_for_station, shipped_packs
from services.risk.domain.thresholds import threshold_rules_from_attributes as thresholds
from shared.db import DailyPartitions, create_pool, migrate

T0 = datetime(2026, 6, 1, tzinfo=UTC)

MIX = [  # kind, metric, attributes, count, value generator
    ("rain_gauge", "rainfall", {}, 200, lambda r, i: max(0.0, r.gauss(1.0, 2.5))),
    ("weather_station", "wind_speed", {}, 100, lambda r, i: abs(r.gauss(8, 6))),
    (
        "water_level",
        "water_level",
        {"warning_level": 3.0, "guaranteed_level": 4.2, "historic_max": 5.1},
        100,
        lambda r, i: 2.5 + r.random() * 2.8,
    ),
    ("combustible_gas", "combustible_gas", {}, 50, lambda r, i: abs(r.gauss(5, 12))),
    ("coal_mine_methane", "ch4", {"position": "T1"}, 50, lambda r, i: abs(r.gauss(0.5, 0.4))),
]


def _stations():
    packs = list(shipped_packs().values())
    out = []
    for kind, metric, attrs, n, gen in MIX:
        rules = rules_for_station(packs, kind, attrs).rules
        simple = thresholds({"thresholds": {metric: {"blue": 1e9}}})
        for j in range(n):
            out.append(
                (f"{kind}-{j}", metric, StationPlan.build(rules), StationPlan.build(simple), gen)
            )
    return out


def _stream(stations, n_readings: int, seed: int = 7):
    rnd = random.Random(seed)
    per = n_readings // len(stations)
    pts = []
    for step in range(per):
        ts = T0.timestamp() + 300 * step
        for idx, (_sid, metric, _p, _s, gen) in enumerate(stations):
            pts.append((idx, metric, ts, gen(rnd, step)))
    return pts


def _run(stations, pts, which: int) -> tuple[float, int]:
    states = [StationState(sid, "110101001001") for sid, *_ in stations]
    plans = [s[2 + which] for s in stations]
    ctx = NoUpstream()
    events = 0
    gc.collect()
    t = time.perf_counter()
    for idx, metric, ts, value in pts:
        events += len(evaluate_point(plans[idx], states[idx], metric, ts, value, ctx))
    return time.perf_counter() - t, events


def engine(n_readings: int = 300_000) -> None:
    stations = _stations()
    pts = _stream(stations, n_readings)
    base_s, _ = _run(stations, pts, 1)
    pack_s, events = _run(stations, pts, 0)
    n = len(pts)
    print("## risk engine (pure, one core)")
    print(f"- stations {len(stations)}, readings {n:,}, events {events:,}")
    print(f"- baseline (one plain threshold per station): {n / base_s:,.0f} readings/s")
    print(
        f"- shipped packs (windows, multi-level, evidence): {n / pack_s:,.0f} readings/s "
        f"= {base_s / pack_s:.2f}× baseline; goal ≥ 100,000/s"
    )


async def backtest(dsn: str, days: int = 90, n_stations: int = 100) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        await migrate(pool, "ingest", INGEST, storage="native")
        await pool.executemany(
            """INSERT INTO ingest.stations (id, name, kind, region_code)
               VALUES ($1, $1, 'rain_gauge', '110101001001') ON CONFLICT DO NOTHING""",
            [(f"BT{i:03d}",) for i in range(n_stations)],
        )
        rnd = random.Random(3)
        start = T0
        async with pool.acquire() as conn:
            await DailyPartitions("ingest.readings").ensure(
                conn, {date(2026, 6, 1) + timedelta(days=d) for d in range(days + 1)}
            )
            t = time.perf_counter()
            steps = days * 288
            for i in range(n_stations):
                recs = []
                for s in range(steps):
                    v = (
                        max(0.0, rnd.gauss(0.3, 1.5))
                        if (s // 288) % 9
                        else max(0.0, rnd.gauss(3, 3))
                    )
                    recs.append(
                        (
                            f"BT{i:03d}",
                            "rainfall",
                            start + timedelta(minutes=5 * s),
                            v,
                            "mm",
                            0,
                            [],
                            "bench",
                        )
                    )
                await conn.copy_records_to_table(
                    "readings",
                    schema_name="ingest",
                    records=recs,
                    columns=[
                        "station_id",
                        "metric",
                        "ts",
                        "value",
                        "unit",
                        "quality",
                        "checks",
                        "source",
                    ],
                )
            load_s = time.perf_counter() - t
            await conn.execute("ANALYZE ingest.readings")
            end = start + timedelta(days=days)
            t = time.perf_counter()
            total = 0
            for i in range(n_stations):
                row = await conn.fetchrow(
                    """SELECT array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS t,
                              array_agg(value ORDER BY ts) AS v FROM ingest.readings
                        WHERE station_id = $1 AND metric = 'rainfall' AND ts > $2 AND ts <= $3""",
                    f"BT{i:03d}",
                    start - timedelta(hours=12),
                    end,
                )
                total += len(row["t"])
            gather_s = time.perf_counter() - t
        times = {}
        for mode in ("auto", "replay"):
            req = BacktestRequest.model_validate(
                {
                    "pack": "cma_meteorological",
                    "region": "110101",
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "include_events": False,
                    "mode": mode,
                }
            )
            t = time.perf_counter()
            res = await run_backtest(pool, req, region_prefix="110101")
            times[mode] = time.perf_counter() - t
        print(f"## risk backtest ({days} d × {n_stations} stations × 5 min)")
        print(
            f"- readings {res.readings:,} (loaded in {load_s:.1f} s), events "
            f"{sum(res.counts.values()):,} raises"
        )
        print(f"- baseline (gathering query alone): {gather_s:.2f} s for {total:,} readings")
        for mode, label in (("auto", "windows in SQL"), ("replay", "replayed in the engine")):
            print(
                f"- backtest, {label}: {times[mode]:.2f} s = {times[mode] / gather_s:.2f}× "
                "baseline; goal < 5 s"
            )
    finally:
        await pool.close()


async def run(dsn: str) -> None:
    engine()
    await backtest(dsn)
