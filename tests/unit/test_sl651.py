"""SL 651-2014 frames decoded: real stations' frames from a public test set (their CRCs as sent)
give the values read off them by hand against the standard's tables; a broken frame is refused
with why; the centre's answer is a frame the standard's reader takes; a multi-packet message is
put back together in packet order whatever order its packets arrive in."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.ingest.domain.sl651 import (
    BEIJING,
    ETB,
    ETX,
    SYN,
    Frame,
    FrameError,
    Reassembly,
    answer,
    crc16,
    frames_of,
    parse_ascii_frame,
    parse_frame,
    read_report,
    split,
)
from services.ingest.domain.sl651_station import report_frame_ascii

FRAMES = [
    bytes.fromhex(line)
    for line in (Path(__file__).parents[1] / "data" / "sl651_frames.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 7, 1, hh, mm, tzinfo=BEIJING)


def values(frame: bytes) -> list[tuple[str, str, datetime, float]]:
    r = read_report(parse_frame(frame))
    return [(v.metric, v.unit, v.ts, v.value) for v in r.values]


def test_every_public_frame_checks_out():
    for raw in FRAMES:
        f = parse_frame(raw)
        assert f.upward
        assert f.packets is None
        assert f.end == ETX
        assert crc16(raw[:-2]) == int.from_bytes(raw[-2:], "big")


def test_a_timed_report_of_a_river_station():
    f = parse_frame(FRAMES[0])
    assert (f.station, f.centre, f.function) == ("0030746200", 0x01, 0x32)
    r = read_report(f)
    assert r.serial == 0x4465
    assert r.sent == datetime(2026, 7, 1, 6, 0, 36, tzinfo=BEIJING)
    assert (r.station_type, r.observed) == ("river", at(6, 0))
    assert values(FRAMES[0]) == [
        ("rainfall_total", "mm", at(6, 0), 311.3),
        ("voltage", "V", at(6, 0), 12.87),
    ]
    # its two extension elements (FF09, FF33) are read past by their length, and named
    assert [s.split()[1] for s in r.skipped] == ["FF09", "FF33"]


def test_an_added_report_with_rainfalls_and_soil_moisture():
    got = values(FRAMES[1])
    assert got == [
        ("rainfall", "mm", at(6, 35), 0.0),  # PN05
        ("rainfall_1h", "mm", at(6, 35), 0.0),  # P1
        ("rainfall_current", "mm", at(6, 35), 2.5),  # PJ
        ("rainfall_total", "mm", at(6, 35), 210.5),  # PT
        ("soil_moisture_10cm", "%", at(6, 35), 15.8),
        ("soil_moisture_20cm", "%", at(6, 35), 21.6),
        ("soil_moisture_40cm", "%", at(6, 35), 18.3),
        ("humidity", "%", at(6, 35), 98.5),
        ("voltage", "V", at(6, 35), 12.0),
    ]


def test_an_hourly_report_gives_each_five_minutes_its_own_reading():
    got = values(FRAMES[3])
    rain = [(ts, v) for m, _, ts, v in got if m == "rainfall"]
    level = [(ts, v) for m, _, ts, v in got if m == "water_level"]
    assert rain == [(at(6, 0) - timedelta(minutes=5 * (11 - i)), 0.0) for i in range(12)]
    # F5: 12 × 01AC cm; then Z: 4.280 m at the hour
    assert level[:12] == [(at(6, 0) - timedelta(minutes=5 * (11 - i)), 4.28) for i in range(12)]
    assert level[12] == (at(6, 0), 4.28)
    assert ("voltage", "V", at(6, 0), 13.7) in got


def test_level_velocity_and_flow_with_their_decimals():
    assert values(FRAMES[4]) == [
        ("water_level", "m", at(6, 0), 33.66),
        ("velocity", "m/s", at(6, 0), 0.11),
        ("flow", "m3/s", at(6, 0), 4.32),
        ("voltage", "V", at(6, 0), 12.3),
    ]


def test_a_second_observation_time_applies_to_what_follows_it():
    got = values(FRAMES[5])
    assert {ts for m, _, ts, _ in got if m == "water_level" and ts < at(6, 0)} == {
        at(5, 5) - timedelta(minutes=5 * i) for i in range(12)
    }
    assert ("water_level", "m", at(6, 0), 0.0) in got
    assert ("voltage", "V", at(6, 0), 12.32) in got


def test_a_rain_gauge():
    r = read_report(parse_frame(FRAMES[6]))
    assert (r.station, r.station_type) == ("0081120005", "rain")
    assert values(FRAMES[6]) == [
        ("rainfall_total", "mm", at(6, 30), 184.8),
        ("voltage", "V", at(6, 30), 12.0),
    ]


def test_negative_and_missing_values():
    body = bytes.fromhex("0001260701060000F1F1008112000550F0F02607010600") + bytes.fromhex(
        "3923FF001250" + "3923FFFFFFFF"
    )
    r = read_report(_frame(body))
    assert [(v.metric, v.value) for v in r.values] == [("water_level", -1.25)]
    assert r.skipped == ["element Z (39) holds no value (all FF)"]


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC"),
        (lambda b: b[:20], "truncated"),
    ],
)
def test_a_broken_frame_is_refused_with_why(mangle, why):
    found = list(frames_of(mangle(FRAMES[0])))
    assert len(found) == 1
    assert isinstance(found[0], FrameError)
    assert why in found[0].reason


def test_bcd_that_is_not_bcd_is_refused():
    body = bytes.fromhex("0001260701060000F1F1008112000550F0F0260701060039230000A000")
    with pytest.raises(FrameError, match="not BCD"):
        read_report(_frame(body))


def test_a_stream_is_split_into_frames_and_garbage_is_told_apart():
    stream = b"\x00\x11" + FRAMES[0] + FRAMES[6] + FRAMES[1][:30]
    found, garbage, rest = split(stream)
    assert [f.station for f in found if isinstance(f, Frame)] == ["0030746200", "0081120005"]
    assert garbage == b"\x00\x11"
    assert rest == FRAMES[1][:30]
    found, _, rest = split(rest + FRAMES[1][30:])
    assert [f.station for f in found if isinstance(f, Frame)] == ["00303A9006"]
    assert rest == b""


def test_the_answer_is_a_downward_frame_of_the_same_function_and_serial():
    f = parse_frame(FRAMES[0])
    now = datetime(2026, 7, 1, 6, 0, 40, tzinfo=BEIJING)
    back = parse_frame(answer(f, now))
    assert not back.upward
    assert (back.station, back.centre, back.function) == ("0030746200", 0x01, 0x32)
    assert back.password == f.password
    assert back.body == bytes.fromhex("4465260701060040")
    assert back.end == 0x04  # EOT: the link may be released


def test_a_multi_packet_message_is_put_back_in_order():
    whole = parse_frame(FRAMES[3])
    cut = [whole.body[:20], whole.body[20:41], whole.body[41:]]
    packets = [
        _frame(part, packets=(3, i + 1), end=ETX if i == 2 else ETB, function=0x34)
        for i, part in enumerate(cut)
    ]
    r = Reassembly()
    assert r.add(packets[2]) is None
    assert r.add(packets[0]) is None
    body = r.add(packets[1])
    assert body == whole.body
    assert values(FRAMES[3]) == [
        (v.metric, v.unit, v.ts, v.value) for v in read_report(packets[0], body).values
    ]


def _frame(
    body: bytes,
    *,
    packets: tuple[int, int] | None = None,
    end: int = ETX,
    function: int = 0x32,
) -> Frame:
    head = bytes.fromhex("7E7E010081120005FFFF") + bytes([function])
    head += len(body).to_bytes(2, "big")
    head += (
        bytes([SYN]) + ((packets[0] << 12) | packets[1]).to_bytes(3, "big") if packets else b"\x02"
    )
    raw = head + body + bytes([end])
    return parse_frame(raw + crc16(raw).to_bytes(2, "big"))


def test_a_report_we_encode_is_the_public_frame_it_copies():
    """The encoder the demo station and the benchmark use, held to a real station's frame."""
    from services.ingest.domain.sl651_station import report_frame

    frame = report_frame(
        station="0081120005",
        function=0x32,
        serial=0x25B9,
        sent=datetime(2026, 7, 1, 6, 30, 6, tzinfo=BEIJING),
        observed=at(6, 30),
        station_type=0x50,
        elements=[(0x26, 0x19, 184.8), (0x38, 0x12, 12.0)],
        centre=0x00,
        password=b"\xff\xff",
    )
    assert frame == FRAMES[6]


# -- ASCII encoding ------------------------------------------------------------------------------
# No public ASCII frame was found to hold the reader to; these frames are written out by hand
# from the standard's ASCII layout (SOH, header fields as hex digits, body text, CRC as four hex
# digits), and the encoder the benchmark uses is held to the same bytes.

ASCII_BODY = "0012 260701063000 ST 0030746200 P TT 2607010630 PN05 2.5 PT 311.3 VT 12.87 XX 1"


def _ascii(body: str, *, function: str = "32", end: int = ETX) -> bytes:
    head = "01" + "0030746200" + "0000" + function + "0" + f"{len(body):03X}"
    out = b"\x01" + head.encode() + b"\x02" + body.encode() + bytes([end])
    return out + f"{crc16(out):04X}".encode()


def test_an_ascii_report_is_read_and_the_encoder_writes_the_same_bytes():
    raw = _ascii(ASCII_BODY)
    found, garbage, rest = split(raw)
    assert (garbage, rest) == (b"", b"")
    (f,) = found
    assert isinstance(f, Frame)
    assert (f.ascii, f.upward, f.station, f.function, f.centre) == (
        True,
        True,
        "0030746200",
        0x32,
        1,
    )
    report = read_report(f)
    assert report.serial == 0x12
    assert report.station_type == "rain"
    assert report.sent == datetime(2026, 7, 1, 6, 30, tzinfo=BEIJING)
    observed = datetime(2026, 7, 1, 6, 30, tzinfo=BEIJING)
    assert [(v.metric, v.value, v.ts) for v in report.values] == [
        ("rainfall", 2.5, observed),
        ("rainfall_total", 311.3, observed),
        ("voltage", 12.87, observed),
    ]
    assert report.skipped == ["element XX is not one this receiver maps to a metric"]
    encoded = report_frame_ascii(
        station="0030746200",
        function=0x32,
        serial=0x12,
        sent=observed,
        observed=observed,
        station_type="P",
        elements=[("PN05", "2.5"), ("PT", "311.3"), ("VT", "12.87"), ("XX", "1")],
    )
    assert encoded == raw


def test_ascii_and_hex_frames_share_a_stream_and_stray_soh_bytes_are_garbage():
    stream = b"\x01\x01zz" + _ascii(ASCII_BODY) + FRAMES[0] + _ascii(ASCII_BODY, function="33")
    found, garbage, rest = split(stream + _ascii(ASCII_BODY)[:30])
    assert [f.function for f in found if isinstance(f, Frame)] == [0x32, 0x32, 0x33]
    assert [f.ascii for f in found if isinstance(f, Frame)] == [True, False, True]
    assert garbage == b"\x01\x01zz"
    assert rest == _ascii(ASCII_BODY)[:30]  # waits for the rest of the frame


def test_a_broken_ascii_frame_says_why():
    raw = _ascii(ASCII_BODY)
    bad_crc = raw[:-4] + b"0000"
    (f,) = split(bad_crc)[0]
    assert isinstance(f, FrameError)
    assert f.reason.startswith("CRC 0000 does not match")
    (g,) = split(_ascii("0012 2607 ST"))[0]
    assert isinstance(g, Frame)
    with pytest.raises(FrameError, match="no serial and send time"):
        read_report(g)


def test_an_ascii_frame_is_answered_in_ascii():
    (f,) = split(_ascii(ASCII_BODY))[0]
    assert isinstance(f, Frame)
    now = datetime(2026, 7, 1, 6, 31, 5, tzinfo=BEIJING)
    got = answer(f, now)
    assert got[:1] == b"\x01"
    a = parse_ascii_frame(got)
    assert (a.ascii, a.upward, a.station, a.function, a.centre) == (
        True,
        False,
        "0030746200",
        0x32,
        1,
    )
    assert a.body == b"0012260701063105"
    assert a.end == 0x04  # EOT: the link is released
