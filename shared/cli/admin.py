"""Administering a deployment: migrations, the settings, operators and API clients."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.cli.run import SERVICES

ENV_FILE_HELP = "read KEY=VALUE settings from this file first (the systemd environment file)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="bring every service's schema up to date",
        description="Apply each service's pending migrations, in order, and record a checksum "
        "of each; refuse to go on when an applied migration's file has changed since.",
    )
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.add_argument("--only", choices=SERVICES, action="append", help="these services only")
    p.set_defaults(run=migrate)

    p = sub.add_parser(
        "check-config",
        help="validate every service's settings, naming each problem",
        description="Read each service's settings from the environment as the service would "
        "and name every problem: a value of the wrong form, a default or weak secret in "
        "production, a Kafka setting that cannot work, services that disagree on a shared "
        "secret. Exit status 1 when anything is wrong.",
    )
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.set_defaults(run=check_config)

    op = sub.add_parser(
        "operator",
        help="duty officers, approvers and admins who sign in to the API and the console",
        description="Operators sign in with the OAuth2 password flow at /api/v1/auth/token.",
    )
    op_sub = op.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = op_sub.add_parser("add", help="a new operator (the password is asked, or read on stdin)")
    p.add_argument("username")
    p.add_argument(
        "--role",
        action="append",
        required=True,
        help="admin, approver, duty_officer or viewer; repeat for several",
    )
    p.add_argument(
        "--region", default="", help="the 12-digit code prefix they see (empty: everything)"
    )
    _password_options(p)
    p.set_defaults(run=operator_add)
    p = op_sub.add_parser("passwd", help="set a new password; their sessions end")
    p.add_argument("username")
    _password_options(p)
    p.set_defaults(run=operator_passwd)
    for name, disabled, text in (
        ("disable", True, "no more sign-ins; their sessions end"),
        ("enable", False, "sign-ins work again"),
    ):
        p = op_sub.add_parser(name, help=text)
        p.add_argument("username")
        p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
        p.set_defaults(run=operator_disable, disabled=disabled)
    p = op_sub.add_parser("list", help="every operator, their roles and region")
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.set_defaults(run=operator_list)

    cl = sub.add_parser(
        "client",
        help="API clients: the upstream platforms that push readings and warnings",
        description="A client authenticates with an API key (X-API-Key) or signs its requests "
        "with it; the key is shown once and stored as a digest.",
    )
    cl_sub = cl.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = cl_sub.add_parser("add", help="a new client and its first key (shown once)")
    p.add_argument("client_id")
    p.add_argument("--name", required=True)
    p.add_argument("--source", action="append", default=[], help="a source it may push as")
    p.add_argument("--region", default="", help="the code prefix it may push for")
    p.add_argument("--require-signature", action="store_true", help="refuse its unsigned requests")
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.set_defaults(run=client_add)
    p = cl_sub.add_parser("rotate", help="a new key; the old ones work for the overlap")
    p.add_argument("client_id")
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.set_defaults(run=client_rotate)
    p = cl_sub.add_parser("list", help="every client and its keys (never a key itself)")
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)
    p.set_defaults(run=client_list)


def _password_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.add_argument("--env-file", type=Path, help=ENV_FILE_HELP)


def load_env_file(path: Path | None) -> None:
    """KEY=VALUE lines, as systemd's EnvironmentFile has them (# comments, optional quotes);
    what the environment already sets wins."""
    if path is None:
        return
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"{path}:{n}: not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)


def service_settings(service: str) -> Any:
    from shared.cli.run import settings_and_factory

    return settings_and_factory(service)[0]


def run_async(args: argparse.Namespace, work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    load_env_file(getattr(args, "env_file", None))
    try:
        return asyncio.run(work())
    except ValidationError as exc:
        raise SystemExit(
            f"the settings are not valid (qianshao check-config says more): {exc}"
        ) from None


# -- migrate --------------------------------------------------------------------------------


def migrate(args: argparse.Namespace) -> int:
    async def work() -> int:
        from shared.db import create_pool, ident
        from shared.db import migrate as apply

        for service in args.only or SERVICES:
            settings = service_settings(service)
            module = __import__(f"services.{service}.app", fromlist=["MIGRATIONS"])
            pool = await create_pool(settings.dsn, min_size=1, max_size=1)
            try:
                storage = getattr(settings, "storage", "auto")
                print(f"{service}: migrating …", flush=True)
                mode = await apply(pool, service, module.MIGRATIONS, storage=storage)
                n = await pool.fetchval(
                    f"SELECT count(*) FROM {ident(service)}.schema_migrations"  # noqa: S608
                )
                print(f"{service}: {n} migrations applied, storage {mode}", flush=True)
            finally:
                await pool.close()
        return 0

    return run_async(args, work)


# -- check-config ---------------------------------------------------------------------------


def check_config(args: argparse.Namespace) -> int:
    load_env_file(args.env_file)
    problems: list[str] = []
    secrets: dict[str, str] = {}
    for service in SERVICES:
        prefix = f"QIANSHAO_{service.upper()}_"
        try:
            settings = service_settings(service)
        except ValidationError as exc:
            for e in exc.errors():
                where = ".".join(str(p) for p in e.get("loc", ()))
                name = f"{prefix}{where.upper()}" if where else f"{prefix}*"
                problems.append(f"{service}: {name}: {e.get('msg')}")
            continue
        secrets[service] = settings.internal_secret
        print(f"{service}: ok ({settings.environment}, database {_host(settings.dsn)})")
    if len(set(secrets.values())) > 1:
        problems.append(
            "the services' INTERNAL_SECRET differ: every service must check the identity the "
            "gateway signs with the same secret"
        )
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def _host(dsn: str) -> str:
    """The DSN without its password."""
    rest = dsn.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


# -- operators and clients ------------------------------------------------------------------


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the passwords differ")
    if len(password) < 10:
        raise SystemExit("a password has at least 10 characters")
    return password


async def schema_pool(service: str, table: str) -> Any:
    """A one-connection pool on ``service``'s database, once its ``table`` is there."""
    from shared.db import create_pool

    pool = await create_pool(service_settings(service).dsn, min_size=1, max_size=1)
    if not await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{service}.{table}"):
        await pool.close()
        raise SystemExit(f"the {service} schema is not there yet: run `qianshao migrate` first")
    return pool


async def _gateway_pool() -> Any:
    return await schema_pool("gateway", "operators")


def _admin(action: Callable[[Any], Awaitable[None]]) -> Callable[[], Coroutine[Any, Any, int]]:
    """Run ``action`` with the gateway's pool; a refusal of ours is the command's error."""

    async def work() -> int:
        from shared.errors import QianshaoError

        pool = await _gateway_pool()
        try:
            await action(pool)
        except QianshaoError as exc:
            raise SystemExit(exc.message) from None
        finally:
            await pool.close()
        return 0

    return work


def operator_add(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import add_operator

    password = _password(args)

    async def action(pool: Any) -> None:
        await add_operator(
            pool,
            username=args.username,
            password=password,
            roles=args.role,
            region_prefix=args.region,
        )
        print(
            f"operator {args.username} added: {', '.join(args.role)}, region {args.region or '*'}"
        )

    return run_async(args, _admin(action))


def operator_passwd(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import set_password

    password = _password(args)

    async def action(pool: Any) -> None:
        await set_password(pool, args.username, password, datetime.now(UTC))
        print(f"password of {args.username} set; their sessions ended")

    return run_async(args, _admin(action))


def operator_disable(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import set_disabled

    async def action(pool: Any) -> None:
        await set_disabled(pool, args.username, args.disabled, datetime.now(UTC))
        print(f"operator {args.username} {'disabled' if args.disabled else 'enabled'}")

    return run_async(args, _admin(action))


def operator_list(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import list_operators

    async def action(pool: Any) -> None:
        for o in await list_operators(pool):
            state = "disabled" if o["disabled"] else "active"
            print(f"{o['username']}\t{','.join(o['roles'])}\t{o['region_prefix'] or '*'}\t{state}")

    return run_async(args, _admin(action))


def client_add(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import create_api_client

    async def action(pool: Any) -> None:
        key_id, key = await create_api_client(
            pool,
            client_id=args.client_id,
            name=args.name,
            sources=args.source,
            region_prefix=args.region,
            require_signature=args.require_signature,
        )
        print(f"client {args.client_id} added; key {key_id} (shown this once):")
        print(key)

    return run_async(args, _admin(action))


def client_rotate(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import rotate_key

    async def action(pool: Any) -> None:
        overlap = service_settings("gateway").key_rotation_overlap_s
        new = await rotate_key(pool, args.client_id, overlap_s=overlap, now=datetime.now(UTC))
        until = new["old_keys_expire_at"]
        print(f"new key {new['key_id']} for {args.client_id}, shown this once:")
        print(new["key"])
        if until:
            print(f"its older keys work until {until}")

    return run_async(args, _admin(action))


def client_list(args: argparse.Namespace) -> int:
    from services.gateway.adapters.auth import list_clients

    async def action(pool: Any) -> None:
        for c in await list_clients(pool):
            keys = ", ".join(f"{k['key_id']} ({k['prefix']}…)" for k in c["keys"] or [])
            print(f"{c['id']}\t{c['name']}\t{c['region_prefix'] or '*'}\tkeys: {keys or '-'}")

    return run_async(args, _admin(action))
