"""叫应 and SMS, acceptance style: risk events go onto the real broker, the real alerting service
consumes them and delivers through the local Aliyun and Tencent stand-ins (signatures checked,
receipts posted back), then the test asserts what each number received, and when.

Time is a manual clock, so T1 (voice call) and T2 (escalation) pass on command.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from lxml import etree

from services.alerting.app import create_app as alerting_app
from services.alerting.domain.confirm import make_token
from services.alerting.settings import AlertingSettings
from shared.capxml import schema_errors
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
    SmsState,
)
from shared.devstack.inprocess import serve
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET
from tests.helpers import eventually
from tests.kafka_util import produce

CALLBACK = "cb-token-for-tests-0123456789"
CONFIRM_SECRET = "confirm-secret-for-tests-0123456789"

A, B, T, C, D = "13800000001", "13800000002", "13800000003", "13800000004", "13800000005"


def settings(database: str, broker: Any, prefix: str, fake: str, **kw: Any) -> AlertingSettings:
    return AlertingSettings(
        **{
            "database_url": database,
            "kafka_bootstrap": broker.bootstrap,
            "topic_prefix": prefix,
            "consumer_group": f"{prefix}alerting",
            "delivery_poll_s": 0.05,
            "confirm_sweep_s": 3600,  # swept by the test, on its clock
            "group_interval_s": 0,  # the group timers have tests of their own
            "callback_token": CALLBACK,
            "confirm_secret": CONFIRM_SECRET,
            "confirm_base_url": "http://confirm.example/c",
            "aliyun_endpoint": f"{fake}/aliyun/",
            "aliyun_voice_endpoint": f"{fake}/aliyun/",
            "aliyun_access_key_id": ALIYUN_KEY_ID,
            "aliyun_access_key_secret": ALIYUN_SECRET,
            "aliyun_template_code": "SMS_0001",
            "aliyun_voice_tts_code": "TTS_0001",
            "aliyun_voice_show_number": "01012345678",
            "tencent_endpoint": f"{fake}/tencent/",
            "tencent_secret_id": TENCENT_SECRET_ID,
            "tencent_secret_key": TENCENT_SECRET_KEY,
            "tencent_sdk_app_id": "1400000001",
            "tencent_template_id": "100001",
            **kw,
        }
    )


def admin(clock: ManualClock) -> dict[str, str]:
    ident = Identity(subject="admin", kind="operator", roles=["admin"])
    return {"X-Qianshao-Identity": sign(ident, DEV_INTERNAL_SECRET, clock.now())}


def risk_event(n: int, level: str, previous: str, at: datetime, station: str = "RG1") -> bytes:
    return orjson.dumps(
        {
            "event_id": f"ev-{station}-{n}",
            "produced_at": at.isoformat(),
            "scope": "station",
            "station_id": station,
            "region_code": "110101001001",
            "hazard": "rainstorm",
            "rule_id": "threshold:rainfall_1h",
            "previous_level": previous,
            "level": level,
            "change": "raised",
            "event_time": at.isoformat(),
            "evidence": {"rule_id": "threshold:rainfall_1h", "metric": "rainfall_1h", "value": 80},
        }
    )


async def add_people(http: httpx.AsyncClient, clock: ManualClock) -> dict[str, int]:
    people = {
        "A": {
            "name": "村干部甲",
            "role": "village_cadre",
            "region_code": "110101001001",
            "phone": A,
        },
        "B": {"name": "网格员乙", "role": "grid_worker", "region_code": "110101001002", "phone": B},
        "T": {
            "name": "镇值班丙",
            "role": "township_duty_officer",
            "region_code": "110101001000",
            "phone": T,
        },
        "C": {
            "name": "县值班丁",
            "role": "county_duty_officer",
            "region_code": "110101000000",
            "phone": C,
        },
        # a village of the next township: out of scope
        "D": {
            "name": "邻镇村干部",
            "role": "village_cadre",
            "region_code": "110101002001",
            "phone": D,
        },
    }
    ids = {}
    for key, body in people.items():
        r = await http.post("/v1/persons", json=body, headers=admin(clock))
        assert r.status_code == 201, r.text
        ids[key] = r.json()["id"]
    for key in ("T", "C"):
        r = await http.post(
            "/v1/duty-roster",
            json={
                "person_id": ids[key],
                "starts_at": (clock.now() - timedelta(hours=1)).isoformat(),
                "ends_at": (clock.now() + timedelta(hours=8)).isoformat(),
            },
            headers=admin(clock),
        )
        assert r.status_code == 201, r.text
    return ids


async def test_red_warning_sms_receipts_confirmations_voice_and_escalation(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        # one delivery round at a time, so that the batching below is exact
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, delivery_loops=1), clock=clock
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            sms.aliyun.receipt_url = f"{base}/v1/callbacks/{CALLBACK}/aliyun/sms-report"
            ids = await add_people(http, clock)
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "red", "none", clock.now()))],
            )

            async def all_delivered() -> Any:
                r = await http.get("/v1/deliveries", headers=admin(clock))
                rows = [d for d in r.json() if d["channel"] == "sms"]
                return (
                    rows
                    if len(rows) == 4 and all(d["state"] == "delivered" for d in rows)
                    else None
                )

            await eventually(all_delivered, what="four SMS delivered, receipts applied")
            # each person in scope got exactly one SMS, through the first provider; D none
            assert sms.per_number() == {A: 1, B: 1, T: 1, C: 1}
            assert sms.aliyun.requests == 1  # one batch for the four
            by_number = {n: t["text"] for t in sms.texts for n in t["numbers"]}
            for n, text in by_number.items():
                assert text.startswith("【应急管理局】")
                assert "暴雨红色预警" in text
                # those inside the area must confirm, and are asked to; the county is told
                assert ("回复1" in text) == (n != C)

            # no one has confirmed: the county shows as unanswered
            r = await http.get(
                "/v1/confirmations/unanswered-counties?older_than_s=0", headers=admin(clock)
            )
            assert [u["county_code"] for u in r.json()] == ["110101000000"]
            # no division names loaded yet: the code stands for the county
            assert r.json()[0]["county_name"] == "110101000000"
            assert r.json()[0]["required"] == 3

            # A replies through Tencent's uplink shape; B is confirmed through the API
            r = await http.post(
                f"/v1/callbacks/{CALLBACK}/tencent/sms-reply",
                json={
                    "extend": "",
                    "mobile": A,
                    "nationcode": "86",
                    "sign": "应急管理局",
                    "text": "1 收到",
                    "time": int(clock.now().timestamp()),
                },
            )
            assert r.json() == {"result": 0, "errmsg": "OK"}
            warning_id = (await http.get("/v1/warnings", headers=admin(clock))).json()[0]["id"]
            clock.advance(120)
            r = await http.post(
                f"/v1/warnings/{warning_id}/confirmations",
                json={"person_id": ids["B"]},
                headers=admin(clock),
            )
            assert r.json() == {"confirmed": 1}
            r = await http.post(
                f"/v1/warnings/{warning_id}/confirmations",
                json={"person_id": ids["B"]},
                headers=admin(clock),
            )
            assert r.json() == {"confirmed": 0}  # a repeat confirms nothing
            r = await http.get(
                "/v1/confirmations/unanswered-counties?older_than_s=0", headers=admin(clock)
            )
            assert r.json() == []

            sweep = app.state.confirm_sweep
            # before T1 nothing happens
            clock.advance(400)
            assert await sweep.run_once() == 0
            # T1 (10 min): a voice call to the one person still unconfirmed, once
            clock.advance(100)
            assert await sweep.run_once() == 1
            assert await sweep.run_once() == 0
            await eventually(lambda: _async(len(sms.calls) == 1), what="the voice call")
            assert sms.calls[0]["number"] == T
            assert "暴雨红色预警" in sms.calls[0]["tts"]["content"]

            # T2 (30 min): escalation to the duty officer of the next level up (the county)
            clock.advance(1200)
            assert await sweep.run_once() == 1
            await eventually(lambda: _async(sms.per_number()[C] == 2), what="the escalation SMS")
            escalation = sms.texts[-1]
            assert escalation["numbers"] == [C]
            assert "【叫应升级】镇值班丙" in escalation["text"]
            assert sms.per_number() == {A: 1, B: 1, T: 1, C: 2}

            # the township officer finally confirms through the link
            task_id = await app.state.runtime.pool.fetchval(
                "SELECT id FROM alerting.confirm_tasks WHERE person_id = $1", ids["T"]
            )
            token = make_token(CONFIRM_SECRET, task_id)
            page = await http.get(f"/v1/confirm/{token}")
            assert "确认收到" in page.text  # opening the link confirms nothing yet
            assert (
                await app.state.runtime.pool.fetchval(
                    "SELECT confirmed_at FROM alerting.confirm_tasks WHERE id = $1", task_id
                )
                is None
            )
            assert (await http.post(f"/v1/confirm/{token}")).status_code == 200
            assert (await http.post(f"/v1/confirm/{token[:-2]}xx")).status_code == 404

            # the township's name, from the published division codes
            from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
            from services.ingest.app import MIGRATIONS as INGEST
            from shared.db import migrate

            await migrate(app.state.runtime.pool, "ingest", INGEST)
            await load_divisions(app.state.runtime.pool, DEFAULT_SOURCE, prefixes=["110101001"])
            r = await http.get("/v1/confirmations/stats?by=township", headers=admin(clock))
            (row,) = r.json()
            assert row["region_name"] == "东城区东华门街道"
            assert row["region_code"] == "110101001000"
            assert (row["required"], row["confirmed"], row["rate"]) == (3, 3, 1.0)
            assert row["median_seconds"] == 120.0  # A at 0 s, B at 120 s, T at 1,820 s

            # the 叫应 board: everyone asked in the township, each with when they confirmed and
            # how; the township officer's voice call and escalation, and both due times from
            # when they were asked
            board = (await http.get("/v1/confirmations/board", headers=admin(clock))).json()
            assert {t["person_id"]: t["confirmed_via"] for t in board} == {
                ids["A"]: "sms",
                ids["B"]: "api",
                ids["T"]: "link",
            }
            assert {t["township_name"] for t in board} == {"东城区东华门街道"}
            (late,) = [t for t in board if t["person_id"] == ids["T"]]
            assert late["voice_at"] is not None
            assert late["escalated_at"] is not None
            asked = datetime.fromisoformat(late["created_at"])
            assert datetime.fromisoformat(late["voice_due_at"]) == asked + timedelta(seconds=600)
            assert datetime.fromisoformat(late["escalate_due_at"]) == asked + timedelta(
                seconds=1800
            )

            vias = await app.state.runtime.pool.fetch(
                "SELECT confirmed_via FROM alerting.confirm_tasks ORDER BY person_id"
            )
            assert [v["confirmed_via"] for v in vias] == ["sms", "api", "link"]
            states = await app.state.runtime.pool.fetch(
                """SELECT target, state FROM alerting.deliveries
                    WHERE channel = 'sms' AND purpose = 'warning' ORDER BY target"""
            )
            assert [s["state"] for s in states] == [
                "confirmed",
                "confirmed",
                "confirmed",
                "delivered",
            ]
            # the CAP feed lists the version; its link serves a schema-valid document
            feed = etree.fromstring((await http.get("/v1/cap/feed", headers=admin(clock))).content)
            ns = {"a": "http://www.w3.org/2005/Atom"}
            (entry,) = feed.findall("a:entry", ns)
            href = entry.find("a:link", ns).get("href")
            r = await http.get(href.removeprefix(base), headers=admin(clock))
            assert r.headers["content-type"] == "application/cap+xml"
            doc = etree.fromstring(r.content)
            assert schema_errors(doc) == []
            assert doc.findtext("{urn:oasis:names:tc:emergency:cap:1.2}msgType") == "Alert"

            # the callback token guards the callbacks
            r = await http.post("/v1/callbacks/wrong/tencent/sms-reply", json={"mobile": T})
            assert r.status_code == 403


async def _async(value: Any) -> Any:
    return value


async def test_sms_failover_timeouts_bad_numbers_and_bounded_retries(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    sms.aliyun.down = True  # the primary answers 503
    sms.aliyun.bad_numbers = {D}
    sms.tencent.bad_numbers = {D}
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(
                database,
                broker,
                topic_prefix,
                fake,
                max_attempts=3,
                retry_base_s=0.01,
                retry_cap_s=0.01,
                ambiguous_wait_s=10,
                delivery_timeout_s=0.5,
                # one round at a time: with several, rounds that claimed rows at the same moment
                # each ask the failing provider once before its cool-down is known
                delivery_loops=1,
            ),
            clock=clock,
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            ids = await add_people(http, clock)
            # D is moved into scope, with a number both providers refuse
            pool = app.state.runtime.pool
            await pool.execute(
                """UPDATE alerting.persons SET region_code = '110101001005',
                          jurisdiction = '110101001005' WHERE id = $1""",
                ids["D"],
            )
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "red", "none", clock.now()))],
            )

            async def settled() -> Any:
                rows = await pool.fetch(
                    """SELECT target, state, attempts, provider, last_error
                         FROM alerting.deliveries WHERE channel = 'sms' ORDER BY target"""
                )
                return (
                    rows
                    if len(rows) == 5 and all(r["state"] in ("sent", "failed") for r in rows)
                    else None
                )

            rows = {r["target"]: r for r in await eventually(settled, what="SMS settled")}
            # failover: everyone but D went out through Tencent on the first attempt
            for n in (A, B, T, C):
                assert (rows[n]["state"], rows[n]["attempts"], rows[n]["provider"]) == (
                    "sent",
                    1,
                    "tencent",
                )
            # D's number is refused for itself: failed once, not retried, no failover storm
            assert (rows[D]["state"], rows[D]["attempts"]) == ("failed", 1)
            assert "IncorrectPhoneNumber" in rows[D]["last_error"]
            assert sms.per_number() == {A: 1, B: 1, T: 1, C: 1}
            assert sms.aliyun.requests == 1  # then it rests during the cool-down

            # a timeout after the request went out is ambiguous: no failover (the other
            # provider could send it twice); the row waits, then the provider is asked
            r = await http.delete(f"/v1/persons/{ids['D']}", headers=admin(clock))
            assert r.status_code == 204
            sms.tencent.down = True  # Aliyun rests after its outage: Tencent is tried first
            sms.aliyun.down = False
            sms.aliyun.slow_s = 1.0  # answers after the 0.5 s timeout, but takes the messages
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(3, "none", "red", clock.now()))],
            )

            async def taken_late() -> Any:
                return all(sms.per_number()[n] == 2 for n in (A, B, T, C))

            await eventually(taken_late, what="the slow provider took the cancellation")
            rows = await pool.fetch(
                """SELECT state FROM alerting.deliveries WHERE channel = 'sms' AND version = 2"""
            )
            assert {r["state"] for r in rows} == {"sending"}  # unknown: not failed, not resent
            sms.aliyun.slow_s = 0

            async def reconciled() -> Any:
                clock.advance(5)
                app.state.delivery.wake()
                rows = await pool.fetch(
                    """SELECT target, state, attempts, provider FROM alerting.deliveries
                        WHERE channel = 'sms' AND version = 2 ORDER BY target"""
                )
                return rows if all(r["state"] == "sent" for r in rows) else None

            rows2 = await eventually(reconciled, what="reconciled with the provider")
            assert [(r["target"], r["attempts"], r["provider"]) for r in rows2] == [
                (n, 2, "aliyun") for n in (A, B, T, C)
            ]
            assert sms.per_number() == {A: 2, B: 2, T: 2, C: 2}  # exactly once each

            # both providers down: retries are bounded, nothing is sent
            sms.aliyun.down = True
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(4, "red", "none", clock.now()))],
            )

            async def exhausted() -> Any:
                clock.advance(1)
                app.state.delivery.wake()
                rows = await pool.fetch(
                    """SELECT d.state, d.attempts FROM alerting.deliveries d
                         JOIN alerting.warnings w ON w.id = d.warning_id
                        WHERE d.channel = 'sms' AND w.state = 'issued'"""
                )
                return (
                    rows if len(rows) == 4 and all(r["state"] == "failed" for r in rows) else None
                )

            rows3 = await eventually(exhausted, timeout_s=60, what="retries exhausted")
            assert {r["attempts"] for r in rows3} == {3}
            assert sms.per_number() == {A: 2, B: 2, T: 2, C: 2}
