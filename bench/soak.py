"""Soak: the whole pipeline at a moderate load for ``QIANSHAO_BENCH_SOAK_S`` seconds (1,800 by
default), with the resident memory of each service sampled throughout.

The same processes, load and probes as bench/steady.py (ingest, risk and alerting as processes,
calm water levels from 500 stations, a red probe every two seconds), at ``QIANSHAO_BENCH_SOAK_RATE``
readings/s (1,000). RSS is read from ``/proc/<pid>/status`` every 15 s. The baseline is each
service's RSS after the first minute (start-up, first connections, caches filled); memory is flat
when the last minute's RSS stays near it. The probes' reading → SMS latency over the whole soak
shows that nothing slowed down on the way.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

from bench.steady import WARM_UP, _level, _setup, pipeline

SERVICES = ("ingest", "risk", "alerting")
SAMPLE_S = 15.0
SETTLE_S = 60.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    """Runs on a PostgreSQL and a broker of its own, like bench/steady.py."""
    del admin_dsn, bootstrap
    seconds = float(os.environ.get("QIANSHAO_BENCH_SOAK_S", "1800"))
    rate = int(os.environ.get("QIANSHAO_BENCH_SOAK_RATE", "1000"))
    samples: dict[str, list[tuple[float, float]]] = {s: [] for s in SERVICES}
    async with pipeline("qianshao-soak-") as (pipe, arrivals):
        probes = int(seconds / 2.0) + 2
        await _setup(pipe, probes + WARM_UP)
        # warm up (first connections, first warning of each process), not measured
        await _level(pipe, 200, WARM_UP * 2.0, probes, WARM_UP, arrivals)
        started = time.monotonic()

        async def sampler() -> None:
            while True:
                t = time.monotonic() - started
                for s in SERVICES:
                    samples[s].append((t, rss_mib(pipe.procs[s].pid)))
                await asyncio.sleep(SAMPLE_S)

        sampling = asyncio.create_task(sampler())
        try:
            res = await _level(pipe, rate, seconds, 0, probes, arrivals)
        finally:
            sampling.cancel()
        for s in SERVICES:
            samples[s].append((time.monotonic() - started, rss_mib(pipe.procs[s].pid)))
            if pipe.procs[s].poll() is not None:
                raise RuntimeError(f"{s} exited during the soak")

    out: dict[str, float] = {
        "seconds": seconds,
        "rate": float(rate),
        "achieved": res["achieved"],
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "delivered": res["delivered"],
        "probes": res["probes"],
    }
    print(f"\n## Soak: {seconds / 60:g} min at {rate:,} readings/s (RSS every {SAMPLE_S:g} s)")
    print(
        f"- achieved {res['achieved']:,.0f} readings/s; probes delivered "
        f"{res['delivered']:.0f}/{res['probes']:.0f}; reading → SMS p50 {res['p50_ms']:.0f} ms, "
        f"p99 {res['p99_ms']:.0f} ms"
    )
    print("| service | RSS after the first minute (baseline) | RSS at the end | ratio | peak |")
    print("|---|---|---|---|---|")
    for s in SERVICES:
        xs = samples[s]
        settle = min(SETTLE_S, seconds / 4)
        base = statistics.median([v for t, v in xs if t >= settle][:2])
        end = statistics.median(v for t, v in xs if t >= xs[-1][0] - SETTLE_S)
        peak = max(v for _, v in xs)
        out[f"{s}: rss_start_mib"] = base
        out[f"{s}: rss_end_mib"] = end
        out[f"{s}: rss_peak_mib"] = peak
        print(f"| {s} | {base:.0f} MiB | {end:.0f} MiB | {end / base:.2f}× | {peak:.0f} MiB |")
    for s in SERVICES:
        for i, (t, v) in enumerate(samples[s]):
            out[f"{s}: rss@{i}"] = v
            out[f"t@{i}"] = t
    return out
