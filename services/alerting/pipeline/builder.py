"""The alerting pipeline, assembled in one place: every stage a risk event goes through on its
way to ledger rows, in order.

    event     Deduplicate → LockGroup → WithdrawHeldCancel → LoadGroup
              → IgnoreMuted(Maintenance, OfficerHold) → Decide     (pipeline/event.py)
    version   WriteVersion                                          (pipeline/version.py)
    schedule  RequestRepublication → GroupTimer                     (pipeline/version.py)
    dispatch  SupersedeEarlier → HoldMuted(Inhibition, Silences)
              → Recipients → StormHold → Ledger                     (pipeline/dispatch.py)

The sweeps (``services.alerting.workers.sweeps``) enter the same chains further on: a version
whose group timer ran out, or that a silence held, goes through ``dispatch``; a renewal through
``version``, ``schedule`` and ``dispatch``. The consumer runs :meth:`Pipeline.apply` in one
transaction per batch; the delivery worker then drains the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.alerting.adapters import warnings as store
from services.alerting.domain.lifecycle import group_region
from services.alerting.pipeline.dispatch import (
    HoldMuted,
    Ledger,
    Recipients,
    StormHold,
    SupersedeEarlier,
)
from services.alerting.pipeline.event import (
    Decide,
    Deduplicate,
    IgnoreMuted,
    LoadGroup,
    LockGroup,
    WithdrawHeldCancel,
)
from services.alerting.pipeline.items import Chain, Change, NewVersion, Outgoing
from services.alerting.pipeline.mute import (
    Inhibition,
    Maintenance,
    OfficerHold,
    Silences,
    StormLimit,
)
from services.alerting.pipeline.version import GroupTimer, RequestRepublication, WriteVersion
from services.alerting.settings import AlertingSettings
from shared.contracts import RiskEvent, Topics
from shared.db import Conn
from shared.places import PlaceNames


def build(settings: AlertingSettings, topics: Topics, places: PlaceNames | None = None) -> Pipeline:
    """The pipeline; ``places`` names the regions in texts (without it, texts keep the codes)."""
    status = "Exercise" if settings.drill else "Actual"
    return Pipeline(
        admin_level=settings.group_admin_level,
        event=Chain(
            "event",
            [
                Deduplicate(),
                LockGroup(),
                WithdrawHeldCancel(),
                LoadGroup(),
                IgnoreMuted([Maintenance(), OfficerHold()]),
                Decide(sender_code=settings.sender_code, status=status),
            ],
        ),
        version=WriteVersion(
            sender_code=settings.sender_code, expiry=settings.expiry_policy(), places=places
        ),
        schedule=Chain(
            "schedule",
            [RequestRepublication(settings.approval_levels), GroupTimer(settings.group_policy())],
        ),
        dispatch=Chain(
            "dispatch",
            [
                SupersedeEarlier(),
                HoldMuted([Inhibition(settings.inhibit_rules), Silences()], topic=topics.alerts),
                Recipients(topic=topics.alerts, confirm_orange=settings.confirm_orange),
                StormHold(StormLimit(settings.storm_policy())),
                Ledger(),
            ],
        ),
    )


@dataclass(frozen=True)
class Pipeline:
    admin_level: str
    event: Chain[Change]
    version: WriteVersion
    schedule: Chain[Outgoing]
    dispatch: Chain[Outgoing]

    async def apply(self, conn: Conn, events: Sequence[RiskEvent], now: datetime) -> int:
        """A batch's station events, in the caller's transaction: the changes one by one, in
        order; then the standing announcements that confirm what a warning holds, in one
        statement (risk announces every standing level each period, and one by one they held
        the changes behind them for seconds). An announcement that does not confirm (a station
        alerting does not hold at that level) takes the full path; one older than a change of
        the same station and rule in the batch is dropped. The ledger rows written."""
        created = 0
        last_change: dict[tuple[str | None, str], int] = {}
        standing: dict[tuple[str | None, str, str], tuple[int, RiskEvent]] = {}
        for i, ev in enumerate(events):
            if ev.change == "standing":
                standing[(ev.station_id, ev.rule_id, ev.hazard)] = (i, ev)
            else:
                last_change[(ev.station_id, ev.rule_id)] = i
        for ev in events:
            if ev.change != "standing":
                created += await self.change(conn, ev, now)
        current = [
            ev
            for i, ev in standing.values()
            if last_change.get((ev.station_id, ev.rule_id), -1) < i
        ]
        if current:
            confirmed = await store.confirm_standing(conn, current)
            for ev in current:
                if (ev.station_id, ev.rule_id, ev.hazard) not in confirmed:
                    created += await self.change(conn, ev, now)
        return created

    async def change(self, conn: Conn, ev: RiskEvent, now: datetime) -> int:
        """One station event through every stage; the ledger rows written."""
        assert ev.station_id is not None
        c = Change(ev, ev.station_id, group_region(ev.region_code, self.admin_level), now)
        if not await self.event.run(conn, c):
            return 0
        assert c.new is not None
        return await self.new_version(conn, c.new)

    async def new_version(self, conn: Conn, new: NewVersion) -> int:
        """Write a version, then send it now or schedule it; the ledger rows written."""
        out = await self.version(conn, new)
        if not await self.schedule.run(conn, out):
            return 0
        await self.dispatch.run(conn, out)
        return out.created
