"""ingest's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.ingest.api import ReadingsIngress, router
from services.ingest.consumer import IngestHandler
from services.ingest.settings import IngestSettings
from services.ingest.stations import StationCache
from services.ingest.store import ReadingStore
from shared.clock import Clock, SystemClock
from shared.contracts import Topics
from shared.http import new_app, ops_router
from shared.kafka import ConsumerRunner, RunnerConfig, make_consumer
from shared.logging import configure_logging
from shared.runtime import start_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IngestSettings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    topics = Topics(settings.topic_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("ingest", settings.log_level)
        rt = await start_runtime(
            settings,
            schema="ingest",
            migrations=MIGRATIONS,
            storage=settings.storage,
            topics=[
                topics.obs_sensor,
                topics.obs_weather,
                topics.obs_hydro,
                topics.readings,
                topics.readings_dlq,
            ],
        )
        stations = StationCache(rt.pool, settings.station_cache_ttl_s)
        app.state.runtime = rt
        app.state.stations = stations
        app.state.ingress = ReadingsIngress(
            producer=rt.producer,
            stations=stations,
            topics=topics,
            clock=clock,
            max_items=settings.max_batch_items,
        )
        app.state.checks.update(await rt.checks())
        if settings.run_consumer:
            handler = IngestHandler(
                store=ReadingStore(rt.pool, storage=rt.storage),
                stations=StationCache(rt.pool, settings.station_cache_ttl_s),
                producer=rt.producer,
                topics=topics,
                clock=clock,
                future_tolerance_s=settings.future_tolerance_s,
            )
            consumed = [topics.obs_sensor, topics.obs_weather, topics.obs_hydro]
            runner = ConsumerRunner(
                lambda: make_consumer(
                    settings.kafka_bootstrap, consumed, group_id=settings.consumer_group
                ),
                handler,
                rt.producer,
                RunnerConfig(
                    name="ingest", topics=consumed, dlq_topic=lambda _t: topics.readings_dlq
                ),
                clock,
                service="ingest",
            )
            app.state.runner = runner
            rt.run_consumer(runner, "ingest-consumer")
        try:
            yield
        finally:
            await rt.close()

    app = new_app("ingest", title="Qianshao ingest", lifespan=lifespan)
    app.state.internal_secret = settings.internal_secret
    app.state.clock = clock
    app.state.settings = settings
    app.state.checks = {}
    app.include_router(ops_router(app.state.checks))
    app.include_router(router(settings.max_body_bytes))
    return app
