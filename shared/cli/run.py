"""Running: one service, the whole local stack, the fake providers."""

from __future__ import annotations

import argparse
from typing import Any

SERVICES = ("ingest", "risk", "alerting", "gateway")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run one service under uvicorn",
        description="Run one service under uvicorn, with its settings from the environment.",
    )
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(run=serve)
    p = sub.add_parser(
        "up",
        help="run the whole local stack with a demo rainstorm (Ctrl-C stops it)",
        description="The local stack from a checkout: PostgreSQL, the broker, the four "
        "services, the fake providers and a demo feed. Not part of an installed package.",
    )
    p.set_defaults(run=up)
    p = sub.add_parser(
        "fake-providers",
        help="run the local fake SMS, WeChat and webhook providers",
        description="The stand-ins for the SMS, WeChat and webhook providers, on loopback.",
    )
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--echo", action="store_true", help="print every message received")
    p.add_argument(
        "--bulk", action="store_true", help="count SMS only (for load tests with a million numbers)"
    )
    p.set_defaults(run=fake_providers)


def settings_and_factory(service: str) -> tuple[Any, Any]:
    if service == "ingest":
        from services.ingest.app import create_app as ingest_app
        from services.ingest.settings import IngestSettings

        return IngestSettings(), ingest_app
    if service == "risk":
        from services.risk.app import create_app as risk_app
        from services.risk.settings import RiskSettings

        return RiskSettings(), risk_app
    if service == "alerting":
        from services.alerting.app import create_app as alerting_app
        from services.alerting.settings import AlertingSettings

        return AlertingSettings(), alerting_app
    if service == "gateway":
        from services.gateway.app import create_app as gateway_app
        from services.gateway.settings import GatewaySettings

        return GatewaySettings(), gateway_app
    raise SystemExit(f"unknown service {service!r}")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.http import KEEP_ALIVE_S

    settings, factory = settings_and_factory(args.service)
    uvicorn.run(
        factory(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0


def up(args: argparse.Namespace) -> int:
    try:
        from shared.devstack.up import up as run_stack
    except ImportError:
        raise SystemExit(
            "the local stack runs from a checkout of the repository (make run); an installed "
            "package carries the services only"
        ) from None
    return run_stack()


def fake_providers(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.devstack.fakeproviders import Inbox, create_app, describe
    from shared.devstack.fakesms import SmsState

    inbox = Inbox(on_message=(lambda m: print(describe(m), flush=True)) if args.echo else None)
    sms = SmsState(keep_log=False, keep=1000) if args.bulk else SmsState()
    if args.echo:
        sms.on_text = lambda t: print(
            f"[sms:{t['provider']}] {','.join(t['numbers'])} {t['text']}", flush=True
        )
    uvicorn.run(create_app(inbox, sms), host="127.0.0.1", port=args.port, log_level="warning")
    return 0
