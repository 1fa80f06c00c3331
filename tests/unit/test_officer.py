"""The pure part of officers' warnings: areas and their group region, the checks a draft must
pass, whose approval each request needs, the hold an officer's cancel leaves, the expiry of a
warning an officer decides, fan-out over several divisions and the CAP document of such a
version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from services.alerting.domain.capout import CapVersion, cap_xml
from services.alerting.domain.lifecycle import HAZARD_CN, ExpiryPolicy, expiry_action
from services.alerting.domain.officer import (
    Content,
    check,
    common_region,
    held_by_officer,
    may_decide,
    needs_approval,
    normalise_areas,
)
from services.alerting.domain.recipients import Person, fan_out_areas
from shared.capxml import NS, schema_errors
from shared.contracts import Level
from shared.errors import PermissionDenied, ValidationFailed

NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
A, B = "110101001000", "110101002000"


def content(**kw: object) -> Content:
    base: dict[str, object] = {
        "hazard": "rainstorm",
        "level": Level.red,
        "areas": (A, B),
        "expires": NOW + timedelta(hours=6),
    }
    return Content(**{**base, **kw})  # type: ignore[arg-type]


def test_the_group_region_is_the_nearest_division_holding_every_area():
    assert common_region([A]) == A
    assert common_region([A, B]) == "110101000000"
    assert common_region(["110101001001", "110101001002"]) == A
    assert common_region(["110101001001", "110102001001"]) == "110100000000"
    assert common_region(["110101001001", "120101001001"]) == "000000000000"


def test_an_area_inside_another_listed_one_is_dropped():
    assert normalise_areas([A, "110101001001", B, A]) == (A, B)
    assert normalise_areas(["110101000000", A]) == ("110101000000",)


def test_a_draft_is_checked_and_given_its_event_type():
    ok = check(content(), region_prefix="110101", now=NOW, known_hazards=HAZARD_CN)
    assert ok.event_type == "11B03"
    assert (
        check(
            content(hazard="flood"), region_prefix="", now=NOW, known_hazards=HAZARD_CN
        ).event_type
        is None
    )  # no code is guessed


@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        ({"areas": ("120101001000",)}, PermissionDenied, "outside your region"),
        ({"areas": ()}, ValidationFailed, "areas"),
        ({"areas": ("1101",)}, ValidationFailed, "12-digit"),
        ({"hazard": "volcano"}, ValidationFailed, "hazard"),
        ({"level": Level.none}, ValidationFailed, "level"),
        ({"expires": NOW}, ValidationFailed, "expires"),
        ({"expires": NOW + timedelta(days=8)}, ValidationFailed, "继续发布"),
        (
            {"effective": NOW + timedelta(hours=7)},
            ValidationFailed,
            "after effective",
        ),
        ({"polygon": "39.9,116.4 39.91,116.4 39.9,116.4"}, ValidationFailed, "polygon"),
        (
            {"polygon": "39.9,116.4 39.91,116.4 39.91,116.41 39.92,116.4"},
            ValidationFailed,
            "closed",
        ),
        ({"polygon": "99,116.4 39.91,116.4 39.91,116.41 99,116.4"}, ValidationFailed, "outside"),
    ],
)
def test_a_draft_that_breaks_a_rule_is_refused_naming_it(kw, error, words):
    with pytest.raises(error, match=words):
        check(content(**kw), region_prefix="110101", now=NOW, known_hazards=HAZARD_CN)


def test_which_requests_need_a_second_person():
    levels = ("orange", "red")
    assert needs_approval("issue", level_after=Level.red, level_before=None, levels=levels)
    assert not needs_approval("issue", level_after=Level.blue, level_before=None, levels=levels)
    # lowering a red warning to yellow: yellow is what stands after it
    assert not needs_approval(
        "update", level_after=Level.yellow, level_before=Level.red, levels=levels
    )
    # lifting a red warning early is as weighty as raising one
    assert needs_approval("cancel", level_after=Level.red, level_before=Level.red, levels=levels)
    assert not needs_approval(
        "cancel", level_after=Level.blue, level_before=Level.blue, levels=levels
    )
    with pytest.raises(PermissionDenied):
        may_decide("duty-1", "duty-1")
    may_decide("duty-1", "approver-1")


def test_an_officers_cancel_holds_the_same_evidence_until_it_ends():
    until = NOW + timedelta(hours=2)
    assert held_by_officer(Level.orange, until, Level.orange, NOW)
    assert held_by_officer(Level.orange, until, Level.blue, NOW)
    assert not held_by_officer(Level.orange, until, Level.red, NOW)  # news: a higher level
    assert not held_by_officer(Level.orange, until, Level.none, NOW)
    assert not held_by_officer(Level.orange, until, Level.orange, until)
    assert not held_by_officer(None, None, Level.red, NOW)


def test_a_warning_an_officer_decides_runs_to_its_expiry_and_is_never_renewed():
    policy = ExpiryPolicy(timedelta(hours=24), timedelta(minutes=30), timedelta(minutes=10))
    expires = NOW + timedelta(minutes=10)
    fresh = NOW  # risk backs it, and is alive
    kw = {"evidence_at": fresh, "risk_heard_at": fresh, "policy": policy, "expires_at": expires}
    assert expiry_action(now=NOW, **kw) == "renew"
    assert expiry_action(now=NOW, controlled=True, **kw) == "wait"
    assert expiry_action(now=expires, controlled=True, **kw) == "expire"


def test_fan_out_over_two_townships_reaches_each_person_once():
    people = [
        Person(1, "甲", "village_cadre", "110101001001", phone="1"),
        Person(2, "乙", "village_cadre", "110101002001", phone="2"),
        Person(3, "区值班", "county_duty_officer", "110101000000", phone="3", on_duty=True),
        Person(4, "丙", "village_cadre", "110101003001", phone="4"),
    ]
    out = fan_out_areas(
        people, areas=[A, B], hazard="rainstorm", level=Level.red, msg_type="Alert", drill=False
    )
    assert sorted(s.person.id for s in out.sends) == [1, 2, 3]
    assert sorted(p.id for p in out.confirmers) == [1, 2]


def test_the_cap_of_an_officers_version_lists_each_division_and_its_polygon():
    polygon = "39.90,116.40 39.93,116.40 39.93,116.42 39.90,116.40"
    doc = etree.fromstring(
        cap_xml(
            CapVersion(
                identifier="11010100000000_20260701160000_7",
                sender="11010100000000",
                sender_name="东城区应急管理局",
                sent=NOW,
                status="Actual",
                msg_type="Alert",
                kind="public",
                references=[],
                hazard="rainstorm",
                level=Level.red,
                region_code="110101000000",
                headline="东华门街道、景山街道发布暴雨红色预警（I级）",
                description="经会商研判……",
                station_ids=[],
                expires=NOW + timedelta(hours=6),
                area_desc="东城区东华门街道、东城区景山街道",
                areas=[A, B],
                polygon=polygon,
                instruction="立即转移。",
                effective=NOW + timedelta(minutes=30),
                event_type="11B03",
            )
        )
    )
    assert schema_errors(doc) == []
    c = f"{{{NS}}}"
    info = doc.find(f"{c}info")
    assert info.findtext(f"{c}instruction") == "立即转移。"
    assert info.findtext(f"{c}effective") == "2026-07-01T16:30:00+08:00"
    assert info.findtext(f"{c}eventCode/{c}value") == "11B03"
    assert [g.findtext(f"{c}value") for g in info.iterfind(f"{c}area/{c}geocode")] == [A, B]
    assert info.findtext(f"{c}area/{c}polygon") == polygon
