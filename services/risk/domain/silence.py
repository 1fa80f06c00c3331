"""No data: when a station's silence is its own event."""

from __future__ import annotations


def assess_silence(
    last_seen: float | None, interval_s: float, factor: float, silent: bool, now: float
) -> bool | None:
    """The station's new silent flag when it changes, else None.

    Silent when nothing came for more than ``factor`` × the expected interval. A station never
    seen is not judged (it has no baseline). Silence is its own event and leaves the station's
    levels as they were: it is never an all-clear.
    """
    if last_seen is None:
        return None
    overdue = now - last_seen > factor * interval_s
    if overdue and not silent:
        return True
    if not overdue and silent:
        return False
    return None
