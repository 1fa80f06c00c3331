"""``qianshao divisions``: the registry of division codes and names every text names places by."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.cli.admin import ENV_FILE_HELP, run_async, schema_pool


def register(sub: Any) -> None:
    div = sub.add_parser(
        "divisions",
        help="load or show the division codes and names",
        description="China's statistical division codes and names (province to village), which "
        "every SMS, CAP document and map uses to name places.",
    )
    div_sub = div.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = div_sub.add_parser(
        "load",
        help="load an edition into ingest.divisions (again: only what changed)",
        description="Read the edition's CSV files (by default those scripts/divisions.sh "
        "fetched) into ingest.divisions in one transaction. Codes the edition no longer has "
        "stay, marked retired.",
    )
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.add_argument("--from", dest="source", type=Path, help="the folder of the CSV files")
    p.add_argument(
        "--prefix",
        action="append",
        default=[],
        help="only codes under this prefix (and their parents), e.g. 511112; repeatable",
    )
    p.set_defaults(run=load)
    p = div_sub.add_parser("show", help="a code in words, with its parents")
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.add_argument("code", help="a 12-digit code")
    p.set_defaults(run=show)


async def _ingest_pool() -> Any:
    return await schema_pool("ingest", "divisions")


def load(args: argparse.Namespace) -> int:
    async def work() -> int:
        from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
        from shared.errors import QianshaoError

        pool = await _ingest_pool()
        try:
            result = await load_divisions(
                pool,
                args.source or DEFAULT_SOURCE,
                prefixes=args.prefix,
                progress=lambda msg: print(msg, flush=True),
            )
        except QianshaoError as exc:
            raise SystemExit(exc.message) from None
        finally:
            await pool.close()
        print(f"{result.edition}: {result.rows:,} divisions")
        return 0

    return run_async(args, work)


def show(args: argparse.Namespace) -> int:
    async def work() -> int:
        from shared.places import Places

        pool = await _ingest_pool()
        try:
            place = await Places(pool, ttl_s=0).describe(args.code)
        finally:
            await pool.close()
        print(place.name if place.known else f"{args.code}: not in the registry")
        return 0 if place.known else 1

    return run_async(args, work)
