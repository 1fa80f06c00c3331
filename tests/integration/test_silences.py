"""Silences and maintenance through the real broker and the SMS stand-in: a silenced warning
lives on but tells no one until the silence ends; an all-clear of a warning people heard is never
held back; a station in maintenance raises nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.alerting.app import create_app as alerting_app
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from tests.helpers import eventually
from tests.integration.test_call_confirm import admin, risk_event, settings
from tests.integration.test_public_warning import who
from tests.kafka_util import produce, read_all

CADRE = "13500000001"


async def test_silence_holds_back_then_releases_and_never_hides_the_all_clear(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(settings(database, broker, topic_prefix, fake), clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.post(
                "/v1/persons",
                json={
                    "name": "村干部",
                    "role": "village_cadre",
                    "region_code": "110101001001",
                    "phone": CADRE,
                },
                headers=admin(clock),
            )
            assert r.status_code == 201
            officer = who(clock, "duty-1", ["duty_officer"], ["silences:write", "silences:read"])
            # a silence wider than the caller's region is refused
            r = await http.post(
                "/v1/silences",
                json={
                    "region_prefix": "11",
                    "ends_at": (clock.now() + timedelta(hours=1)).isoformat(),
                    "reason": "演练",
                },
                headers=officer,
            )
            assert r.status_code == 403
            r = await http.post(
                "/v1/silences",
                json={
                    "region_prefix": "110101001",
                    "hazard": "rainstorm",
                    "ends_at": (clock.now() + timedelta(hours=1)).isoformat(),
                    "reason": "雨量站校准，误报",
                },
                headers=officer,
            )
            assert r.status_code == 201, r.text
            silence = r.json()
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "red", "none", clock.now()))],
            )
            pool = app.state.runtime.pool

            async def held() -> Any:
                return (
                    await pool.fetchval(
                        "SELECT dispatch FROM alerting.warning_versions WHERE version = 1"
                    )
                    == "silenced"
                )

            await eventually(held, what="the version held back")
            # the warning lives on: the API lists it, alerts.v1 carries it; no one is told
            assert len((await http.get("/v1/warnings", headers=admin(clock))).json()) == 1

            async def on_topic() -> Any:
                return len(await read_all(broker.bootstrap, topics.alerts)) == 1

            await eventually(on_topic, what="the version on alerts.v1")
            assert await app.state.sweeps.release_silenced() == 0
            assert sms.per_number() == {}

            # the silence ends early: the version goes out, once
            r = await http.delete(f"/v1/silences/{silence['id']}", headers=officer)
            assert r.status_code == 204
            clock.advance(1)
            assert await app.state.sweeps.release_silenced() == 1
            assert await app.state.sweeps.release_silenced() == 0

            async def told() -> Any:
                return sms.per_number() == {CADRE: 1}

            await eventually(told, what="the released version")
            assert len(await read_all(broker.bootstrap, topics.alerts)) == 1  # not published twice

            # a new silence does not hide the all-clear of what people were told
            r = await http.post(
                "/v1/silences",
                json={
                    "hazard": "rainstorm",
                    "region_prefix": "110101",
                    "ends_at": (clock.now() + timedelta(hours=1)).isoformat(),
                    "reason": "x",
                },
                headers=officer,
            )
            assert r.status_code == 201
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(2, "none", "red", clock.now()))],
            )

            async def cleared() -> Any:
                return sms.per_number() == {CADRE: 2}

            await eventually(cleared, what="the all-clear")
            assert "预警解除" in sms.texts[-1]["text"]


async def test_a_station_in_maintenance_raises_nothing_but_can_still_clear(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(settings(database, broker, topic_prefix, fake), clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            await http.post(
                "/v1/persons",
                json={
                    "name": "村干部",
                    "role": "village_cadre",
                    "region_code": "110101001001",
                    "phone": CADRE,
                },
                headers=admin(clock),
            )
            topics = Topics(topic_prefix)
            pool = app.state.runtime.pool
            # RG1 raises a warning first; then both stations go into maintenance
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "orange", "none", clock.now()))],
            )

            async def issued() -> Any:
                return sms.per_number() == {CADRE: 1}

            await eventually(issued, what="the warning")
            township_officer = who(clock, "duty-1", ["duty_officer"], ["silences:write"])
            body = {"ends_at": (clock.now() + timedelta(hours=2)).isoformat(), "reason": "检修"}
            r = await http.put("/v1/stations/RG2/maintenance", json=body, headers=township_officer)
            assert r.status_code == 403  # stations' regions are not known here
            for sid in ("RG1", "RG2"):
                r = await http.put(
                    f"/v1/stations/{sid}/maintenance", json=body, headers=admin(clock)
                )
                assert r.status_code == 200, r.text
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [
                    ("RG2", risk_event(1, "red", "none", clock.now(), station="RG2")),
                    ("RG1", risk_event(2, "red", "orange", clock.now())),
                    ("RG1", risk_event(3, "none", "red", clock.now())),
                ],
            )

            async def settled() -> Any:
                n = await pool.fetchval("SELECT count(*) FROM alerting.processed_events")
                return n == 4

            await eventually(settled, what="the events processed")
            versions = await pool.fetch(
                "SELECT msg_type, level FROM alerting.warning_versions ORDER BY version"
            )
            # the raises in maintenance were ignored; RG1's clearing still cancelled the warning
            assert [(v["msg_type"], v["level"]) for v in versions] == [("Alert", 3), ("Cancel", 3)]
            ignored = await pool.fetchval(
                "SELECT count(*) FROM alerting.audit_log WHERE action = 'maintenance.ignored'"
            )
            assert ignored == 2

            async def cancel_told() -> Any:
                return sms.per_number() == {CADRE: 2}

            await eventually(cancel_told, what="the all-clear")
