"""The duty console in Debian's Chromium, driven by Playwright, against the whole stack: an
officer signs in; a red reading pushed through the API turns the map and the warnings list red
without a reload; the officer asks for the public release and a second officer approves it; the
village cadre confirms 叫应 on the link page on a phone-sized screen and the board updates; a
refused action shows the service's message. Every request the pages make is recorded, and one
to any host but the gateway fails the test; every page passes axe's WCAG 2.1 AA checks.

``QIANSHAO_CONSOLE_SHOTS=<dir>`` keeps the screenshots there (the README's come from it)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.gateway.adapters.auth import create_operator
from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
from shared.db import create_pool
from tests.e2e.test_warning_flow import login
from tests.helpers import eventually

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parents[2] / "services/gateway/console/node_modules/axe-core/axe.min.js"
CADRE, OPENID = "13900139301", "o-cadre-console"
VILLAGE = "110101001001"
STATION = {
    "id": "WL-DHM-01",
    "name": "东华门水位站",
    "kind": "water_level",
    "region_code": VILLAGE,
    "lat": 39.915,
    "lon": 116.403,
    "attributes": {
        "thresholds": {"water_level": {"blue": 3.0, "yellow": 3.5, "orange": 4.0, "red": 4.5}}
    },
}
# two quiet neighbours, so the map has townships that stay uncoloured
NEIGHBOURS = [
    {
        **STATION,
        "id": "WL-JS-01",
        "name": "景山水位站",
        "region_code": "110101002001",
        "lat": 39.925,
        "lon": 116.396,
    },
    {
        **STATION,
        "id": "WL-JDK-01",
        "name": "交道口水位站",
        "region_code": "110101003001",
        "lat": 39.938,
        "lon": 116.409,
    },
]
# the 一张图 around it: a shelter and a school
ATLAS = [
    (
        "shelters",
        "SH-DHM-01",
        {
            "name": "东华门广场避难场所",
            "region_code": VILLAGE,
            "lon": 116.399,
            "lat": 39.913,
            "capacity_persons": 800,
            "is_open": "是",
        },
    ),
    (
        "targets",
        "TG-DHM-01",
        {
            "name": "东华门小学",
            "region_code": VILLAGE,
            "lon": 116.407,
            "lat": 39.917,
            "target_type": "school",
            "population": 620,
        },
    ),
]
# Chromium as the machine's closed network needs it: no background calls home
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


def reading(station_id: str, value: float) -> dict[str, Any]:
    ts = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {
        "station_id": station_id,
        "metric": "water_level",
        "unit": "m",
        "ts": ts,
        "value": value,
    }


class Recorder:
    """Every request of every page of the contexts it watches."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def watch(self, context: BrowserContext) -> BrowserContext:
        context.on("request", lambda r: self.urls.append(r.url))
        return context

    def foreign(self, gateway: str) -> list[str]:
        mine = urlsplit(gateway).netloc
        return [
            u
            for u in self.urls
            if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != mine
        ]


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    # evaluated, not added as a script tag: the console's content policy refuses inline scripts
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(await asyncio.to_thread(AXE.read_text, "utf-8"))
    result = await page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
               values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"""
    )
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
    ]


async def sign_in(page: Page, base: str, user: str, password: str) -> None:
    await page.goto(f"{base}/console/")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.get_by_label("用户名").fill(user)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await expect(page.get_by_role("navigation", name="主导航")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="实时")).to_have_text("● 实时")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("QIANSHAO_CONSOLE_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_the_duty_console_in_chromium(stack, database, browser, shots):
    pool = await create_pool(database)
    try:
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["110101"])
    finally:
        await pool.close()
    for name, roles in (("duty", ["duty_officer"]), ("approver", ["approver"])):
        await create_operator(
            stack.gateway_pool,
            username=name,
            password=f"{name}-pass-123",
            roles=roles,
            region_prefix="110101",
        )
    base = stack.gateway
    recorder = Recorder()
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        admin = await login(c, "admin", stack.admin_password)
        for station in (STATION, *NEIGHBOURS):
            r = await c.post("/api/v1/ingest/stations", json=station, headers=admin)
            assert r.status_code == 201, r.text
        for kind, key, record in ATLAS:
            r = await c.put(
                f"/api/v1/ingest/atlas/registries/{kind}/records/{key}", json=record, headers=admin
            )
            assert r.status_code == 201, r.text
        r = await c.post(
            "/api/v1/ingest/readings",
            json={
                "source": "city-platform",
                "readings": [reading(s["id"], 1.2) for s in NEIGHBOURS],
            },
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202, r.text
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "东华门社区书记",
                "role": "village_cadre",
                "region_code": VILLAGE,
                "phone": CADRE,
                "wechat_openid": OPENID,
                "subscriptions": [{"channels": ["sms", "wechat_mp"]}],
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        cadre_id = r.json()["id"]
        csv = "\n".join(f"{VILLAGE},1580003{i:04d}" for i in range(5))
        r = await c.post("/api/v1/alerts/residents/import", content=csv, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == 5

        duty = recorder.watch(await browser.new_context(viewport={"width": 1366, "height": 768}))
        map_page = await duty.new_page()
        await sign_in(map_page, base, "duty", "duty-pass-123")
        await expect(map_page.locator(f'tr[data-station="{STATION["id"]}"]')).to_contain_text(
            "无预警"
        )
        list_page = await duty.new_page()
        await sign_in(list_page, base, "duty", "duty-pass-123")
        await list_page.get_by_role("link", name="预警", exact=True).click()
        await expect(list_page.get_by_role("heading", name="预警", exact=True)).to_be_visible()
        await expect(list_page.locator("table.warnings")).to_contain_text("没有预警")

        # a red reading through the API: both pages turn without a reload
        r = await c.post(
            "/api/v1/ingest/readings",
            json={"source": "city-platform", "readings": [reading(STATION["id"], 4.9)]},
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202, r.text
        row = map_page.locator(f'tr[data-station="{STATION["id"]}"]')
        await expect(row.locator(".level-red")).to_be_visible(timeout=30_000)
        await expect(map_page.locator("path.station-marker.level-red")).to_have_count(1)
        await expect(map_page.locator(".townships")).to_contain_text("东华门街道")
        await expect(map_page.locator(".townships li")).to_have_count(3)
        await expect(map_page.locator("path.station-marker")).to_have_count(3)
        await expect(map_page.locator("path.atlas-shelters")).to_have_count(1)
        await expect(map_page.locator("path.atlas-targets")).to_have_count(1)
        await expect(map_page.locator(".place-label").first).to_contain_text("东华门街道")
        warning_row = list_page.locator("table.warnings tbody tr[data-warning]")
        await expect(warning_row).to_have_count(1, timeout=30_000)
        await expect(warning_row.locator(".level-red")).to_be_visible()
        await expect(warning_row).to_contain_text("东城区东华门街道")
        await map_page.screenshot(path=shots / "map.png")
        await list_page.screenshot(path=shots / "warnings.png")
        assert await map_page.evaluate("performance.getEntriesByType('navigation').length") == 1

        # the detail: versions, 叫应, the ledger; then the public release is asked for
        await warning_row.get_by_role("link").click()
        await expect(list_page.get_by_role("heading", level=2, name="版本")).to_be_visible()
        await expect(list_page.locator("section", has_text="叫应进度")).to_contain_text(
            "东华门社区书记"
        )
        await expect(list_page.locator(".channels")).to_contain_text("短信", timeout=30_000)
        await list_page.get_by_label("向公众发布（说明）").fill("会商决定向公众发布")
        await list_page.get_by_role("button", name="申请向公众发布").click()
        await expect(list_page.get_by_role("status").filter(has_text="等待")).to_contain_text(
            "等待另一位审批人批准"
        )
        await list_page.screenshot(path=shots / "warning-detail.png", full_page=True)
        violations = {"detail": await axe_violations(list_page)}

        # a refused action: a warning for an area outside the officer's region
        await list_page.get_by_role("link", name="预警", exact=True).click()
        await list_page.get_by_label("区域代码").fill("120101001001")
        await list_page.get_by_role("button", name="提交").click()
        alert = list_page.get_by_role("alert")
        await expect(alert).to_contain_text("操作被拒绝")
        await expect(alert).to_contain_text("area 120101001001 is outside your region 110101")
        violations["warnings"] = await axe_violations(list_page)

        # the requester sees it waiting for someone else; the second officer approves it
        await list_page.get_by_role("link", name="审批").click()
        await expect(list_page.locator("tr[data-publication]")).to_contain_text(
            "本人申请，需另一位审批人批准"
        )
        approver = recorder.watch(
            await browser.new_context(viewport={"width": 1366, "height": 768})
        )
        approvals = await approver.new_page()
        await sign_in(approvals, base, "approver", "approver-pass-123")
        await approvals.get_by_role("link", name="审批").click()
        pending = approvals.locator("tr[data-publication]")
        await expect(pending).to_contain_text("东城区东华门街道洪水红色预警")
        await approvals.screenshot(path=shots / "approvals.png")
        violations["approvals"] = await axe_violations(approvals)
        await pending.get_by_role("button", name="批准").click()
        await expect(approvals.get_by_role("status").filter(has_text="已批准")).to_be_visible()
        await expect(pending).to_have_count(0)
        # the requester's queue empties on its own
        await expect(list_page.locator("tr[data-publication]")).to_have_count(0)

        async def residents_reached() -> Any:
            n = sum(1 for num in stack.sms.per_number() if num.startswith("1580003"))
            return n == 5 or None

        await eventually(residents_reached, what="the residents' SMS after approval")

        # 叫应: the board lists the cadre; the cadre confirms on a phone; the board updates
        await map_page.get_by_role("link", name="叫应").click()
        open_row = map_page.locator(f'tr[data-person="{cadre_id}"]')
        await expect(open_row).to_be_visible()
        await expect(open_row).to_contain_text("后")  # the T1 / T2 timers count down
        await map_page.screenshot(path=shots / "board.png")
        violations["board"] = await axe_violations(map_page)

        async def link() -> Any:
            for m in stack.wechat.template_messages:
                if m["touser"] == OPENID and "/confirm/" in m.get("url", ""):
                    return m["url"]
            return None

        url = await eventually(link, what="the 叫应 link in the cadre's WeChat message")
        assert urlsplit(url).netloc == urlsplit(base).netloc
        phone = recorder.watch(
            await browser.new_context(
                viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
            )
        )
        confirm = await phone.new_page()
        await confirm.goto(url)
        await expect(confirm.get_by_role("heading", name="确认收到预警")).to_be_visible()
        violations["confirm-link"] = await axe_violations(confirm)
        await confirm.screenshot(path=shots / "confirm-phone.png")
        await confirm.get_by_role("button", name="确认收到").tap()
        await expect(confirm.get_by_role("heading", name="已确认")).to_be_visible()
        await expect(open_row).to_have_count(0, timeout=15_000)
        await expect(map_page.locator(".confirmed-count")).to_have_text("1")

        violations["map"] = []
        await map_page.get_by_role("link", name="一张图").click()
        await expect(map_page.locator("path.station-marker.level-red")).to_have_count(1)
        violations["map"] = await axe_violations(map_page)
        for context in (duty, approver, phone):
            await context.close()

    assert {k: v for k, v in violations.items() if v} == {}
    assert recorder.urls, "no request was recorded"
    assert recorder.foreign(base) == []
