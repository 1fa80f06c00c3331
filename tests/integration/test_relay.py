"""Upstream warnings relayed: the weather service's warning on ``warnings.upstream.v1`` reaches
the people in scope and the endpoints subscribed, named as the sender's and never issued as ours;
a repeat, a test message and a drill are handled as they should be."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from services.alerting.app import create_app as alerting_app
from services.alerting.domain.relay import hazard_of
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.devstack.fakeproviders import Inbox
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from tests.helpers import eventually
from tests.integration.test_call_confirm import admin, settings
from tests.kafka_util import produce, read_all


def upstream(identifier: str, status: str = "Actual", region: str = "110101") -> bytes:
    now = datetime.now(UTC)
    return orjson.dumps(
        {
            "event_id": f"up-{identifier}",
            "produced_at": now.isoformat(),
            "identifier": identifier,
            "sender": "北京市气象台",
            "sent": now.isoformat(),
            "msg_type": "Alert",
            "status": status,
            "event": "暴雨",
            "level": "orange",
            "region_codes": [region],
            "headline": "北京市气象台发布暴雨橙色预警信号",
        }
    )


def test_hazard_names():
    assert hazard_of("暴雨") == "rainstorm"
    assert hazard_of("暴雨橙色预警信号") == "rainstorm"
    assert hazard_of("Forest Fire") == "forest_fire"
    assert hazard_of("沙尘暴") == "upstream"


async def test_upstream_warning_relayed_as_the_senders(database, broker, topic_prefix):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    inbox = Inbox()
    async with serve(fake_app(inbox, sms=sms)) as fake:
        app = alerting_app(settings(database, broker, topic_prefix, fake), clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            for body in (
                {
                    "name": "村干部",
                    "role": "village_cadre",
                    "region_code": "110101001001",
                    "phone": "13400000001",
                },
                {
                    "name": "演练员",
                    "role": "village_cadre",
                    "region_code": "110101001002",
                    "phone": "13400000002",
                    "drill": True,
                },
                {
                    "name": "外县",
                    "role": "village_cadre",
                    "region_code": "110102001001",
                    "phone": "13400000003",
                },
            ):
                assert (
                    await http.post("/v1/persons", json=body, headers=admin(clock))
                ).status_code == 201
            r = await http.post(
                "/v1/subscriptions",
                json={
                    "name": "county",
                    "channel": "webhook",
                    "target": f"{fake}/webhook/county",
                    "region_prefix": "110101",
                },
                headers=admin(clock),
            )
            assert r.status_code == 201
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.warnings_upstream,
                [
                    ("a", upstream("CMA-1")),
                    ("a", upstream("CMA-1")),  # the same message again
                    ("b", upstream("CMA-TEST", status="Test")),
                    ("c", upstream("CMA-DRILL", status="Exercise")),
                    ("d", b"not json"),
                ],
            )

            async def relayed() -> Any:
                per = sms.per_number()
                return per if len(per) == 2 and len(inbox.messages) == 2 else None

            per = await eventually(relayed, what="the relay")
            # the actual warning to both in the county (the drill one too), the drill to the
            # drill recipient only; the other county, the test message: nothing
            assert per == {"13400000001": 1, "13400000002": 2}
            texts = sorted(t["text"] for t in sms.texts)
            assert texts[0].startswith("【应急管理局】【演练】【转发·北京市气象台发布】")
            assert (
                texts[1]
                == "【应急管理局】【转发·北京市气象台发布】北京市气象台发布暴雨橙色预警信号"
            )
            # endpoints get both, the drill marked Exercise as our own drills are
            hooks = {m["body"]["identifier"]: m["body"] for m in inbox.messages}
            assert {i: h["status"] for i, h in hooks.items()} == {
                "CMA-1": "Actual",
                "CMA-DRILL": "Exercise",
            }
            assert hooks["CMA-1"]["relayed_from"] == "北京市气象台"
            # never issued as ours: no warning, nothing on alerts.v1
            assert (await http.get("/v1/warnings", headers=admin(clock))).json() == []
            assert await read_all(broker.bootstrap, topics.alerts) == []
            dlq = await read_all(broker.bootstrap, f"{topics.warnings_upstream}.dlq")
            assert len(dlq) == 1


async def test_an_earthquake_early_warning_goes_ahead_of_everything(database, monkeypatch):
    """The fast path: an upstream earthquake early warning is relayed at once (the relay path
    has no group wait, approval or storm hold), to the residents of its area too (no approval),
    its ledger rows go ahead of every other row waiting, even ones written before it, and the
    pre-authorised policy is audited."""
    from datetime import timedelta

    from services.alerting.adapters import ledger
    from services.alerting.adapters.publications import broadcast_part
    from services.alerting.app import MIGRATIONS
    from services.alerting.pipeline import relay as relay_module
    from services.alerting.pipeline.relay import relay, relay_to_residents
    from shared.contracts import UpstreamWarning
    from shared.db import create_pool, migrate
    from tests.factories import add_person

    def warning(identifier: str, event: str, headline: str) -> UpstreamWarning:
        return UpstreamWarning.model_validate_json(upstream(identifier)).model_copy(
            update={"event": event, "headline": headline, "level": "red"}
        )

    now = datetime.now(UTC)
    pool = await create_pool(database)
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        await pool.execute(
            """INSERT INTO alerting.residents (region_code, phone)
               SELECT '110101001001', (15100000000 + i)::text FROM generate_series(1, 250) AS i
               UNION ALL SELECT '120101001001', '15200000000'"""
        )
        async with pool.acquire() as conn, conn.transaction():
            await add_person(conn, name="村干部", region_code="110101001001", phone="13400000009")
            # a rainstorm relayed first, then the earthquake: its people at once
            assert await relay(conn, [warning("RAIN-1", "暴雨", "暴雨红色预警")], now) == 1
            assert (
                await relay(conn, [warning("EQ-1", "地震预警", "地震预警：预计烈度6度")], now) == 1
            )
        # then its residents, part by part, each part handed over as it commits
        parts: list[int] = []

        def handed() -> None:
            parts.append(1)

        monkeypatch.setattr(relay_module, "FIRST_PART", 100)
        monkeypatch.setattr(relay_module, "PART", 120)
        # a crash cut the broadcast short after its first 40 residents: the message is re-delivered
        async with pool.acquire() as conn, conn.transaction():
            text = await conn.fetchval("SELECT text FROM alerting.relayed WHERE identifier='EQ-1'")
            await broadcast_part(
                conn,
                warning_id="relay:EQ-1",
                version=1,
                areas=["110101000000"],
                drill=False,
                now=now,
                priority=-1,
                message=text,
                limit=40,
            )
        assert await relay_to_residents(pool, ["RAIN-1", "EQ-1"], now, handed) == 210
        assert len(parts) == 3  # 100 (60 new), 120, then 30 (the other county's is not theirs)
        # a re-delivery finds nothing left to write
        assert await relay_to_residents(pool, ["EQ-1"], now, handed) == 0
        rows = {
            (r["warning_id"], r["state"], r["priority"], r["message"]): r["n"]
            for r in await pool.fetch(
                """SELECT warning_id, state, priority, message, count(*) AS n
                     FROM alerting.deliveries GROUP BY 1, 2, 3, 4"""
            )
        }
        eq_text = "【转发·北京市气象台发布】地震预警：预计烈度6度"
        assert rows == {
            ("relay:RAIN-1", "pending", 0, "【转发·北京市气象台发布】暴雨红色预警"): 1,
            ("relay:EQ-1", "pending", -1, eq_text): 1,
            # the residents of its area, queued in provider requests
            ("relay:EQ-1", "queued", -1, eq_text): 250,
        }
        batches = await pool.fetch("SELECT priority, size FROM alerting.delivery_batches")
        assert sorted((b["priority"], b["size"]) for b in batches) == [
            (-1, 30),
            (-1, 40),
            (-1, 60),
            (-1, 120),
        ]
        recipients = await pool.fetchval(
            "SELECT recipients FROM alerting.relayed WHERE identifier = 'EQ-1'"
        )
        assert recipients == 251
        claimed = await ledger.claim(
            pool,
            "deliveries",
            now=now + timedelta(seconds=1),
            lease=timedelta(seconds=30),
            limit=1,
            claim_id="t",
        )
        assert [r["warning_id"] for r in claimed] == ["relay:EQ-1"]
        audited = await pool.fetchval(
            """SELECT detail->>'fast_path' FROM alerting.audit_log
                WHERE action = 'relay' AND detail->>'identifier' = 'EQ-1'"""
        )
        assert audited == "earthquake"
        # the same message again: nothing more
        async with pool.acquire() as conn, conn.transaction():
            assert (
                await relay(conn, [warning("EQ-1", "地震预警", "地震预警：预计烈度6度")], now) == 0
            )
    finally:
        await pool.close()
