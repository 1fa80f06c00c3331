"""The audit log: who did what to which warning, one row each (``alerting.audit_log``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.db import Conn

_INSERT = """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
             VALUES ($1, $2, $3, $4)"""


async def audit(
    conn: Conn,
    actor: str,
    action: str,
    detail: Mapping[str, Any],
    *,
    warning_id: str | None = None,
) -> None:
    """``actor``: a person's subject, or ``system:<part>`` for what the service decided itself."""
    await conn.execute(_INSERT, actor, action, warning_id, detail)


async def audit_many(
    conn: Conn, entries: Iterable[tuple[str, str, str | None, Mapping[str, Any]]]
) -> None:
    """Several entries of (actor, action, warning id, detail) in one round trip."""
    rows = list(entries)
    if rows:
        await conn.executemany(_INSERT, rows)
