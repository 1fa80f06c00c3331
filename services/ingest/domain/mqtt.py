"""What gateways publish over MQTT, read into raw readings. Pure: a topic, a payload and ``now``
in; readings and the faults of the parts that could not be read out.

Two payload forms, chosen per subscription (``mapping``):

``qianshao``
    A reading as the push API takes it — ``{"metric", "ts", "value", "unit"?, "station_id"?}`` —
    or a list of them, or ``{"readings": [...]}``. A reading without ``station_id`` is the
    station named by the topic's last level (``qianshao/readings/WL-ZG-01``).

``thingsboard``
    The ThingsBoard IoT gateway's telemetry (``v1/gateway/telemetry``)::

        {"Device A": [{"ts": 1483228800000, "values": {"temperature": 42, "humidity": 80}}],
         "Device B": [{"temperature": 41}]}

    ``ts`` is milliseconds since the epoch (an entry without it was measured now). A device
    is the station of that id, or the one the subscription's ``devices`` maps its name to.
    A value key is the metric the subscription's ``metrics`` maps it to (with the unit it is
    sent in); without a ``metrics`` map every numeric key whose lower-cased name is a metric
    name is read, and other keys are faults. With a map, keys it does not name are ignored (a
    gateway's status fields).

A payload that is not JSON, or not of its form, is malformed as a whole
(:class:`MalformedPayload`); a bad item inside a good payload is a fault, and the items around
it are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from shared.contracts import RawReading

Form = Literal["qianshao", "thingsboard"]
STATION_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
METRIC = re.compile(r"^[a-z0-9_]{1,64}$")


class MalformedPayload(ValueError):
    """A payload nothing can be read from: why."""


@dataclass(frozen=True, slots=True)
class MetricMap:
    metric: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadMap:
    """How one subscription's payloads become readings."""

    form: Form
    source: str
    metrics: Mapping[str, MetricMap] = field(default_factory=dict)
    devices: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Decoded:
    readings: list[RawReading] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


def decode(mapping: PayloadMap, topic: str, payload: bytes, now: datetime) -> Decoded:
    """The readings of one MQTT message, and what could not be read in it."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"not JSON: {exc}") from None
    if mapping.form == "thingsboard":
        return _thingsboard(mapping, body, now)
    return _ours(mapping, topic, body, now)


def _ours(mapping: PayloadMap, topic: str, body: Any, now: datetime) -> Decoded:
    if isinstance(body, dict) and "readings" in body:
        body = body["readings"]
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise MalformedPayload("expected a reading object, a list of them or {'readings': [...]}")
    last = topic.rsplit("/", 1)[-1]
    out = Decoded()
    for n, item in enumerate(items):
        fields = {"station_id": last, **item, "source": mapping.source, "received_at": now}
        try:
            out.readings.append(RawReading.model_validate(fields))
        except ValidationError as exc:
            out.faults.append(f"item {n}: {_reason(exc)}")
    return out


def _thingsboard(mapping: PayloadMap, body: Any, now: datetime) -> Decoded:
    if not isinstance(body, dict) or not body:
        raise MalformedPayload("expected {device name: [telemetry, …]}")
    out = Decoded()
    for device, entries in body.items():
        station = mapping.devices.get(device, device)
        if not STATION_ID.match(station):
            out.faults.append(f"device {device!r} is not a station id and is not mapped to one")
            continue
        for n, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            where = f"device {device!r} entry {n}"
            if not isinstance(entry, dict):
                out.faults.append(f"{where}: not an object")
                continue
            if "values" in entry:
                values, ts = entry["values"], _epoch_ms(entry.get("ts"))
                if not isinstance(values, dict) or ts is None:
                    out.faults.append(f"{where}: 'values' must be an object and 'ts' epoch ms")
                    continue
            else:
                values, ts = entry, now
            for key, value in values.items():
                target = _metric(mapping, key)
                if target is None:
                    if not mapping.metrics:
                        out.faults.append(f"{where}: key {key!r} is not a metric name")
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    out.faults.append(f"{where}: {key!r} is {value!r}, not a number")
                    continue
                try:
                    out.readings.append(
                        RawReading(
                            source=mapping.source,
                            station_id=station,
                            metric=target.metric,
                            ts=ts,
                            value=float(value),
                            unit=target.unit,
                            received_at=now,
                        )
                    )
                except ValidationError as exc:
                    out.faults.append(f"{where}: {key!r}: {_reason(exc)}")
    return out


def _metric(mapping: PayloadMap, key: str) -> MetricMap | None:
    if mapping.metrics:
        return mapping.metrics.get(key)
    name = key.lower()
    return MetricMap(name) if METRIC.match(name) else None


def _epoch_ms(ts: Any) -> datetime | None:
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    try:
        return datetime.fromtimestamp(ts / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _reason(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    return f"{where}: {e['msg']}" if where else str(e["msg"])
