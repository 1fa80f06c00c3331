"""What a telemetry station sends, written: SL 651-2014 upward report frames in HEX/BCD and in
ASCII encoding, for the demo's RTU, the benchmark and the tests. The reader is
:mod:`services.ingest.domain.sl651`; a frame written here reads back to the values given."""

from __future__ import annotations

from datetime import datetime

from services.ingest.domain.sl651 import BEIJING, ETX, SOH, START, STX, crc16
from services.ingest.domain.sl651_elements import ST, TT


def encode_number(value: float, size: int, decimals: int) -> bytes:
    """A value as the standard's BCD of ``size`` bytes with ``decimals`` (a leading FF byte for a
    negative one)."""
    scaled = round(abs(value) * 10**decimals)
    if value < 0:
        return b"\xff" + bytes.fromhex(f"{scaled:0{2 * (size - 1)}d}")
    return bytes.fromhex(f"{scaled:0{2 * size}d}")


def report_frame(
    *,
    station: str,
    function: int,
    serial: int,
    sent: datetime,
    observed: datetime,
    station_type: int,
    elements: list[tuple[int, int, float]],
    centre: int = 0x01,
    password: bytes = b"\x00\x00",
) -> bytes:
    """An upward report frame, as an RTU sends one: (identifier, data definition, value) each.
    Used by the demo station and the benchmark."""
    body = (
        serial.to_bytes(2, "big")
        + bytes.fromhex(sent.astimezone(BEIJING).strftime("%y%m%d%H%M%S"))
        + bytes([ST, ST])
        + bytes.fromhex(station)
        + bytes([station_type, TT, TT])
        + bytes.fromhex(observed.astimezone(BEIJING).strftime("%y%m%d%H%M"))
    )
    for ident, definition, value in elements:
        body += bytes([ident, definition]) + encode_number(value, definition >> 3, definition & 7)
    head = (
        START
        + bytes([centre])
        + bytes.fromhex(station)
        + password
        + bytes([function])
        + len(body).to_bytes(2, "big")
        + bytes([STX])
    )
    out = head + body + bytes([ETX])
    return out + crc16(out).to_bytes(2, "big")


def report_frame_ascii(
    *,
    station: str,
    function: int,
    serial: int,
    sent: datetime,
    observed: datetime,
    station_type: str,
    elements: list[tuple[str, str]],
    centre: int = 0x01,
    password: str = "0000",  # noqa: S107 (the standard's default, not a secret)
) -> bytes:
    """An upward report frame in ASCII encoding: (mnemonic, value as written) each."""
    body = " ".join(
        [
            f"{serial:04X}",
            sent.astimezone(BEIJING).strftime("%y%m%d%H%M%S"),
            "ST",
            station,
            station_type,
            "TT",
            observed.astimezone(BEIJING).strftime("%y%m%d%H%M"),
            *(f"{k} {v}" for k, v in elements),
        ]
    )
    head = f"{centre:02X}{station}{password}{function:02X}0{len(body):03X}"
    out = bytes([SOH]) + head.encode() + bytes([STX]) + body.encode() + bytes([ETX])
    return out + f"{crc16(out):04X}".encode()
