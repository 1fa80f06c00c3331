"""risk's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.risk.adapters.stations import StationPlans
from services.risk.api.routes import router
from services.risk.settings import RiskSettings
from services.risk.workers.consumer import RiskHandler
from services.risk.workers.nodata import NoDataSweep
from services.risk.workers.standing import StandingAnnouncer
from shared.clock import Clock, SystemClock
from shared.contracts import Topics
from shared.http import new_app
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.places import Places
from shared.runtime import start_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: RiskSettings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    topics = Topics(settings.topic_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("risk", settings.log_level)
        rt = await start_runtime(
            settings,
            schema="risk",
            migrations=MIGRATIONS,
            topics=[
                topics.readings,
                topics.warnings_upstream,
                f"{topics.warnings_upstream}.dlq",
                topics.risk_events,
                f"{topics.readings}.dlq",
            ],
        )
        app.state.runtime = rt
        app.state.checks.update(await rt.checks())
        relay = OutboxRelay(rt.pool, "risk", rt.producer, poll_s=settings.outbox_poll_s)
        rt.run_task(relay.run, "risk-outbox", relay.stop)
        plans = StationPlans(
            rt.pool, ttl_s=settings.station_cache_ttl_s, tolerance_s=settings.late_tolerance_s
        )
        app.state.plans = plans
        app.state.places = Places(rt.pool)
        if settings.nodata_sweep_s > 0:
            sweep = NoDataSweep(
                pool=rt.pool,
                relay=relay,
                topics=topics,
                clock=clock,
                factor=settings.nodata_factor,
                every_s=settings.nodata_sweep_s,
            )
            rt.run_task(sweep.run, "risk-nodata", sweep.stop)
        if settings.standing_every_s > 0:
            standing = StandingAnnouncer(
                pool=rt.pool,
                relay=relay,
                topics=topics,
                clock=clock,
                every_s=settings.standing_every_s,
            )
            rt.run_task(standing.run, "risk-standing", standing.stop)
        handler = RiskHandler(
            pool=rt.pool,
            plans=plans,
            relay=relay,
            topics=topics,
            clock=clock,
        )
        app.state.handler = handler
        if settings.run_consumer:
            app.state.runner = rt.consume(
                service="risk",
                settings=settings,
                group_id=settings.consumer_group,
                topics=[topics.readings, topics.warnings_upstream],
                handler=handler,
                clock=clock,
            )
        try:
            yield
        finally:
            await rt.close()

    app = new_app(
        "risk",
        title="Qianshao risk",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )
    app.include_router(router())
    return app
