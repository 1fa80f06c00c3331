"""Feeds gone silent: the pure decisions (services.alerting.domain.feeds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.alerting.domain.feeds import (
    Incident,
    Signal,
    back_text,
    duty_level,
    escalation_due,
    escalation_level,
    escalation_text,
    offline_text,
    span_cn,
    step,
    subject_of,
)
from services.alerting.domain.recipients import Person

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # 10:00 Beijing


def signal(station: str, source: str = "health", offline: bool = True) -> Signal:
    return Signal(
        event_id=f"{station}-{source}-{offline}",
        station_id=station,
        source=source,  # type: ignore[arg-type]
        offline=offline,
        region_code="110101001001",
        enterprise="91110000100000000A",
        at=T0,
    )


def incident(*offline: tuple[str, str], **kw: object) -> Incident:
    return Incident(
        id=1,
        subject="enterprise:91110000100000000A",
        enterprise="91110000100000000A",
        region_code="110101001001",
        title="示例化工有限公司",
        opened_at=T0,
        offline=frozenset(offline),
        **kw,  # type: ignore[arg-type]
    )


def officer(pid: int, role: str, region: str, on_duty: bool = True) -> Person:
    return Person(
        id=pid,
        name=f"officer{pid}",
        role=role,
        region_code=region,
        phone=f"1380000000{pid}",
        wechat_openid=None,
        wecom_userid=None,
        email=None,
        drill=False,
        on_duty=on_duty,
        subscriptions=(),
    )


def test_an_enterprise_is_one_subject_and_a_lone_station_its_own():
    assert subject_of("S1", "91110000100000000A") == "enterprise:91110000100000000A"
    assert subject_of("S1", None) == "station:S1"


def test_the_first_signal_opens_the_next_join_and_the_last_back_closes():
    assert step(None, signal("S1")) == "open"
    one = incident(("S1", "health"))
    assert step(one, signal("S1")) == "none"  # said again
    assert step(one, signal("S2")) == "join"
    assert step(one, signal("S1", "no_data")) == "join"  # the same station, by another source
    two = incident(("S1", "health"), ("S1", "no_data"))
    # back by health while risk still sees no data: the station is not back yet
    assert step(two, signal("S1", "health", offline=False)) == "leave"
    assert step(one, signal("S1", "health", offline=False)) == "close"
    # back from what was never offline, or with no incident: nothing
    assert step(one, signal("S2", offline=False)) == "none"
    assert step(None, signal("S1", offline=False)) == "none"


def test_the_region_s_own_duty_officers_are_told_else_the_nearest_level_above():
    township = officer(1, "township_duty_officer", "110101001000")
    county = officer(2, "county_duty_officer", "110101000000")
    off_duty = officer(3, "township_duty_officer", "110101001000", on_duty=False)
    cadre = officer(4, "village_cadre", "110101001001")
    assert duty_level("110101001001", [township, county, cadre]) == ("110101001", [township])
    assert duty_level("110101001001", [off_duty, county]) == ("110101", [county])
    assert duty_level("110101001001", [off_duty]) == ("110101001001", [])
    # the escalation goes above the level told
    assert escalation_level("110101001", [township, county]) == ("110101", [county])
    assert escalation_level("110101", [township, county]) == ("110101", [])


def test_escalation_is_due_once_after_the_time_and_only_when_someone_was_told():
    after = timedelta(hours=2)
    told = incident(("S1", "health"), notified_at=T0, notified_level="110101001")
    assert not escalation_due(told, T0 + timedelta(minutes=119), after)
    assert escalation_due(told, T0 + after, after)
    escalated = incident(("S1", "health"), notified_at=T0, escalated_at=T0 + after)
    assert not escalation_due(escalated, T0 + 2 * after, after)
    assert not escalation_due(incident(("S1", "health")), T0 + 2 * after, after)


def test_durations_and_texts_read_as_people_say_them():
    assert span_cn(timedelta(seconds=30)) == "不足1分钟"
    assert span_cn(timedelta(minutes=45)) == "45分钟"
    assert span_cn(timedelta(hours=2)) == "2小时"
    assert span_cn(timedelta(hours=2, minutes=15)) == "2小时15分钟"
    assert span_cn(timedelta(days=3, hours=4, minutes=5)) == "3天4小时"
    inc = incident(*((f"S{i}", "health") for i in range(7)))
    text = offline_text(inc)
    assert text.startswith("【监测离线】示例化工有限公司的在线监测自07月01日10:00起中断")
    assert "S0、S1、S2、S3、S4等7个站点" in text
    assert "中断2小时15分钟" in escalation_text(inc, T0 + timedelta(hours=2, minutes=15))
    assert back_text(inc, T0 + timedelta(minutes=40)) == (
        "【恢复在线】示例化工有限公司的在线监测已恢复，中断40分钟。"
    )
