"""The whole stack in one event loop: the four services and the fake providers on real ports, on
the session's real PostgreSQL and broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.alerting.app import create_app as alerting_app
from services.alerting.settings import AlertingSettings
from services.gateway.app import create_app as gateway_app
from services.gateway.auth import create_api_client, create_operator
from services.gateway.settings import GatewaySettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.risk.app import create_app as risk_app
from services.risk.settings import RiskSettings
from shared.devstack.fakeproviders import Inbox
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.procs import free_port
from tests.helpers import serve


@dataclass
class Stack:
    gateway: str
    fake: str
    inbox: Inbox
    api_key: str
    admin_password: str


@pytest.fixture
async def stack(database: str, broker, topic_prefix: str) -> AsyncIterator[Stack]:
    ports = {name: free_port() for name in ("ingest", "risk", "alerting", "gateway", "fake")}
    common = {
        "database_url": database,
        "kafka_bootstrap": broker.bootstrap,
        "topic_prefix": topic_prefix,
    }
    inbox = Inbox()
    async with contextlib.AsyncExitStack() as es:
        fake = await es.enter_async_context(serve(fake_app(inbox), ports["fake"]))
        await es.enter_async_context(
            serve(
                ingest_app(
                    IngestSettings(
                        **common,
                        port=ports["ingest"],
                        consumer_group=f"{topic_prefix}ingest",
                        storage="native",
                    )
                ),
                ports["ingest"],
            )
        )
        await es.enter_async_context(
            serve(
                risk_app(
                    RiskSettings(**common, port=ports["risk"], consumer_group=f"{topic_prefix}risk")
                ),
                ports["risk"],
            )
        )
        await es.enter_async_context(
            serve(
                alerting_app(
                    AlertingSettings(
                        **common,
                        port=ports["alerting"],
                        consumer_group=f"{topic_prefix}alerting",
                        delivery_poll_s=0.1,
                    )
                ),
                ports["alerting"],
            )
        )
        gw = gateway_app(
            GatewaySettings(
                database_url=database,
                port=ports["gateway"],
                ingest_url=f"http://127.0.0.1:{ports['ingest']}",
                risk_url=f"http://127.0.0.1:{ports['risk']}",
                alerting_url=f"http://127.0.0.1:{ports['alerting']}",
            )
        )
        gateway = await es.enter_async_context(serve(gw, ports["gateway"]))
        key = await create_api_client(
            gw.state.pool,
            client_id="city",
            name="City platform",
            sources=["city-platform"],
            region_prefix="110101",
        )
        await create_operator(
            gw.state.pool, username="admin", password="admin-pass-123", roles=["admin"]
        )
        yield Stack(gateway, fake, inbox, key, "admin-pass-123")
