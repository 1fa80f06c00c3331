"""CAP 1.2 / GB/T 35965.1 parsing: schema validation, level and region, references, and refusal
of hostile XML."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from services.ingest.domain.cap import CapRejected, parse_cap

SAMPLE = (Path(__file__).parent.parent / "data" / "cap_rainstorm_red.xml").read_bytes()


def variant(**replace: str) -> bytes:
    text = SAMPLE.decode()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text.encode()


def test_a_gbt_35965_rainstorm_red_warning():
    w = parse_cap(SAMPLE)
    assert w.identifier == "11000041600000_20260701093000_1"
    assert (w.msg_type, w.status, w.level) == ("Alert", "Actual", "red")
    assert w.region_codes == ["110101000000"]
    assert w.sent == datetime.fromisoformat("2026-07-01T09:30:00+08:00")
    assert w.expires == datetime.fromisoformat("2026-07-01T21:30:00+08:00")
    assert w.headline.startswith("东城区气象台")


@pytest.mark.parametrize(
    ("event", "severity", "level"),
    [
        ("暴雨橙色预警", "Extreme", "orange"),  # the colour in the event wins
        ("大风预警", "Severe", "red"),  # else the 预警级别 parameter (红色)
    ],
)
def test_the_level_comes_from_the_colour_then_the_parameter(event, severity, level):
    data = variant(**{"<event>暴雨红色预警</event>": f"<event>{event}</event>"})
    data = data.replace(
        b"<severity>Extreme</severity>", f"<severity>{severity}</severity>".encode()
    )
    assert parse_cap(data).level == level


def test_without_colour_or_parameter_the_severity_maps_to_a_level():
    data = variant(
        **{
            "<event>暴雨红色预警</event>": "<event>Flood Warning</event>",
            "<parameter><valueName>预警级别</valueName><value>红色</value></parameter>": "",
            "<severity>Extreme</severity>": "<severity>Moderate</severity>",
        }
    )
    assert parse_cap(data).level == "yellow"


def test_a_cancel_references_what_it_cancels():
    data = variant(
        **{
            "<msgType>Alert</msgType>": "<msgType>Cancel</msgType>\n  <scope>Public</scope>\n"
            "  <references>11000041600000,11000041600000_20260701093000_1,"
            "2026-07-01T09:30:00+08:00</references>",
            "<scope>Public</scope>\n  <info>": "<info>",
            "_1</identifier>": "_2</identifier>",
        }
    )
    w = parse_cap(data)
    assert w.msg_type == "Cancel"
    assert w.referenced_identifiers == ["11000041600000_20260701093000_1"]


def test_another_countrys_valid_cap_is_accepted_without_regions():
    data = variant(
        **{
            "<geocode><valueName>行政区划代码</valueName><value>110101</value></geocode>": (
                "<geocode><valueName>SAME</valueName><value>006113</value></geocode>"
            ),
            "<language>zh-CN</language>": "<language>en-US</language>",
        }
    )
    w = parse_cap(data)
    assert w.region_codes == []
    assert w.level == "red"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (variant(**{"<sender>11000041600000</sender>": ""}), "line"),  # sender is required
        (variant(**{"<status>Actual</status>": "<status>Real</status>"}), "status"),
        (variant(**{"<urgency>Immediate</urgency>": ""}), "not valid CAP 1.2"),
        (b"<alert><identifier>x</identifier>", "not well-formed"),
        (b'<alert xmlns="urn:example:other"/>', "not valid CAP 1.2"),
    ],
)
def test_invalid_messages_are_refused_with_the_reason(data, reason):
    with pytest.raises(CapRejected, match=reason):
        parse_cap(data)


def test_entities_and_doctypes_are_refused():
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + SAMPLE.split(b"?>", 1)[1].replace(b"<headline>", b"<headline>&x;")
    )
    with pytest.raises(CapRejected):
        parse_cap(xxe)


def test_an_ack_carries_no_warning():
    with pytest.raises(CapRejected, match="msgType"):
        parse_cap(variant(**{"<msgType>Alert</msgType>": "<msgType>Ack</msgType>"}))
