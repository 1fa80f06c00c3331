"""The backlog gauges read from a real database: the delivery ledger's undelivered rows and the
age of the oldest, and an outbox's unpublished events and their age — set while they wait, and
back to 0 once they have left, so an alert on them resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.alerting.app import MIGRATIONS as ALERTING
from services.alerting.workers.gauges import LedgerBacklog
from services.risk.app import MIGRATIONS as RISK
from shared.clock import ManualClock
from shared.db import create_pool, migrate
from shared.outbox import OutboxRelay, enqueue
from tests.factories import add_warning

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def add_row(pool, n: int, channel: str, state: str, created: datetime) -> None:
    await pool.execute(
        """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel, target,
               idempotency_key, next_attempt_at, state, created_at)
           VALUES ('w1', 1, $1, $2, 't', $3, $4, $5, $4)""",
        f"r{n}",
        channel,
        f"key-{n}",
        created,
        state,
    )


async def test_the_ledger_backlog_and_its_age(database):
    pool = await create_pool(database)
    try:
        await migrate(pool, "alerting", ALERTING)
        await add_warning(pool, "w1", identifier="ID1", sent=T0)
        await add_row(pool, 1, "sms", "pending", T0)
        await add_row(pool, 2, "sms", "sending", T0 + timedelta(minutes=5))
        await add_row(pool, 3, "webhook", "queued", T0 + timedelta(minutes=8))
        await add_row(pool, 4, "email", "held", T0 - timedelta(hours=1))  # waits on purpose
        await add_row(pool, 5, "sms", "sent", T0 - timedelta(hours=2))  # left long ago
        clock = ManualClock(T0 + timedelta(minutes=10))
        backlog = LedgerBacklog(["sms", "webhook", "voice"])
        await backlog.refresh(pool, clock)

        undelivered = "qianshao_ledger_undelivered"
        age = "qianshao_ledger_oldest_undelivered_age_seconds"
        assert gauge(undelivered, channel="sms", state="pending") == 1
        assert gauge(undelivered, channel="sms", state="sending") == 1
        assert gauge(undelivered, channel="webhook", state="queued") == 1
        assert gauge(undelivered, channel="email", state="held") == 1
        assert gauge(undelivered, channel="voice", state="pending") == 0  # configured, idle
        assert gauge(age, channel="sms") == 600.0  # the pending row, not the newer one
        assert gauge(age, channel="webhook") == 120.0
        assert gauge(age, channel="email") is None  # held rows are not counted as stuck
        assert gauge(age, channel="voice") == 0.0

        await pool.execute("UPDATE alerting.deliveries SET state = 'sent' WHERE channel = 'sms'")
        await backlog.refresh(pool, clock)
        assert gauge(undelivered, channel="sms", state="pending") == 0
        assert gauge(undelivered, channel="sms", state="sending") == 0
        assert gauge(age, channel="sms") == 0.0
        assert gauge(age, channel="webhook") == 120.0
    finally:
        await pool.close()


class RefusingProducer:
    """A broker that is down: every send fails as the real producer's does."""

    async def send_many(self, topic: str, items: list[tuple[str, bytes]]) -> None:
        raise OSError("broker unreachable")


async def test_an_outbox_that_stops_relaying_shows_its_age(database):
    pool = await create_pool(database)
    try:
        await migrate(pool, "risk", RISK)
        async with pool.acquire() as conn:
            await enqueue(conn, "risk", [("e1", "risk.events.v1", "WL1", {"n": 1})])
            await enqueue(conn, "risk", [("e2", "risk.events.v1", "WL1", {"n": 2})])
        await pool.execute("UPDATE risk.outbox SET created_at = now() - interval '5 minutes'")
        relay = OutboxRelay(pool, "risk", RefusingProducer())  # type: ignore[arg-type]
        with pytest.raises(OSError, match="broker unreachable"):
            await relay.relay_once()
        await relay.measure()
        assert gauge("qianshao_outbox_unpublished_events", schema="risk") == 2
        oldest = gauge("qianshao_outbox_oldest_unpublished_age_seconds", schema="risk")
        assert oldest is not None
        assert 299 < oldest < 400

        await pool.execute("UPDATE risk.outbox SET published_at = now()")
        await relay.measure()
        assert gauge("qianshao_outbox_unpublished_events", schema="risk") == 0
        assert gauge("qianshao_outbox_oldest_unpublished_age_seconds", schema="risk") == 0
    finally:
        await pool.close()
