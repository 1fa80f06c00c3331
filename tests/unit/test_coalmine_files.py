"""Coal-mine networking files read by their field maps: definitions become points with the coal
pack's positions, real-time records become values, a malformed record is a fault with its line
number while the others are read, statuses that are not measurements are dropped, a file still
being written is left for later, and GB 18030 text (whose second bytes may be '~') is split
only after decoding."""

from __future__ import annotations

import datetime as dt

import pytest

from services.ingest.domain.coalmine import (
    BEIJING,
    FileFault,
    Incomplete,
    parse_file,
    position,
    shipped_maps,
)

NATIONAL = shipped_maps()["national"]
LPS = shipped_maps()["liupanshui-2013"]
MINE = "140211B0012001"

CDDY = (
    f"{MINE};五通桥区某某煤矿有限公司;2026-07-01 08:00:00~\n"
    "001A01;F01;甲烷;1301采煤工作面上隅角T0;%CH4;0;4;1.0;1.5;0.9;2026-07-01 08:00:00~\n"
    "001A02;F01;甲烷;2202掘进工作面回风流T2;%CH4;0;4;1.0;1.0;0.9;2026-07-01 08:00:00~\n"
    "001A03;F01;一氧化碳;1301回风巷亊;ppm;0;500;24;;;2026-07-01 08:00:00~\n"
    "001D01;F01;主要通风机;主扇;;;;;;;2026-07-01 08:00:00~\n"
    "001A04;F01;甲烷;短了~\n"
)
CDSS = (
    f"{MINE};五通桥区某某煤矿有限公司;2026-07-01 08:05:00~\n"
    "001A01;甲烷;1301采煤工作面上隅角T0;0.42;正常;2026-07-01 08:04:50~\n"
    "001A02;;;0.38;正常;~\n"
    "001A03;一氧化碳;1301回风巷;x12;正常;2026-07-01 08:04:50~\n"
    "001A03;一氧化碳;1301回风巷;13;标校;2026-07-01 08:04:50~\n"
)


def test_definitions_become_points_with_positions_and_a_short_record_is_a_fault() -> None:
    p = parse_file(f"{MINE}_CDDY_20260701080000.txt", CDDY.encode("gb18030"), NATIONAL)
    assert (p.kind, p.mine_code, p.mine_name) == ("definitions", MINE, "五通桥区某某煤矿有限公司")
    assert p.generated_at == dt.datetime(2026, 7, 1, 8, 0, tzinfo=BEIJING)
    got = [(pt.station_id, pt.metric, pt.kind, pt.position, pt.line) for pt in p.points]
    assert got == [
        (f"{MINE}-001A01", "ch4", "coal_mine_methane", "T0", 2),
        (f"{MINE}-001A02", "ch4", "coal_mine_methane", "heading_T2", 3),
        (f"{MINE}-001A03", "co", "co", None, 4),
    ]
    assert p.points[0].limits == {"alarm": 1.0, "cut": 1.5, "restore": 0.9}
    assert p.points[2].location == "1301回风巷亊"  # its GB 18030 bytes hold a '~'
    assert p.ignored == 1  # the fan: no metric reads it
    assert [(f.line, f.reason) for f in p.faults] == [(6, "4 fields, the layout has 11")]


def test_realtime_values_a_bad_number_by_line_and_calibration_dropped() -> None:
    p = parse_file(f"{MINE}_CDSS_20260701080500.txt", CDSS.encode("utf-8"), NATIONAL)
    assert p.kind == "realtime"
    assert [(v.station_id, v.value, v.metric, v.line) for v in p.values] == [
        (f"{MINE}-001A01", 0.42, "ch4", 2),
        (f"{MINE}-001A02", 0.38, None, 3),  # no type, no time: the definition's, the header's
    ]
    assert p.values[0].ts == dt.datetime(2026, 7, 1, 8, 4, 50, tzinfo=BEIJING)
    assert p.values[1].ts == dt.datetime(2026, 7, 1, 8, 5, tzinfo=BEIJING)
    assert [(f.line, f.reason) for f in p.faults] == [(4, "value 'x12' is not a number")]
    assert p.ignored == 1
    assert p.records == 4


def test_a_file_still_being_written_waits_and_is_read_cut_when_abandoned() -> None:
    cut = CDSS.encode()[:-40]
    with pytest.raises(Incomplete):
        parse_file(f"{MINE}_CDSS_20260701080500.txt", cut, NATIONAL)
    p = parse_file(f"{MINE}_CDSS_20260701080500.txt", cut, NATIONAL, partial_ok=True)
    assert len(p.values) == 2
    assert p.faults[-1].reason == "the file ends inside this record (no '~')"
    assert p.faults[-1].line == 5


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("cddy.txt", b"x~", "is not named"),
        (f"{MINE}_AQSS_20260701080500.txt", b"x~", "not read by field map national"),
        (f"{MINE}_CDSS_20260701080500.txt", b"\xff\xfe\x00~", "not text"),
        (f"{MINE}_CDSS_20260701080500.txt", b"~~", "no header"),
        (f"{MINE}_CDSS_20260701080500.txt", b"A/B;x;2026~", "cannot name stations"),
        (f"{MINE}_CDSS_20260701080500.txt", b"M;x;yesterday~", "the header's time"),
    ],
)
def test_a_file_nothing_can_be_read_from(name: str, data: bytes, why: str) -> None:
    with pytest.raises(FileFault, match=why):
        parse_file(name, data, NATIONAL)


def test_a_regional_variant_reads_its_own_order() -> None:
    aqss = f"{MINE};20260701080500~001A01;0.61;0~001A02;0.2;断线~".encode("gb18030")
    p = parse_file(f"{MINE}_AQSS_20260701080500.txt", aqss, LPS)
    assert [(v.station_id, v.value) for v in p.values] == [(f"{MINE}-001A01", 0.61)]
    assert p.ignored == 1


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("1301采煤工作面上隅角T0", "T0"),
        ("1301工作面 T1", "T1"),
        ("1301回风巷T2", "T2"),
        ("2202掘进工作面T1", "heading_T1"),
        ("专用排瓦斯巷", "drainage"),
        ("总回风巷", None),
    ],
)
def test_positions(where: str, expected: str | None) -> None:
    assert position(where) == expected
