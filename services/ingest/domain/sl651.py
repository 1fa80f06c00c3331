"""SL 651-2014 水文监测数据通信规约: hydrological and rain telemetry frames, HEX/BCD encoding,
decoded into readings; and the answers a station expects. Pure: bytes in, frames and readings out.

A frame (SL 651-2014 §5 and Appendix; the layout as public parsers read it, see
``docs/field-protocols.md``)::

    7E 7E | centre 1 | station 5 (BCD/HEX) | password 2 | function 1 | dir+length 2 |
    STX 02 (one packet) or SYN 16 + packets 3 (total 12 bits, number 12 bits) |
    body (length bytes) | end 1 (ETX 03 last, ETB 17 more to come, ENQ 05, EOT 04, ESC 1B) |
    CRC-16/MODBUS 2, high byte first, over everything before it

The direction nibble is 0 upward (station → centre), 8 downward; downward frames put the
station's address before the centre's. An upward report body is: serial 2, send time 6
(YYMMDDhhmmss BCD), ``F1 F1`` station address 5, station type 1 (``P`` rain, ``H`` river …),
``F0 F0`` observation time 5 (YYMMDDhhmm BCD), then elements: an identifier (one byte, or
``FF`` and a second byte for extensions) and a data-definition byte whose high five bits are the
value's length in bytes and low three bits its decimals, then the value as BCD (a leading ``FF``
byte marks a negative number; all ``FF`` a missing value). ``F4`` (twelve 5-minute rainfalls) and
``F5``–``FC`` (twelve 5-minute water levels) are HEX series within the hour before the
observation time; ``04`` (time step, DDHHMM) precedes the series of an evenly-timed report
(function ``31``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from services.ingest.domain.sl651_elements import (
    DRP,
    DRZ,
    ELEMENTS,
    ST,
    STATION_TYPES,
    STATUS,
    STEP,
    SYMBOLS,
    TT,
)

BEIJING = timezone(timedelta(hours=8))
START = b"\x7e\x7e"
STX, SYN = 0x02, 0x16
ETX, ETB, ENQ, EOT, ESC = 0x03, 0x17, 0x05, 0x04, 0x1B
HEADER = 13  # 7E7E, centre, station, password, function, dir+length
# reports that carry readings, and those the station waits for an answer to
REPORTS = frozenset({0x30, 0x31, 0x32, 0x33, 0x34})
ANSWERED = frozenset({0x30, 0x31, 0x32, 0x33, 0x34, 0x35})


class FrameError(ValueError):
    """A frame that cannot be read: why, and its bytes (for the dead letter's hex)."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def _crc_entry(byte: int) -> int:
    crc = byte
    for _ in range(8):
        crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_CRC_TABLE = tuple(_crc_entry(b) for b in range(256))


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (polynomial A001 reflected, initial FFFF), as SL 651 frames carry it; a
    byte at a time from a table of the 256 bit-by-bit results."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def bcd(data: bytes) -> str:
    """The decimal digits of BCD bytes; a nibble above 9 is no BCD."""
    out = data.hex()
    if not out.isdigit():
        raise FrameError(f"{out.upper()} is not BCD")
    return out


def _time(data: bytes, with_seconds: bool) -> datetime:
    digits = bcd(data)
    try:
        return datetime(
            2000 + int(digits[0:2]),
            int(digits[2:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]) if with_seconds else 0,
            tzinfo=BEIJING,
        )
    except ValueError as exc:
        raise FrameError(f"time {digits} is not a date: {exc}") from None


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame off the wire, checked (start, length, CRC) but its body not yet read."""

    centre: int
    station: str  # the 10 hex digits of its address
    password: bytes
    function: int
    upward: bool
    body: bytes
    end: int
    packets: tuple[int, int] | None  # (total, number) of a multi-packet message
    raw: bytes
    ascii: bool = False  # an ASCII-encoded frame (SOH 01): its body is text

    @property
    def last(self) -> bool:
        return self.end != ETB


def split(buffer: bytes) -> tuple[list[Frame | FrameError], bytes, bytes]:
    """The frames at the front of ``buffer`` (a broken one as its error), the bytes skipped as
    garbage before a start mark, and what is left (an incomplete frame waits for more)."""
    out: list[Frame | FrameError] = []
    garbage = bytearray()
    pos = 0
    while True:
        start = _next_start(buffer, pos)
        if start < 0:
            # keep a trailing 7E: it may be the first half of a start mark
            keep = len(buffer) - 1 if buffer.endswith(b"\x7e") else len(buffer)
            garbage += buffer[pos:keep]
            return out, bytes(garbage), buffer[keep:]
        garbage += buffer[pos:start]
        ascii_ = buffer[start] == SOH
        got = _ascii_at(buffer, start) if ascii_ else _hex_at(buffer, start)
        if got is None:
            if ascii_ and not (
                len(buffer) - start < ASCII_HEADER + 1 and _could_be_ascii(buffer[start:])
            ):
                garbage += buffer[start : start + 1]  # a stray SOH byte
                pos = start + 1
                continue
            return out, bytes(garbage), buffer[start:]  # the header is not all here yet
        if isinstance(got, FrameError):
            out.append(got)
            pos = start + (1 if ascii_ else len(START))
            continue
        if len(buffer) - start < got:
            return out, bytes(garbage), buffer[start:]
        raw = buffer[start : start + got]
        pos = start + got
        try:
            out.append(parse_ascii_frame(raw) if ascii_ else parse_frame(raw))
        except FrameError as exc:
            out.append(exc)


def _hex_at(buffer: bytes, start: int) -> int | FrameError | None:
    """The length of the HEX frame at ``start``; None while its header is not all here."""
    if len(buffer) - start < HEADER + 1:
        return None
    stx = buffer[start + 13]
    if stx not in (STX, SYN):
        return FrameError(
            f"no STX or SYN after the header but {stx:02X}", buffer[start : start + HEADER + 1]
        )
    length = int.from_bytes(buffer[start + 11 : start + 13], "big") & 0x0FFF
    return HEADER + 1 + (3 if stx == SYN else 0) + length + 1 + 2


def parse_frame(raw: bytes) -> Frame:
    """One whole frame: its header, its body, the end mark and the CRC checked."""
    if not raw.startswith(START):
        raise FrameError("no 7E7E start", raw)
    if len(raw) < HEADER + 4:
        raise FrameError(f"truncated: {len(raw)} bytes", raw)
    want = int.from_bytes(raw[-2:], "big")
    got = crc16(raw[:-2])
    if want != got:
        raise FrameError(f"CRC {want:04X} does not match {got:04X}", raw)
    flag = raw[11] >> 4
    if flag not in (0x0, 0x8):
        raise FrameError(f"direction nibble {flag:X} is neither 0 (up) nor 8 (down)", raw)
    upward = flag == 0
    length = int.from_bytes(raw[11:13], "big") & 0x0FFF
    stx = raw[13]
    packets = None
    at = 14
    if stx == SYN:
        n = int.from_bytes(raw[14:17], "big")
        packets = (n >> 12, n & 0x0FFF)
        if packets[0] < 1 or not 1 <= packets[1] <= packets[0]:
            raise FrameError(f"packet {packets[1]} of {packets[0]}", raw)
        at = 17
    body = raw[at : at + length]
    end = raw[at + length] if at + length < len(raw) - 2 else -1
    if len(body) != length or end not in (ETX, ETB, ENQ, EOT, ESC):
        raise FrameError(f"the body of {length} bytes is not followed by an end mark", raw)
    station_bytes = raw[3:8] if upward else raw[2:7]
    centre = raw[2] if upward else raw[7]
    return Frame(
        centre=centre,
        station=station_bytes.hex().upper(),
        password=raw[8:10],
        function=raw[10],
        upward=upward,
        body=body,
        end=end,
        packets=packets,
        raw=raw,
    )


# ASCII encoding (SL 651-2014 §5.2: the same frame with its header fields, body and CRC written as
# ASCII characters): SOH 01 | centre 2 | station 10 | password 4 | function 2 | dir+length 4 |
# STX (or SYN + packets 6) | body text | end 1 | CRC 4 (hex digits, over everything before)
SOH = 0x01
ASCII_HEADER = 23
_HEXDIGITS = frozenset(b"0123456789ABCDEFabcdef")


def _next_start(buffer: bytes, pos: int) -> int:
    if buffer.startswith(START, pos) or buffer[pos : pos + 1] == b"\x01":
        return pos  # frames back to back: no search through the rest of the stream
    hexed = buffer.find(START, pos)
    text = buffer.find(b"\x01", pos, hexed if hexed >= 0 else len(buffer))
    return text if text >= 0 else hexed


def _could_be_ascii(head: bytes) -> bool:
    return all(b in _HEXDIGITS for b in head[1:ASCII_HEADER])


def _ascii_at(buffer: bytes, start: int) -> int | FrameError | None:
    """The length of the ASCII frame at ``start``; None if no ASCII header is there (or not
    all of it yet)."""
    head = buffer[start : start + ASCII_HEADER + 1]
    if len(head) < ASCII_HEADER + 1 or not _could_be_ascii(head):
        return None
    if chr(head[19]) not in "08":
        return None
    length = int(head[20:23], 16)
    stx = head[ASCII_HEADER]
    if stx not in (STX, SYN):
        return FrameError(f"no STX or SYN after the ASCII header but {stx:02X}", head)
    return ASCII_HEADER + 1 + (6 if stx == SYN else 0) + length + 1 + 4


def parse_ascii_frame(raw: bytes) -> Frame:
    """One whole ASCII frame: its header, its body, the end mark and the CRC checked."""
    if len(raw) < ASCII_HEADER + 6 or raw[0] != SOH:
        raise FrameError(f"not an ASCII frame of {len(raw)} bytes", raw)
    try:
        want = int(raw[-4:], 16)
    except ValueError:
        raise FrameError(f"CRC {raw[-4:]!r} is not four hex digits", raw) from None
    got = crc16(raw[:-4])
    if want != got:
        raise FrameError(f"CRC {want:04X} does not match {got:04X}", raw)
    text = raw[:ASCII_HEADER].decode("ascii")
    upward = text[19] == "0"
    length = int(text[20:23], 16)
    at = ASCII_HEADER + 1
    packets = None
    if raw[ASCII_HEADER] == SYN:
        try:
            n = int(raw[at : at + 6], 16)
        except ValueError:
            raise FrameError("the packet count is not six hex digits", raw) from None
        packets = (n >> 12, n & 0x0FFF)
        if packets[0] < 1 or not 1 <= packets[1] <= packets[0]:
            raise FrameError(f"packet {packets[1]} of {packets[0]}", raw)
        at += 6
    body = raw[at : at + length]
    end = raw[at + length] if at + length < len(raw) - 4 else -1
    if len(body) != length or end not in (ETX, ETB, ENQ, EOT, ESC):
        raise FrameError(f"the body of {length} characters is not followed by an end mark", raw)
    station, centre = (text[3:13], text[1:3]) if upward else (text[1:11], text[11:13])
    return Frame(
        centre=int(centre, 16),
        station=station.upper(),
        password=bytes.fromhex(text[13:17]),
        function=int(text[17:19], 16),
        upward=upward,
        body=body,
        end=end,
        packets=packets,
        raw=raw,
        ascii=True,
    )


def read_ascii_report(frame: Frame, body: bytes | None = None) -> Report:
    """The readings of an ASCII report: ``serial(4) sent(12) ST address type TT observed(10)``
    then ``mnemonic value`` pairs, separated by spaces."""
    data = frame.body if body is None else body
    try:
        tokens = data.decode("ascii").split()
    except UnicodeDecodeError:
        raise FrameError("an ASCII body with bytes that are not ASCII", frame.raw) from None
    if tokens and len(tokens[0]) == 4 and len(tokens) > 1 and len(tokens[1]) == 12:
        tokens = [tokens[0] + tokens[1], *tokens[2:]]
    if not tokens or len(tokens[0]) != 16 or not tokens[0].isalnum():
        raise FrameError("an ASCII report body has no serial and send time", frame.raw)
    try:
        serial = int(tokens[0][:4], 16)
    except ValueError:
        raise FrameError(f"serial {tokens[0][:4]!r} is not hex", frame.raw) from None
    report = Report(
        station=frame.station,
        function=frame.function,
        serial=serial,
        sent=_time(bytes.fromhex(_digits(tokens[0][4:], frame)), with_seconds=True),
    )
    i = 1
    while i < len(tokens):
        symbol = tokens[i].upper()
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        i += 2
        if value is None:
            report.skipped.append(f"{symbol} has no value")
            break
        if symbol == "ST":
            if value.upper() != frame.station:
                report.skipped.append(f"ST names station {value.upper()}")
            if i < len(tokens) and len(tokens[i]) == 1:
                code = ord(tokens[i])
                report.station_type = STATION_TYPES.get(code, tokens[i])
                i += 1
        elif symbol == "TT":
            report.observed = _time(bytes.fromhex(_digits(value, frame)), with_seconds=False)
        elif symbol not in SYMBOLS:
            report.skipped.append(f"element {symbol} is not one this receiver maps to a metric")
        elif report.observed is None:
            report.skipped.append(f"element {symbol} comes before the observation time")
        else:
            try:
                number = float(value)
            except ValueError:
                report.skipped.append(f"element {symbol} holds {value!r}, not a number")
                continue
            element = SYMBOLS[symbol]
            report.values.append(
                Value(element.metric, element.unit, report.observed, number, element.code)
            )
    return report


def _digits(value: str, frame: Frame) -> str:
    if not value.isdigit() or len(value) % 2:
        raise FrameError(f"time {value!r} is not BCD digits", frame.raw)
    return value


@dataclass(frozen=True, slots=True)
class Value:
    metric: str
    unit: str
    ts: datetime
    value: float
    element: str


@dataclass
class Report:
    """The readings of one upward report, and what in it could not be read."""

    station: str
    function: int
    serial: int
    sent: datetime
    station_type: str | None = None
    observed: datetime | None = None
    values: list[Value] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # an element not mapped, or invalid, why


def _number(data: bytes, decimals: int) -> float | None:
    """A BCD value with ``decimals``; a leading FF byte is a minus sign, all FF missing."""
    if all(b == 0xFF for b in data):
        return None
    negative = data[0] == 0xFF
    digits = bcd(data[1:] if negative else data)
    value = int(digits) / 10**decimals if digits else 0.0
    return -value if negative else value


def read_report(frame: Frame, body: bytes | None = None) -> Report:
    """The readings of a report (functions 30–34), from ``body`` (a reassembled multi-packet
    message) or the frame's own."""
    if frame.ascii:
        return read_ascii_report(frame, body)
    data = frame.body if body is None else body
    if len(data) < 8:
        raise FrameError(
            f"a report body of {len(data)} bytes has no serial and send time", frame.raw
        )
    report = Report(
        station=frame.station,
        function=frame.function,
        serial=int.from_bytes(data[0:2], "big"),
        sent=_time(data[2:8], with_seconds=True),
    )
    pos = 8
    step: timedelta | None = None
    while pos < len(data):
        ident = data[pos]
        if ident == 0xFF:
            if pos + 1 >= len(data):
                raise FrameError("an extension identifier FF at the end of the body", frame.raw)
            ident = 0xFF00 | data[pos + 1]
            pos += 1
        pos += 1
        if pos >= len(data):
            raise FrameError(f"element {ident:02X} has no data-definition byte", frame.raw)
        definition = data[pos]
        pos += 1
        # F1F1 and F0F0 double their guide: five bytes follow (an address, a time)
        size = 5 if ident in (ST, TT) and definition == ident else definition >> 3
        if pos + size > len(data):
            raise FrameError(
                f"element {ident:02X} wants {size} bytes and {len(data) - pos} are left", frame.raw
            )
        value = data[pos : pos + size]
        pos += size
        if ident == ST and definition == ST:
            if value.hex().upper() != frame.station:
                report.skipped.append(f"F1 names station {value.hex().upper()}")
            if pos < len(data):
                report.station_type = STATION_TYPES.get(data[pos], f"{data[pos]:02X}")
                pos += 1
        elif ident == TT and definition == TT:
            report.observed = _time(value, with_seconds=False)
        elif ident == STEP:
            digits = bcd(value)
            step = timedelta(
                days=int(digits[0:2]), hours=int(digits[2:4]), minutes=int(digits[4:6])
            )
            pos = _series(report, data, pos, step, frame)
        elif ident == DRP:
            _five_minutes(report, value, 1, "rainfall", "mm", 0.1, "DRP")
        elif ident in DRZ:
            name = ELEMENTS[0x39].metric if ident == 0xF5 else f"water_level_{ident - 0xF4}"
            _five_minutes(report, value, 2, name, "m", 0.01, f"DRZ{ident - 0xF4}")
        elif ident == STATUS:
            continue
        else:
            _element(report, ident, definition, value)
    return report


def _observed(report: Report, frame_raw: bytes) -> datetime:
    if report.observed is None:
        raise FrameError("an element comes before the observation time (F0F0)", frame_raw)
    return report.observed


def _element(report: Report, ident: int, definition: int, value: bytes) -> None:
    element = ELEMENTS.get(ident)
    name = f"{ident:04X}" if ident > 0xFF else f"{ident:02X}"
    if element is None:
        report.skipped.append(f"element {name} is not one this receiver maps to a metric")
        return
    number = _number(value, definition & 0x07)
    if number is None:
        report.skipped.append(f"element {element.code} ({name}) holds no value (all FF)")
        return
    if report.observed is None:
        report.skipped.append(f"element {element.code} comes before the observation time")
        return
    report.values.append(Value(element.metric, element.unit, report.observed, number, element.code))


def _five_minutes(
    report: Report, value: bytes, width: int, metric: str, unit: str, scale: float, code: str
) -> None:
    """Twelve HEX values, one for each 5 minutes of the hour ending at the observation time."""
    if report.observed is None:
        report.skipped.append(f"{code} comes before the observation time")
        return
    count = len(value) // width
    invalid = (1 << (8 * width)) - 1
    for i in range(count):
        raw = int.from_bytes(value[i * width : (i + 1) * width], "big")
        if raw == invalid:
            continue
        ts = report.observed - timedelta(minutes=5 * (count - 1 - i))
        report.values.append(Value(metric, unit, ts, round(raw * scale, 3), code))


def _series(report: Report, data: bytes, pos: int, step: timedelta, frame: Frame) -> int:
    """An evenly-timed report: after the time step, one element and its values, one each step
    from the observation time."""
    if pos + 2 > len(data):
        raise FrameError("a time step is not followed by an element", frame.raw)
    ident, definition = data[pos], data[pos + 1]
    pos += 2
    size = definition >> 3
    element = ELEMENTS.get(ident)
    start = _observed(report, frame.raw)
    i = 0
    while pos + size <= len(data) and size:
        value = data[pos : pos + size]
        pos += size
        if element is None:
            report.skipped.append(f"element {ident:02X} is not one this receiver maps to a metric")
            return len(data)
        number = _number(value, definition & 0x07)
        if number is not None:
            report.values.append(
                Value(element.metric, element.unit, start + i * step, number, element.code)
            )
        i += 1
    return pos


def answer(frame: Frame, now: datetime, *, keep: bool = False, serial: int | None = None) -> bytes:
    """The centre's confirmation of an upward frame: the same function code, downward, the
    station's address first, the report's serial and the centre's time, ending EOT (release the
    link) or ESC (keep it, ``keep``)."""
    if frame.ascii:
        return _ascii_answer(frame, now, keep=keep, serial=serial)
    if serial is None:
        serial = int.from_bytes(frame.body[0:2], "big") if len(frame.body) >= 2 else 0
    stamp = now.astimezone(BEIJING).strftime("%y%m%d%H%M%S")
    body = serial.to_bytes(2, "big") + bytes.fromhex(stamp)
    head = (
        START
        + bytes.fromhex(frame.station)
        + bytes([frame.centre])
        + frame.password
        + bytes([frame.function])
        + (0x8000 | len(body)).to_bytes(2, "big")
        + bytes([STX])
    )
    out = head + body + bytes([ESC if keep else EOT])
    return out + crc16(out).to_bytes(2, "big")


def _ascii_answer(frame: Frame, now: datetime, *, keep: bool, serial: int | None) -> bytes:
    if serial is None:
        try:
            serial = int(frame.body[0:4], 16)
        except ValueError:
            serial = 0
    body = f"{serial:04X}{now.astimezone(BEIJING).strftime('%y%m%d%H%M%S')}"
    head = (
        f"{frame.station}{frame.centre:02X}{frame.password.hex().upper()}"
        f"{frame.function:02X}8{len(body):03X}"
    )
    out = (
        bytes([SOH]) + head.encode() + bytes([STX]) + body.encode() + bytes([ESC if keep else EOT])
    )
    return out + f"{crc16(out):04X}".encode()


@dataclass
class Reassembly:
    """The packets of multi-packet messages (M3), by station and serial of the first packet,
    until the last one arrives: then the message's body, in packet order."""

    parts: dict[tuple[str, int], dict[int, bytes]] = field(default_factory=dict)
    totals: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, frame: Frame) -> bytes | None:
        assert frame.packets is not None
        total, number = frame.packets
        key = (frame.station, frame.function)
        got = self.parts.setdefault(key, {})
        self.totals[key] = total
        got[number] = frame.body
        if len(got) < total:
            return None
        del self.parts[key], self.totals[key]
        return b"".join(got[i] for i in sorted(got))


def frames_of(data: bytes) -> Iterator[Frame | FrameError]:
    """Every frame in a datagram (UDP carries whole frames)."""
    found, garbage, rest = split(data)
    yield from found
    if garbage:
        yield FrameError(f"{len(garbage)} bytes before any 7E7E or SOH start", garbage)
    if rest:
        yield FrameError(f"truncated: {len(rest)} bytes end the datagram", rest)
