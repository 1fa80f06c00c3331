"""Public warnings, acceptance style: the internal alarm goes out at once; the broadcast to the
area's residents waits for an approver who is not the requester; a request left pending is
escalated to the county; every later version is approved again before residents hear of it;
a drill reaches drill residents only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from services.alerting.app import create_app as alerting_app
from shared.capxml import NS, schema_errors
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET
from tests.helpers import eventually
from tests.integration.test_call_confirm import admin, risk_event, settings
from tests.kafka_util import produce

CADRE, LEADER, DUTY = "13700000001", "13700000002", "13700000003"


def who(clock: ManualClock, subject: str, roles: list[str], scopes: list[str]) -> dict[str, str]:
    ident = Identity(
        subject=subject, kind="operator", roles=roles, scopes=scopes, region_prefix="110101"
    )
    return {"X-Qianshao-Identity": sign(ident, DEV_INTERNAL_SECRET, clock.now())}


def residents_csv() -> str:
    lines = ["region_code,phone,drill"]
    for i in range(300):  # in the warned township's villages, ten of them drill residents
        lines.append(f"11010100{1:01d}{i % 3 + 1:03d},15{i:09d},{'1' if i < 10 else '0'}")
    for i in range(50):  # the next township
        lines.append(f"110101002001,16{i:09d},0")
    lines.append("110101001001,15000000000,1")  # listed twice
    lines.append("1101,123,0")  # malformed
    lines.append("120101001001,17000000000,0")  # outside the caller's region
    return "\n".join(lines)


async def setup(http: httpx.AsyncClient, clock: ManualClock) -> None:
    for body in (
        {"name": "村干部", "role": "village_cadre", "region_code": "110101001001", "phone": CADRE},
        {"name": "县领导", "role": "leader", "region_code": "110101000000", "phone": LEADER},
        {
            "name": "县值班",
            "role": "county_duty_officer",
            "region_code": "110101000000",
            "phone": DUTY,
        },
    ):
        r = await http.post("/v1/persons", json=body, headers=admin(clock))
        assert r.status_code == 201, r.text
    r = await http.post(
        "/v1/duty-roster",
        json={
            "person_id": 3,
            "starts_at": (clock.now() - timedelta(hours=1)).isoformat(),
            "ends_at": (clock.now() + timedelta(hours=8)).isoformat(),
        },
        headers=admin(clock),
    )
    assert r.status_code == 201
    importer = who(clock, "importer", ["duty_officer"], ["recipients:write", "recipients:read"])
    r = await http.post("/v1/residents/import", content=residents_csv(), headers=importer)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["received"] == 353
    assert out["stored"] == 350
    assert len(out["refused"]) == 2
    r = await http.get("/v1/residents/count?region_prefix=110101001", headers=importer)
    assert r.json() == {"residents": 300}


async def test_public_warning_approval_escalation_broadcast_and_update(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, approval_timeout_s=600), clock=clock
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            await setup(http, clock)
            topics = Topics(topic_prefix)
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(1, "red", "none", clock.now()))],
            )

            async def internal_out() -> Any:
                return sms.per_number() == {CADRE: 1, LEADER: 1, DUTY: 1}

            await eventually(internal_out, what="the internal alarm, at once")
            wid = (await http.get("/v1/warnings", headers=admin(clock))).json()[0]["id"]

            duty = who(clock, "duty-1", ["duty_officer"], ["warnings:publish", "warnings:read"])
            r = await http.post(f"/v1/warnings/{wid}/publication", json={}, headers=duty)
            assert r.status_code == 201, r.text
            pub = r.json()
            assert pub["state"] == "pending_approval"
            r = await http.post(f"/v1/warnings/{wid}/publication", json={}, headers=duty)
            assert r.status_code == 409  # asked once per version

            # a duty officer cannot approve, nor can an approver approve their own request
            r = await http.post(f"/v1/publications/{pub['id']}/approve", json={}, headers=duty)
            assert r.status_code == 403
            self_approver = who(clock, "duty-1", ["approver"], [])
            r = await http.post(
                f"/v1/publications/{pub['id']}/approve", json={}, headers=self_approver
            )
            assert r.status_code == 403

            # pending past the timeout: the county's leader and duty officer are told, once
            clock.advance(599)
            assert await app.state.approval_sweep.run_once() == 0
            clock.advance(2)
            assert await app.state.approval_sweep.run_once() == 1
            assert await app.state.approval_sweep.run_once() == 0

            async def escalated() -> Any:
                return sms.per_number()[LEADER] == 2 and sms.per_number()[DUTY] == 2

            await eventually(escalated, what="the approval-timeout notice")
            assert "【审批超时】" in sms.texts[-1]["text"]
            assert sum(sms.per_number().values()) == 5  # no resident yet

            approver = who(clock, "approver-1", ["approver"], [])
            r = await http.post(
                f"/v1/publications/{pub['id']}/approve", json={"reason": "核实"}, headers=approver
            )
            assert r.status_code == 200, r.text
            assert (r.json()["state"], r.json()["recipients"]) == ("approved", 300)

            async def broadcast_done() -> Any:
                per = sms.per_number()
                residents = {n: c for n, c in per.items() if n.startswith(("15", "16"))}
                return residents if len(residents) == 300 else None

            residents = await eventually(broadcast_done, what="the broadcast")
            assert set(residents.values()) == {1}
            assert not any(n.startswith("16") for n in residents)  # the next township: none

            ident = (await http.get(f"/v1/warnings/{wid}", headers=admin(clock))).json()
            cap = await http.get(f"/v1/cap/{ident['identifier']}.xml", headers=admin(clock))
            doc = etree.fromstring(cap.content)
            assert schema_errors(doc) == []
            assert doc.findtext(f"{{{NS}}}scope") == "Public"

            # the all-clear is a new version of a public warning: people get it at once,
            # residents after approval
            before = sms.per_number()
            await produce(
                broker.bootstrap,
                topics.risk_events,
                [("RG1", risk_event(2, "none", "red", clock.now()))],
            )

            async def cancel_internal() -> Any:
                return sms.per_number()[CADRE] == 2

            await eventually(cancel_internal, what="the all-clear to people")
            r = await http.get("/v1/publications?state=pending_approval", headers=admin(clock))
            (pending,) = r.json()
            assert (pending["version"], pending["requested_by"]) == (2, "system:new-version")
            assert sum(c for n, c in sms.per_number().items() if n.startswith("15")) == 300
            r = await http.post(
                f"/v1/publications/{pending['id']}/approve", json={}, headers=approver
            )
            assert r.json()["recipients"] == 300

            async def cancel_broadcast() -> Any:
                return all(sms.per_number()[n] == 2 for n in residents)

            await eventually(cancel_broadcast, what="the all-clear to residents")
            after = sms.per_number()
            assert {n: after[n] - before.get(n, 0) for n in residents} == dict.fromkeys(
                residents, 1
            )
            audit = await app.state.runtime.pool.fetch(
                "SELECT actor, action FROM alerting.audit_log WHERE action LIKE 'publication.%'"
                " ORDER BY id"
            )
            assert [(a["actor"], a["action"]) for a in audit] == [
                ("duty-1", "publication.request"),
                ("system:approval-timeout", "publication.escalate"),
                ("approver-1", "publication.approve"),
                ("system:new-version", "publication.request"),
                ("approver-1", "publication.approve"),
            ]


async def test_a_drill_reaches_drill_recipients_only(database, broker, topic_prefix):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, drill=True, approval_levels=()),
            clock=clock,
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            await setup(http, clock)
            r = await http.post(
                "/v1/persons",
                json={
                    "name": "演练员",
                    "role": "village_cadre",
                    "region_code": "110101001002",
                    "phone": "13700000009",
                    "drill": True,
                },
                headers=admin(clock),
            )
            assert r.status_code == 201
            await produce(
                broker.bootstrap,
                Topics(topic_prefix).risk_events,
                [("RG1", risk_event(1, "red", "none", clock.now()))],
            )

            async def drill_sent() -> Any:
                return sms.per_number().get("13700000009") == 1

            await eventually(drill_sent, what="the drill to the drill cadre")
            wid = (await http.get("/v1/warnings", headers=admin(clock))).json()[0]["id"]
            # no approval configured for any level: published at once, to drill residents only
            duty = who(clock, "duty-1", ["duty_officer"], ["warnings:publish"])
            r = await http.post(f"/v1/warnings/{wid}/publication", json={}, headers=duty)
            assert (r.json()["state"], r.json()["recipients"]) == ("approved", 10)

            async def residents_done() -> Any:
                per = sms.per_number()
                return len([n for n in per if n.startswith("15")]) == 10

            await eventually(residents_done, what="the drill broadcast")
            per = sms.per_number()
            # real recipients who are not drill recipients heard nothing
            assert CADRE not in per
            assert LEADER not in per
            assert all(t["text"].startswith("【应急管理局】【演练】") for t in sms.texts)
            cap = await http.get("/v1/cap/feed", headers=admin(clock))
            assert b"<status>" not in cap.content  # the feed is Atom; the CAP link says more
            ident = (await http.get(f"/v1/warnings/{wid}", headers=admin(clock))).json()
            doc = etree.fromstring(
                (await http.get(f"/v1/cap/{ident['identifier']}.xml", headers=admin(clock))).content
            )
            assert doc.findtext(f"{{{NS}}}status") == "Exercise"

            # the drill cadre confirms; the report says who got it, and who confirmed when
            clock.advance(90)
            r = await http.post(
                f"/v1/warnings/{wid}/confirmations", json={"person_id": 4}, headers=admin(clock)
            )
            assert r.json() == {"confirmed": 1}
            report = (
                await http.get(f"/v1/warnings/{wid}/drill-report", headers=admin(clock))
            ).json()
            assert report["recipients"] == 11  # the drill cadre and ten drill residents
            assert report["delivered"] == 11
            assert (report["must_confirm"], report["confirmed"]) == (1, 1)
            assert 85 <= report["median_confirm_seconds"] <= 95
            (cadre,) = [x for x in report["rows"] if x["recipient"] == "person:4"]
            assert (cadre["name"], cadre["confirmed_via"]) == ("演练员", "api")
            audit = (await http.get("/v1/audit?action=publication.", headers=admin(clock))).json()
            assert [a["action"] for a in audit] == ["publication.approve", "publication.request"]
            # a viewer of the region may read it too
            other = who(clock, "viewer", ["viewer"], ["warnings:read", "audit:read"])
            r = await http.get(f"/v1/warnings/{wid}/drill-report", headers=other)
            assert r.status_code == 200
