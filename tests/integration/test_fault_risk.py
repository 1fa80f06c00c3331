"""Fault injection on the risk service: two replicas share readings.v1 by station key, and each is
killed with SIGKILL once while the stream flows. Afterwards:

- the station events on risk.events.v1 are exactly those the pure engine gives for each station's
  readings (none lost, none doubled: one event id per level change, whatever the wire repeated);
- every region's stored level is the roll-up of its stations' final levels;
- both replicas did part of the work."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.ingest.app import MIGRATIONS as INGEST
from services.risk.domain.engine import ReadingIn, StationPlan, StationState, evaluate
from services.risk.domain.packs import rules_for_station, shipped_packs
from shared.contracts import Level, Reading, stable_id
from shared.db import create_pool, migrate
from shared.devstack.procs import free_port
from tests.helpers import eventually
from tests.kafka_util import produce, read_all
from tests.procs import start_service, stop, wait_ready

T0 = datetime(2026, 7, 1, tzinfo=UTC)
STATIONS = [(f"RG{i:02d}", f"1101010{i % 3 + 1:02d}{i % 4 + 1:03d}") for i in range(24)]
STEPS = 96  # 8 h of 5-minute rainfall


def rainfall(seed: int) -> list[float]:
    """A storm of random strength and length, then dry hours: raises, then lowers and clears."""
    rnd = random.Random(seed)
    start, length, scale = rnd.randint(2, 12), rnd.randint(18, 40), rnd.uniform(1.0, 4.5)
    return [
        round(rnd.uniform(0.5, 1.5) * scale, 1) if start <= s < start + length else 0.0
        for s in range(STEPS)
    ]


def stream() -> list[tuple[int, str, str, float]]:
    """(step, station, region, value) in time order."""
    rains = {sid: rainfall(i) for i, (sid, _) in enumerate(STATIONS)}
    return [(s, sid, reg, rains[sid][s]) for s in range(STEPS) for sid, reg in STATIONS]


def expected() -> tuple[Counter[tuple[str, str, str, str, str]], dict[tuple[str, str], int]]:
    """The pure engine over each station's readings: its events, and the final rule levels."""
    rules = rules_for_station(list(shipped_packs().values()), "rain_gauge", {}).rules
    plan = StationPlan.build(rules)
    states = {sid: StationState(sid, reg) for sid, reg in STATIONS}
    out: Counter[tuple[str, str, str, str, str]] = Counter()
    for step, sid, reg, v in stream():
        ts = T0 + timedelta(minutes=5 * step)
        r = ReadingIn(sid, reg, "rainfall", ts, v, "good", stable_id(sid, ts), "observation")
        for c in evaluate(plan, states[sid], r, ts)[1]:
            out[(sid, c.rule.rule_id, c.previous.name, c.level.name, c.event_time.isoformat())] += 1
    final = {
        (sid, r.rule_id): int(st.rule(r.rule_id).level) for sid, st in states.items() for r in rules
    }
    return out, final


def message(step: int, sid: str, reg: str, value: float) -> tuple[str, bytes]:
    ts = T0 + timedelta(minutes=5 * step)
    ev = Reading(
        event_id=stable_id(sid, "rainfall", ts),
        produced_at=ts,
        station_id=sid,
        region_code=reg,
        station_kind="rain_gauge",
        metric="rainfall",
        ts=ts,
        value=value,
        unit="mm",
        source="test",
    )
    return sid, ev.model_dump_json().encode()


async def consumed(url: str, topic: str) -> float:
    async with httpx.AsyncClient(timeout=5) as c:
        text = (await c.get(f"{url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("qianshao_consumer_messages_total{") and f'topic="{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_replicas_killed_mid_stream_lose_and_double_no_event(
    database, broker, topic_prefix
):
    want, final_levels = expected()
    assert len(want) >= 2 * len(STATIONS)  # rich enough: raises and lowers at every station
    assert {k[3] for k in want} >= {"blue", "yellow", "orange", "red"}
    async with await create_pool(database) as pool:
        await migrate(pool, "ingest", INGEST, storage="native")
        await pool.executemany(
            """INSERT INTO ingest.stations (id, name, kind, region_code, interval_s)
               VALUES ($1, $1, 'rain_gauge', $2, 300)""",
            STATIONS,
        )
        events = await run_replicas_with_kills(database, broker, topic_prefix, sum(want.values()))
        stored = {
            (r["station_id"], r["rule_id"]): r["level"]
            for r in await pool.fetch("SELECT station_id, rule_id, level FROM risk.rule_state")
        }
        rows = await pool.fetch(
            """SELECT r.region_code, r.hazard, r.level,
                      coalesce((SELECT max(s.level) FROM risk.rule_state s
                                 WHERE s.hazard = r.hazard
                                   AND s.region_code LIKE left(r.region_code, CASE r.admin_level
                                       WHEN 'county' THEN 6 WHEN 'township' THEN 9 ELSE 12 END)
                                       || '%'), 0) AS stations
                 FROM risk.region_level r"""
        )
    by_id = {e["event_id"]: e for e in events}
    got = Counter(
        (
            e["station_id"],
            e["rule_id"],
            e["previous_level"],
            e["level"],
            datetime.fromisoformat(e["event_time"]).isoformat(),
        )
        for e in by_id.values()
    )
    assert got == want  # none lost, none doubled (a repeat on the wire carries the same id)
    # the stored picture: each station's final levels, and each region the most severe of them
    assert stored == final_levels
    region = dict(STATIONS)
    villages = {region[k[0]] for k in want}
    touched = villages | {v[:9] + "000" for v in villages} | {v[:6] + "000000" for v in villages}
    assert {r["region_code"] for r in rows} == touched
    assert all(r["level"] == r["stations"] for r in rows), [dict(r) for r in rows]
    assert {Level(r["level"]) for r in rows} - {Level.none}  # the picture is not all clear


async def run_replicas_with_kills(
    database: str, broker: Any, topic_prefix: str, n_events: int
) -> list[dict[str, Any]]:
    """Two replicas; SIGKILL each once mid-stream; the station events published in the end."""
    readings_topic = f"{topic_prefix}readings.v1"
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]

    def env(port: int) -> dict[str, str]:
        return {
            **os.environ,
            "QIANSHAO_RISK_DATABASE_URL": database,
            "QIANSHAO_RISK_KAFKA_BOOTSTRAP": broker.bootstrap,
            "QIANSHAO_RISK_TOPIC_PREFIX": topic_prefix,
            "QIANSHAO_RISK_CONSUMER_GROUP": f"{topic_prefix}risk",
            "QIANSHAO_RISK_PORT": str(port),
            "QIANSHAO_RISK_NODATA_SWEEP_S": "0",
            "QIANSHAO_RISK_OUTBOX_POLL_S": "0.2",
            "QIANSHAO_RISK_LOG_LEVEL": "WARNING",
        }

    def station_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # level changes (the standing announcements, running here too, repeat them by design)
        return [
            e
            for e in events
            if e.get("scope") == "station"
            and e.get("kind") == "level"
            and e.get("change") != "standing"
        ]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for p, u in zip(ports, urls, strict=True):
            procs.append(start_service("risk", env(p)))
            await wait_ready(u, "risk")
        msgs = [message(*x) for x in stream()]
        size = 8 * len(STATIONS)
        for n, i in enumerate(range(0, len(msgs), size)):
            if n in (4, 8):  # SIGKILL one replica, then the other, and start each again
                victim = 0 if n == 4 else 1
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(10)
                procs[victim] = start_service("risk", env(ports[victim]))
            await produce(broker.bootstrap, readings_topic, msgs[i : i + size])
            await asyncio.sleep(0.4)
        await wait_ready(urls[1], "risk")

        async def all_published() -> bool:
            got = station_events(await read_all(broker.bootstrap, f"{topic_prefix}risk.events.v1"))
            return len({e["event_id"] for e in got}) >= n_events

        await eventually(all_published, timeout_s=180, interval_s=1, what="every risk event")
        # both replicas of the last generation consume: feed readings of stations that are not in
        # the registry (consumed, then ignored) on many keys until each replica has had some
        extra = 0

        async def both_work() -> bool:
            nonlocal extra
            if min([await consumed(u, readings_topic) for u in urls]) > 0:
                return True
            extra += 1
            await produce(
                broker.bootstrap,
                readings_topic,
                [message(extra, f"UNKNOWN{k}", "110101001001", 1.0) for k in range(12)],
            )
            return False

        await eventually(both_work, timeout_s=90, interval_s=2, what="both replicas consuming")
        await asyncio.sleep(2)
        return station_events(await read_all(broker.bootstrap, f"{topic_prefix}risk.events.v1"))
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
