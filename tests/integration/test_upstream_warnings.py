"""Upstream CAP warnings through ingest's API on the real database and broker: stored once,
published on warnings.upstream.v1, Update and Cancel applied to what they reference, bad XML
answered with problem+json and the reason."""

from __future__ import annotations

from pathlib import Path

import httpx

from services.ingest.app import create_app
from shared.devstack.inprocess import serve
from tests.helpers import identity_header, ingest_settings
from tests.kafka_util import read_all

SAMPLE = (Path(__file__).parent.parent / "data" / "cap_rainstorm_red.xml").read_text()
FIRST = "11000041600000_20260701093000_1"
REF = f"11000041600000,{FIRST},2026-07-01T09:30:00+08:00"


def message(identifier: str, msg_type: str, references: str = "") -> bytes:
    text = SAMPLE.replace(
        f"<identifier>{FIRST}</identifier>", f"<identifier>{identifier}</identifier>"
    )
    refs = f"\n  <references>{references}</references>" if references else ""
    text = text.replace(
        "<msgType>Alert</msgType>\n  <scope>Public</scope>",
        f"<msgType>{msg_type}</msgType>\n  <scope>Public</scope>{refs}",
    )
    return text.encode()


async def test_cap_alert_update_cancel(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix)
    platform = identity_header(
        roles=["upstream_platform"], scopes=["upstream_warnings:write"], region_prefix="11"
    )
    xml = {"Content-Type": "application/xml"}
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            "/v1/warnings", content=message(FIRST, "Alert"), headers={**platform, **xml}
        )
        assert r.status_code == 202, r.text
        assert r.json() == {
            "identifier": FIRST,
            "msg_type": "Alert",
            "status": "Actual",
            "level": "red",
            "region_codes": ["110101000000"],
            "duplicate": False,
            "references_applied": [],
            "references_unknown": [],
        }
        again = await c.post(
            "/v1/warnings", content=message(FIRST, "Alert"), headers={**platform, **xml}
        )
        assert again.json()["duplicate"] is True
        second = FIRST[:-1] + "2"
        r = await c.post(
            "/v1/warnings", content=message(second, "Update", REF), headers={**platform, **xml}
        )
        assert r.json()["references_applied"] == [FIRST]
        third = FIRST[:-1] + "3"
        ref2 = " ".join(
            f"11000041600000,{ident},2026-07-01T09:30:00+08:00" for ident in (second, "NOPE")
        )
        r = await c.post(
            "/v1/warnings", content=message(third, "Cancel", ref2), headers={**platform, **xml}
        )
        assert (r.json()["references_applied"], r.json()["references_unknown"]) == (
            [second],
            ["NOPE"],
        )

        viewer = identity_header(
            roles=["viewer"], scopes=["warnings:read"], region_prefix="110101001"
        )
        listed = (await c.get("/v1/warnings", headers=viewer)).json()
        assert [
            (w["identifier"], w["state"]) for w in sorted(listed, key=lambda w: w["identifier"])
        ] == [
            (FIRST, "updated"),
            (second, "cancelled"),
            (third, "active"),
        ]
        elsewhere = identity_header(
            roles=["viewer"], scopes=["warnings:read"], region_prefix="110102"
        )
        assert (await c.get("/v1/warnings", headers=elsewhere)).json() == []

        # refused: not CAP, hostile XML, too big, another region, no scope
        bad = await c.post("/v1/warnings", content=b"<alert/>", headers={**platform, **xml})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        # an <alert> in no namespace is read as the national format, which names what is missing
        assert "<identifier> is missing" in bad.json()["detail"]
        xxe = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
        assert (
            await c.post("/v1/warnings", content=xxe, headers={**platform, **xml})
        ).status_code == 422
        big = b"<alert>" + b" " * (1 << 20) + b"</alert>"
        assert (
            await c.post("/v1/warnings", content=big, headers={**platform, **xml})
        ).status_code == 413
        narrow = identity_header(
            roles=["upstream_platform"], scopes=["upstream_warnings:write"], region_prefix="120"
        )
        r = await c.post("/v1/warnings", content=message("X_1", "Alert"), headers={**narrow, **xml})
        assert r.status_code == 403
        reader = identity_header(roles=["viewer"], scopes=["warnings:read"])
        r = await c.post("/v1/warnings", content=message("X_2", "Alert"), headers={**reader, **xml})
        assert r.status_code == 403

    published = await read_all(broker.bootstrap, f"{topic_prefix}warnings.upstream.v1")
    by_id = {p["identifier"]: p for p in published}
    assert set(by_id) == {FIRST, second, third}
    assert len(published) == 4  # the repeat went out again, under the same event id
    assert len({p["event_id"] for p in published}) == 3
    assert by_id[third]["msg_type"] == "Cancel"
    assert by_id[third]["references"][0].split(",")[1] == second
    assert by_id[FIRST]["level"] == "red"


async def test_a_national_platform_update_is_stored_and_listed_with_its_places(
    database, broker, topic_prefix
):
    """The national release system's GB/T 35965.1 message (no namespace, comma-separated
    geocode): stored, listed with its level and its region in words; a malformed one is a 422
    naming the field."""
    from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
    from services.ingest.app import MIGRATIONS
    from shared.db import create_pool, migrate

    national = (Path(__file__).parent.parent / "data" / "national_gale_update.xml").read_bytes()
    settings = ingest_settings(database, broker, topic_prefix)
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", MIGRATIONS)
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["410000"])  # 河南省 itself
    finally:
        await pool.close()
    platform = identity_header(
        roles=["upstream_platform"], scopes=["upstream_warnings:write"], region_prefix="41"
    )
    xml = {"Content-Type": "application/xml"}
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/warnings", content=national, headers={**platform, **xml})
        assert r.status_code == 202, r.text
        receipt = r.json()
        assert (receipt["msg_type"], receipt["level"]) == ("Update", "blue")
        assert receipt["region_codes"] == ["410000000000"]
        assert receipt["references_unknown"] == ["41000041600000_20200204121842"]

        viewer = identity_header(roles=["viewer"], scopes=["warnings:read"], region_prefix="41")
        [listed] = (await c.get("/v1/warnings", headers=viewer)).json()
        assert listed["identifier"] == "41000041600000_20200205105119"
        assert listed["level"] == "blue"
        assert listed["region_names"] == ["河南省"]

        bad = national.replace(b"<senderCode>41000041600000", b"<senderCode>4100")
        r = await c.post("/v1/warnings", content=bad, headers={**platform, **xml})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "<senderCode>" in r.json()["detail"]
