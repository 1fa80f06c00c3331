"""The ingest consumer's per-batch kernel: a batch of checked rows → its binary COPY stream and
its readings.v1 events.

Two implementations of one contract:

- :data:`PYTHON`, always there, the reference;
- the compiled one (``_native.c``, built at install when a C compiler is found), about ten
  times cheaper a reading. What it is not written for (a naive timestamp, an offset with
  seconds) it refuses, and the Python implementation takes that batch.

Tests hold both to the same bytes (the COPY stream) and the same events (ids and content).
:func:`default` picks the compiled one when it is built, unless it is switched off
(``QIANSHAO_INGEST_NATIVE=false``)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from types import ModuleType
from typing import Protocol

import msgspec

from services.ingest.store import QUALITY_CODE, Row
from services.ingest.validation import StationInfo
from shared.contracts import ReadingRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Event = tuple[str, bytes]  # (key: the station id, readings.v1 JSON)


class Kernel(Protocol):
    name: str

    def copy_rows(self, rows: list[Row]) -> tuple[bytes, bool]:
        """The rows as one PostgreSQL binary COPY stream (header to trailer) for
        ``store.COLUMNS``, and whether no (station, metric, ts) repeats among them."""
        ...

    def reading_events(
        self, rows: list[Row], stations: Mapping[str, StationInfo], produced_at: datetime
    ) -> list[Event]:
        """Each row's readings.v1 observation event, in order."""
        ...


def reading_event_id(station_id: str, metric: str, ts: datetime) -> str:
    """``stable_id("reading", station_id, metric, <ts in µs since the epoch>)``, spelt out for
    the hot path. The instant, not its notation: ``…T08:00:00+08:00`` and ``…T00:00:00Z`` are
    one reading with one id (and the integer costs a fifth of ``isoformat``)."""
    return blake2b(
        f"reading\x1f{station_id}\x1f{metric}\x1f{(ts - EPOCH) // MICROSECOND}".encode(),
        digest_size=16,
    ).hexdigest()


def published(
    r: Row,
    station: StationInfo,
    event_id: str,
    now: datetime,
    *,
    issued_at: datetime | None = None,
) -> bytes:
    """The ``readings.v1`` event of a stored row, serialised; with ``issued_at``, a forecast.

    Encoded from a msgspec struct (a pydantic ``Reading`` costs ~5 µs more a reading); every
    value in it has been validated already, and a test checks that the bytes parse as a
    :class:`shared.contracts.Reading` equal to the model built the slow way."""
    s, metric, ts, value, unit, quality, checks, source = r
    return _encode(
        ReadingRecord(
            event_id,
            now,
            s,
            station.region_code,
            station.kind,
            metric,
            ts,
            value,
            unit,
            quality,
            checks,
            source,
            "observation" if issued_at is None else "forecast",
            issued_at,
        )
    )


_encode = msgspec.json.Encoder().encode

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_TEXT_OID = 25


def _text(s: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"a row's text fields must be str, not {type(s).__name__}")
    b = s.encode()
    return struct.pack("!i", len(b)) + b


def _text_array(items: Sequence[str]) -> bytes:
    if not items:
        body = struct.pack("!iii", 0, 0, _TEXT_OID)
    else:
        body = struct.pack("!iiiii", 1, 0, _TEXT_OID, len(items), 1) + b"".join(map(_text, items))
    return struct.pack("!i", len(body)) + body


class PythonKernel:
    name = "python"

    def copy_rows(self, rows: list[Row]) -> tuple[bytes, bool]:
        out = [_HEADER]
        for s, m, ts, v, u, q, c, src in rows:
            if not isinstance(ts, datetime) or not isinstance(v, float | int):
                raise TypeError("a row's ts must be a datetime and its value a number")
            if ts.tzinfo is None or ts.utcoffset() is None:
                raise ValueError("a naive timestamp has no instant")
            out.append(
                b"".join(
                    (
                        b"\x00\x08",
                        _text(s),
                        _text(m),
                        struct.pack("!iqid", 8, (ts - PG_EPOCH) // MICROSECOND, 8, float(v)),
                        _text(u),
                        struct.pack("!ih", 2, QUALITY_CODE[q]),
                        _text_array(c),
                        _text(src),
                    )
                )
            )
        out.append(_TRAILER)
        unique = len({(r[0], r[1], r[2]) for r in rows}) == len(rows)
        return b"".join(out), unique

    def reading_events(
        self, rows: list[Row], stations: Mapping[str, StationInfo], produced_at: datetime
    ) -> list[Event]:
        return [
            (r[0], published(r, stations[r[0]], reading_event_id(r[0], r[1], r[2]), produced_at))
            for r in rows
        ]


PYTHON = PythonKernel()


class NativeKernel:
    """The compiled kernel; a batch it refuses (ValueError) goes to the Python one."""

    name = "native"

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def copy_rows(self, rows: list[Row]) -> tuple[bytes, bool]:
        try:
            payload, unique = self._module.copy_rows(rows)
        except ValueError:
            return PYTHON.copy_rows(rows)
        return payload, unique

    def reading_events(
        self, rows: list[Row], stations: Mapping[str, StationInfo], produced_at: datetime
    ) -> list[Event]:
        try:
            events: list[Event] = self._module.reading_events(rows, stations, produced_at)
        except ValueError:
            return PYTHON.reading_events(rows, stations, produced_at)
        return events


def native() -> NativeKernel | None:
    """The compiled kernel, or None where it was not built."""
    try:
        from services.ingest import _native
    except ImportError:
        return None
    return NativeKernel(_native)


def default(*, use_native: bool = True) -> Kernel:
    compiled = native() if use_native else None
    return compiled if compiled is not None else PYTHON
