"""Fault injection on alerting: a red warning fans out to 3,000 people by SMS through a slow
provider while the alerting process is killed with SIGKILL again and again, at random moments,
then restarted. Afterwards every person has received the warning exactly once, and the ledger
says "sent" for each of them.

A kill can land between the provider taking a batch and the ledger recording it; the restarted
process then finds rows still leased under a named request and asks the provider about that
request before sending anything (the stand-in answers the real status-query shapes).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from services.alerting.adapters.publications import BROADCAST_BATCH, broadcast
from shared.contracts import Topics
from shared.db import create_pool
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
    SmsState,
)
from shared.devstack.inprocess import serve
from shared.devstack.procs import free_port
from tests.helpers import eventually
from tests.integration.test_call_confirm import risk_event
from tests.kafka_util import produce
from tests.procs import start_service, stop, wait_ready

PEOPLE = 3000
KILLS = 4


def env(database: str, bootstrap: str, prefix: str, port: int, fake: str) -> dict[str, str]:
    p = "QIANSHAO_ALERTING_"
    return {
        **os.environ,
        f"{p}DATABASE_URL": database,
        f"{p}KAFKA_BOOTSTRAP": bootstrap,
        f"{p}TOPIC_PREFIX": prefix,
        f"{p}CONSUMER_GROUP": f"{prefix}alerting",
        f"{p}PORT": str(port),
        f"{p}LOG_LEVEL": "WARNING",
        f"{p}DELIVERY_POLL_S": "0.05",
        f"{p}DELIVERY_CONCURRENCY": "4",
        f"{p}LEASE_S": "2",
        f"{p}AMBIGUOUS_WAIT_S": "1",
        f"{p}RETRY_BASE_S": "0.2",
        f"{p}RETRY_CAP_S": "1",
        f"{p}ALIYUN_ENDPOINT": f"{fake}/aliyun/",
        f"{p}ALIYUN_ACCESS_KEY_ID": ALIYUN_KEY_ID,
        f"{p}ALIYUN_ACCESS_KEY_SECRET": ALIYUN_SECRET,
        f"{p}ALIYUN_TEMPLATE_CODE": "SMS_0001",
        f"{p}TENCENT_ENDPOINT": f"{fake}/tencent/",
        f"{p}TENCENT_SECRET_ID": TENCENT_SECRET_ID,
        f"{p}TENCENT_SECRET_KEY": TENCENT_SECRET_KEY,
        f"{p}TENCENT_SDK_APP_ID": "1400000001",
        f"{p}TENCENT_TEMPLATE_ID": "100001",
    }


Kill = Callable[[random.Random, Callable[[], Awaitable[int]]], Awaitable[int]]


@asynccontextmanager
async def alerting_under_faults(
    database: str, broker: Any, topic_prefix: str, sms: SmsState
) -> AsyncIterator[tuple[Any, Kill]]:
    """The stand-in providers and an alerting process; yields a pool and ``kill``, which
    SIGKILLs the newest alerting process at random moments and starts another, up to KILLS
    times or until nothing was waiting just before a kill, and returns how many kills landed."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pool = await create_pool(database)
    procs: list[subprocess.Popen[bytes]] = []

    async def kill(rnd: random.Random, waiting: Callable[[], Awaitable[int]]) -> int:
        kills = 0
        while kills < KILLS:
            await asyncio.sleep(rnd.uniform(0.2, 1.2))
            left = await waiting()
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
            kills += 1
            procs.append(start_service("alerting", e))
            await wait_ready(url, "alerting")
            if not left:
                break
        return kills

    try:
        async with serve(fake_app(sms=sms)) as fake:
            e = env(database, broker.bootstrap, topic_prefix, port, fake)
            procs.append(start_service("alerting", e))
            await wait_ready(url, "alerting")
            yield pool, kill
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        await pool.close()


async def test_kill_9_during_a_fan_out_sends_each_person_exactly_once(
    database, broker, topic_prefix
):
    rnd = random.Random(20261124)
    sms = SmsState()
    sms.aliyun.slow_s = 0.25  # batches are in flight when the kills land
    async with alerting_under_faults(database, broker, topic_prefix, sms) as (pool, kill):
        await pool.execute(
            """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
               SELECT '村干部' || i, 'village_cadre', r, r, (13900000000 + i)::text
                 FROM generate_series(1, $1) AS i,
                      LATERAL (SELECT '110101001' || lpad((i % 400 + 1)::text, 3, '0'))
                              AS x(r)""",
            PEOPLE,
        )
        await produce(
            broker.bootstrap,
            Topics(topic_prefix).risk_events,
            [("RG1", risk_event(1, "red", "none", datetime.now(UTC)))],
        )

        async def sending_started() -> bool:
            return sum(sms.received.values()) > 0

        await eventually(sending_started, what="the fan-out under way")
        kills = await kill(
            rnd,
            lambda: pool.fetchval(
                """SELECT count(*) FROM alerting.deliveries
                    WHERE channel = 'sms' AND state IN ('pending', 'sending')"""
            ),
        )

        async def all_sent() -> bool:
            n = await pool.fetchval(
                """SELECT count(*) FROM alerting.deliveries
                    WHERE channel = 'sms' AND state = 'sent'"""
            )
            return n == PEOPLE

        await eventually(all_sent, timeout_s=120, what="every SMS sent")
        per_number = sms.per_number()
        assert len(per_number) == PEOPLE
        doubled = {n: c for n, c in per_number.items() if c != 1}
        assert doubled == {}
        assert await pool.fetchval("SELECT count(*) FROM alerting.warning_versions") == 1
        # the kills did land mid-fan-out: some rows needed more than one attempt
        assert kills >= 2
        retried = await pool.fetchval(
            "SELECT count(*) FROM alerting.deliveries WHERE channel = 'sms' AND attempts > 1"
        )
        assert retried > 0


RESIDENTS = 4000


async def test_kill_9_during_a_resident_broadcast_sends_each_number_exactly_once(
    database, broker, topic_prefix
):
    """The broadcast's rows are queued in batches claimed whole: a kill can land between the
    provider taking a batch and the ledger recording it, and the restarted process asks the
    provider under the batch's request names first. Numbers the provider refuses leave their
    batch for the ordinary retry path and end failed, never sent."""
    rnd = random.Random(20261125)
    sms = SmsState()
    sms.aliyun.slow_s = 0.25
    bad = {str(15000000000 + i) for i in (7, 1999, 3001)}
    sms.aliyun.bad_numbers = set(bad)
    sms.tencent.bad_numbers = set(bad)
    async with alerting_under_faults(database, broker, topic_prefix, sms) as (pool, kill):
        await pool.execute(
            """INSERT INTO alerting.residents (region_code, phone)
               SELECT '110101001' || lpad((i % 50 + 1)::text, 3, '0'), (15000000000 + i)::text
                 FROM generate_series(0, $1 - 1) AS i""",
            RESIDENTS,
        )
        now = datetime.now(UTC)
        await pool.execute(
            """INSERT INTO alerting.warnings
                   (id, hazard, region_code, level, state, kind, identifier)
               VALUES ('w-public', 'flood', '110101001000', 4, 'issued', 'public', 'T_1')"""
        )
        await pool.execute(
            """INSERT INTO alerting.warning_versions (warning_id, version, msg_type, level,
                   identifier, sent, headline, description, station_ids, cause_event)
               VALUES ('w-public', 1, 'Alert', 4, 'T_1', $1, '清河镇发布暴雨红色预警（I级）',
                       '全镇启动防汛应急响应。', '{RG1}', 'test')""",
            now,
        )
        async with pool.acquire() as conn, conn.transaction():
            n = await broadcast(
                conn,
                warning_id="w-public",
                version=1,
                areas=["110101001000"],
                drill=False,
                now=now,
            )
        assert n == RESIDENTS
        batches = await pool.fetchval("SELECT count(*) FROM alerting.delivery_batches")
        assert batches == RESIDENTS // BROADCAST_BATCH
        async with pool.acquire() as conn, conn.transaction():  # a second approval: no-op
            again = await broadcast(
                conn,
                warning_id="w-public",
                version=1,
                areas=["110101001000"],
                drill=False,
                now=now,
            )
        assert again == 0

        async def sending_started() -> bool:
            return sum(sms.received.values()) > 0

        await eventually(sending_started, what="the broadcast under way")
        kills = await kill(
            rnd,
            lambda: pool.fetchval(
                """SELECT count(*) FROM alerting.delivery_batches
                    WHERE state IN ('pending', 'sending')"""
            ),
        )

        async def settled() -> bool:
            open_rows = await pool.fetchval(
                """SELECT count(*) FROM alerting.deliveries
                    WHERE state IN ('queued', 'pending', 'sending')"""
            )
            open_batches = await pool.fetchval(
                "SELECT count(*) FROM alerting.delivery_batches WHERE state <> 'done'"
            )
            return open_rows == 0 and open_batches == 0

        await eventually(settled, timeout_s=120, what="every batch done")
        per_number = sms.per_number()
        assert set(per_number) == {str(15000000000 + i) for i in range(RESIDENTS)} - bad
        assert {k: c for k, c in per_number.items() if c != 1} == {}
        states = dict(
            await pool.fetch("SELECT state, count(*) FROM alerting.deliveries GROUP BY state")
        )
        assert states == {"sent": RESIDENTS - len(bad), "failed": len(bad)}
        failed = await pool.fetch("SELECT target FROM alerting.deliveries WHERE state = 'failed'")
        assert {r["target"] for r in failed} == bad
        # the kills did land mid-broadcast: some batches were claimed more than once
        assert kills >= 2
        assert await pool.fetchval(
            "SELECT count(*) FROM alerting.delivery_batches WHERE attempts > 1"
        )
