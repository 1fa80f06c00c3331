"""The SL 651 receiver over real sockets, on the real broker and database: real stations' frames
sent over TCP are answered once their readings are on the raw topic and stored by the consumer
under the station their source registered; a broken frame between good ones on the same
connection is dead-lettered with its reason and hex, the connection stays up and the next frame
is stored; a UDP datagram is answered by a datagram; an RTU no source may register is
dead-lettered, and an element no metric maps to is named in a dead letter while its frame's
other readings are stored."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.ingest.app import create_app
from services.ingest.domain.sl651 import (
    BEIJING,
    crc16,
    parse_ascii_frame,
    parse_frame,
)
from services.ingest.domain.sl651_station import report_frame_ascii
from shared.contracts import Topics
from shared.devstack.inprocess import serve
from tests.helpers import eventually, identity_header, ingest_settings
from tests.kafka_util import read_all

FRAMES = [
    bytes.fromhex(line)
    for line in (Path(__file__).parents[1] / "data" / "sl651_frames.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(14), 10)
    length = int.from_bytes(head[11:13], "big") & 0x0FFF
    return head + await asyncio.wait_for(reader.readexactly(length + 3), 10)


async def test_frames_over_tcp_and_udp_are_answered_stored_and_dead_lettered(
    database, broker, topic_prefix
):
    settings = ingest_settings(database, broker, topic_prefix, sl651_port=0)
    app = create_app(settings)
    hdr = identity_header(scopes=["stations:write"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=hdr) as c:
        r = await c.put(
            "/v1/sources/sl651",
            json={"auto_register": True, "region_code": "511112100000", "station_kind": "hydro"},
        )
        assert r.status_code == 200, r.text
        tcp, udp = app.state.sl651_ports
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
        try:
            # a timed report, then a broken frame (bad CRC), then an added report, in one write
            broken = FRAMES[4][:-1] + bytes([FRAMES[4][-1] ^ 0xFF])
            writer.write(FRAMES[0] + broken + FRAMES[1])
            await writer.drain()
            first, second = await _answer(reader), await _answer(reader)
            for sent, got in ((FRAMES[0], first), (FRAMES[1], second)):
                a, f = parse_frame(got), parse_frame(sent)
                assert (a.upward, a.station, a.function) == (False, f.station, f.function)
                assert a.body[:2] == f.body[:2]  # the serial it confirms
            # the same connection still serves: a keep-alive is not answered, a report is
            keepalive = _with_crc(
                bytes.fromhex("7E7E0100303A900600002F000802" + "0001" + "260701063700" + "03")
            )
            writer.write(keepalive + FRAMES[5])
            await writer.drain()
            third = parse_frame(await _answer(reader))
            assert (third.station, third.function) == ("0030301490", 0x34)
        finally:
            writer.close()

        # UDP: a rain gauge's datagram, answered by a datagram
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", udp))
        try:
            transport.sendto(FRAMES[6])
            answer = parse_frame(await asyncio.wait_for(got, 10))
            assert (answer.station, answer.function, answer.upward) == ("0081120005", 0x32, False)
        finally:
            transport.close()

        conn = await asyncpg.connect(database)
        try:

            async def stored() -> Any:
                rows = await conn.fetch(
                    """SELECT station_id, metric, value FROM ingest.readings
                        ORDER BY station_id, metric, ts"""
                )
                return rows if len(rows) >= 12 else None

            rows = await eventually(stored, what="the readings of four frames")
            got_rows = {(r["station_id"], r["metric"], r["value"]) for r in rows}
            assert ("SL651-0030746200", "rainfall_total", 311.3) in got_rows
            assert ("SL651-0030746200", "voltage", 12.87) in got_rows
            assert ("SL651-00303A9006", "humidity", 98.5) in got_rows
            assert ("SL651-0081120005", "rainfall_total", 184.8) in got_rows
            # nothing of the broken frame's station
            assert not any(r["station_id"] == "SL651-0030503768" for r in rows)
            registered = await conn.fetch(
                "SELECT id, region_code, attributes FROM ingest.stations ORDER BY id"
            )
            assert sorted((s["id"], s["region_code"]) for s in registered) == [
                ("SL651-0030301490", "511112100000"),
                ("SL651-00303A9006", "511112100000"),
                ("SL651-0030746200", "511112100000"),
                ("SL651-0081120005", "511112100000"),
            ]
        finally:
            await conn.close()
        dead = await read_all(broker.bootstrap, Topics(topic_prefix).readings_dlq)
        reasons = [(d["reason"], d["detail"]) for d in dead]
        assert (
            "sl651_frame",
            f"CRC {broken[-2:].hex().upper()} does not match {crc16(broken[:-2]):04X}",
        ) in reasons
        bad = next(d for d in dead if d["reason"] == "sl651_frame")
        assert bad["payload"] == broken.hex().upper()
        # the extension elements no metric maps to are named, their frames' readings stored
        assert any(r == "sl651_element" and "FF09" in d and "FF33" in d for r, d in reasons)


def _with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "big")


async def test_an_rtu_no_source_may_register_is_dead_lettered_and_answered(
    database, broker, topic_prefix
):
    settings = ingest_settings(database, broker, topic_prefix, sl651_port=0, sl651_udp=False)
    app = create_app(settings)
    async with serve(app):
        tcp, udp = app.state.sl651_ports
        assert udp is None
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
        try:
            writer.write(FRAMES[2])
            await writer.drain()
            answer = parse_frame(await _answer(reader))
            assert answer.station == "0030301495"
        finally:
            writer.close()

        async def dead() -> Any:
            found = await read_all(broker.bootstrap, Topics(topic_prefix).readings_dlq)
            return [d for d in found if d["reason"] == "unknown_station"] or None

        (d,) = await eventually(dead, what="the unknown RTU's dead letter")
        assert d["key"] == "0030301495"
        assert d["payload"] == FRAMES[2].hex().upper()
        assert "SL651-0030301495" in d["detail"]


async def test_an_ascii_station_is_answered_in_ascii_and_its_readings_stored(
    database, broker, topic_prefix
):
    settings = ingest_settings(database, broker, topic_prefix, sl651_port=0, sl651_udp=False)
    app = create_app(settings)
    hdr = identity_header(scopes=["stations:write"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=hdr) as c:
        r = await c.post(
            "/v1/stations",
            json={
                "id": "RG-ASCII-01",
                "name": "ASCII 雨量站",
                "kind": "rain_gauge",
                "region_code": "511112100000",
                "attributes": {"sl651_address": "0051111299"},
            },
        )
        assert r.status_code == 201, r.text
        tcp, _ = app.state.sl651_ports
        when = datetime(2026, 7, 1, 6, 30, tzinfo=BEIJING)
        frame = report_frame_ascii(
            station="0051111299",
            function=0x33,
            serial=0x2A,
            sent=when,
            observed=when,
            station_type="P",
            elements=[("PN05", "4.5"), ("VT", "12.6")],
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
        try:
            writer.write(frame)
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(24), 10)
            length = int(head[20:23], 16)
            rest = await asyncio.wait_for(reader.readexactly(length + 5), 10)
        finally:
            writer.close()
        a = parse_ascii_frame(head + rest)
        assert (a.station, a.function, a.upward) == ("0051111299", 0x33, False)
        assert a.body[:4] == b"002A"

        conn = await asyncpg.connect(database)
        try:

            async def stored() -> Any:
                rows = await conn.fetch(
                    "SELECT metric, value, ts FROM ingest.readings ORDER BY metric"
                )
                return rows if len(rows) == 2 else None

            rows = await eventually(stored, what="the ASCII report's readings")
        finally:
            await conn.close()
        assert [(r["metric"], r["value"]) for r in rows] == [("rainfall", 4.5), ("voltage", 12.6)]
        assert rows[0]["ts"] == when
