"""Versioned event contracts for every Kafka topic (ARCHITECTURE.md, "Topics").

All events are JSON in UTF-8. The topic name carries the major version (``.v1``); a breaking
change gets a new topic. Every event has an ``event_id`` that makes re-delivery harmless, the
time the event is about and the time it was produced.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

import msgspec
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Topics:
    """Topic names. Instances allow a per-test prefix; the defaults are the production names."""

    OBS_SENSOR = "obs.sensor.v1"
    OBS_WEATHER = "obs.weather.v1"
    OBS_HYDRO = "obs.hydro.v1"
    WARNINGS_UPSTREAM = "warnings.upstream.v1"
    READINGS = "readings.v1"
    READINGS_DLQ = "readings.dlq.v1"
    RISK_EVENTS = "risk.events.v1"
    ALERTS = "alerts.v1"
    STATION_HEALTH = "stations.health.v1"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def obs_sensor(self) -> str:
        return self.name(self.OBS_SENSOR)

    @property
    def obs_weather(self) -> str:
        return self.name(self.OBS_WEATHER)

    @property
    def obs_hydro(self) -> str:
        return self.name(self.OBS_HYDRO)

    @property
    def warnings_upstream(self) -> str:
        return self.name(self.WARNINGS_UPSTREAM)

    @property
    def readings(self) -> str:
        return self.name(self.READINGS)

    @property
    def readings_dlq(self) -> str:
        return self.name(self.READINGS_DLQ)

    @property
    def risk_events(self) -> str:
        return self.name(self.RISK_EVENTS)

    @property
    def alerts(self) -> str:
        return self.name(self.ALERTS)

    @property
    def station_health(self) -> str:
        return self.name(self.STATION_HEALTH)

    def all(self) -> list[str]:
        bases = [
            self.OBS_SENSOR,
            self.OBS_WEATHER,
            self.OBS_HYDRO,
            self.WARNINGS_UPSTREAM,
            self.READINGS,
            self.READINGS_DLQ,
            self.RISK_EVENTS,
            self.ALERTS,
            self.STATION_HEALTH,
        ]
        names = [self.name(b) for b in bases]
        # dead-letter topics of the consumers that are not ingest
        names += [
            f"{self.readings}.dlq",
            f"{self.risk_events}.dlq",
            f"{self.warnings_upstream}.dlq",
            f"{self.station_health}.dlq",
        ]
        return names


class Level(enum.IntEnum):
    """Warning levels; a larger value is more severe. ``none`` means no level is reached."""

    none = 0
    blue = 1  # IV  一般
    yellow = 2  # III 较重
    orange = 3  # II  严重
    red = 4  # I   特别严重

    @property
    def roman(self) -> str:
        return ["-", "IV", "III", "II", "I"][self.value]

    @property
    def chinese(self) -> str:
        return ["无", "蓝色", "黄色", "橙色", "红色"][self.value]

    @property
    def cap_severity(self) -> str:
        return ["Unknown", "Minor", "Moderate", "Severe", "Extreme"][self.value]

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(
                f"unknown level {name!r}; expected none|blue|yellow|orange|red"
            ) from None


LevelName = Literal["none", "blue", "yellow", "orange", "red"]
ActiveLevelName = Literal["blue", "yellow", "orange", "red"]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset, e.g. 2026-07-01T08:00:00+08:00")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
RegionCode = Annotated[str, Field(pattern=r"^\d{12}$", description="12-digit division code")]
StationId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """JSON that PostgreSQL's jsonb and our encoder take: valid UTF-8 (no lone surrogates), no
    NUL character, at most 64 KiB. An integer beyond 64 bits is kept as a double, as JSON
    readers do (RFC 8259, section 6)."""
    value = _wide_ints_as_doubles(value)
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"not storable as JSON: {exc}") from exc
    if _has_nul(value):
        raise ValueError("strings may not contain the NUL character")
    if len(encoded) > 64 << 10:
        raise ValueError("larger than 64 KiB")
    return value


def _wide_ints_as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError("a number beyond what a double holds") from None
    if isinstance(value, dict):
        return {k: _wide_ints_as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_doubles(v) for v in value]
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]


def stable_id(*parts: object) -> str:
    """A deterministic id from the parts: re-processing the same input yields the same id."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16)
    return h.hexdigest()


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1, max_length=64)
    produced_at: AwareDatetime


class RawReading(BaseModel):
    """``obs.sensor.v1`` / ``obs.weather.v1`` / ``obs.hydro.v1``: a reading as received.

    Producers outside Qianshao may omit ``received_at``; the ingest edge always sets it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    source: str = Field(min_length=1, max_length=64)
    station_id: StationId
    metric: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    ts: AwareDatetime
    value: float = Field(allow_inf_nan=False)
    unit: str | None = Field(default=None, max_length=16)
    kind: Literal["observation", "forecast"] = "observation"
    issued_at: AwareDatetime | None = None
    received_at: AwareDatetime | None = None


_Aware = Annotated[datetime, msgspec.Meta(tz=True)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


# The patterns of the fast decoders' fields, checked by CheckedDecoder (see there).
_STATION_ID = r"[A-Za-z0-9_.:\-]+"
_METRIC = r"[a-z0-9_]+"


class RawReadingRecord(msgspec.Struct, frozen=True, gc=False):
    """The consumer's fast decoding of a :class:`RawReading` (msgspec: ~0.5 µs, pydantic ~5 µs).

    With its decoder's patterns (:class:`RawReadingDecoder`), at least as strict as the model:
    patterns matched whole where the model's regex says ``$`` (Python's ``$`` also matches
    before a final newline), strict types where pydantic would coerce (a number in a string, a
    timestamp as epoch seconds). Whatever it refuses is judged by the model itself, so the model
    stays the one definition of what is valid."""

    source: _Name
    station_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    metric: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ts: _Aware
    value: float
    unit: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    kind: Literal["observation", "forecast"] = "observation"
    issued_at: _Aware | None = None
    received_at: _Aware | None = None


class _Valued(Protocol):
    @property
    def value(self) -> float: ...


_S = TypeVar("_S", bound=_Valued)
_VALUE = attrgetter("value")


class CheckedDecoder(Generic[_S]):
    """Bytes → a msgspec struct (``struct``), fast; what that refuses, or a value that is not
    finite, is judged by the pydantic model (``model``, the contract), which names the fault in
    its ``ValidationError`` (``json_invalid`` first when the bytes are not JSON at all) or
    accepts it, and then the struct is made from the model's values. The struct with the
    ``patterns`` must be at least as strict as the model, and carry the model's field names.

    ``patterns`` (field → regex, matched whole) are checked here rather than by msgspec: a
    station id or a metric comes again and again, so each value is matched once and then
    remembered (msgspec matches every time; two patterns cost more than the rest of the
    decoding). Looking a value up hashes it, and a string keeps its hash for the lookups by
    station id that follow."""

    def __init__(self, struct: type[_S], model: type[BaseModel], patterns: dict[str, str]) -> None:
        self._fast = msgspec.json.Decoder(struct)
        self._lines = self._fast.decode_lines
        self._struct = struct
        self._model = model
        self._fields: tuple[str, ...] = struct.__struct_fields__  # type: ignore[attr-defined]
        # per field: how to read it, its pattern, and the values that matched it already
        self._checks = [
            (attrgetter(f), re.compile(p).fullmatch, set[str]()) for f, p in patterns.items()
        ]

    def decode(self, data: bytes) -> _S:
        try:
            rec = self._fast.decode(data)
            if math.isfinite(rec.value) and self._matches(rec):
                return rec
        except msgspec.DecodeError:
            pass
        m = self._model.model_validate_json(data)
        got = ((f, getattr(m, f)) for f in self._fields)
        return self._struct(**{f: tuple(v) if isinstance(v, list) else v for f, v in got})

    def decode_many(self, data: Sequence[bytes]) -> list[_S] | None:
        """All of ``data`` at once, as :meth:`decode` would decode each, when every one is
        good: one msgspec call over the batch as lines of JSON, and the patterns checked
        against what is remembered in one set operation. None when any is not (a message with
        a line break of its own, or one that :meth:`decode` would refuse or have to ask the
        model about): then decode them one by one."""
        if not data:
            return []
        try:
            buf = b"\n".join(data)
        except TypeError:  # a message with no value
            return None
        if buf.count(b"\n") != len(data) - 1:
            return None  # a message spans lines: lines and messages would not match up
        try:
            recs = self._lines(buf)
        except msgspec.DecodeError:
            return None
        if len(recs) != len(data) or not all(map(math.isfinite, map(_VALUE, recs))):
            return None
        known = all(seen.issuperset(map(get, recs)) for get, _match, seen in self._checks)
        if not known and not all(map(self._matches, recs)):
            return None
        return recs

    def _matches(self, rec: _S) -> bool:
        for get, match, seen in self._checks:
            value = get(rec)
            if value in seen:
                continue
            if match(value) is None:
                return False
            if len(seen) >= 100_000:  # bounded: a flood of new ids costs a match each again
                seen.clear()
            seen.add(value)
        return True


class RawReadingDecoder(CheckedDecoder[RawReadingRecord]):
    """Bytes of an ``obs.*.v1`` message → :class:`RawReadingRecord`."""

    def __init__(self) -> None:
        super().__init__(
            RawReadingRecord, RawReading, {"station_id": _STATION_ID, "metric": _METRIC}
        )


Quality = Literal["good", "doubtful", "bad"]


class Reading(Event):
    """``readings.v1``: validated, unit-normalised, quality-flagged. Key: station id."""

    station_id: StationId
    region_code: RegionCode
    station_kind: str
    metric: str
    ts: AwareDatetime
    value: float
    unit: str
    quality: Quality = "good"
    quality_checks: list[str] = Field(default_factory=list)
    source: str
    kind: Literal["observation", "forecast"] = "observation"
    issued_at: AwareDatetime | None = Field(
        default=None, description="for a forecast: when its run was issued (lead = ts - issued_at)"
    )


class ReadingRecord(msgspec.Struct, gc=False):
    """A :class:`Reading` as ingest writes it on the hot path (msgspec encodes one in ~0.5 µs;
    a dict through orjson took ~2 µs). The same fields in the same order; every value has been
    validated already. A test checks that what it encodes parses as the equal :class:`Reading`."""

    event_id: str
    produced_at: datetime
    station_id: str
    region_code: str
    station_kind: str
    metric: str
    ts: datetime
    value: float
    unit: str
    quality: str
    quality_checks: tuple[str, ...]
    source: str
    kind: str = "observation"
    issued_at: datetime | None = None


class ReadingEventRecord(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """Risk's fast decoding of a :class:`Reading` (msgspec ~1 µs, pydantic ~2.6 µs).

    With its decoder's patterns, at least as strict as the model, as :class:`RawReadingRecord`
    is for raw readings (whole matches for ``$``, ``[0-9]`` for ``\\d``, strict types, unknown
    fields refused); whatever it refuses is judged by the model in :meth:`ReadingDecoder.decode`.
    """

    event_id: _Name
    produced_at: _Aware
    station_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    region_code: str
    station_kind: str
    metric: str
    ts: _Aware
    value: float
    unit: str
    source: str
    quality: Literal["good", "doubtful", "bad"] = "good"
    quality_checks: tuple[str, ...] = ()
    kind: Literal["observation", "forecast"] = "observation"
    issued_at: _Aware | None = None


class ReadingDecoder(CheckedDecoder[ReadingEventRecord]):
    """Bytes of a ``readings.v1`` message → :class:`ReadingEventRecord`."""

    def __init__(self) -> None:
        super().__init__(
            ReadingEventRecord, Reading, {"station_id": _STATION_ID, "region_code": r"[0-9]{12}"}
        )


class DeadLetter(BaseModel):
    """``readings.dlq.v1`` and ``<topic>.dlq``: a message that could not be processed."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None
    payload: str = Field(description="the original message value, decoded as UTF-8 with escapes")
    reason: str = Field(description="a short machine-readable reason, e.g. 'invalid_json'")
    detail: str
    service: str
    failed_at: AwareDatetime


class Evidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    metric: str
    value: float
    threshold: float | None = None
    direction: Literal["above", "below"] = "above"
    readings: list[dict[str, Any]] = Field(default_factory=list)
    source_clause: str = ""
    signal: str = Field(default="", description="what the rule read, e.g. sum(rainfall,3h)")
    criteria: list[dict[str, Any]] = Field(
        default_factory=list, description="every criterion of the level: signal, bound, source"
    )


class RiskEvent(Event):
    """``risk.events.v1``: a level raised, lowered or cleared, per station or per region.

    ``kind`` is ``level`` for rule levels and region roll-ups, ``no_data`` when a station falls
    silent (raised, level blue) or reports again (cleared). Silence never clears a level.

    ``standing`` re-announces a level that still stands (``previous_level`` == ``level``): risk
    does that periodically for every station level above none and for every county roll-up, so a
    consumer can tell a warning that risk still backs from one whose evidence has lapsed, and a
    risk service that is alive from one that is not. ``event_time`` is then the announcement's.
    """

    kind: Literal["level", "no_data"] = "level"
    scope: Literal["station", "region"]
    station_id: str | None = None
    region_code: RegionCode
    hazard: str
    rule_id: str
    previous_level: LevelName
    level: LevelName
    change: Literal["raised", "lowered", "cleared", "standing"]
    urgency: Literal["Immediate", "Expected"] = "Immediate"
    event_time: AwareDatetime
    evidence: Evidence


class AlertVersion(Event):
    """``alerts.v1``: one version of a warning (CAP msgType Alert, Update or Cancel)."""

    warning_id: str
    identifier: str
    version: int
    msg_type: Literal["Alert", "Update", "Cancel"]
    status: Literal["Actual", "Exercise", "Test"] = "Actual"
    hazard: str
    level: LevelName
    region_code: RegionCode
    station_ids: list[str]
    references: list[str] = Field(default_factory=list)
    sent: AwareDatetime
    headline: str
    description: str
    # CAP areaDesc: the region in words (五通桥区竹根镇); None when the registry does not know it
    area_desc: str | None = None
    # set when the warning is someone else's, relayed (its sender); never one of our own
    relayed_from: str | None = None
    # when the reading behind this version was taken, where there is one
    cause_time: AwareDatetime | None = None
    # CAP expires: the version is valid until then unless a later version replaces it
    expires: AwareDatetime | None = None
    # an officer's warning: the divisions it covers (empty: region_code alone), the CAP polygon,
    # what people should do as the officer wrote it (None: the hazard's template), when it takes
    # effect, and its GB/T 35965.1 event type
    areas: list[RegionCode] = Field(default_factory=list)
    polygon: str | None = None
    instruction: str | None = None
    effective: AwareDatetime | None = None
    event_type: str | None = None
    origin: Literal["sensor", "officer"] = "sensor"

    @property
    def area_codes(self) -> list[str]:
        return self.areas or [self.region_code]


class UpstreamWarning(Event):
    """``warnings.upstream.v1``: a warning issued by someone else (e.g. the weather service)."""

    identifier: str
    sender: str
    sent: AwareDatetime
    msg_type: Literal["Alert", "Update", "Cancel"]
    status: Literal["Actual", "Exercise", "System", "Test", "Draft"]
    event: str
    level: LevelName
    region_codes: list[str]
    references: list[str] = Field(default_factory=list)
    headline: str = ""
    expires: AwareDatetime | None = None


class StationHealth(Event):
    """``stations.health.v1``: a station went offline (silent for more than k × its reporting
    interval) or came back online. Keyed by station id."""

    station_id: str
    region_code: str
    owner_enterprise: str | None = None
    online: bool
    last_seen: AwareDatetime | None
    interval_s: int
