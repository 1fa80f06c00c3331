from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.alerting.grouping import (
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
