"""The ``qianshao`` command.

qianshao up                 the whole local stack with the demo feed (Ctrl-C stops it)
qianshao serve SERVICE      one service (ingest, risk, alerting, gateway) under uvicorn
qianshao fake-providers     the local fake delivery providers alone
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _settings_and_factory(service: str) -> tuple[Any, Any]:
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


def serve(service: str) -> None:
    import uvicorn

    from shared.http import KEEP_ALIVE_S

    settings, factory = _settings_and_factory(service)
    app = factory(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="qianshao", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the local stack with the demo feed")
    p_serve = sub.add_parser("serve", help="run one service")
    p_serve.add_argument("service", choices=["ingest", "risk", "alerting", "gateway"])
    p_fake = sub.add_parser(
        "fake-providers", help="run the local fake SMS/WeChat/webhook providers"
    )
    p_fake.add_argument("--port", type=int, default=8090)
    p_fake.add_argument("--echo", action="store_true", help="print every message received")
    p_fake.add_argument(
        "--bulk", action="store_true", help="count SMS only (for load tests with a million numbers)"
    )
    p_dlq = sub.add_parser("dlq", help="dead-letter topics")
    p_dlq.add_argument("action", choices=["replay"])
    p_dlq.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p_dlq.add_argument("--topic", required=True, help="the dead-letter topic, e.g. readings.dlq.v1")
    p_dlq.add_argument("--reason", help="only dead letters with this reason")
    p_dlq.add_argument("--since", help="only dead letters from this time on (ISO 8601)")
    p_dlq.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    p_dash = sub.add_parser(
        "dashboards", help="generate the Grafana dashboards, provisioning and ConfigMap"
    )
    p_dash.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root")
    p_dash.add_argument(
        "--check", action="store_true", help="write nothing; fail if a generated file is stale"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.service)
    elif args.command == "up":
        from shared.devstack.up import up

        sys.exit(up())
    elif args.command == "dlq":
        import asyncio
        from datetime import datetime

        from shared.dlq import replay

        report = asyncio.run(
            replay(
                args.bootstrap,
                args.topic,
                reason=args.reason,
                since=datetime.fromisoformat(args.since) if args.since else None,
                dry_run=args.dry_run,
            )
        )
        print(
            f"read {report.read}, matched {report.matched}, replayed {report.replayed}, "
            f"unreadable {report.unreadable}, not UTF-8 {report.not_utf8}; "
            f"by reason: {report.by_reason}"
        )
    elif args.command == "dashboards":
        from shared.ops.dashboards import render, write

        if args.check:
            stale = [
                str(p)
                for p, text in render(args.root).items()
                if not p.exists() or p.read_text(encoding="utf-8") != text
            ]
            if stale:
                sys.exit("stale, run `qianshao dashboards`: " + ", ".join(stale))
        else:
            for path in write(args.root):
                print(f"wrote {path}")
    elif args.command == "fake-providers":
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


if __name__ == "__main__":
    main()
