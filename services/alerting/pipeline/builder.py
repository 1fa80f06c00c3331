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

from services.alerting.adapters import stations as levels_store
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
from services.alerting.pipeline.items import Chain, Change, NewVersion, Outgoing, waves
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
        """A batch's station events, in the caller's transaction: the changes, in waves of one
        event per group decided together (:func:`waves`: each set-based stage a few statements
        for the whole wave, a group's events in order); then the standing announcements that
        confirm what a warning holds, in one statement (risk announces every standing level
        each period). An announcement that does not confirm (a station alerting does not hold
        at that level) takes the full path; one older than a change of the same station and
        rule in the batch is dropped. The ledger rows written."""
        last_change: dict[tuple[str | None, str], int] = {}
        standing: dict[tuple[str | None, str, str], tuple[int, RiskEvent]] = {}
        for i, ev in enumerate(events):
            if ev.change == "standing":
                standing[(ev.station_id, ev.rule_id, ev.hazard)] = (i, ev)
            else:
                last_change[(ev.station_id, ev.rule_id)] = i
        created = await self.changes(conn, [ev for ev in events if ev.change != "standing"], now)
        current = [
            ev
            for i, ev in standing.values()
            if last_change.get((ev.station_id, ev.rule_id), -1) < i
        ]
        if current:
            confirmed = await levels_store.confirm_standing(conn, current)
            created += await self.changes(
                conn,
                [ev for ev in current if (ev.station_id, ev.rule_id, ev.hazard) not in confirmed],
                now,
            )
        return created

    async def changes(self, conn: Conn, events: Sequence[RiskEvent], now: datetime) -> int:
        """Station events through every stage, wave by wave; the ledger rows written."""
        items = []
        for ev in events:
            assert ev.station_id is not None
            items.append(
                Change(ev, ev.station_id, group_region(ev.region_code, self.admin_level), now)
            )
        created = 0
        for wave in waves(items, lambda c: (c.event.hazard, c.region)):
            decided = await self.event.run_many(conn, wave)
            created += await self.new_versions(conn, [c.new for c in decided if c.new is not None])
        return created

    async def change(self, conn: Conn, ev: RiskEvent, now: datetime) -> int:
        """One station event through every stage; the ledger rows written."""
        return await self.changes(conn, [ev], now)

    async def new_version(self, conn: Conn, new: NewVersion) -> int:
        """Write a version, then send it now or schedule it; the ledger rows written."""
        return await self.new_versions(conn, [new])

    async def new_versions(self, conn: Conn, news: Sequence[NewVersion]) -> int:
        """Versions of different warnings: written, then sent now or scheduled; the ledger rows
        written."""
        if not news:
            return 0
        outs = await self.version.many(conn, news)
        going = await self.schedule.run_many(conn, outs)
        sent = await self.dispatch.run_many(conn, going)
        return sum(o.created for o in sent)
