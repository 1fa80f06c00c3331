"""The delivery worker against the local fake provider on a real port: retries with backoff on
provider errors, bounded attempts, permanent refusals not retried, idempotency key stable."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import aiohttp

from services.alerting.adapters.channels.http import WebhookChannel
from services.alerting.app import MIGRATIONS
from services.alerting.workers.delivery import DeliveryWorker, RetryPolicy
from shared.clock import ManualClock
from shared.db import create_pool, migrate
from shared.devstack.fakeproviders import Inbox, create_app
from shared.devstack.inprocess import serve
from tests.factories import add_warning

T0 = datetime(2026, 7, 1, tzinfo=UTC)


async def seed(pool, targets: list[str]) -> None:
    await add_warning(pool, "w1", identifier="ID1", sent=T0)
    for i, t in enumerate(targets):
        await pool.execute(
            """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel, target,
                   idempotency_key, next_attempt_at)
               VALUES ('w1', 1, $1, 'webhook', $2, $3, $4)""",
            f"r{i}",
            t,
            f"key-{i}",
            T0,
        )


async def test_retry_then_success_and_permanent_failure(database):

    pool = await create_pool(database)
    inbox = Inbox()
    inbox.fail_next = 2
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        async with serve(create_app(inbox)) as fake, aiohttp.ClientSession() as session:
            await seed(pool, [f"{fake}/webhook/ok", f"{fake}/no-such-path"])
            clock = ManualClock(T0)
            worker = DeliveryWorker(
                pool=pool,
                channels={"webhook": WebhookChannel(session)},
                clock=clock,
                policy=RetryPolicy(max_attempts=4, base_s=1, cap_s=10),
                rng=random.Random(1),
            )
            for _ in range(6):
                await worker.run_once()
                clock.advance(20)
            rows = {
                r["recipient"]: r
                for r in await pool.fetch(
                    "SELECT recipient, state, attempts, last_error FROM alerting.deliveries"
                )
            }
        # r0: two 503s, then accepted on the third attempt; delivered exactly once
        assert rows["r0"]["state"] == "sent"
        assert rows["r0"]["attempts"] == 3
        ok = [m for m in inbox.messages if m["name"] == "ok"]
        assert len(ok) == 1
        assert ok[0]["idempotency_key"] == "key-0"
        # r1: 404 is permanent, not retried
        assert rows["r1"]["state"] == "failed"
        assert rows["r1"]["attempts"] == 1
        assert "404" in rows["r1"]["last_error"]
    finally:
        await pool.close()


async def test_attempts_are_bounded_when_the_provider_stays_down(database):

    pool = await create_pool(database)
    inbox = Inbox()
    inbox.fail_next = 100
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        async with serve(create_app(inbox)) as fake, aiohttp.ClientSession() as session:
            await seed(pool, [f"{fake}/webhook/down"])
            clock = ManualClock(T0)
            worker = DeliveryWorker(
                pool=pool,
                channels={"webhook": WebhookChannel(session)},
                clock=clock,
                policy=RetryPolicy(max_attempts=3, base_s=1, cap_s=5),
                rng=random.Random(2),
            )
            for _ in range(10):
                await worker.run_once()
                clock.advance(60)
            row = await pool.fetchrow("SELECT state, attempts FROM alerting.deliveries")
        assert row["state"] == "failed"
        assert row["attempts"] == 3
        assert inbox.fail_next == 97
    finally:
        await pool.close()


def test_backoff_is_capped_and_jittered():
    p = RetryPolicy(max_attempts=10, base_s=1, cap_s=30)
    rng = random.Random(0)
    delays = [p.delay(a, rng) for a in range(1, 11)]
    assert all(0 <= d <= 30 for d in delays)
    assert max(delays) > 1


async def test_a_hanging_provider_holds_up_its_own_lane_only(database):
    """A webhook endpoint that does not answer keeps its round waiting; a WeCom robot message
    that becomes due meanwhile still goes out at once, from its own lane."""
    import asyncio

    import httpx
    from aiohttp import web

    from services.alerting.adapters.channels.http import WeComRobotChannel
    from services.alerting.adapters.ledger import lanes_for

    entered, release = asyncio.Event(), asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({"ok": True})

    hanging = web.Application()
    hanging.router.add_post("/hook", hang)
    runner = web.AppRunner(hanging)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    pool = await create_pool(database)
    inbox = Inbox()
    delivered = asyncio.Event()
    inbox.on_message = lambda _m: delivered.set()
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        async with (
            serve(create_app(inbox)) as fake,
            httpx.AsyncClient(timeout=60) as http,
            aiohttp.ClientSession() as session,
        ):
            await seed(pool, [f"http://127.0.0.1:{port}/hook"])
            worker = DeliveryWorker(
                pool=pool,
                channels={
                    "webhook": WebhookChannel(session),
                    "wecom_robot": WeComRobotChannel(http),
                },
                clock=ManualClock(T0),
                policy=RetryPolicy(),
                poll_s=0.05,
                lanes=lanes_for([["webhook"], ["wecom_robot"]]),
            )
            running = asyncio.create_task(worker.run())
            await asyncio.wait_for(entered.wait(), 30)  # the webhook's round is stuck
            await pool.execute(
                """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel,
                       target, idempotency_key, next_attempt_at)
                   VALUES ('w1', 1, 'robot', 'wecom_robot', $1, 'key-robot', $2)""",
                f"{fake}/cgi-bin/webhook/send?key=duty-room",
                T0,
            )
            worker.wake()
            await asyncio.wait_for(delivered.wait(), 30)
            states = dict(
                await pool.fetch("SELECT recipient, state FROM alerting.deliveries")  # type: ignore[arg-type]
            )
            assert states["r0"] == "sending"  # still waiting on the hanging endpoint
            assert [m["name"] for m in inbox.messages] == ["duty-room"]
            release.set()
            worker.stop()
            await asyncio.wait_for(running, 30)
        assert (
            await pool.fetchval("SELECT count(*) FROM alerting.deliveries WHERE state = 'sent'")
            == 2
        )
    finally:
        await pool.close()
        await runner.cleanup()
