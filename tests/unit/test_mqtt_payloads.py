"""MQTT payloads read into readings: our form and the ThingsBoard gateway's, what is a fault of
one item and what makes the whole message malformed."""

from __future__ import annotations

import datetime as dt

import pytest

from services.ingest.domain.mqtt import MalformedPayload, MetricMap, PayloadMap, decode

NOW = dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)
OURS = PayloadMap(form="qianshao", source="mqtt")
TB = PayloadMap(form="thingsboard", source="tb")


def test_ours_takes_the_station_from_the_topic_unless_the_item_names_one() -> None:
    d = decode(
        OURS,
        "qianshao/readings/WL-ZG-01",
        b'[{"metric":"water_level","ts":"2026-07-01T05:55:00+08:00","value":3.2,"unit":"m"},'
        b'{"station_id":"RG-ZG-01","metric":"rainfall","ts":"2026-07-01T05:55:00Z","value":1}]',
        NOW,
    )
    assert d.faults == []
    assert [(r.station_id, r.metric, r.value, r.source) for r in d.readings] == [
        ("WL-ZG-01", "water_level", 3.2, "mqtt"),
        ("RG-ZG-01", "rainfall", 1.0, "mqtt"),
    ]
    assert d.readings[0].received_at == NOW


def test_ours_reports_a_bad_item_by_index_and_keeps_the_rest() -> None:
    d = decode(
        OURS,
        "t/S1",
        b'{"readings":[{"metric":"co","ts":"2026-07-01T05:55:00Z","value":1},'
        b'{"metric":"co","ts":"2026-07-01T05:55:00Z","value":"high"},'
        b'{"metric":"CO!","ts":"2026-07-01T05:55:00Z","value":1}]}',
        NOW,
    )
    assert len(d.readings) == 1
    assert d.faults[0].startswith("item 1: value")
    assert d.faults[1].startswith("item 2: metric")


@pytest.mark.parametrize(
    ("form", "payload", "why"),
    [
        (OURS, b"\xff\xfe", "not JSON"),
        (OURS, b"[]", "expected a reading"),
        (OURS, b"[1]", "expected a reading"),
        (TB, b"{}", "expected {device name"),
        (TB, b'"x"', "expected {device name"),
    ],
)
def test_a_payload_of_no_form_is_malformed(form: PayloadMap, payload: bytes, why: str) -> None:
    with pytest.raises(MalformedPayload, match=why):
        decode(form, "t/x", payload, NOW)


def test_thingsboard_entries_with_and_without_ts() -> None:
    d = decode(
        TB,
        "v1/gateway/telemetry",
        b'{"GAS-01":[{"ts":1782885600000,"values":{"ch4":0.4,"CO":12}},{"ch4":0.5}]}',
        NOW,
    )
    assert d.faults == []
    got = [(r.station_id, r.metric, r.value, r.ts) for r in d.readings]
    assert got == [
        ("GAS-01", "ch4", 0.4, dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)),
        ("GAS-01", "co", 12.0, dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)),
        ("GAS-01", "ch4", 0.5, NOW),
    ]


def test_thingsboard_without_a_map_names_each_key_it_cannot_read() -> None:
    d = decode(
        TB,
        "v1/gateway/telemetry",
        b'{"GAS-01":[{"ch4":0.4,"state":"ok","alarm":true,"\xe6\xb5\x93\xe5\xba\xa6":1}],'
        b'"\xe4\xb8\x80\xe5\x8f\xb7":[{"ch4":1}],"S2":[{"ts":"yesterday","values":{}}]}',
        NOW,
    )
    assert [r.metric for r in d.readings] == ["ch4"]
    assert any("'state' is 'ok', not a number" in f for f in d.faults)
    assert any("'alarm' is True, not a number" in f for f in d.faults)
    assert any("key '浓度' is not a metric name" in f for f in d.faults)
    assert any("device '一号' is not a station id" in f for f in d.faults)
    assert any("device 'S2' entry 0: 'values' must be an object" in f for f in d.faults)


def test_thingsboard_with_maps_reads_only_mapped_keys_with_their_units() -> None:
    mapped = PayloadMap(
        form="thingsboard",
        source="tb",
        metrics={"液位": MetricMap("water_level", "cm")},
        devices={"一号罐": "TANK-01"},
    )
    d = decode(
        mapped, "v1/gateway/telemetry", '{"一号罐":[{"液位":325,"状态":"ok"}]}'.encode(), NOW
    )
    assert d.faults == []
    assert [(r.station_id, r.metric, r.value, r.unit) for r in d.readings] == [
        ("TANK-01", "water_level", 325.0, "cm")
    ]
