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
