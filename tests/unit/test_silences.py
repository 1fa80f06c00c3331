from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.alerting.domain.silences import Silence, maintenance_ignores, silenced_by

T0 = datetime(2026, 7, 1, tzinfo=UTC)
H = timedelta(hours=1)


def decide(s: Silence, **kw):
    args = {
        "hazard": "rainstorm",
        "region_code": "110101001000",
        "station_ids": ["RG1", "RG2"],
        "msg_type": "Alert",
        "earlier_dispatched": False,
        "now": T0,
    }
    args.update(kw)
    return silenced_by([s], **args)


def test_matchers_must_all_hold():
    s = Silence(1, T0 - H, T0 + H, region_prefix="110101", hazard="rainstorm")
    assert decide(s) is s
    assert decide(s, hazard="flood") is None
    assert decide(s, region_code="110102001000") is None


def test_a_station_silence_needs_every_station_of_the_version():
    s = Silence(1, T0 - H, T0 + H, station_id="RG1")
    assert decide(s, station_ids=["RG1"]) is s
    assert decide(s) is None  # RG2 is not silenced
    assert decide(s, station_ids=[]) is None


def test_time_window_is_half_open():
    s = Silence(1, T0, T0 + H, hazard="rainstorm")
    assert decide(s, now=T0) is s
    assert decide(s, now=T0 + H) is None
    assert decide(s, now=T0 - timedelta(seconds=1)) is None


def test_the_all_clear_of_a_told_warning_is_never_held():
    s = Silence(1, T0 - H, T0 + H, hazard="rainstorm")
    assert decide(s, msg_type="Cancel", earlier_dispatched=True) is None
    assert decide(s, msg_type="Cancel", earlier_dispatched=False) is s
    assert decide(s, msg_type="Update", earlier_dispatched=True) is s


def test_maintenance_ignores_raises_only():
    assert maintenance_ignores(True, 1, 4)
    assert not maintenance_ignores(True, 4, 0)
    assert not maintenance_ignores(True, 2, 2)
    assert not maintenance_ignores(False, 0, 4)
