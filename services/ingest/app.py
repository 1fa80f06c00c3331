"""ingest's application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.ingest.adapters import atlas as atlas_repo
from services.ingest.adapters.coalmine import CoalMineWatcher
from services.ingest.adapters.mqtt import Broker, MqttSubscriber, Subscription
from services.ingest.adapters.recent import RecentReadings
from services.ingest.adapters.sl651 import Sl651Receiver
from services.ingest.adapters.stations import StationCache
from services.ingest.adapters.store import ReadingStore
from services.ingest.adapters.warnings import WarningsIngress
from services.ingest.api import atlas, divisions
from services.ingest.api.routes import ReadingsIngress, router
from services.ingest.domain.coalmine import FieldMap, shipped_maps
from services.ingest.domain.kernel import default as default_kernel
from services.ingest.domain.mqtt import MetricMap, PayloadMap
from services.ingest.domain.validation import HISTORY
from services.ingest.settings import IngestSettings
from services.ingest.workers.consumer import IngestHandler
from services.ingest.workers.health import HealthSweep
from services.ingest.workers.housekeeping import Housekeeping
from shared.clock import Clock, SystemClock
from shared.contracts import Topics
from shared.http import new_app
from shared.logging import configure_logging
from shared.places import Places
from shared.runtime import start_runtime

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
ATLAS_MIGRATIONS = MIGRATIONS / "atlas"


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
                topics.warnings_upstream,
                topics.station_health,
            ],
        )
        # the 一张图's registries: a schema of their own on PostGIS, migrated beside ingest's
        app.state.atlas_unavailable = await atlas_repo.prepare(rt.pool, ATLAS_MIGRATIONS)
        stations = StationCache(rt.pool, settings.station_cache_ttl_s)
        app.state.runtime = rt
        app.state.places = Places(rt.pool)
        app.state.stations = stations
        app.state.ingress = ReadingsIngress(
            producer=rt.producer,
            stations=stations,
            topics=topics,
            clock=clock,
            max_items=settings.max_batch_items,
            pool=rt.pool,
        )
        app.state.warnings = WarningsIngress(
            pool=rt.pool,
            producer=rt.producer,
            topics=topics,
            clock=clock,
            trusted_ca=(
                str(settings.cap_trusted_ca_file) if settings.cap_trusted_ca_file else None
            ),
        )
        app.state.checks.update(await rt.checks())
        housekeeping = Housekeeping(
            rt.pool,
            storage=rt.storage,
            clock=clock,
            raw_retention_days=settings.retention_days,
            rollup_retention_days=settings.rollup_retention_days,
            refresh_every_s=settings.rollup_refresh_s,
            current_hour_every_s=settings.rollup_current_hour_s,
        )
        await housekeeping.configure()
        rt.run_task(housekeeping.run, "ingest-rollups", housekeeping.stop)
        health = HealthSweep(
            rt.pool,
            rt.producer,
            topics,
            clock,
            factor=settings.offline_factor,
            every_s=settings.health_sweep_s,
        )
        app.state.health_factor = settings.offline_factor
        if settings.sl651_port is not None:
            receiver = Sl651Receiver(
                producer=rt.producer,
                stations=stations,
                pool=rt.pool,
                topics=topics,
                clock=clock,
                source=settings.sl651_source,
            )
            app.state.sl651_ports = await receiver.start(
                settings.sl651_host, settings.sl651_port, udp=settings.sl651_udp
            )
            rt.run_task(receiver.serve, "ingest-sl651", receiver.stop)
        if settings.mqtt_host is not None:
            subscriber = MqttSubscriber(
                broker=mqtt_broker(settings),
                subscriptions=mqtt_subscriptions(settings),
                producer=rt.producer,
                stations=stations,
                pool=rt.pool,
                topics=topics,
                clock=clock,
            )
            app.state.mqtt = subscriber
            rt.run_task(subscriber.run, "ingest-mqtt", subscriber.stop)
        if settings.coalmine_dir is not None:
            watcher = CoalMineWatcher(
                directory=settings.coalmine_dir,
                maps=coalmine_maps(settings),
                mines=settings.coalmine_mines,
                region_code=settings.coalmine_region_code,
                producer=rt.producer,
                stations=stations,
                pool=rt.pool,
                topics=topics,
                clock=clock,
                source=settings.coalmine_source,
                scan_s=settings.coalmine_scan_s,
                settle_s=settings.coalmine_settle_s,
                abandon_s=settings.coalmine_abandon_s,
            )
            app.state.coalmine = watcher
            rt.run_task(watcher.run, "ingest-coalmine", watcher.stop)
        if settings.health_sweep_s > 0:
            rt.run_task(health.run, "ingest-health", health.stop)
        if settings.run_consumer:
            kernel = default_kernel(use_native=settings.native)
            log.info("ingest kernel: %s", kernel.name)
            handler = IngestHandler(
                store=ReadingStore(rt.pool, storage=rt.storage, kernel=kernel),
                stations=StationCache(rt.pool, settings.station_cache_ttl_s),
                producer=rt.producer,
                topics=topics,
                clock=clock,
                future_tolerance_s=settings.future_tolerance_s,
                recent=RecentReadings(rt.pool, keep=HISTORY),
                pool=rt.pool,
                health=rt.pool,
                kernel=kernel,
            )
            app.state.runner = rt.consume(
                service="ingest",
                settings=settings,
                group_id=settings.consumer_group,
                topics=[topics.obs_sensor, topics.obs_weather, topics.obs_hydro],
                handler=handler,
                clock=clock,
                dlq_topic=lambda _topic: topics.readings_dlq,
            )
        try:
            yield
        finally:
            await rt.close()

    app = new_app(
        "ingest",
        title="Qianshao ingest",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )
    app.include_router(router(settings.max_body_bytes, settings.max_batch_items))
    app.include_router(divisions.router())
    app.include_router(atlas.router())
    return app


def mqtt_broker(settings: IngestSettings) -> Broker:
    assert settings.mqtt_host is not None

    def path(p: Path | None) -> str | None:
        return str(p) if p is not None else None

    return Broker(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=settings.mqtt_client_id,
        username=settings.mqtt_username,
        password=(settings.mqtt_password.get_secret_value() if settings.mqtt_password else None),
        tls=settings.mqtt_tls,
        ca_file=path(settings.mqtt_ca_file),
        cert_file=path(settings.mqtt_cert_file),
        key_file=path(settings.mqtt_key_file),
        keepalive_s=settings.mqtt_keepalive_s,
        reconnect_min_s=settings.mqtt_reconnect_min_s,
        reconnect_max_s=settings.mqtt_reconnect_max_s,
    )


def mqtt_subscriptions(settings: IngestSettings) -> list[Subscription]:
    return [
        Subscription(
            topic=s.topic,
            mapping=PayloadMap(
                form=s.form,
                source=s.source,
                metrics={k: MetricMap(m.metric, m.unit) for k, m in s.metrics.items()},
                devices=dict(s.devices),
            ),
        )
        for s in settings.mqtt_subscriptions
    ]


def coalmine_maps(settings: IngestSettings) -> list[FieldMap]:
    """The field maps named in the settings, the shipped ones and those of coalmine_map_dir."""
    maps = dict(shipped_maps())
    if settings.coalmine_map_dir is not None:
        maps.update(shipped_maps(settings.coalmine_map_dir))
    missing = [m for m in settings.coalmine_maps if m not in maps]
    if missing:
        raise ValueError(f"coal-mine field maps {missing} do not exist; there are {sorted(maps)}")
    return [maps[m] for m in settings.coalmine_maps]
