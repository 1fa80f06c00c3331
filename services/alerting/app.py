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
from shared.http import new_app, ops_router
from shared.kafka import ConsumerRunner, RunnerConfig, make_consumer
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
            runner = ConsumerRunner(
                lambda: make_consumer(
                    settings.kafka_bootstrap, [topics.risk_events], group_id=settings.consumer_group
                ),
                handler,
                rt.producer,
                RunnerConfig(name="alerting", topics=[topics.risk_events]),
                clock,
                service="alerting",
            )
            app.state.runner = runner
            rt.run_consumer(runner, "alerting-consumer")
        try:
            yield
        finally:
            await rt.close()
            await http.aclose()

    app = new_app("alerting", title="Qianshao alerting", lifespan=lifespan)
    app.state.internal_secret = settings.internal_secret
    app.state.clock = clock
    app.state.settings = settings
    app.state.checks = {}
    app.include_router(ops_router(app.state.checks))
    app.include_router(router())
    return app
