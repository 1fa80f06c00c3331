"""The SL 651-2014 receiver: hydrological and rain telemetry stations (RTUs) connect over TCP (one
connection a station, kept open or not) or send UDP datagrams; their frames are decoded
(:mod:`services.ingest.domain.sl651`) into raw readings and written to the raw topic like every
other reading, so the consumer's checks, dedupe and dead letters apply to them too.

- A station is found by its address: the registered station whose attribute ``sl651_address``
  is those 10 hex digits, else the station ``SL651-<address>`` — which the source ``sl651``
  registers by itself when it is allowed to (``PUT /v1/sources/sl651``).
- A report is answered (the function code back, downward, with its serial) only once its
  readings are on the raw topic with ``acks=all``: a station that hears nothing sends again,
  and the consumer drops the repeat by its key. A keep-alive (``2F``) is not answered, as the
  standard says.
- A broken frame (bad CRC, truncated, not BCD …), an element the receiver cannot map, or a
  station it does not know goes to ``readings.dlq.v1`` with the reason and the frame's hex; the
  connection stays up and the good frames around it are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

import asyncpg
import orjson
from prometheus_client import Counter

from services.ingest.adapters import stations as station_repo
from services.ingest.adapters.raw import raw_reading
from services.ingest.adapters.stations import StationCache
from services.ingest.domain import sl651
from shared.clock import Clock
from shared.contracts import DeadLetter, Topics
from shared.kafka import EventProducer

log = logging.getLogger(__name__)

FRAMES = Counter(
    "qianshao_sl651_frames_total", "SL 651 frames received, by function and outcome", ["outcome"]
)
MAX_BUFFER = 64 << 10  # a connection that sends this much without a frame is dropped


class Sl651Receiver:
    def __init__(
        self,
        *,
        producer: EventProducer,
        stations: StationCache,
        pool: asyncpg.Pool,
        topics: Topics,
        clock: Clock,
        source: str = "sl651",
    ) -> None:
        self._producer = producer
        self._stations = stations
        self._pool = pool
        self._topics = topics
        self._clock = clock
        self._source = source
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._reassembly = sl651.Reassembly()
        self._addresses: dict[str, tuple[float, str | None]] = {}
        self._stopped = asyncio.Event()

    # serving ------------------------------------------------------------------------------------

    async def start(self, host: str, port: int, *, udp: bool = True) -> tuple[int, int | None]:
        """Listens on TCP (and UDP) ``port``; the ports bound (0 picks free ones)."""
        server = await asyncio.start_server(self._connection, host, port)
        self._servers.append(server)
        tcp_port = server.sockets[0].getsockname()[1]
        udp_port = None
        if udp:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, port or tcp_port)
            )
            self._udp = transport
            udp_port = transport.get_extra_info("sockname")[1]
        log.info("SL 651 receiver listening", extra={"tcp": tcp_port, "udp": udp_port})
        return tcp_port, udp_port

    async def serve(self) -> None:
        """Runs until :meth:`stop`; then the listeners are closed."""
        await self._stopped.wait()
        for s in self._servers:
            await s.wait_closed()

    def stop(self) -> None:
        for s in self._servers:
            s.close()
        if self._udp is not None:
            self._udp.close()
        self._stopped.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        buffer = b""
        try:
            while not reader.at_eof():
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buffer += chunk
                found, garbage, buffer = sl651.split(buffer)
                if garbage:
                    found.append(sl651.FrameError(f"{len(garbage)} bytes before a 7E7E", garbage))
                for reply in await self.handle(found):
                    writer.write(reply)
                await writer.drain()
                if len(buffer) > MAX_BUFFER:
                    await self.handle([sl651.FrameError("no frame in 64 KiB", buffer[:256])])
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if buffer:
                await self.handle([sl651.FrameError("the connection closed mid-frame", buffer)])
            writer.close()
            log.debug("SL 651 station left", extra={"peer": str(peer)})

    async def datagram(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        for answer in await self.handle(list(sl651.frames_of(data))):
            reply(answer)

    # frames → readings, dead letters and answers --------------------------------------------------

    async def handle(self, frames: Sequence[sl651.Frame | sl651.FrameError]) -> list[bytes]:
        """Writes the readings of ``frames`` (and their dead letters), then returns the answers
        to send, in order: only once what they answer is on the raw topic."""
        now = self._clock.now()
        readings: list[tuple[str, bytes]] = []
        dead: list[DeadLetter] = []
        answers: list[bytes] = []
        for f in frames:
            if isinstance(f, sl651.FrameError):
                FRAMES.labels("broken").inc()
                dead.append(self._dead(f.raw, "sl651_frame", f.reason, None, now))
                continue
            if not f.upward:
                dead.append(
                    self._dead(f.raw, "sl651_frame", "a downward frame sent to us", None, now)
                )
                continue
            if f.function == 0x2F:
                FRAMES.labels("keepalive").inc()
                continue
            body: bytes | None = f.body
            if f.packets is not None and f.packets[0] > 1:
                body = self._reassembly.add(f)
                if body is None:  # more packets to come: each is acknowledged
                    answers.append(sl651.answer(f, now, keep=True))
                    continue
            if f.function not in sl651.REPORTS:
                FRAMES.labels("other").inc()
                answers.append(sl651.answer(f, now))
                continue
            try:
                report = sl651.read_report(f, body)
            except sl651.FrameError as exc:
                FRAMES.labels("broken").inc()
                dead.append(self._dead(f.raw, "sl651_frame", exc.reason, f.station, now))
                continue
            station = await self._station(f.station, report)
            if station is None:
                FRAMES.labels("unknown_station").inc()
                dead.append(
                    self._dead(
                        f.raw,
                        "unknown_station",
                        f"no station has sl651_address {f.station}, and SL651-{f.station} is not "
                        f"registered (source {self._source!r} may register it)",
                        f.station,
                        now,
                    )
                )
                answers.append(sl651.answer(f, now))
                continue
            if report.skipped:
                dead.append(
                    self._dead(f.raw, "sl651_element", "; ".join(report.skipped), f.station, now)
                )
            for v in report.values:
                readings.append((station, reading_json(self._source, station, v, now)))
            FRAMES.labels("report").inc()
            answers.append(sl651.answer(f, now))
        if readings:
            await self._producer.send_many(self._topics.obs_sensor, readings)
        if dead:
            await self._producer.send_many(
                self._topics.readings_dlq,
                [(d.key or "", orjson.dumps(d.model_dump(mode="json"))) for d in dead],
            )
        return answers

    async def _station(self, address: str, report: sl651.Report) -> str | None:
        """The station an RTU address reports as, registering ``SL651-<address>`` when the
        source may."""
        loop = asyncio.get_running_loop()
        hit = self._addresses.get(address)
        if hit is not None and hit[0] > loop.time():
            return hit[1]  # an unknown address is asked again after 10 s
        sid: str | None = await self._pool.fetchval(
            "SELECT id FROM ingest.stations WHERE attributes->>'sl651_address' = $1 LIMIT 1",
            address,
        )
        if sid is None:
            own = f"SL651-{address}"
            known = await self._stations.get_many([own])
            if own not in known:
                metric = report.values[0].metric if report.values else "water_level"
                known.update(
                    await station_repo.auto_register(
                        self._pool, self._stations, [(own, self._source, metric)]
                    )
                )
            sid = own if own in known else None
        self._addresses[address] = (loop.time() + (300.0 if sid else 10.0), sid)
        return sid

    def _dead(
        self, raw: bytes, reason: str, detail: str, station: str | None, now: datetime
    ) -> DeadLetter:
        return DeadLetter(
            topic=f"sl651:{self._source}",
            partition=-1,
            offset=-1,
            key=station,
            payload=raw.hex().upper(),
            reason=reason,
            detail=detail[:2000],
            service="ingest",
            failed_at=now,
        )


def reading_json(source: str, station: str, v: sl651.Value, now: datetime) -> bytes:
    return raw_reading(
        source=source,
        station=station,
        metric=v.metric,
        ts=v.ts,
        value=v.value,
        unit=v.unit,
        received_at=now,
    )


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Sl651Receiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self._transport
        if transport is None:
            return

        def reply(answer: bytes) -> None:
            transport.sendto(answer, addr)

        task = asyncio.get_running_loop().create_task(self._receiver.datagram(data, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
