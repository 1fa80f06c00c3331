"""CAP 1.2's written rules beyond its schema: each broken one is refused, naming the rule and the
element, on a message the XSD accepts; a message that keeps them is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ingest.domain.cap import CapRejected, parse_cap

SAMPLE = (Path(__file__).parent.parent / "data" / "cap_rainstorm_red.xml").read_text("utf-8")
AREA = "<areaDesc>东城区</areaDesc>"


def with_area(extra: str) -> bytes:
    return SAMPLE.replace(AREA, AREA + extra).encode()


def with_area_end(extra: str) -> bytes:
    """``altitude`` and ``ceiling`` come last in an area, after its geocodes."""
    return SAMPLE.replace("</area>", extra + "</area>").encode()


def update(refs: str) -> bytes:
    return (
        SAMPLE.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>")
        .replace("<scope>Public</scope>", f"<scope>Public</scope>{refs}")
        .encode()
    )


GOOD_POLYGON = "<polygon>39.9,116.3 39.9,116.5 40.0,116.5 40.0,116.3 39.9,116.3</polygon>"
REF = "11000041600000,11000041600000_20260701080000_1,2026-07-01T08:00:00+08:00"


def test_a_message_that_keeps_the_rules_is_accepted():
    w = parse_cap(with_area(GOOD_POLYGON + "<circle>39.9,116.4 5</circle>"))
    assert w.region_codes == ["110101000000"]
    parse_cap(with_area_end("<altitude>0</altitude><ceiling>3000</ceiling>"))
    up = parse_cap(update(f"<references>{REF}</references>"))
    assert up.referenced_identifiers == ["11000041600000_20260701080000_1"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        # polygons
        (with_area("<polygon>39.9,116.3 39.9,116.5 39.9,116.3</polygon>"), "four at least"),
        (with_area("<polygon>39.9,116.3 39.9,116.5 40.0,116.5 40.0,116.3</polygon>"), "closed"),
        (with_area("<polygon>39.9,116.3 39.9,116.5 95,116.5 39.9,116.3</polygon>"), "outside"),
        (with_area("<polygon>39.9,116.3 39.9,abc 40,116.5 39.9,116.3</polygon>"), "numbers"),
        (with_area("<polygon>39.9;116.3 39.9;116.5 40;116.5 39.9;116.3</polygon>"), "numbers"),
        # circles
        (with_area("<circle>39.9,116.4 -5</circle>"), "0 km or more"),
        (with_area("<circle>39.9,116.4 five</circle>"), "not a number"),
        (with_area("<circle>39.9,116.4</circle>"), "lat,lon radius"),
        (with_area("<circle>39.9,216.4 5</circle>"), "outside"),
        # altitude and ceiling
        (with_area_end("<altitude>500</altitude><ceiling>100</ceiling>"), "below <altitude>"),
        (with_area_end("<ceiling>100</ceiling>"), "without <altitude>"),
        # identifier and sender
        (
            SAMPLE.replace(
                "<identifier>11000041600000_20260701093000_1</identifier>",
                "<identifier>1100004,20260701</identifier>",
            ).encode(),
            "<identifier>",
        ),
        (
            SAMPLE.replace(
                "<sender>11000041600000</sender>", "<sender>北京 气象台</sender>"
            ).encode(),
            "<sender>",
        ),
        # references
        (update("<references></references>"), "an Update names"),
        (update(""), "an Update names"),
        (update("<references>11000041600000,only-two</references>"), "triple"),
        (
            update("<references>11000041600000,x,2026-07-01 08:00:00</references>"),
            "CAP date-time",
        ),
        (update("<references>11000041600000,x,yesterday</references>"), "CAP date-time"),
    ],
)
def test_a_broken_rule_is_refused_naming_it(data, says):
    with pytest.raises(CapRejected, match=r"not valid CAP 1\.2") as refused:
        parse_cap(data)
    assert says in str(refused.value)
