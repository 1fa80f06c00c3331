"""The national platform's GB/T 35965.1 message, read as the intake reads CAP: a provincial gale
Update of the form the provincial platforms exchange (no namespace, senderCode, a space in the
times, a method per channel, empty elements, a comma-separated geocode), and each malformed field
refused by name."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from services.ingest.domain.cap import CapRejected, parse_cap

SAMPLE = (Path(__file__).parent.parent / "data" / "national_gale_update.xml").read_text("utf-8")


def variant(old: str, new: str) -> bytes:
    assert old in SAMPLE
    return SAMPLE.replace(old, new).encode()


def test_a_provincial_gale_update_is_read():
    w = parse_cap(SAMPLE.encode())
    assert w.identifier == "41000041600000_20200205105119"
    assert w.sender == "41000041600000"
    assert w.sent == datetime.fromisoformat("2020-02-05T10:45:00+08:00")
    assert (w.status, w.msg_type) == ("Actual", "Update")
    assert w.level == "blue"
    assert w.event == "大风"
    assert w.region_codes == ["410000000000"]  # listed twice, kept once
    assert w.references == ["41000041600000_20200204121842"]
    assert w.referenced_identifiers == ["41000041600000_20200204121842"]
    assert w.expires is None  # <expires/> is absent, not an error
    assert w.headline.startswith("河南省气象局发布大风蓝色预警")


def test_severity_unknown_falls_back_to_the_colour_of_the_headline():
    w = parse_cap(variant("<severity>Blue</severity>", "<severity>Unknown</severity>"))
    assert w.level == "blue"


def test_an_unlisted_event_code_is_named_by_the_headline():
    w = parse_cap(variant("<eventType>11B06</eventType>", "<eventType>11B17</eventType>"))
    assert w.event.startswith("河南省气象局发布大风蓝色预警")


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        (
            "<senderCode>41000041600000</senderCode>",
            "<senderCode>410000</senderCode>",
            "<senderCode>",
        ),
        (
            "<sendTime>2020-02-05 10:45:00+08:00</sendTime>",
            "<sendTime>2020/02/05</sendTime>",
            "<sendTime>",
        ),
        ("<severity>Blue</severity>", "<severity>Purple</severity>", "<severity>"),
        ("<eventType>11B06</eventType>", "<eventType>gale</eventType>", "<eventType>"),
        ("<geocode>410000000000,410000000000</geocode>", "<geocode>Henan</geocode>", "<geocode>"),
        ("<geocode>410000000000,410000000000</geocode>", "<geocode/>", "<geocode>"),
        ("<references>41000041600000_20200204121842</references>", "<references/>", "<references>"),
        ("<msgType>Update</msgType>", "<msgType>Ack</msgType>", "<msgType>"),
        ("<polygon/>", "<polygon>34.7,113.6 34.8,113.7 34.7,113.6</polygon>", "<polygon>"),
        ("<circle/>", "<circle>34.7,113.6 -1</circle>", "<circle>"),
        ("<identifier>41000041600000_20200205105119</identifier>", "<identifier/>", "<identifier>"),
    ],
)
def test_a_malformed_field_is_refused_by_name(old, new, names):
    with pytest.raises(CapRejected, match="national format") as refused:
        parse_cap(variant(old, new))
    assert names in str(refused.value)
