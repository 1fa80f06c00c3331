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
from typing import NamedTuple, Protocol

import msgspec

from services.ingest.domain.rows import QUALITY_CODE, Row
from services.ingest.domain.validation import (
    CheckPlan,
    Key,
    PlanCache,
    Recent,
    Rejection,
    StationInfo,
    joined,
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
    rejected: list[int]  # indices of the readings refused (no plan, or their plan says why)
    seen: dict[str, datetime]  # station → its newest observation (the dict given, updated)


class Kernel(Protocol):
    name: str

    def plan_batch(
        self,
        topics: list[str],
        recs: list[RawReadingRecord],
        stations: dict[str, StationInfo],
        plans: PlanCache,
    ) -> Planned:
        """Each reading's check plan (from ``plans``), the keys to judge on their history, and
        how many readings came from each (source, topic)."""
        ...

    def check_batch(
        self,
        recs: list[RawReadingRecord],
        plans: list[CheckPlan | None],
        latest: datetime,
        recent: dict[Key, Recent],
        keep: int,
        seen: dict[str, datetime],
    ) -> Checked:
        """:meth:`CheckPlan.check` and, for observations, :meth:`CheckPlan.history` of each
        reading, in order; a good observation newer than the last of its key's trusted readings
        joins them: ``recent`` then holds the key's new summary (:func:`validation.joined`,
        runs counted up to ``keep``).
        ``seen`` (station → its newest observation) is brought up to date with the rows, and is
        the result's."""
        ...

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


class PythonKernel:
    name = "python"

    def plan_batch(
        self,
        topics: list[str],
        recs: list[RawReadingRecord],
        stations: dict[str, StationInfo],
        plans: PlanCache,
    ) -> Planned:
        out: list[CheckPlan | None] = []
        judged: set[Key] = set()
        sources: dict[tuple[str, str], int] = {}
        plan_of = plans.get
        for topic, raw in zip(topics, recs, strict=True):
            origin = (raw.source, topic)
            sources[origin] = sources.get(origin, 0) + 1
            station = stations.get(raw.station_id)
            if station is None:
                out.append(None)
                continue
            plan = plan_of(station, raw.metric)
            out.append(plan)
            if plan.judged_on_history and raw.kind == "observation":
                judged.add((raw.station_id, raw.metric))
        return Planned(out, judged, sources)

    def check_batch(
        self,
        recs: list[RawReadingRecord],
        plans: list[CheckPlan | None],
        latest: datetime,
        recent: dict[Key, Recent],
        keep: int,
        seen: dict[str, datetime],
    ) -> Checked:
        rows: list[Row] = []
        forecasts: list[tuple[int, Row]] = []
        rejected: list[int] = []
        new_row = tuple.__new__  # a Row without the named tuple's Python-level constructor
        for i, (raw, plan) in enumerate(zip(recs, plans, strict=True)):
            checked = None if plan is None else plan.check(raw, latest)
            if checked is None or isinstance(checked, Rejection):
                rejected.append(i)
                continue
            assert plan is not None
            value, unit, quality, checks = checked
            observation = raw.kind == "observation"
            s, ts = raw.station_id, raw.ts
            key = (s, raw.metric)
            if observation and recent and (prior := recent.get(key)) is not None:
                extra = plan.history(ts, value, prior)
                if extra:
                    quality, checks = "doubtful", (*checks, *extra)
                if quality == "good" and (not prior or ts > prior[0]):
                    recent[key] = joined(prior, ts, value, keep)
            row = new_row(Row, (s, raw.metric, ts, value, unit, quality, checks, raw.source))
            if not observation:
                forecasts.append((i, row))
                continue
            rows.append(row)
            last = seen.get(s)
            if last is None or ts > last:
                seen[s] = ts
        return Checked(rows, forecasts, rejected, seen)

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

    def plan_batch(
        self,
        topics: list[str],
        recs: list[RawReadingRecord],
        stations: dict[str, StationInfo],
        plans: PlanCache,
    ) -> Planned:
        return Planned(*self._module.plan_batch(topics, recs, stations, plans.entries, plans.get))

    def check_batch(
        self,
        recs: list[RawReadingRecord],
        plans: list[CheckPlan | None],
        latest: datetime,
        recent: dict[Key, Recent],
        keep: int,
        seen: dict[str, datetime],
    ) -> Checked:
        return Checked(*self._module.check_batch(recs, plans, latest, recent, keep, seen, Row))

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
        from services.ingest.domain import _native
    except ImportError:
        return None
    return NativeKernel(_native)


def default(*, use_native: bool = True) -> Kernel:
    compiled = native() if use_native else None
    return compiled if compiled is not None else PYTHON
