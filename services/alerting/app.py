"""alerting's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.alerting.api import router
from services.alerting.channels import Channel
from services.alerting.channels.http import WebhookChannel, WeComRobotChannel
from services.alerting.channels.kafka import KafkaChannel
from services.alerting.consumer import AlertingHandler
from services.alerting.delivery import DeliveryWorker, RetryPolicy
from services.alerting.settings import AlertingSettings
from shared.clock import Clock, SystemClock
from shared.contracts import Topics
from shared.http import new_app
from shared.logging import configure_logging
from shared.runtime import start_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AlertingSettings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    topics = Topics(settings.topic_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("alerting", settings.log_level)
        rt = await start_runtime(
            settings,
            schema="alerting",
            migrations=MIGRATIONS,
            topics=[topics.risk_events, topics.alerts, f"{topics.risk_events}.dlq"],
        )
        app.state.runtime = rt
        app.state.checks.update(await rt.checks())
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.delivery_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.delivery_concurrency * 2,
                max_keepalive_connections=settings.delivery_concurrency,
            ),
        )
        channels: dict[str, Channel] = {
            "webhook": WebhookChannel(http),
            "wecom_robot": WeComRobotChannel(http),
            "kafka": KafkaChannel(rt.producer),
        }
        worker = DeliveryWorker(
            pool=rt.pool,
            channels=channels,
            clock=clock,
            policy=RetryPolicy(settings.max_attempts, settings.retry_base_s, settings.retry_cap_s),
            batch=settings.delivery_batch,
            concurrency=settings.delivery_concurrency,
            poll_s=settings.delivery_poll_s,
            lease_s=settings.lease_s,
        )
        app.state.delivery = worker
        if settings.run_delivery:
            rt.run_task(worker.run, "alerting-delivery", worker.stop)
        if settings.run_consumer:
            handler = AlertingHandler(
                pool=rt.pool,
                settings=settings,
                topics=topics,
                clock=clock,
                on_new_deliveries=worker.wake,
            )
            app.state.runner = rt.consume(
                service="alerting",
                settings=settings,
                group_id=settings.consumer_group,
                topics=[topics.risk_events],
                handler=handler,
                clock=clock,
            )
        try:
            yield
        finally:
            await rt.close()
            await http.aclose()

    app = new_app(
        "alerting",
        title="Qianshao alerting",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )
    app.include_router(router())
    return app
