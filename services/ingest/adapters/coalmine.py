"""The coal-mine file ingester: mines' monitoring systems drop their networking files (定义 and
实时数据) by FTP into a landing directory; ingest reads each once.

- The directory is scanned every ``scan_s``. A file is read when it ends with ``~`` and has not
  changed for ``settle_s`` (an upload in progress is left alone); one that still does not end
  with ``~`` after ``abandon_s`` is read as it is, its cut record reported.
- Definition files before real-time ones in each scan, so a new point's first values find it.
- A definition registers or updates the station ``<mine code>-<point>`` in the mine's region
  (``mines``, else ``region_code``); real-time values become raw readings on the raw topic, like
  every other reading, so the consumer's checks, dedupe and dead letters apply.
- A malformed record goes to ``readings.dlq.v1`` with the file, its line number and the reason;
  the good records of the file are stored. A file nothing can be read from is dead-lettered
  whole.
- Each file is recorded once its effects are durable (``ingest.coalmine_files``, by name and
  SHA-256): the same file dropped again is not read again; a changed file under the same name is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import orjson
from prometheus_client import Counter

from services.ingest.adapters import stations as station_repo
from services.ingest.adapters.raw import raw_reading
from services.ingest.adapters.stations import StationCache, StationIn
from services.ingest.domain import coalmine
from services.ingest.domain.coalmine import FieldMap, Parsed
from shared.clock import Clock
from shared.contracts import DeadLetter, Topics
from shared.kafka import EventProducer

log = logging.getLogger(__name__)

FILES = Counter("qianshao_coalmine_files_total", "Coal-mine files read, by kind", ["kind"])
RECORDS = Counter(
    "qianshao_coalmine_records_total", "Coal-mine file records, by outcome", ["outcome"]
)


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str
    stations: int = 0
    readings: int = 0
    ignored: int = 0
    faults: int = 0


class CoalMineWatcher:
    def __init__(
        self,
        *,
        directory: Path,
        maps: Sequence[FieldMap],
        mines: Mapping[str, str],
        region_code: str | None,
        producer: EventProducer,
        stations: StationCache,
        pool: asyncpg.Pool,
        topics: Topics,
        clock: Clock,
        source: str = "coalmine",
        scan_s: float = 2.0,
        settle_s: float = 1.0,
        abandon_s: float = 600.0,
    ) -> None:
        self._dir = directory
        self._maps = list(maps)
        self._mines = dict(mines)
        self._region = region_code
        self._producer = producer
        self._stations = stations
        self._pool = pool
        self._topics = topics
        self._clock = clock
        self._source = source
        self._scan_s = scan_s
        self._settle_s = settle_s
        self._abandon_s = abandon_s
        self._seen: set[tuple[str, int, int]] = set()  # (name, size, mtime) read or recorded
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.scan()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("coal-mine scan failed, trying again: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._scan_s)

    def stop(self) -> None:
        self._stopping.set()

    async def scan(self) -> list[Outcome]:
        """Reads the files that are complete and new; what each gave."""
        found = await asyncio.to_thread(self._listing)
        out: list[Outcome] = []
        for name, size, mtime, fmap in found:
            key = (name, size, mtime)
            if key in self._seen:
                continue
            age = time.time() - mtime / 1e9
            if age < self._settle_s:
                continue
            data = await asyncio.to_thread((self._dir / name).read_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if await self._pool.fetchval(
                "SELECT true FROM ingest.coalmine_files WHERE name = $1 AND sha256 = $2",
                name,
                digest,
            ):
                self._seen.add(key)
                continue
            try:
                parsed = coalmine.parse_file(name, data, fmap, partial_ok=age >= self._abandon_s)
            except coalmine.Incomplete:
                continue  # still being written
            except coalmine.FileFault as exc:
                out.append(await self._unreadable(name, digest, fmap, data, str(exc)))
            else:
                out.append(await self._apply(name, digest, fmap, parsed))
            self._seen.add(key)
        return out

    def _listing(self) -> list[tuple[str, int, int, FieldMap]]:
        """The files a field map reads: definitions first, then by name."""
        found: list[tuple[int, str, int, int, FieldMap]] = []
        with os.scandir(self._dir) as it:
            for e in it:
                if not e.is_file() or e.name.startswith("."):
                    continue
                token = coalmine.kind_token(e.name)
                if token is None:
                    continue
                for fmap in self._maps:
                    kind = fmap.kind_of(token)
                    if kind is not None:
                        st = e.stat()
                        order = 0 if kind == "definitions" else 1
                        found.append((order, e.name, st.st_size, st.st_mtime_ns, fmap))
                        break
        found.sort(key=lambda f: (f[0], f[1]))
        return [(name, size, mtime, fmap) for _, name, size, mtime, fmap in found]

    # a file's effects ------------------------------------------------------------------------

    async def _apply(self, name: str, digest: str, fmap: FieldMap, p: Parsed) -> Outcome:
        now = self._clock.now()
        dead = [
            self._dead(name, f.text, "coalmine_record", f"{name} line {f.line}: {f.reason}", now)
            for f in p.faults
        ]
        region = self._mines.get(p.mine_code, self._region)
        written = readings = 0
        if region is None:
            dead.append(
                self._dead(
                    name,
                    "",
                    "coalmine_mine",
                    f"{name}: mine {p.mine_code} has no region (set it in coalmine_mines)",
                    now,
                )
            )
        elif p.kind == "definitions":
            written = await station_repo.upsert_many(
                self._pool, self._stations, _stations(p, region, self._source)
            )
        else:
            out, strangers = await self._readings(p, now)
            readings = len(out)
            dead += [
                self._dead(
                    name,
                    "",
                    "unknown_station",
                    f"{name} line {v.line}: point {v.station_id} has no definition",
                    now,
                )
                for v in strangers
            ]
            if out:
                await self._producer.send_many(self._topics.obs_sensor, out)
        if dead:
            await self._producer.send_many(
                self._topics.readings_dlq,
                [(d.key or "", orjson.dumps(d.model_dump(mode="json"))) for d in dead],
            )
        faults = len(dead)
        await self._record(name, digest, fmap, p.kind, p, written, readings, faults, None)
        FILES.labels(p.kind).inc()
        RECORDS.labels("stored").inc(written + readings)
        RECORDS.labels("ignored").inc(p.ignored)
        RECORDS.labels("fault").inc(len(p.faults))
        log.info(
            "coal-mine file read",
            extra={"file": name, "stations": written, "readings": readings, "faults": faults},
        )
        return Outcome(name, p.kind, written, readings, p.ignored, faults)

    async def _readings(
        self, p: Parsed, now: datetime
    ) -> tuple[list[tuple[str, bytes]], list[coalmine.Value]]:
        ids = sorted({v.station_id for v in p.values})
        rows = await self._pool.fetch(
            """SELECT id, attributes->>'metric' AS metric, attributes->>'unit' AS unit
                 FROM ingest.stations WHERE id = ANY($1::text[])""",
            ids,
        )
        known = {r["id"]: (r["metric"], r["unit"]) for r in rows}
        out: list[tuple[str, bytes]] = []
        strangers: list[coalmine.Value] = []
        for v in p.values:
            metric, unit = (v.metric, v.unit) if v.metric else known.get(v.station_id, (None, None))
            if v.station_id not in known or metric is None:
                strangers.append(v)
                continue
            message = raw_reading(
                source=self._source,
                station=v.station_id,
                metric=metric,
                ts=v.ts,
                value=v.value,
                unit=unit,
                received_at=now,
            )
            out.append((v.station_id, message))
        return out, strangers

    async def _unreadable(
        self, name: str, digest: str, fmap: FieldMap, data: bytes, why: str
    ) -> Outcome:
        now = self._clock.now()
        text = data[:8192].decode("utf-8", "backslashreplace")
        letter = self._dead(name, text, "coalmine_file", f"{name}: {why}", now)
        await self._producer.send_many(
            self._topics.readings_dlq, [(name, orjson.dumps(letter.model_dump(mode="json")))]
        )
        await self._record(name, digest, fmap, "unreadable", None, 0, 0, 1, why)
        FILES.labels("unreadable").inc()
        return Outcome(name, "unreadable", faults=1)

    async def _record(
        self,
        name: str,
        digest: str,
        fmap: FieldMap,
        kind: str,
        p: Parsed | None,
        stations: int,
        readings: int,
        faults: int,
        detail: str | None,
    ) -> None:
        await self._pool.execute(
            """INSERT INTO ingest.coalmine_files (name, sha256, field_map, kind, mine_code,
                   records, stations, readings, ignored, faults, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (name, sha256) DO NOTHING""",
            name,
            digest,
            fmap.id,
            kind,
            p.mine_code if p else None,
            p.records if p else 0,
            stations,
            readings,
            p.ignored if p else 0,
            faults,
            detail,
        )

    def _dead(self, name: str, text: str, reason: str, detail: str, now: datetime) -> DeadLetter:
        return DeadLetter(
            topic=f"coalmine:{name}",
            partition=-1,  # not a Kafka message: replay leaves it alone
            offset=-1,
            key=name,
            payload=text,
            reason=reason,
            detail=detail[:2000],
            service="ingest",
            failed_at=now,
        )


def _stations(p: Parsed, region: str, source: str) -> Iterable[StationIn]:
    for pt in p.points:
        attributes: dict[str, object] = {
            "metric": pt.metric,
            "unit": pt.unit,
            "mine_code": p.mine_code,
            "point": pt.point,
            "sensor_type": pt.sensor_type,
            "registered_by": source,
            **{f"mine_{k}": v for k, v in pt.limits.items()},
        }
        if pt.position is not None:
            attributes["position"] = pt.position
        yield StationIn(
            id=pt.station_id,
            name=pt.location or pt.station_id,
            kind=pt.kind,
            region_code=region,
            owner_enterprise=p.mine_name,
            interval_s=60,
            attributes=attributes,
        )
