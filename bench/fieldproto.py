"""Field protocols, decoded to readings on one core: SL 651 frames (HEX and ASCII), MQTT payloads
(ours and the ThingsBoard gateway's) and coal-mine real-time files, each turned into the raw
reading messages ingest writes to Kafka, as a ratio to the JSON push path doing the same work in
the same run (a push body parsed, each item validated as a ``RawReading`` and serialised).

What is timed is the CPU of the decode on one event-loop thread, not the sockets or Kafka: the
push benchmark measures the HTTP path end to end, and every path here ends in the same
``send_many`` to the raw topic. Frames/s are reported beside readings/s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from services.ingest.adapters.raw import raw_reading
from services.ingest.adapters.sl651 import reading_json
from services.ingest.domain import coalmine, sl651, sl651_station
from services.ingest.domain.mqtt import MetricMap, PayloadMap, decode
from shared.contracts import RawReading

FRAMES = 2_000
PUSH_BATCH = 1_000
ROUNDS = 5
# PN05 1.5 mm, PT 311.3 mm, Z 3.217 m, VT 12.6 V: (identifier, data definition, value)
HEX_ELEMENTS = [(0x22, 0x19, 1.5), (0x26, 0x19, 311.3), (0x39, 0x23, 3.217), (0x38, 0x12, 12.6)]


def _best(fn: Callable[[], int]) -> tuple[float, int]:
    """The fastest of ROUNDS runs: (seconds, readings made)."""
    best, made = float("inf"), 0
    for _ in range(ROUNDS):
        t = time.perf_counter()
        made = fn()
        best = min(best, time.perf_counter() - t)
    return best, made


def _push_bodies(now: datetime) -> list[bytes]:
    t0 = now - timedelta(days=1)
    return [
        orjson.dumps(
            {
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": f"P{i % 200:03d}",
                        "metric": "rainfall",
                        "unit": "mm",
                        "value": 0.5,
                        "ts": (t0 + timedelta(seconds=b * PUSH_BATCH + i)).isoformat(),
                    }
                    for i in range(PUSH_BATCH)
                ],
            }
        )
        for b in range(4)
    ]


def _push(bodies: list[bytes], now: datetime) -> int:
    """What ``ReadingsIngress.push`` does with each item before the Kafka write."""
    n = 0
    for body in bodies:
        doc = orjson.loads(body)
        source = doc["source"]
        for item in doc["readings"]:
            raw = RawReading.model_validate({**item, "source": source, "received_at": now})
            orjson.dumps(raw.model_dump(mode="json"))
            n += 1
    return n


def _sl651_stream(now: datetime, *, ascii_: bool) -> bytes:
    out = bytearray()
    for i in range(FRAMES):
        when = now - timedelta(minutes=FRAMES - i)
        station = f"00511{i % 100:05d}"
        if ascii_:
            out += sl651_station.report_frame_ascii(
                station=station,
                function=0x32,
                serial=i % 65536,
                sent=when,
                observed=when,
                station_type="P",
                elements=[("PN05", "1.5"), ("PT", "311.3"), ("Z", "3.217"), ("VT", "12.6")],
            )
        else:
            out += sl651_station.report_frame(
                station=station,
                function=0x32,
                serial=i % 65536,
                sent=when,
                observed=when,
                station_type=0x50,
                elements=HEX_ELEMENTS,
            )
    return bytes(out)


def _sl651(stream: bytes, now: datetime) -> int:
    """What the receiver does with a connection's bytes: split, read, one message a value."""
    n = 0
    found, _garbage, _rest = sl651.split(stream)
    for f in found:
        assert isinstance(f, sl651.Frame)
        report = sl651.read_report(f)
        for v in report.values:
            reading_json("sl651", f"SL651-{f.station}", v, now)
            n += 1
    return n


def _mqtt_messages(now: datetime) -> list[tuple[PayloadMap, str, bytes]]:
    ours = PayloadMap(form="qianshao", source="mqtt")
    tb = PayloadMap(
        form="thingsboard",
        source="tb",
        metrics={"depth": MetricMap("waterlogging_depth", "cm"), "ch4": MetricMap("ch4", "%")},
    )
    ms = int(now.timestamp() * 1000)
    out = []
    for i in range(FRAMES):
        ts = (now - timedelta(seconds=i)).isoformat()
        out.append(
            (
                ours,
                f"qianshao/readings/WL-{i % 100:03d}",
                orjson.dumps([{"metric": "water_level", "ts": ts, "value": 3.2, "unit": "m"}] * 2),
            )
        )
        out.append(
            (
                tb,
                "v1/gateway/telemetry",
                orjson.dumps({f"DEV-{i % 100:03d}": [{"ts": ms - i, "values": {"depth": 3.0}}]}),
            )
        )
    return out


def _mqtt(messages: list[tuple[PayloadMap, str, bytes]], now: datetime) -> int:
    n = 0
    for mapping, topic, payload in messages:
        for r in decode(mapping, topic, payload, now).readings:
            orjson.dumps(r.model_dump(mode="json"))
            n += 1
    return n


def _coalmine_file(now: datetime) -> bytes:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"140211B0012001;五通桥区某某煤矿;{stamp}~"]
    lines += [f"{i:06d};甲烷;1301工作面T1;0.{i % 90:02d};正常;{stamp}~" for i in range(FRAMES)]
    return "\n".join(lines).encode("gb18030")


def _coalmine(data: bytes, now: datetime) -> int:
    fmap = coalmine.shipped_maps()["national"]
    parsed = coalmine.parse_file("140211B0012001_CDSS_20260701080000.txt", data, fmap)
    for v in parsed.values:
        assert v.metric is not None
        raw_reading(
            source="coalmine",
            station=v.station_id,
            metric=v.metric,
            ts=v.ts,
            value=v.value,
            unit=v.unit,
            received_at=now,
        )
    return len(parsed.values)


async def run() -> dict[str, float]:
    now = datetime.now(UTC).replace(microsecond=0)
    bodies = _push_bodies(now)
    hexed, text = _sl651_stream(now, ascii_=False), _sl651_stream(now, ascii_=True)
    messages = _mqtt_messages(now)
    mine = _coalmine_file(now)
    push_s, push_n = _best(lambda: _push(bodies, now))
    rows = [
        ("SL 651 HEX frames", _best(lambda: _sl651(hexed, now)), FRAMES),
        ("SL 651 ASCII frames", _best(lambda: _sl651(text, now)), FRAMES),
        ("MQTT payloads (ours + ThingsBoard)", _best(lambda: _mqtt(messages, now)), 2 * FRAMES),
        ("coal-mine CDSS records", _best(lambda: _coalmine(mine, now)), FRAMES),
    ]
    base = push_n / push_s
    print("| path | units/s | readings/s | readings/s ÷ JSON push |")
    print("|---|---|---|---|")
    print(f"| JSON push body (baseline) | – | {base:,.0f} | 1.00 |")
    out = {"push_readings_s": base}
    for name, (secs, made), units in rows:
        rate = made / secs
        print(f"| {name} | {units / secs:,.0f} | {rate:,.0f} | {rate / base:.2f} |")
        out[f"{name}: readings_s"] = rate
        out[f"{name}: units_s"] = units / secs
    return out


if __name__ == "__main__":
    asyncio.run(run())
