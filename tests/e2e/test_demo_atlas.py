"""The demo county's 一张图 through the gateway, as `make run` loads and shows it: each registry
imported from CSV (once: a second start changes nothing), and a warning's surroundings in the
line the terminal prints."""

from __future__ import annotations

import httpx

from shared.devstack.demo_atlas import CHAHUA, DEMO_ATLAS, MINJIANG, describe, setup_atlas
from tests.e2e.test_auth import token


async def test_the_demo_atlas_loads_once_and_describes_a_warnings_area(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        first = await setup_atlas(c, admin)
        assert first == {kind: len(rows) for kind, rows in DEMO_ATLAS.items()}
        again = await setup_atlas(c, admin)
        assert set(again.values()) == {0}
        r = await c.post(
            "/api/v1/ingest/atlas/surroundings",
            json={"regions": [MINJIANG, CHAHUA], "hazard": "flood"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        found = r.json()
        warning = {"id": "W1", "level": "red", "hazard": "flood"}
        line = describe(warning, found)
        assert line.startswith("[demo] around red warning W1 (flood): 3 protection targets")
        assert "(1122 people)" in line  # 860 + 190 + 72
        assert "1 geohazard sites (47 people)" in line
        assert "2 shelters serving (1900 places, shortfall 0)" in line
        assert "nearest team 五通桥区消防救援大队（示例）" in line
        assert "救生衣 800件" in line
        assert line.endswith("plan 五通桥区防汛抗旱应急预案（示例）")
