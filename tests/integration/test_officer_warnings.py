"""Warnings a duty officer issues, acceptance style on the alerting service with a real broker,
database and stand-in SMS provider: a draft over two townships, its refusals, approval by a
second person (never its author), issue, a lower level, 继续发布, an early cancel with its
reason — each a CAP version with references, each SMS naming the townships in words, each step
audited with its actor. And a warning risk raised, taken over: risk events then no longer change
it, and after the officer's cancel the same evidence does not raise it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from services.alerting.app import create_app as alerting_app
from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
from services.ingest.app import MIGRATIONS as INGEST
from shared.capxml import NS, schema_errors
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from tests.helpers import eventually
from tests.integration.test_call_confirm import admin, risk_event, settings
from tests.integration.test_public_warning import who
from tests.kafka_util import produce

# 东城区东华门街道 and 景山街道 (NBS 2023), each with a village cadre; the county's duty officer
DONGHUAMEN, JINGSHAN = "110101001000", "110101002000"
CADRE_1, CADRE_2, DUTY, OUTSIDE = "13900000001", "13900000002", "13900000003", "13900000004"
C = f"{{{NS}}}"


def duty(clock: ManualClock, subject: str = "duty-1") -> dict[str, str]:
    return who(clock, subject, ["duty_officer"], ["warnings:write", "warnings:read"])


def approver(clock: ManualClock, subject: str = "approver-1") -> dict[str, str]:
    return who(clock, subject, ["approver"], ["warnings:approve", "warnings:read"])


async def people(http: httpx.AsyncClient, clock: ManualClock) -> None:
    for body in (
        {
            "name": "村干部甲",
            "role": "village_cadre",
            "region_code": "110101001001",
            "phone": CADRE_1,
        },
        {
            "name": "村干部乙",
            "role": "village_cadre",
            "region_code": "110101002001",
            "phone": CADRE_2,
        },
        {
            "name": "区值班",
            "role": "county_duty_officer",
            "region_code": "110101000000",
            "phone": DUTY,
        },
        {
            "name": "邻街道",
            "role": "village_cadre",
            "region_code": "110101003001",
            "phone": OUTSIDE,
        },
    ):
        r = await http.post("/v1/persons", json=body, headers=admin(clock))
        assert r.status_code == 201, r.text
    r = await http.post(
        "/v1/duty-roster",
        json={
            "person_id": 3,
            "starts_at": (clock.now() - timedelta(hours=1)).isoformat(),
            "ends_at": (clock.now() + timedelta(days=2)).isoformat(),
        },
        headers=admin(clock),
    )
    assert r.status_code == 201, r.text


async def with_names(database: str) -> None:
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST)
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["110101"])
    finally:
        await pool.close()


def draft_body(clock: ManualClock, **kw: Any) -> dict[str, Any]:
    return {
        "hazard": "rainstorm",
        "level": "red",
        "areas": [DONGHUAMEN, JINGSHAN],
        "polygon": "39.90,116.40 39.93,116.40 39.93,116.42 39.90,116.42 39.90,116.40",
        "expires": (clock.now() + timedelta(hours=6)).isoformat(),
        "instruction": "立即转移低洼地带人员，停止户外作业。",
        **kw,
    }


async def cap(http: httpx.AsyncClient, clock: ManualClock, identifier: str) -> Any:
    r = await http.get(f"/v1/cap/{identifier}.xml", headers=admin(clock))
    assert r.status_code == 200, r.text
    doc = etree.fromstring(r.content)
    assert schema_errors(doc) == []
    return doc


async def test_an_officer_drafts_gets_approval_issues_updates_and_cancels(
    database, broker, topic_prefix
):
    await with_names(database)
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(settings(database, broker, topic_prefix, fake), clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            await people(http, clock)
            officer = duty(clock)

            # refusals, each naming what is wrong
            r = await http.post(
                "/v1/warnings", json=draft_body(clock, areas=["120101001000"]), headers=officer
            )
            assert r.status_code == 403, r.text
            assert "outside your region" in r.json()["detail"]
            bad_polygon = "39.90,116.40 39.93,116.40 39.90,116.40"
            r = await http.post(
                "/v1/warnings", json=draft_body(clock, polygon=bad_polygon), headers=officer
            )
            assert r.status_code == 422
            assert "polygon" in r.json()["detail"]
            past = (clock.now() - timedelta(minutes=1)).isoformat()
            r = await http.post(
                "/v1/warnings", json=draft_body(clock, expires=past), headers=officer
            )
            assert r.status_code == 422
            assert "expires" in r.json()["detail"]
            r = await http.post("/v1/warnings", json=draft_body(clock, hazard="x"), headers=officer)
            assert r.status_code == 422

            # a draft: nothing goes out
            r = await http.post("/v1/warnings", json=draft_body(clock), headers=officer)
            assert r.status_code == 201, r.text
            wid = r.json()["warning_id"]
            assert r.json()["state"] == "draft"
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert (w["state"], w["origin"], w["region_code"]) == (
                "draft",
                "officer",
                "110101000000",
            )
            assert w["versions"] == []
            # edited before it is submitted
            r = await http.put(
                f"/v1/warnings/{wid}/draft",
                json=draft_body(clock, headline="东华门、景山街道暴雨红色预警"),
                headers=officer,
            )
            assert r.status_code == 200, r.text

            # red needs a second person: submitted, it waits
            r = await http.post(f"/v1/warnings/{wid}/submit", headers=officer)
            assert r.status_code == 200, r.text
            issue = r.json()
            assert issue["state"] == "pending_approval"
            queue = (await http.get("/v1/warning-requests", headers=approver(clock))).json()
            assert [q["id"] for q in queue] == [issue["id"]]
            # its author cannot approve it, even holding the approver role; a duty officer
            # without that role cannot either
            self_approving = who(clock, "duty-1", ["approver"], ["warnings:approve"])
            r = await http.post(
                f"/v1/warning-requests/{issue['id']}/approve", json={}, headers=self_approving
            )
            assert r.status_code == 403
            r = await http.post(
                f"/v1/warning-requests/{issue['id']}/approve", json={}, headers=officer
            )
            assert r.status_code == 403
            r = await http.get("/v1/deliveries", headers=admin(clock))
            assert r.json() == []

            r = await http.post(
                f"/v1/warning-requests/{issue['id']}/approve",
                json={"reason": "会商同意"},
                headers=approver(clock),
            )
            assert r.status_code == 200, r.text
            assert (r.json()["state"], r.json()["version"]) == ("done", 1)

            async def issued() -> Any:
                per = sms.per_number()
                return per if {CADRE_1, CADRE_2, DUTY} <= set(per) else None

            per = await eventually(issued, what="the warning to both townships and the county")
            assert OUTSIDE not in per  # the third township is not in its area
            first = [t["text"] for t in sms.texts]
            assert all("东华门、景山街道暴雨红色预警" in t for t in first), first
            assert all("立即转移低洼地带人员" in t for t in first)
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert (w["state"], w["level"], w["controlled_by"]) == ("issued", "red", "duty-1")
            assert w["areas"] == [DONGHUAMEN, JINGSHAN]
            v1 = w["versions"][0]
            assert v1["area_desc"] == "东城区东华门街道、东城区景山街道"
            doc = await cap(http, clock, v1["identifier"])
            area = doc.find(f"{C}info/{C}area")
            assert area.findtext(f"{C}areaDesc") == "东城区东华门街道、东城区景山街道"
            assert [g.findtext(f"{C}value") for g in area.iterfind(f"{C}geocode")] == [
                DONGHUAMEN,
                JINGSHAN,
            ]
            assert area.findtext(f"{C}polygon").startswith("39.90,116.40")
            assert doc.findtext(f"{C}info/{C}eventCode/{C}value") == "11B03"
            tasks = await app.state.runtime.pool.fetchval(
                "SELECT count(*) FROM alerting.confirm_tasks WHERE warning_id = $1", wid
            )
            assert tasks == 2  # 叫应: the two village cadres (the county's officer is above it)

            # down to yellow, which needs no approval: done at once, an Update naming v1
            r = await http.post(
                f"/v1/warnings/{wid}/updates", json={"level": "yellow"}, headers=officer
            )
            assert r.status_code == 201, r.text
            assert (r.json()["state"], r.json()["version"]) == ("done", 2)

            async def lowered() -> Any:
                return sms.per_number()[CADRE_1] == 2

            await eventually(lowered, what="the update")
            assert (
                "东城区东华门街道、东城区景山街道变更为暴雨黄色预警（III级）"
                in sms.texts[-1]["text"]
            )
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            v2 = w["versions"][1]
            assert (v2["msg_type"], v2["level"]) == ("Update", "yellow")
            assert v2["references"][0].split(",")[1] == v1["identifier"]

            # 继续发布: the same level, a later expiry
            later = (clock.now() + timedelta(hours=12)).isoformat()
            r = await http.post(
                f"/v1/warnings/{wid}/updates", json={"expires": later}, headers=officer
            )
            assert r.json()["version"] == 3
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert "继续发布暴雨黄色预警" in w["versions"][2]["headline"]
            assert w["expires_at"].startswith(later[:16])

            # an early cancel says why
            r = await http.post(f"/v1/warnings/{wid}/cancel", json={"reason": ""}, headers=officer)
            assert r.status_code == 422
            r = await http.post(
                f"/v1/warnings/{wid}/cancel", json={"reason": "降雨已明显减弱"}, headers=officer
            )
            assert r.status_code == 201, r.text
            assert r.json()["state"] == "done"
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert w["state"] == "cancelled"
            v4 = w["versions"][3]
            assert v4["msg_type"] == "Cancel"
            assert "降雨已明显减弱" in v4["description"]
            assert len(v4["references"]) == 3
            doc = await cap(http, clock, v4["identifier"])
            assert doc.findtext(f"{C}msgType") == "Cancel"
            r = await http.post(
                f"/v1/warnings/{wid}/updates", json={"level": "red"}, headers=officer
            )
            assert r.status_code == 409  # it no longer stands

            async def cancelled() -> Any:
                return "预警解除" in sms.texts[-1]["text"]

            await eventually(cancelled, what="the all-clear")
            audit = await app.state.runtime.pool.fetch(
                "SELECT actor, action, detail FROM alerting.audit_log WHERE warning_id = $1"
                " ORDER BY id",
                wid,
            )
            steps = [(a["actor"], a["action"]) for a in audit]
            assert steps == [
                ("duty-1", "draft.create"),
                ("duty-1", "draft.edit"),
                ("duty-1", "request.submit"),
                ("approver-1", "request.approve"),
                ("duty-1", "alert"),
                ("duty-1", "request.update"),
                ("duty-1", "update"),
                ("duty-1", "request.update"),
                ("duty-1", "update"),
                ("duty-1", "request.cancel"),
                ("duty-1", "cancel"),
            ]
            assert audit[4]["detail"]["approved_by"] == "approver-1"
            requests = (await http.get(f"/v1/warnings/{wid}/requests", headers=officer)).json()
            assert [(q["action"], q["state"], q["version"]) for q in requests] == [
                ("issue", "done", 1),
                ("update", "done", 2),
                ("update", "done", 3),
                ("cancel", "done", 4),
            ]


async def test_a_rejected_draft_goes_back_to_its_author(database, broker, topic_prefix):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(settings(database, broker, topic_prefix, fake), clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            officer = duty(clock)
            r = await http.post(
                "/v1/warnings", json=draft_body(clock, level="orange"), headers=officer
            )
            wid = r.json()["warning_id"]
            req = (await http.post(f"/v1/warnings/{wid}/submit", headers=officer)).json()
            r = await http.post(
                f"/v1/warning-requests/{req['id']}/reject",
                json={"reason": "范围过大"},
                headers=approver(clock),
            )
            assert r.json()["state"] == "rejected"
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert w["state"] == "draft"
            # edited and submitted again, then withdrawn by its author
            r = await http.put(
                f"/v1/warnings/{wid}/draft",
                json=draft_body(clock, level="orange", areas=[DONGHUAMEN]),
                headers=officer,
            )
            assert r.status_code == 200, r.text
            req = (await http.post(f"/v1/warnings/{wid}/submit", headers=officer)).json()
            r = await http.post(
                f"/v1/warning-requests/{req['id']}/withdraw", headers=duty(clock, "someone")
            )
            assert r.status_code == 409
            r = await http.post(f"/v1/warning-requests/{req['id']}/withdraw", headers=officer)
            assert r.json()["state"] == "withdrawn"
            w = (await http.get(f"/v1/warnings/{wid}", headers=officer)).json()
            assert (w["state"], w["versions"]) == ("draft", [])
            assert sms.per_number() == {}


async def test_an_officer_takes_over_a_warning_risk_raised(database, broker, topic_prefix):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, officer_approval_levels=("red",)),
            clock=clock,
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            await people(http, clock)
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "orange", "none", clock.now()))],
            )

            async def raised() -> Any:
                r = await http.get("/v1/warnings", headers=admin(clock))
                return r.json() or None

            (w,) = await eventually(raised, what="the sensor warning")
            wid = w["id"]
            assert (w["origin"], w["controlled_by"]) == ("sensor", None)
            # the officer judges it worse than the gauge says: red, approved by a second person
            officer = duty(clock)
            r = await http.post(
                f"/v1/warnings/{wid}/updates",
                json={"level": "red", "areas": [JINGSHAN]},
                headers=officer,
            )
            assert r.status_code == 422  # a sensor warning keeps its group's area
            r = await http.post(
                f"/v1/warnings/{wid}/updates", json={"level": "red"}, headers=officer
            )
            assert r.json()["state"] == "pending_approval"
            r = await http.post(
                f"/v1/warning-requests/{r.json()['id']}/approve", json={}, headers=approver(clock)
            )
            assert r.json()["version"] == 2
            w = (await http.get(f"/v1/warnings/{wid}", headers=admin(clock))).json()
            assert (w["level"], w["controlled_by"]) == ("red", "duty-1")

            # the gauge drops back: risk no longer decides this warning
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(2, "none", "orange", clock.now()))],
            )
            pool = app.state.runtime.pool

            async def deferred() -> Any:
                return await pool.fetchval(
                    "SELECT detail FROM alerting.audit_log WHERE action = 'automatic.deferred'"
                )

            detail = await eventually(deferred, what="the automatic cancel deferred")
            assert detail["would"] == "cancel"
            w = (await http.get(f"/v1/warnings/{wid}", headers=admin(clock))).json()
            assert (w["state"], w["version"]) == ("updated", 2)

            # the officer lowers it, then ends it; the same orange evidence does not raise it
            # again while the warning would have stood
            r = await http.post(
                f"/v1/warnings/{wid}/updates", json={"level": "orange"}, headers=officer
            )
            assert r.json()["state"] == "done"
            r = await http.post(
                f"/v1/warnings/{wid}/cancel", json={"reason": "现场核查无险情"}, headers=officer
            )
            assert r.json()["state"] == "done"
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(3, "orange", "none", clock.now()))],
            )

            async def held() -> Any:
                return await pool.fetchval(
                    "SELECT count(*) FROM alerting.audit_log WHERE action = 'officer_hold.ignored'"
                )

            await eventually(held, what="the held evidence")
            rows = await pool.fetch("SELECT state FROM alerting.warnings")
            assert [r["state"] for r in rows] == ["cancelled"]
            # a higher level is news: it raises a new warning
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(4, "red", "orange", clock.now()))],
            )

            async def anew() -> Any:
                r = await http.get("/v1/warnings?state=open", headers=admin(clock))
                return r.json() or None

            (fresh,) = await eventually(anew, what="a new warning at red")
            assert (fresh["origin"], fresh["level"], fresh["controlled_by"]) == (
                "sensor",
                "red",
                None,
            )
