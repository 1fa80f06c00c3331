"""Operations: dead letters, the Grafana dashboards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="dead-letter topics",
        description="Dead letters carry the message, its topic and the reason it was refused.",
    )
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dlq_sub.add_parser(
        "replay",
        help="put the dead letters matching a reason back on their topic",
        description="Once the cause is fixed (a station registered, a rule loaded), publish the "
        "matching dead letters again, unchanged, to the topic they came from. Consumers "
        "de-duplicate by event id: replaying twice changes nothing.",
    )
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--topic", required=True, help="the dead-letter topic, e.g. readings.dlq.v1")
    p.add_argument("--reason", help="only dead letters with this reason")
    p.add_argument("--since", help="only dead letters from this time on (ISO 8601)")
    p.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    p.set_defaults(run=dlq_replay)
    p = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards, their provisioning and the Kubernetes ConfigMap",
        description="Generated from shared/ops/dashboards/; the tests fail if a file is stale.",
    )
    p.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root")
    p.add_argument(
        "--check", action="store_true", help="write nothing; fail if a generated file is stale"
    )
    p.set_defaults(run=dashboards)


def dlq_replay(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import datetime

    from shared.dlq import replay

    def progress(read: int, matched: int) -> None:
        print(f"\rread {read:,}, matching {matched:,} …", end="", file=sys.stderr, flush=True)

    report = asyncio.run(
        replay(
            args.bootstrap,
            args.topic,
            reason=args.reason,
            since=datetime.fromisoformat(args.since) if args.since else None,
            dry_run=args.dry_run,
            progress=progress,
        )
    )
    print(file=sys.stderr)
    print(
        f"read {report.read}, matched {report.matched}, replayed {report.replayed}, "
        f"unreadable {report.unreadable}, not UTF-8 {report.not_utf8}, "
        f"field-protocol frames (not replayable) {report.not_messages}; "
        f"by reason: {report.by_reason}"
    )
    return 0


def dashboards(args: argparse.Namespace) -> int:
    from shared.ops.dashboards import render, write

    if args.check:
        stale = [
            str(p)
            for p, text in render(args.root).items()
            if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        if stale:
            raise SystemExit("stale, run `qianshao dashboards`: " + ", ".join(stale))
        return 0
    for path in write(args.root):
        print(f"wrote {path}")
    return 0
