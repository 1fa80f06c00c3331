"""alerting's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

import aiohttp
import asyncpg
import httpx
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport

from services.alerting.adapters.channels import BatchChannel, Channel
from services.alerting.adapters.channels.cappush import CapPushChannel, NationalPushChannel
from services.alerting.adapters.channels.email import EmailChannel
from services.alerting.adapters.channels.http import WebhookChannel, WeComRobotChannel
from services.alerting.adapters.channels.kafka import KafkaChannel
from services.alerting.adapters.channels.sms import (
    AliyunRpc,
    AliyunSms,
    AliyunVoice,
    FailoverSms,
    TencentSms,
)
from services.alerting.adapters.channels.wechat import WeChatTemplateChannel, WeComAppChannel
from services.alerting.adapters.ledger import lanes_for
from services.alerting.api.board import router as board_router
from services.alerting.api.officer import router as officer_router
from services.alerting.api.people import router as people_router
from services.alerting.api.publications import router as publish_router
from services.alerting.api.reports import router as report_router
from services.alerting.api.silences import router as silences_router
from services.alerting.api.warnings import router
from services.alerting.domain.lifecycle import HAZARD_CN
from services.alerting.pipeline.builder import Pipeline
from services.alerting.pipeline.builder import build as build_pipeline
from services.alerting.pipeline.feeds import FeedWatch
from services.alerting.pipeline.mute import StormLimit
from services.alerting.pipeline.officer import Desk
from services.alerting.settings import AlertingSettings
from services.alerting.workers.approvals import ApprovalSweep
from services.alerting.workers.callconfirm import ConfirmSweep, policy_from
from services.alerting.workers.consumer import AlertingHandler
from services.alerting.workers.delivery import DeliveryWorker, RetryPolicy
from services.alerting.workers.gauges import LedgerBacklog
from services.alerting.workers.gauges import refresh as refresh_gauges
from services.alerting.workers.sweeps import Sweeps
from shared.clock import Clock, SystemClock
from shared.contracts import Topics
from shared.http import new_app
from shared.logging import configure_logging
from shared.periodic import Periodic
from shared.places import Places
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
            topics=[
                topics.risk_events,
                topics.alerts,
                topics.warnings_upstream,
                topics.station_health,
                f"{topics.risk_events}.dlq",
                f"{topics.warnings_upstream}.dlq",
                f"{topics.station_health}.dlq",
            ],
        )
        app.state.runtime = rt
        app.state.places = Places(rt.pool)
        app.state.checks.update(await rt.checks())
        # httpx's API over aiohttp's connection pool: the native httpx pool costs about half
        # of this process's CPU during a broadcast (bench/alerting measures both)
        limits = httpx.Limits(
            max_connections=settings.delivery_concurrency * 2,
            max_keepalive_connections=settings.delivery_concurrency,
        )
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.delivery_timeout_s),
            transport=AiohttpTransport(limits=limits),
        )
        # endpoint posts (webhooks, platform pushes) on aiohttp's client itself
        endpoints = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.delivery_timeout_s),
            connector=aiohttp.TCPConnector(limit=settings.delivery_concurrency * 2),
        )
        channels: dict[str, Channel] = {
            "webhook": WebhookChannel(endpoints),
            "wecom_robot": WeComRobotChannel(http),
            "cap_push": CapPushChannel(
                endpoints, sender=settings.sender_code, sender_name=settings.sender_name
            ),
            "national_push": NationalPushChannel(
                endpoints, sender=settings.sender_code, sender_name=settings.sender_name
            ),
        }
        channels.update(person_channels(settings, http))
        # alerts.v1 takes a round's versions as one batch per partition
        batch_channels: dict[str, BatchChannel] = {"kafka": KafkaChannel(rt.producer)}
        sms = sms_channel(settings, http)
        if sms is not None:
            batch_channels["sms"] = sms
        worker = DeliveryWorker(
            pool=rt.pool,
            channels=channels,
            clock=clock,
            policy=RetryPolicy(
                settings.max_attempts,
                settings.retry_base_s,
                settings.retry_cap_s,
                settings.ambiguous_wait_s,
            ),
            batch=settings.delivery_batch,
            concurrency=settings.delivery_concurrency,
            poll_s=settings.delivery_poll_s,
            lease_s=settings.lease_s,
            batch_channels=batch_channels,
            loops=settings.delivery_loops,
            lanes=lanes_for(settings.delivery_lanes),
            confirm_base_url=settings.confirm_base_url,
            confirm_secret=settings.confirm_secret,
        )
        app.state.delivery = worker
        sweep = ConfirmSweep(
            pool=rt.pool,
            clock=clock,
            policy=policy_from(settings.confirm_voice_after_s, settings.confirm_escalate_after_s),
            on_new_deliveries=worker.wake,
        )
        app.state.confirm_sweep = sweep
        approvals = ApprovalSweep(
            pool=rt.pool,
            clock=clock,
            timeout=timedelta(seconds=settings.approval_timeout_s),
            on_new_deliveries=worker.wake,
        )
        app.state.approval_sweep = approvals
        if settings.run_delivery:
            job = Periodic("confirm-sweep", settings.confirm_sweep_s, sweep.run_once)
            rt.run_task(job.run, "alerting-confirm-sweep", job.stop)
            job2 = Periodic("approval-sweep", settings.confirm_sweep_s, approvals.run_once)
            rt.run_task(job2.run, "alerting-approval-sweep", job2.stop)
        if settings.run_delivery:
            rt.run_task(worker.run, "alerting-delivery", worker.stop)
        handler, sweeps = consumer_and_sweeps(rt.pool, settings, topics, clock, worker.wake)
        app.state.handler, app.state.sweeps = handler, sweeps
        app.state.desk = officer_desk(handler.pipeline, settings)
        if settings.run_delivery:
            for name, every, tick in (
                ("silence-release", settings.confirm_sweep_s, sweeps.release_silenced),
                ("group-dispatch", settings.dispatch_sweep_s, sweeps.dispatch_due),
                ("repeat", settings.confirm_sweep_s, sweeps.remind),
                ("digest", settings.confirm_sweep_s, sweeps.send_digests),
                ("expiry", settings.expiry_sweep_s, sweeps.expire_due),
                ("feeds", settings.feed_sweep_s, sweeps.feeds_due),
                ("gauges", settings.confirm_sweep_s, partial(refresh_gauges, rt.pool, clock)),
                (
                    "ledger-gauges",
                    settings.confirm_sweep_s,
                    partial(LedgerBacklog([*channels, *batch_channels]).refresh, rt.pool, clock),
                ),
            ):
                job = Periodic(name, every, tick)
                rt.run_task(job.run, f"alerting-{name}", job.stop)
        if settings.run_consumer:
            app.state.runner = rt.consume(
                service="alerting",
                settings=settings,
                group_id=settings.consumer_group,
                topics=[
                    topics.risk_events,
                    topics.warnings_upstream,
                    *([topics.station_health] if settings.feed_notices else []),
                ],
                handler=handler,
                clock=clock,
            )
        try:
            yield
        finally:
            await rt.close()
            await http.aclose()
            await endpoints.close()

    app = new_app(
        "alerting",
        title="Qianshao alerting",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )
    app.include_router(router())
    app.include_router(officer_router())
    app.include_router(people_router())
    app.include_router(publish_router())
    app.include_router(silences_router())
    app.include_router(report_router())
    app.include_router(board_router())
    return app


def consumer_and_sweeps(
    pool: asyncpg.Pool,
    settings: AlertingSettings,
    topics: Topics,
    clock: Clock,
    on_new_deliveries: Callable[[], None],
) -> tuple[AlertingHandler, Sweeps]:
    """The consumer and the timers of warnings, over one pipeline."""
    pipeline = build_pipeline(settings, topics, Places(pool))
    feeds = FeedWatch(
        storm=StormLimit(settings.storm_policy()),
        escalate_after=timedelta(seconds=settings.feed_escalate_after_s),
    )
    handler = AlertingHandler(
        pool=pool,
        pipeline=pipeline,
        topics=topics,
        clock=clock,
        on_new_deliveries=on_new_deliveries,
        feeds=feeds if settings.feed_notices else None,
        slice_size=settings.consumer_slice,
    )
    sweeps = Sweeps(
        pool=pool,
        pipeline=pipeline,
        clock=clock,
        group=settings.group_policy(),
        expiry=settings.expiry_policy(),
        storm=settings.storm_policy(),
        on_new_deliveries=on_new_deliveries,
        feeds=feeds,
    )
    return handler, sweeps


def officer_desk(pipeline: Pipeline, settings: AlertingSettings) -> Desk:
    """The duty officers' warnings, over the same pipeline as risk events'."""
    return Desk(
        pipeline,
        sender_code=settings.sender_code,
        approval_levels=settings.officer_approval_levels,
        publication_levels=settings.approval_levels,
        hazards=HAZARD_CN,
        validity=timedelta(seconds=settings.warning_validity_s),
        drill=settings.drill,
    )


def _aliyun(settings: AlertingSettings, http: httpx.AsyncClient, endpoint: str) -> AliyunRpc:
    return AliyunRpc(
        http,
        endpoint=endpoint,
        access_key_id=settings.aliyun_access_key_id,
        access_key_secret=settings.aliyun_access_key_secret,
    )


def sms_channel(settings: AlertingSettings, http: httpx.AsyncClient) -> BatchChannel | None:
    """The configured SMS providers, in order, behind failover; None when none is configured."""
    providers: list[BatchChannel] = []
    for name in settings.sms_providers:
        if name == "aliyun" and settings.aliyun_endpoint:
            providers.append(
                AliyunSms(
                    _aliyun(settings, http, settings.aliyun_endpoint),
                    sign_name=settings.aliyun_sign_name,
                    template_code=settings.aliyun_template_code,
                )
            )
        elif name == "tencent" and settings.tencent_endpoint:
            providers.append(
                TencentSms(
                    http,
                    endpoint=settings.tencent_endpoint,
                    secret_id=settings.tencent_secret_id,
                    secret_key=settings.tencent_secret_key,
                    sdk_app_id=settings.tencent_sdk_app_id,
                    sign_name=settings.tencent_sign_name,
                    template_id=settings.tencent_template_id,
                )
            )
    if not providers:
        return None
    return FailoverSms(providers, cooldown_s=settings.sms_failover_cooldown_s)


def person_channels(settings: AlertingSettings, http: httpx.AsyncClient) -> dict[str, Channel]:
    """The one-at-a-time channels to people that are configured: voice, WeChat, WeCom, e-mail."""
    out: dict[str, Channel] = {}
    if settings.aliyun_voice_endpoint:
        out["voice"] = AliyunVoice(
            _aliyun(settings, http, settings.aliyun_voice_endpoint),
            show_number=settings.aliyun_voice_show_number,
            tts_code=settings.aliyun_voice_tts_code,
        )
    if settings.wechat_base_url:
        out["wechat_mp"] = WeChatTemplateChannel(
            http,
            base_url=settings.wechat_base_url,
            app_id=settings.wechat_app_id,
            app_secret=settings.wechat_app_secret,
            template_id=settings.wechat_template_id,
        )
    if settings.wecom_base_url:
        out["wecom_app"] = WeComAppChannel(
            http,
            base_url=settings.wecom_base_url,
            corp_id=settings.wecom_corp_id,
            corp_secret=settings.wecom_corp_secret,
            agent_id=settings.wecom_agent_id,
        )
    if settings.smtp_host:
        out["email"] = EmailChannel(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            username=settings.smtp_username,
            password=settings.smtp_password,
            start_tls=settings.smtp_start_tls,
            timeout_s=settings.delivery_timeout_s,
        )
    return out
