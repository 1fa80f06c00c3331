"""The ingest consumer's per-batch kernel: a batch of raw readings → their check plans, the
checked and normalised rows, their binary COPY stream and their readings.v1 events.

The checks are the compiled kernel's alone (``_native.c``'s ``check_batch``, driven by the plans
of :mod:`services.ingest.domain.validation`): :class:`Kernel` is built on it, and the one-reading
forms :func:`check_reading` and :func:`history_checks` call it too. The two encoders have a
Python twin (:class:`PythonEncoders`) that tests hold the compiled ones to, byte for byte, and
that writes what the compiled ones are not written for (a naive timestamp, an offset with
seconds); ``QIANSHAO_INGEST_NATIVE=false`` has the twin write every batch."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from types import ModuleType
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from services.ingest.domain.rows import QUALITY_CODE, Row
from services.ingest.domain.validation import (
    HISTORY,
    CheckPlan,
    Key,
    Normalised,
    PlanCache,
    ReadingIn,
    Recent,
    Rejection,
    StationInfo,
    plan_for,
    rejection,
    summary,
)
from shared.contracts import RawReadingRecord, ReadingRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Event = tuple[str, bytes]  # (key: the station id, readings.v1 JSON)


class Planned(NamedTuple):
    plans: list[CheckPlan | None]  # each reading's, None: its station is not known
    judged: set[Key]  # the (station, metric) whose observations are judged on their history
    sources: dict[tuple[str, str], int]  # (source, topic) → readings


class Checked(NamedTuple):
    rows: list[Row]  # the observations that passed, flagged, in order
    forecasts: list[tuple[int, Row]]  # (index, row) of the forecasts that passed
    rejected: list[tuple[int, str, float | None]]  # (index, reason, converted value) refused
    seen: dict[str, datetime]  # station → its newest observation (the dict given, updated)


class Encoders(Protocol):
    name: str

    def copy_rows(self, rows: list[Row]) -> tuple[bytes, bool]:
        """The rows as one PostgreSQL binary COPY stream (header to trailer) for
        ``rows.COLUMNS``, and whether no (station, metric, ts) repeats among them."""
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


class PythonEncoders:
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


PYTHON = PythonEncoders()


class Kernel:
    """Plans and checks (compiled), and the encoders: the compiled ones, with the Python twin for
    a batch they refuse (ValueError), or the twin alone."""

    def __init__(self, module: ModuleType, *, native_encoders: bool = True) -> None:
        self._module = module
        self._native_encoders = native_encoders
        self.name = "native" if native_encoders else "python"

    def plan_batch(
        self,
        topics: list[str],
        recs: list[RawReadingRecord],
        stations: dict[str, StationInfo],
        plans: PlanCache,
    ) -> Planned:
        """Each reading's check plan (from ``plans``), the keys to judge on their history, and
        how many readings came from each (source, topic)."""
        return Planned(*self._module.plan_batch(topics, recs, stations, plans.entries, plans.get))

    def check_batch(
        self,
        recs: Sequence[ReadingIn],
        plans: list[CheckPlan | None],
        latest: datetime,
        recent: dict[Key, Recent],
        keep: int,
        seen: dict[str, datetime],
    ) -> Checked:
        """Each reading's checks, in order: its unit converted to the canonical one, its value
        against the hard range (refused) and the soft one, an observation after ``latest``
        (in the future), and an observation against the summary of its key's trusted readings
        (spike, stuck; only a reading newer than the last of them is judged). A good
        observation newer than that last joins them: ``recent`` then holds the key's new
        summary (runs counted up to ``keep``). ``seen`` (station → its newest observation) is
        brought up to date with the rows, and is the result's."""
        return Checked(
            *self._module.check_batch(list(recs), plans, latest, recent, keep, seen, Row)
        )

    def copy_rows(self, rows: list[Row]) -> tuple[bytes, bool]:
        if not self._native_encoders:
            return PYTHON.copy_rows(rows)
        try:
            payload, unique = self._module.copy_rows(rows)
        except ValueError:
            return PYTHON.copy_rows(rows)
        return payload, unique

    def reading_events(
        self, rows: list[Row], stations: Mapping[str, StationInfo], produced_at: datetime
    ) -> list[Event]:
        if not self._native_encoders:
            return PYTHON.reading_events(rows, stations, produced_at)
        try:
            events: list[Event] = self._module.reading_events(rows, stations, produced_at)
        except ValueError:
            return PYTHON.reading_events(rows, stations, produced_at)
        return events


class KernelMissing(ImportError):
    """The compiled kernel was not built (the install had no C compiler or no libb2)."""


def compiled() -> ModuleType:
    try:
        from services.ingest.domain import _native
    except ImportError as exc:
        raise KernelMissing(
            "services.ingest.domain._native is not built: install gcc and Debian's libb2-dev, "
            "then reinstall the project (make setup)"
        ) from exc
    return _native


def default(*, use_native: bool = True) -> Kernel:
    return Kernel(compiled(), native_encoders=use_native)


def check_reading(
    raw: ReadingIn, station: StationInfo, now: datetime, *, future_tolerance_s: int = 300
) -> Normalised | Rejection:
    """One reading's checks, as :meth:`Kernel.check_batch` makes them (no history)."""
    latest = now + timedelta(seconds=future_tolerance_s)
    plan = plan_for(station, raw.metric)
    got = default().check_batch([_Raw.of(raw, station.id)], [plan], latest, {}, 1, {})
    if got.rejected:
        [(_, reason, value)] = got.rejected
        return rejection(reason, plan, raw, station.id, value)
    [row] = got.rows or [r for _, r in got.forecasts]
    return Normalised(row.value, row.unit, row.quality, row.checks)  # type: ignore[arg-type]


def history_checks(
    station: StationInfo,
    metric: str,
    ts: datetime,
    value: float,
    recent: Sequence[tuple[datetime, float]],
    keep: int = HISTORY,
) -> tuple[str, ...]:
    """``spike`` and ``stuck`` of an observation in the station's canonical unit, against its
    trusted readings before it (oldest first): what :meth:`Kernel.check_batch` adds."""
    plan = plan_for(station, metric)
    raw = _Raw(station.id, metric, ts, value, plan.canonical, "observation", "")
    history: dict[Key, Recent] = {(station.id, metric): summary(recent, keep)}
    got = default().check_batch([raw], [plan], ts, history, keep, {})
    if got.rejected:
        return ()
    return tuple(c for c in got.rows[0].checks if c in ("spike", "stuck"))


class _Raw(NamedTuple):
    """A reading as :meth:`Kernel.check_batch` reads one."""

    station_id: str
    metric: str
    ts: datetime
    value: float
    unit: str | None
    kind: Literal["observation", "forecast"]
    source: str

    @classmethod
    def of(cls, raw: Any, station_id: str) -> _Raw:
        return cls(station_id, raw.metric, raw.ts, raw.value, raw.unit, raw.kind, "")
