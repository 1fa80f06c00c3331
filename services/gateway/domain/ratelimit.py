"""Rate limits per principal and route that hold across every gateway replica.

**Why PostgreSQL, not Redis.** The gateway already depends on PostgreSQL (keys, operators) and a
bureau's deployment has one; Redis would be one more stateful component to run, secure, back up
and watch, for a counter. The cost of asking PostgreSQL on every request is avoided by leases:

- Limits are counted in fixed one-minute windows, in the UNLOGGED table
  ``gateway.rate_windows`` (one row per key and window).
- A replica does not ask per request. It *reserves a block* of the window's allowance with one
  atomic upsert (``used = least(used + block, limit)``), then spends the block locally. The block
  is 1/20 of the limit (at least 1), so a busy principal costs one round trip per 5 % of its
  allowance.
- The sum of all grants never exceeds the limit, so the limit holds across replicas exactly.
  Tokens a replica reserved and did not spend by the window's end are lost, so a principal spread
  over N replicas may be admitted up to N blocks fewer than its limit. The error always falls on
  refusing, never on admitting more.
- A fixed window lets a client burst up to twice its limit across a window boundary. At a
  one-minute granularity that is acceptable for protecting the services.

The decision logic (:class:`Leases`) is pure: it takes ``now`` and a ``reserve`` function.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_S = 60

Reserve = Callable[[str, datetime, int, int], Awaitable[int]]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    retry_after_s: int = 0


def block_size(limit: int) -> int:
    return max(1, limit // 20)


class Leases:
    """What this replica may still admit in the current window, per key."""

    def __init__(self, reserve: Reserve) -> None:
        self._reserve = reserve
        self._left: dict[str, tuple[float, int]] = {}  # key -> (window start, tokens left)
        self._window = 0.0

    async def check(self, key: str, limit: int, now: datetime) -> Decision:
        ts = now.timestamp()
        window = math.floor(ts / WINDOW_S) * WINDOW_S
        if window != self._window:  # a new window: every lease of the old one is void
            self._left.clear()
            self._window = window
        start, left = self._left.get(key, (window, 0))
        if left > 0:
            self._left[key] = (start, left - 1)
            return Decision(True, limit)
        granted = await self._reserve(
            key, datetime.fromtimestamp(window, UTC), block_size(limit), limit
        )
        if granted <= 0:
            return Decision(False, limit, max(1, math.ceil(window + WINDOW_S - ts)))
        self._left[key] = (window, granted - 1)
        return Decision(True, limit)
