from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.alerting.domain.grouping import (
    GroupPolicy,
    OpenWarning,
    dispatch_time,
    inhibited_by,
    repeat_due,
)
from shared.contracts import Level

T0 = datetime(2026, 7, 1, tzinfo=UTC)
P = GroupPolicy(
    group_wait=timedelta(seconds=30),
    group_interval=timedelta(minutes=5),
    repeat_interval=timedelta(hours=4),
    flap_threshold=4,
    flap_hold=timedelta(minutes=15),
)


def when(**kw):
    args = {
        "now": T0,
        "msg_type": "Update",
        "level": Level.yellow,
        "previous_level": Level.orange,
        "last_dispatch_at": T0 - timedelta(minutes=1),
        "recent_versions": 1,
        "policy": P,
    }
    args.update(kw)
    return dispatch_time(**args)


def test_a_new_warning_waits_group_wait():
    assert when(msg_type="Alert", previous_level=None, last_dispatch_at=None) == T0 + P.group_wait


def test_a_raise_goes_at_once_even_inside_the_interval_or_flapping():
    assert when(level=Level.red, previous_level=Level.orange) == T0
    assert when(level=Level.red, previous_level=Level.orange, recent_versions=9) == T0


def test_lowering_and_all_clear_wait_for_the_group_interval():
    assert when() == T0 + timedelta(minutes=4)
    assert when(msg_type="Cancel") == T0 + timedelta(minutes=4)
    assert when(last_dispatch_at=T0 - timedelta(hours=1)) == T0


def test_flapping_holds_lowering_and_all_clear():
    assert when(recent_versions=4, last_dispatch_at=T0 - timedelta(hours=1)) == T0 + P.flap_hold
    assert when(recent_versions=3, last_dispatch_at=T0 - timedelta(hours=1)) == T0


def test_repeat_due():
    assert not repeat_due(T0, T0 + timedelta(hours=3, minutes=59), P)
    assert repeat_due(T0, T0 + timedelta(hours=4), P)
    assert not repeat_due(None, T0, P)
    assert not repeat_due(T0, T0 + timedelta(days=1), GroupPolicy(repeat_interval=timedelta(0)))


def test_inhibition_needs_a_rule_the_same_region_and_a_higher_level():
    flood = OpenWarning("w1", "flood", "110101001000", Level.red)
    rules = [("flood", "rainstorm")]
    kw = {"hazard": "rainstorm", "region_code": "110101001000", "rules": rules}
    assert inhibited_by(level=Level.blue, open_warnings=[flood], **kw) is flood
    assert inhibited_by(level=Level.red, open_warnings=[flood], **kw) is None
    other = OpenWarning("w2", "flood", "110101002000", Level.red)
    assert inhibited_by(level=Level.blue, open_warnings=[other], **kw) is None
    gas = OpenWarning("w3", "coal_mine_gas", "110101001000", Level.red)
    assert inhibited_by(level=Level.blue, open_warnings=[gas], **kw) is None
    assert (
        inhibited_by(
            hazard="flood",
            region_code="110101001000",
            level=Level.blue,
            open_warnings=[flood],
            rules=rules,
        )
        is None
    )


def test_storm_holds_only_over_the_limit_never_red_or_confirmers():
    from services.alerting.domain.storm import StormPolicy, digest_text, to_hold

    p = StormPolicy(limit=2)
    rows = [("person:1", "sms"), ("person:2", "sms"), ("person:3", "sms"), ("sub:1", "webhook")]
    recent = {
        ("person:1", "sms"): 2,
        ("person:2", "sms"): 1,
        ("person:3", "sms"): 5,
        ("sub:1", "webhook"): 9,
    }
    kw = {"policy": p}
    assert to_hold(recent, rows, level=Level.blue, must_confirm=set(), **kw) == {
        ("person:1", "sms"),
        ("person:3", "sms"),
    }
    assert to_hold(recent, rows, level=Level.blue, must_confirm={"person:3"}, **kw) == {
        ("person:1", "sms")
    }
    assert to_hold(recent, rows, level=Level.red, must_confirm=set(), **kw) == set()
    assert digest_text(["a", "b"], drill=True) == "【演练】【汇总】您有2条预警信息：a；b。"
    assert "等7条" in digest_text([str(i) for i in range(7)], drill=False)
