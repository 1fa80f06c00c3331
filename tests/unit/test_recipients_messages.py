"""Pure alerting parts: who receives what, 叫应 timing and escalation, message texts and SMS
segmentation, confirmation tokens, and the providers' request signatures against the providers'
own published examples."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from services.alerting.adapters.channels.sms import aliyun_signature, tc3_string_to_sign
from services.alerting.domain.confirm import make_token, read_token
from services.alerting.domain.messages import (
    DRILL_PREFIX,
    full_text,
    instruction,
    sms_segments,
    sms_text,
    sms_units,
)
from services.alerting.domain.recipients import (
    ConfirmPolicy,
    ConfirmTask,
    Person,
    Subscription,
    ancestors,
    due_actions,
    escalation_targets,
    fan_out,
    in_scope,
    jurisdiction,
)
from shared.contracts import AlertVersion, Level
from shared.errors import NotFound

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)
TOWNSHIP = "110101001000"


def alert(level: str = "red", msg_type: str = "Alert", status: str = "Actual") -> AlertVersion:
    return AlertVersion(
        event_id="e",
        produced_at=T0,
        warning_id="w",
        identifier="110101000000_20260701160000_1",
        version=1,
        msg_type=msg_type,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        hazard="rainstorm",
        level=level,  # type: ignore[arg-type]
        region_code=TOWNSHIP,
        station_ids=["RG1"],
        sent=T0,
        headline="清河镇发布暴雨红色预警（I级）",
        description="暴雨红色预警：监测站点 RG1 超过预警阈值。",
    )


# -- regions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("110101001001", "110101001001"),  # a village
        ("110101001000", "110101001"),  # a township
        ("110101000000", "110101"),  # a county
        ("110100000000", "1101"),  # a city
        ("110000000000", "11"),  # a province
        ("110101001010", "110101001010"),  # a village whose code ends in 0 stays a village
    ],
)
def test_jurisdiction_strips_whole_empty_levels_only(code, expected):
    assert jurisdiction(code) == expected


def test_ancestors_nearest_first():
    assert ancestors("110101001001") == ["110101001", "110101", "1101", "11"]
    assert ancestors("110101") == ["1101", "11"]


def test_scope_is_inside_or_above_never_beside():
    assert in_scope("110101001001", TOWNSHIP)  # village in the township
    assert in_scope("110101", TOWNSHIP)  # the county above
    assert in_scope("110101001", TOWNSHIP)  # the township itself
    assert not in_scope("110101002001", TOWNSHIP)  # a village of the next township
    assert not in_scope("110102", TOWNSHIP)  # another county


# -- fan-out -------------------------------------------------------------------------------


def person(pid: int, role: str, region: str, **kw) -> Person:
    kw.setdefault("phone", f"1380000{pid:04d}")
    return Person(id=pid, name=f"P{pid}", role=role, region_code=region, **kw)  # type: ignore[arg-type]


def test_fan_out_channels_subscriptions_duty_and_confirmers():
    people = [
        person(1, "village_cadre", "110101001001"),
        person(
            2,
            "grid_worker",
            "110101001002",
            email="g@example.org",
            subscriptions=(
                Subscription("flood", Level.blue, ("sms",)),
                Subscription(None, Level.orange, ("email", "sms", "wecom_app")),
            ),
        ),
        person(3, "township_duty_officer", "110101001000", on_duty=True),
        person(4, "township_duty_officer", "110101001000", on_duty=False),
        person(5, "county_duty_officer", "110101000000", on_duty=True),
        person(6, "leader", "110101000000"),
        person(7, "village_cadre", "110101002001"),  # another township
        person(8, "village_cadre", "110101001003", phone=None, wechat_openid="o-8"),
        person(
            9,
            "info_officer",
            "110101001004",
            subscriptions=(Subscription("rainstorm", Level.red, ("sms",)),),
        ),
    ]
    plan = fan_out(
        people,
        hazard="rainstorm",
        level=Level.orange,
        region_code=TOWNSHIP,
        msg_type="Alert",
        drill=False,
        confirm_orange=True,
    )
    sends = {(s.person.id, s.channel) for s in plan.sends}
    assert sends == {
        (1, "sms"),
        # the flood subscription does not match; the orange one does; no WeCom id: skipped
        (2, "email"),
        (2, "sms"),
        (3, "sms"),  # on duty
        (5, "sms"),  # on duty, above
        (6, "sms"),  # the leader above
        # 4 off duty, 7 beside, 8 has no phone for the default SMS, 9 only from red
    }
    # inside the area and not a leader: 1, 2, 3; the county officer (5) is above the area
    assert [p.id for p in plan.confirmers] == [1, 2, 3]

    red = fan_out(
        people,
        hazard="rainstorm",
        level=Level.red,
        region_code=TOWNSHIP,
        msg_type="Alert",
        drill=False,
    )
    assert (9, "sms") in {(s.person.id, s.channel) for s in red.sends}
    orange_default = fan_out(
        people,
        hazard="rainstorm",
        level=Level.orange,
        region_code=TOWNSHIP,
        msg_type="Alert",
        drill=False,
    )
    assert orange_default.confirmers == []  # orange needs confirmation only when configured
    cancel = fan_out(
        people,
        hazard="rainstorm",
        level=Level.red,
        region_code=TOWNSHIP,
        msg_type="Cancel",
        drill=False,
    )
    assert cancel.sends
    assert cancel.confirmers == []


def test_a_drill_reaches_drill_recipients_only():
    people = [
        person(1, "village_cadre", "110101001001", drill=True),
        person(2, "village_cadre", "110101001002"),
    ]
    plan = fan_out(
        people,
        hazard="rainstorm",
        level=Level.red,
        region_code=TOWNSHIP,
        msg_type="Alert",
        drill=True,
    )
    assert [s.person.id for s in plan.sends] == [1]


# -- 叫应 timing and escalation -----------------------------------------------------------


def test_due_actions_voice_after_t1_escalation_after_t2_each_once():
    policy = ConfirmPolicy(timedelta(minutes=10), timedelta(minutes=30))
    t = ConfirmTask(id=1, person_id=1, jurisdiction="110101001001", created_at=T0)
    assert due_actions([t], T0 + timedelta(minutes=9, seconds=59), policy) == []
    assert due_actions([t], T0 + timedelta(minutes=10), policy) == [(t, "voice")]
    called = ConfirmTask(1, 1, "110101001001", T0, voice_at=T0 + timedelta(minutes=10))
    assert due_actions([called], T0 + timedelta(minutes=29), policy) == []
    assert due_actions([called], T0 + timedelta(minutes=30), policy) == [(called, "escalate")]
    # a late sweep does both at once
    assert [a for _, a in due_actions([t], T0 + timedelta(hours=1), policy)] == [
        "voice",
        "escalate",
    ]
    done = ConfirmTask(1, 1, "110101001001", T0, confirmed_at=T0 + timedelta(minutes=1))
    assert due_actions([done], T0 + timedelta(hours=1), policy) == []
    escalated = ConfirmTask(1, 1, "x", T0, voice_at=T0, escalated_at=T0)
    assert due_actions([escalated], T0 + timedelta(hours=1), policy) == []


def test_escalation_goes_to_the_nearest_level_up_with_someone_on_duty():
    township = person(3, "township_duty_officer", "110101001000", on_duty=True)
    county = person(5, "county_duty_officer", "110101000000", on_duty=True)
    other = person(6, "township_duty_officer", "110101002000", on_duty=True)
    assert escalation_targets("110101001001", [township, county, other]) == [township]
    # the township officer's own unconfirmed task goes to the county
    assert escalation_targets("110101001", [township, county]) == [county]
    # no one at the township: skip to the county
    assert escalation_targets("110101001001", [county, other]) == [county]
    assert escalation_targets("110101001001", [other]) == []


# -- messages ------------------------------------------------------------------------------


def test_sms_text_headline_instruction_and_drill_prefix():
    text = sms_text(alert())
    assert text.startswith("清河镇发布暴雨红色预警（I级）。")
    assert "立即组织危险区域人员撤离" in text
    assert not text.startswith(DRILL_PREFIX)
    assert sms_text(alert(status="Exercise")).startswith(DRILL_PREFIX)
    assert full_text(alert(status="Exercise")).startswith(DRILL_PREFIX)
    assert "预警已解除" in sms_text(alert(msg_type="Cancel"))
    assert "http://x/c/1" in sms_text(alert(), confirm_url="http://x/c/1")


def test_instruction_falls_back_to_the_nearest_lower_level_then_generic():
    # coal-mine gas has no yellow text: yellow uses blue's
    assert instruction("coal_mine_gas", Level.yellow, "Alert") == instruction(
        "coal_mine_gas", Level.blue, "Alert"
    )
    assert instruction("unknown_hazard", Level.red, "Alert") == "请相关责任人立即核查并做好防范。"


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("预" * 70, 1),
        ("预" * 71, 2),  # over 70: parts of 67
        ("预" * 134, 2),
        ("预" * 135, 3),
        ("a" * 160, 1),  # GSM 7-bit
        ("a" * 161, 2),  # parts of 153
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 159 + "€", 2),  # the euro sign takes two GSM units
        ("a" * 69 + "预", 1),  # one Chinese character makes it all UCS-2
        ("a" * 70 + "预", 2),
        ("𠀀" * 35, 1),  # outside the BMP: two UCS-2 units each
        ("𠀀" * 36, 2),
    ],
)
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


def test_sms_units_encoding():
    assert sms_units("Hello") == ("gsm7", 5)
    assert sms_units("[x]") == ("gsm7", 5)
    assert sms_units("预警") == ("ucs2", 2)


# -- tokens and signatures -----------------------------------------------------------------


def test_confirm_tokens_verify_and_refuse_tampering():
    token = make_token("secret-a", 42)
    assert read_token("secret-a", token) == 42
    with pytest.raises(NotFound):
        read_token("secret-b", token)
    with pytest.raises(NotFound):
        read_token("secret-a", "43" + token[2:])
    with pytest.raises(NotFound):
        read_token("secret-a", "not-a-token")


def test_aliyun_signature_matches_the_published_example():
    # Aliyun's RPC signature documentation: DescribeRegions, secret "testsecret", GET
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert aliyun_signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_tc3_string_to_sign_matches_the_published_example():
    # Tencent Cloud's signature v3 documentation: DescribeInstances on cvm at 1551113065
    payload = b'{"Limit": 1, "Filters": [{"Values": ["unnamed"], "Name": "instance-name"}]}'
    assert (
        hashlib.sha256(payload).hexdigest()
        == "99d58dfbc6745f6747f36bfca17dee5e6881dc0428a0a36f96199342bc5b4907"
    )
    assert tc3_string_to_sign("cvm.tencentcloudapi.com", "cvm", 1551113065, payload) == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "2815843035062fffda5fd6f2a44ea8a34818b0dc46f024b8b3786976a3adda7a"
    )
