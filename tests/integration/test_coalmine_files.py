"""The coal-mine file ingester on a real directory, the real broker and database: a definition
file dropped into the landing directory registers the mine's stations in its region with the
coal pack's positions; a real-time file written in two parts is read only once complete and
its values are stored, its malformed line dead-lettered with the line number; the same file
dropped again is not read again; a file nothing can be read from is dead-lettered whole."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import asyncpg

from services.ingest.app import create_app
from shared.contracts import Topics
from shared.devstack.inprocess import serve
from tests.helpers import eventually, ingest_settings
from tests.kafka_util import read_all
from tests.unit.test_coalmine_files import CDDY, CDSS, MINE


async def test_definitions_then_realtime_files_from_the_landing_directory(
    database, broker, topic_prefix, tmp_path: Path
):
    landing = tmp_path / "ftp"
    landing.mkdir()
    settings = ingest_settings(
        database,
        broker,
        topic_prefix,
        coalmine_dir=landing,
        coalmine_mines={MINE: "511112103000"},
        coalmine_scan_s=0.2,
        coalmine_settle_s=0.3,
    )
    app = create_app(settings)
    conn = await asyncpg.connect(database)
    try:
        async with serve(app):
            (landing / f"{MINE}_CDDY_20260701080000.txt").write_bytes(CDDY.encode("gb18030"))

            async def stations() -> Any:
                rows = await conn.fetch(
                    """SELECT id, kind, region_code, owner_enterprise, attributes
                         FROM ingest.stations ORDER BY id"""
                )
                return rows if len(rows) == 3 else None

            rows = await eventually(stations, what="three stations registered")
            assert [(r["id"], r["kind"], r["region_code"]) for r in rows] == [
                (f"{MINE}-001A01", "coal_mine_methane", "511112103000"),
                (f"{MINE}-001A02", "coal_mine_methane", "511112103000"),
                (f"{MINE}-001A03", "co", "511112103000"),
            ]
            attrs = _json(rows[0]["attributes"])
            assert attrs["position"] == "T0"
            assert attrs["mine_alarm"] == 1.0
            assert rows[0]["owner_enterprise"] == "五通桥区某某煤矿有限公司"

            # a real-time file arrives in two writes: nothing is read from the first part
            rt = landing / f"{MINE}_CDSS_20260701080500.txt"
            data = CDSS.encode("gb18030")
            with rt.open("wb") as f:
                f.write(data[:70])
                f.flush()
                await asyncio.sleep(1.0)  # longer than settle: the file is looked at, and waits
                assert await conn.fetchval("SELECT count(*) FROM ingest.coalmine_files") == 1
                f.write(data[70:])

            async def readings() -> Any:
                rows = await conn.fetch(
                    "SELECT station_id, metric, value FROM ingest.readings ORDER BY station_id"
                )
                return rows if len(rows) == 2 else None

            got = await eventually(readings, what="two readings stored")
            assert [(r["station_id"], r["metric"], r["value"]) for r in got] == [
                (f"{MINE}-001A01", "ch4", 0.42),
                (f"{MINE}-001A02", "ch4", 0.38),
            ]
            files = await conn.fetch(
                """SELECT name, kind, stations, readings, ignored, faults
                     FROM ingest.coalmine_files ORDER BY name"""
            )
            assert [tuple(f) for f in files] == [
                (f"{MINE}_CDDY_20260701080000.txt", "definitions", 3, 0, 1, 1),
                (f"{MINE}_CDSS_20260701080500.txt", "realtime", 0, 2, 1, 1),
            ]

            # dropped again (the FTP client retried): the same name and content is not read
            shutil.copy(rt, tmp_path / "again")
            rt.unlink()
            shutil.move(tmp_path / "again", rt)
            os.utime(rt, (time.time() + 5, time.time() + 5))
            # and a file of a kind the maps know but whose header is unreadable
            bad = landing / f"{MINE}_CDSS_20260701081000.txt"
            bad.write_bytes(b"M;x;not a time~001A01;;;1;;~")

            async def recorded() -> Any:
                n = await conn.fetchval("SELECT count(*) FROM ingest.coalmine_files")
                return n == 3

            await eventually(recorded, what="the unreadable file recorded")
            await asyncio.sleep(0.6)
            assert await conn.fetchval("SELECT count(*) FROM ingest.coalmine_files") == 3
            assert await conn.fetchval("SELECT count(*) FROM ingest.readings") == 2
    finally:
        await conn.close()

    dead = await read_all(broker.bootstrap, Topics(topic_prefix).readings_dlq)
    details = {(d["reason"], d["detail"]) for d in dead}
    assert (
        "coalmine_record",
        f"{MINE}_CDDY_20260701080000.txt line 6: 4 fields, the layout has 11",
    ) in details
    assert (
        "coalmine_record",
        f"{MINE}_CDSS_20260701080500.txt line 4: value 'x12' is not a number",
    ) in details
    whole = [d for d in dead if d["reason"] == "coalmine_file"]
    assert len(whole) == 1
    assert "the header's time 'not a time'" in whole[0]["detail"]
    assert whole[0]["payload"].startswith("M;x;not a time~")


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v
