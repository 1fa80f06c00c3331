"""The four services and the fake providers in one event loop, on real ports, on a given
PostgreSQL and broker. Used by the end-to-end tests and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from services.alerting.app import create_app as alerting_app
from services.alerting.settings import AlertingSettings
from services.gateway.adapters.auth import create_api_client, create_operator
from services.gateway.app import create_app as gateway_app
from services.gateway.settings import GatewaySettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.risk.app import create_app as risk_app
from services.risk.settings import RiskSettings
from shared.devstack.fakeproviders import Inbox
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
    SmsState,
)
from shared.devstack.fakewechat import WECHAT_APP_ID, WECHAT_APP_SECRET, WeChatState
from shared.devstack.procs import free_port
from shared.http import KEEP_ALIVE_S

ADMIN_PASSWORD = "admin-pass-123"  # noqa: S105 - a throw-away stack's operator


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (lifespan included); yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


CALLBACK_TOKEN = "stack-callback-token"  # noqa: S105 - a throw-away stack's callback path


@dataclass
class Stack:
    gateway: str
    fake: str
    inbox: Inbox
    api_key: str
    admin_password: str
    services: dict[str, str]
    sms: SmsState = field(default_factory=SmsState)
    gateway_pool: Any = None
    wechat: WeChatState = field(default_factory=WeChatState)


@contextlib.asynccontextmanager
async def running_stack(
    database: str,
    bootstrap: str,
    topic_prefix: str,
    *,
    rate_limits: dict[str, int] | None = None,
    ingest_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """The four services and the fake providers in this process; ``rate_limits`` replaces the
    gateway's (a test that sends thousands of requests a minute); ``ingest_overrides`` sets
    ingest's settings (its field-protocol receivers)."""
    ports = {name: free_port() for name in ("ingest", "risk", "alerting", "gateway", "fake")}
    common: dict[str, Any] = {
        "database_url": database,
        "kafka_bootstrap": bootstrap,
        "topic_prefix": topic_prefix,
    }
    inbox = Inbox()
    sms = SmsState()
    wechat = WeChatState()
    async with contextlib.AsyncExitStack() as es:
        fake = await es.enter_async_context(serve(fake_app(inbox, sms, wechat), ports["fake"]))
        ingest = IngestSettings(
            **common,
            port=ports["ingest"],
            consumer_group=f"{topic_prefix}ingest",
            storage="native",
            **(ingest_overrides or {}),
        )
        risk = RiskSettings(**common, port=ports["risk"], consumer_group=f"{topic_prefix}risk")
        alerting = AlertingSettings(
            **common,
            port=ports["alerting"],
            consumer_group=f"{topic_prefix}alerting",
            delivery_poll_s=0.1,
            callback_token=CALLBACK_TOKEN,
            confirm_sweep_s=1,
            confirm_base_url=f"http://127.0.0.1:{ports['gateway']}/api/v1/alerts/confirm",
            aliyun_endpoint=f"{fake}/aliyun/",
            aliyun_access_key_id=ALIYUN_KEY_ID,
            aliyun_access_key_secret=ALIYUN_SECRET,
            aliyun_template_code="SMS_STACK",
            tencent_endpoint=f"{fake}/tencent/",
            tencent_secret_id=TENCENT_SECRET_ID,
            tencent_secret_key=TENCENT_SECRET_KEY,
            tencent_sdk_app_id="1400000000",
            tencent_template_id="100000",
            wechat_base_url=fake,
            wechat_app_id=WECHAT_APP_ID,
            wechat_app_secret=WECHAT_APP_SECRET,
            wechat_template_id="TPL-STACK",
        )
        await asyncio.gather(
            es.enter_async_context(serve(ingest_app(ingest), ports["ingest"])),
            es.enter_async_context(serve(risk_app(risk), ports["risk"])),
            es.enter_async_context(serve(alerting_app(alerting), ports["alerting"])),
        )
        gw_settings = GatewaySettings(
            database_url=database,
            port=ports["gateway"],
            ingest_url=f"http://127.0.0.1:{ports['ingest']}",
            risk_url=f"http://127.0.0.1:{ports['risk']}",
            alerting_url=f"http://127.0.0.1:{ports['alerting']}",
        )
        if rate_limits is not None:
            gw_settings = gw_settings.model_copy(update={"rate_limits": rate_limits})
        gw = gateway_app(gw_settings)
        gateway = await es.enter_async_context(serve(gw, ports["gateway"]))
        _, key = await create_api_client(
            gw.state.pool,
            client_id="city",
            name="City platform",
            sources=["city-platform"],
            region_prefix="110101",
        )
        await create_operator(
            gw.state.pool, username="admin", password=ADMIN_PASSWORD, roles=["admin"]
        )
        services = {n: f"http://127.0.0.1:{ports[n]}" for n in ("ingest", "risk", "alerting")}
        yield Stack(gateway, fake, inbox, key, ADMIN_PASSWORD, services, sms, gw.state.pool, wechat)
