"""Coal-mine safety monitoring networking files (煤矿安全监控系统联网数据文件), read. Pure: a
file's name and bytes in; the sensor points it defines, the values it carries and the faults of
its malformed records out.

The rules every variant shares: a text file, named ``<mine code>_<KIND>_<yyyymmddhhmmss>.txt``;
its first record is a header (the mine's code …); fields are separated by ``;`` and every record
ends with ``~`` (so a file that does not end with ``~`` is still being written). Which fields come
in which order, what the sensor types are called and which statuses mean the value is not a
measurement (断线, 标校 …) differ by region: a :class:`FieldMap` says it, as data
(``coalmine_maps/*.json``; ``docs/coalmine.md``).

A definition (测点定义, e.g. CDDY) becomes a station ``<mine code>-<point>`` of the kind its
sensor type maps to, with the coal-mine pack's ``position`` (T0, T1, T2, T3, heading_T1,
heading_T2, drainage) read from its installation place. A real-time record (e.g. CDSS) becomes a
reading of that station's metric. A record that cannot be read is a :class:`Fault` with its line
number; the records around it are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, Literal

BEIJING = timezone(timedelta(hours=8))
MAPS_DIR = Path(__file__).parent / "coalmine_maps"
NAME = re.compile(r"^(?P<mine>[0-9A-Za-z]+)_(?P<kind>[A-Za-z]+)_(?P<time>\d{8,14})\.txt$", re.I)
ID_PART = re.compile(r"^[A-Za-z0-9_.:\-]+$")
Kind = Literal["definitions", "realtime"]


class FileFault(ValueError):
    """A file nothing can be read from: why."""


class Incomplete(FileFault):
    """A file that does not end with ``~`` yet: it is still being written."""


@dataclass(frozen=True, slots=True)
class SensorType:
    metric: str
    unit: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class Layout:
    kinds: tuple[str, ...]
    header: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class FieldMap:
    id: str
    title: str
    source: str
    encodings: tuple[str, ...]
    time_formats: tuple[str, ...]
    definitions: Layout
    realtime: Layout
    sensor_types: Mapping[str, SensorType]
    dropped_status: frozenset[str]

    def kind_of(self, token: str) -> Kind | None:
        t = token.upper()
        if t in self.definitions.kinds:
            return "definitions"
        if t in self.realtime.kinds:
            return "realtime"
        return None


def field_map(raw: Mapping[str, Any]) -> FieldMap:
    def layout(d: Mapping[str, Any]) -> Layout:
        fields = tuple(d["fields"])
        if "point" not in fields:
            raise ValueError(f"field map {raw['id']}: a layout without 'point'")
        return Layout(tuple(k.upper() for k in d["kinds"]), tuple(d["header"]), fields)

    return FieldMap(
        id=raw["id"],
        title=raw.get("title", ""),
        source=raw.get("source", ""),
        encodings=tuple(raw.get("encodings", ("utf-8", "gb18030"))),
        time_formats=tuple(raw.get("time_formats", ("%Y-%m-%d %H:%M:%S",))),
        definitions=layout(raw["definitions"]),
        realtime=layout(raw["realtime"]),
        sensor_types={
            k: SensorType(v["metric"], v.get("unit"), v["kind"])
            for k, v in raw["sensor_types"].items()
        },
        dropped_status=frozenset(raw.get("dropped_status", ())),
    )


@cache
def shipped_maps(directory: Path = MAPS_DIR) -> dict[str, FieldMap]:
    """The field maps in ``directory``, keyed by id."""
    maps = [field_map(json.loads(p.read_text("utf-8"))) for p in sorted(directory.glob("*.json"))]
    return {m.id: m for m in maps}


@dataclass(frozen=True, slots=True)
class Point:
    """A sensor point a definition file declares."""

    station_id: str
    point: str
    line: int
    sensor_type: str
    location: str
    metric: str
    unit: str | None
    kind: str
    position: str | None
    limits: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Value:
    station_id: str
    value: float
    ts: datetime
    status: str
    line: int
    # the metric when the real-time record says the sensor type; else the definition's
    metric: str | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    line: int
    reason: str
    text: str


@dataclass
class Parsed:
    kind: Kind
    mine_code: str
    mine_name: str | None
    generated_at: datetime | None
    points: list[Point] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # records read but not kept: a sensor type no metric maps to, a value marked 断线 or 标校
    ignored: int = 0

    @property
    def records(self) -> int:
        return len(self.points) + len(self.values) + len(self.faults) + self.ignored


def kind_token(name: str) -> str | None:
    m = NAME.match(name)
    return m["kind"].upper() if m else None


def parse_file(name: str, data: bytes, fmap: FieldMap, *, partial_ok: bool = False) -> Parsed:
    """Reads one file. Raises :class:`Incomplete` for a file not ended by ``~`` (unless
    ``partial_ok``: then its last, unended record is a fault) and :class:`FileFault` for one
    whose name, encoding or header cannot be read."""
    m = NAME.match(name)
    if m is None:
        raise FileFault(f"{name!r} is not named <mine code>_<KIND>_<yyyymmddhhmmss>.txt")
    kind = fmap.kind_of(m["kind"])
    if kind is None:
        raise FileFault(f"{m['kind']} files are not read by field map {fmap.id}")
    if not data.rstrip().endswith(b"~") and not partial_ok:
        raise Incomplete(f"{name} does not end with '~' yet")
    text = _decode(data, fmap.encodings)
    unended = not text.rstrip().endswith("~")  # a '~' byte inside a character does not end it
    if unended and not partial_ok:
        raise Incomplete(f"{name} does not end with '~' yet")
    records = _records(text)
    if not records:
        raise FileFault("no header record")
    layout = fmap.definitions if kind == "definitions" else fmap.realtime
    head_line, head_text = records[0]
    header = dict(zip(layout.header, _fields(head_text), strict=False))
    mine = header.get("mine_code") or m["mine"]
    if not ID_PART.match(mine):
        raise FileFault(f"line {head_line}: mine code {mine!r} cannot name stations")
    try:
        generated = _time(header["generated_at"], fmap) if header.get("generated_at") else None
    except _RecordFault as exc:
        raise FileFault(f"line {head_line}: the header's {exc}") from None
    out = Parsed(kind, mine, header.get("mine_name") or None, generated)
    last = len(records) - 1
    for n, (line, rec) in enumerate(records[1:], start=1):
        if unended and n == last:
            out.faults.append(Fault(line, "the file ends inside this record (no '~')", rec))
            continue
        try:
            _record(out, layout, fmap, line, _fields(rec))
        except _RecordFault as exc:
            out.faults.append(Fault(line, str(exc), rec))
    return out


class _RecordFault(ValueError):
    pass


def _record(out: Parsed, layout: Layout, fmap: FieldMap, line: int, values: list[str]) -> None:
    if len(values) < len(layout.fields):
        raise _RecordFault(f"{len(values)} fields, the layout has {len(layout.fields)}")
    f = dict(zip(layout.fields, values, strict=False))
    point = f["point"]
    if not point or not ID_PART.match(point):
        raise _RecordFault(f"point code {point!r} cannot name a station")
    station = f"{out.mine_code}-{point}"
    if len(station) > 64:
        raise _RecordFault(f"station id {station!r} is longer than 64 characters")
    when = _time(f["data_time"], fmap) if f.get("data_time") else out.generated_at
    if out.kind == "definitions":
        stype = fmap.sensor_types.get(f.get("sensor_type", ""))
        if stype is None:
            out.ignored += 1  # a switch, a fan, a sensor type no rule reads
            return
        location = f.get("location", "")
        limits = {k: _number(f[k], k) for k in ("alarm", "cut", "restore") if f.get(k)}
        out.points.append(
            Point(
                station_id=station,
                point=point,
                line=line,
                sensor_type=f.get("sensor_type", ""),
                location=location,
                metric=stype.metric,
                unit=stype.unit,
                kind=stype.kind,
                position=position(location) if stype.kind == "coal_mine_methane" else None,
                limits=limits,
            )
        )
        return
    status = f.get("status", "")
    if status in fmap.dropped_status:
        out.ignored += 1
        return
    if when is None:
        raise _RecordFault("no time: neither the record nor the header has one")
    stype = fmap.sensor_types.get(f["sensor_type"]) if f.get("sensor_type") else None
    out.values.append(
        Value(
            station_id=station,
            value=_number(f.get("value", ""), "value"),
            ts=when,
            status=status,
            line=line,
            metric=stype.metric if stype else None,
            unit=stype.unit if stype else None,
        )
    )


_T = re.compile(r"T\s*([0-3])", re.I)


def position(location: str) -> str | None:
    """The coal-mine pack's position of a methane sensor from where it is installed, as the
    定义 file writes it (``1301采煤工作面上隅角T0``, ``2202掘进工作面回风流T2``,
    ``专用排瓦斯巷``)."""
    if "排瓦斯巷" in location:
        return "drainage"
    m = _T.search(location)
    if m is None:
        return None
    n = m[1]
    if "掘进" in location and n in ("1", "2"):
        return f"heading_T{n}"
    return f"T{n}"


def _records(text: str) -> list[tuple[int, str]]:
    """The ``~``-ended records with the line each starts on (1-based)."""
    out: list[tuple[int, str]] = []
    line = 1
    for chunk in text.split("~"):
        stripped = chunk.lstrip()
        start = line + chunk[: len(chunk) - len(stripped)].count("\n")
        line += chunk.count("\n")
        if stripped.strip():
            out.append((start, stripped.strip()))
    return out


def _fields(record: str) -> list[str]:
    return [v.strip() for v in record.split(";")]


def _decode(data: bytes, encodings: Sequence[str]) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for cut in range(4):  # a file cut off inside its last character (read as abandoned)
        for enc in encodings:
            try:
                return data[: len(data) - cut].decode(enc)
            except UnicodeDecodeError:
                continue
    raise FileFault(f"not text in {', '.join(encodings)}")


def _time(value: str, fmap: FieldMap) -> datetime:
    for fmt in fmap.time_formats:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=BEIJING)
        except ValueError:
            continue
    raise _RecordFault(f"time {value!r} is in none of {', '.join(fmap.time_formats)}")


def _number(value: str, what: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise _RecordFault(f"{what} {value!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise _RecordFault(f"{what} {value!r} is not a finite number")
    return v
