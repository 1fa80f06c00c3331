"""Storm mode: in a storm of warnings, a person gets at most ``limit`` messages per channel in
any ``window``; the rest wait, held, and go out together as one digest when the window allows.

A red warning, and any warning the person must confirm (叫应), is never held: the limit is for
the blue and yellow chatter of a long storm, not for the message that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from shared.contracts import Level


@dataclass(frozen=True, slots=True)
class StormPolicy:
    limit: int = 6
    window: timedelta = timedelta(hours=1)


def to_hold(
    recent: Mapping[tuple[str, str], int],
    rows: Sequence[tuple[str, str]],
    *,
    level: Level,
    must_confirm: set[str],
    policy: StormPolicy,
) -> set[tuple[str, str]]:
    """The (recipient, channel) rows of a new version to hold: those whose recipient already
    had ``limit`` messages on that channel within the window."""
    if level >= Level.red or policy.limit <= 0:
        return set()
    return {
        (rcpt, ch)
        for rcpt, ch in rows
        if rcpt.startswith("person:")
        and rcpt not in must_confirm
        and recent.get((rcpt, ch), 0) >= policy.limit
    }


def digest_text(headlines: Sequence[str], drill: bool) -> str:
    prefix = "【演练】" if drill else ""
    shown = "；".join(headlines[:5])
    more = f"等{len(headlines)}条" if len(headlines) > 5 else f"{len(headlines)}条"
    return f"{prefix}【汇总】您有{more}预警信息：{shown}。"
