"""Relaying others' warnings (the weather service's, the city's): what they say to our recipients.

Pure: an upstream warning in, the hazard our subscriptions know it by, its level, and the text.
The text always names the sender, so that nobody takes it for a warning of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.alerting.domain.lifecycle import HAZARD_CN
from services.alerting.domain.messages import DRILL_PREFIX
from shared.contracts import Level, UpstreamWarning

_BY_NAME = {cn: key for key, cn in HAZARD_CN.items()}


# hazards whose warning is worth nothing a minute late: an earthquake early warning gives seconds
# to tens of seconds before the shaking. Their relays skip every wait (there is none on the relay
# path) and go ahead of every other ledger row; the policy is pre-authorised, and each use of it
# is audited.
FAST_PATH = frozenset({"earthquake"})
FAST_PRIORITY = -1  # ahead of people (0) and broadcasts (1)


@dataclass(frozen=True, slots=True)
class RelayPlan:
    hazard: str
    level: Level
    region_code: str
    headline: str
    text: str

    @property
    def fast(self) -> bool:
        return self.hazard in FAST_PATH


def hazard_of(event: str) -> str:
    """Our hazard key for an upstream event name (``暴雨蓝色预警`` → ``rainstorm``); events we
    have no key for are ``upstream``, which subscriptions to every hazard still receive."""
    for name, key in sorted(_BY_NAME.items(), key=lambda kv: -len(kv[0])):
        if name in event:
            return key
    lowered = event.lower()
    for key in HAZARD_CN:
        if key.replace("_", " ") in lowered:
            return key
    return "upstream"


def relay_plan(u: UpstreamWarning) -> RelayPlan:
    level = Level.parse(u.level)
    headline = u.headline or (
        f"{u.event}解除" if u.msg_type == "Cancel" else f"{u.event}{level.chinese}预警"
    )
    prefix = DRILL_PREFIX if u.status == "Exercise" else ""
    verb = "解除" if u.msg_type == "Cancel" else ("更新" if u.msg_type == "Update" else "发布")
    text = f"{prefix}【转发·{u.sender}{verb}】{headline}"
    return RelayPlan(
        hazard=hazard_of(u.event),
        level=level,
        region_code=u.region_codes[0].ljust(12, "0"),
        headline=headline,
        text=text,
    )
