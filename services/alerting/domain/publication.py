"""Public warnings, the pure part: which levels need a second person's approval, and which
requests have waited too long."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import Level


def needs_approval(level: Level, approval_levels: Iterable[str]) -> bool:
    return level.name in set(approval_levels)


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    requested_at: datetime
    escalated_at: datetime | None


def overdue(pending: Iterable[Pending], now: datetime, timeout: timedelta) -> list[Pending]:
    """Pending requests older than ``timeout`` that have not been escalated yet."""
    return [p for p in pending if p.escalated_at is None and now - p.requested_at >= timeout]
