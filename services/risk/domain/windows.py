"""Sliding windows over one station's series of one metric, updated from the stream.

A :class:`Series` keeps the points of the last ``horizon`` seconds, sorted by time, and one running
aggregate per window length that rules ask for. A window of length W, as of the newest time seen
``t``, holds the points with ``t - W < ts <= t`` (half-open: a rain gauge's 5-minute increment
stamped 00:00 belongs to the hour before, so "3 h" ending 03:00 is the 36 increments 00:05–03:00).

Cost per point, amortised O(1):
- in order (the usual case): append, add to each running sum, then move each window's start past
  the points that fell out, subtracting them. Every point enters and leaves each window once.
- out of order, within the lateness tolerance: insert by bisection and add it to the windows it
  falls in. Points later than the tolerance are refused (``accept`` returns False) so a replayed
  backlog cannot rewrite an old window.
- sums are integers of millionths of the unit, so they are exact: 500 tips of 0.1 mm make exactly
  50 mm (a float running sum gives 49.99999999999929 and would miss the rainstorm criterion), and
  adding and removing points for years never drifts.
- max/min are cached; when the point holding the extreme leaves, the extreme is recomputed over the
  window on the next read (rare for real data: it happens once per extreme).

State is plain lists, so it serialises to JSON for the checkpoint (:meth:`Series.dump`/``load``).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Literal

WindowAgg = Literal["sum", "avg", "max", "min", "count", "rate", "first"]

MICRO = 1_000_000  # sums are kept in integer millionths of the unit
BEIJING_OFFSET_S = 8 * 3600
DAY_S = 86400


@dataclass(slots=True)
class _Window:
    length: float
    start: int = 0  # index of the first point inside the window
    total: int = 0  # micro-units: exact, so a long-running sum never drifts
    count: int = 0
    hi: float | None = None
    lo: float | None = None
    dirty: bool = False  # an extreme left the window; recompute on read


class Series:
    """Points of one (station, metric) with running aggregates over the windows asked for."""

    __slots__ = ("_days", "_windows", "daily_days", "horizon", "latest", "tolerance", "ts", "vals")

    def __init__(
        self, windows: tuple[float, ...] = (), *, tolerance: float = 3600.0, daily_days: int = 0
    ) -> None:
        self.ts: list[float] = []
        self.vals: list[float] = []
        self._windows: dict[float, _Window] = {w: _Window(w) for w in sorted(set(windows))}
        self.tolerance = tolerance
        # points are kept for the windows and for late points landing in them; a series read
        # only for its latest value keeps that one point (late points are still accepted within
        # the tolerance; they change no window). Keeping an hour of points for it made the
        # station state, saved with every batch, grow with the reading rate (bench/steady).
        self.horizon = max([*windows, tolerance, 0.0]) if windows else 0.0
        self.latest: float | None = None
        # daily maxima by Beijing calendar day, for "N days running" criteria
        self.daily_days = daily_days
        self._days: dict[int, float] = {}

    # -- updates ---------------------------------------------------------------------------

    def accept(self, ts: float, value: float) -> bool:
        """Add one point. False when it is later than the tolerance allows (not added)."""
        latest = self.latest
        if latest is None or ts > latest:
            self._append(ts, value)
        elif ts >= latest - self.tolerance:
            self._insert(ts, value)
        else:
            return False
        if self.daily_days:
            day = int((ts + BEIJING_OFFSET_S) // DAY_S)
            prev = self._days.get(day)
            if prev is None or value > prev:
                self._days[day] = value
            if len(self._days) > self.daily_days + 2:
                newest = max(self._days)
                for d in [d for d in self._days if d <= newest - self.daily_days - 1]:
                    del self._days[d]
        return True

    def _append(self, ts: float, value: float) -> None:
        self.ts.append(ts)
        self.vals.append(value)
        self.latest = ts
        tsl, vals = self.ts, self.vals
        micro = round(value * MICRO)
        for w in self._windows.values():
            w.total += micro
            w.count += 1
            if w.hi is not None and value >= w.hi:
                w.hi = value
            if w.lo is not None and value <= w.lo:
                w.lo = value
            edge = ts - w.length
            i = w.start
            while tsl[i] <= edge:
                v = vals[i]
                w.total -= round(v * MICRO)
                w.count -= 1
                if v == w.hi or v == w.lo:
                    w.dirty = True
                i += 1
            w.start = i
            if w.count == 1:  # a fresh window: its extremes are this point
                w.total = micro
                w.hi = w.lo = value
                w.dirty = False
        self._trim()

    def _insert(self, ts: float, value: float) -> None:
        pos = bisect_right(self.ts, ts)
        if pos and self.ts[pos - 1] == ts:
            return  # the same instant again: the first value holds (ingest keeps the first too)
        self.ts.insert(pos, ts)
        self.vals.insert(pos, value)
        assert self.latest is not None
        for w in self._windows.values():
            if ts > self.latest - w.length:  # inside: pos >= start
                w.total += round(value * MICRO)
                w.count += 1
                if w.hi is not None and value > w.hi:
                    w.hi = value
                if w.lo is not None and value < w.lo:
                    w.lo = value
            else:  # before the window: everything from pos on shifted right
                w.start += 1

    def _trim(self) -> None:
        """Drop points older than the horizon once they are half the list (amortised O(1))."""
        edge = self.ts[-1] - self.horizon
        if self.ts[0] > edge:
            return
        cut = bisect_right(self.ts, edge)
        if cut * 2 < len(self.ts):
            return
        cut = min([cut, len(self.ts) - 1, *(w.start for w in self._windows.values())])
        if cut:
            del self.ts[:cut]
            del self.vals[:cut]
            for w in self._windows.values():
                w.start -= cut

    # -- reads -----------------------------------------------------------------------------

    def last(self) -> float | None:
        return self.vals[-1] if self.vals else None

    def window(self, length: float, agg: WindowAgg) -> float | None:
        """The aggregate over the window of ``length`` seconds ending at the newest point."""
        w = self._windows[length]
        if w.count == 0:
            return None
        if agg == "sum":
            return w.total / MICRO
        if agg == "count":
            return float(w.count)
        if agg == "avg":
            return w.total / w.count / MICRO
        if agg in ("max", "min"):
            if w.dirty or w.hi is None:
                part = self.vals[w.start :]
                w.hi, w.lo, w.dirty = max(part), min(part), False
            return w.hi if agg == "max" else w.lo
        if agg == "first":
            return self.vals[w.start]
        # rate: change per second from the first point in the window to the newest
        dt = self.ts[-1] - self.ts[w.start]
        if dt <= 0:
            return None
        return (self.vals[-1] - self.vals[w.start]) / dt

    def points(self, length: float) -> tuple[list[float], list[float]]:
        """The points inside the window (for evidence)."""
        w = self._windows[length]
        return self.ts[w.start :], self.vals[w.start :]

    def days_running_min(self, days: int) -> float | None:
        """The smallest of the daily maxima of the last ``days`` calendar days (Beijing time),
        or None unless every one of those days has data: "max ≥ 35 °C three days running" is
        ``days_running_min(3) >= 35``."""
        if self.latest is None:
            return None
        newest = int((self.latest + BEIJING_OFFSET_S) // DAY_S)
        out = None
        for d in range(newest - days + 1, newest + 1):
            v = self._days.get(d)
            if v is None:
                return None
            out = v if out is None else min(out, v)
        return out

    # -- checkpoint ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"t": self.ts, "v": self.vals, "d": {str(k): v for k, v in self._days.items()}}

    @classmethod
    def load(
        cls,
        data: dict[str, Any],
        windows: tuple[float, ...] = (),
        *,
        tolerance: float = 3600.0,
        daily_days: int = 0,
    ) -> Series:
        s = cls(windows, tolerance=tolerance, daily_days=daily_days)
        s._days = {int(k): float(v) for k, v in (data.get("d") or {}).items()}
        for t, v in zip(data.get("t") or [], data.get("v") or [], strict=True):
            s._append(float(t), float(v))
        return s
