"""What travels through the alerting pipeline, stage to stage, and the shape of a stage.

A stage is a small unit that reads what it needs (through the adapters, on the transaction's
connection), asks a pure decision (``services.alerting.domain``), writes what that decision
says, and answers whether the item goes on. Each stage fills in the fields the next ones read."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from services.alerting.adapters.ledger import Recipient
from services.alerting.adapters.warnings import WarningRow
from services.alerting.domain.lifecycle import Decision
from services.alerting.domain.officer import Content
from services.alerting.domain.recipients import Person
from services.alerting.domain.states import MsgType
from shared.contracts import AlertVersion, Level, RiskEvent
from shared.db import Conn


@dataclass(slots=True)
class Change:
    """A station's risk event, on its way to its group's warning."""

    event: RiskEvent
    station_id: str
    region: str  # the group's region code (the event's region at the grouping level)
    now: datetime
    warning: WarningRow | None = None  # the group's open warning, locked
    levels: dict[tuple[str, str], Level] = field(default_factory=dict)  # (station, rule) → level
    decision: Decision[tuple[str, str]] | None = None
    new: NewVersion | None = None  # the version the decision calls for


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to write: what the lifecycle decided, or a renewal."""

    warning: WarningRow  # as it was before this version (for an Alert, as just created)
    version: int
    msg_type: MsgType
    level: Level
    stations: Mapping[str, Level]
    previous_level: Level | None
    cause: tuple[str, datetime | None]  # (event id, the reading's time)
    actor: str
    now: datetime
    renewal: bool = False
    # an officer's version: what it says (texts, area, expiry), why (a cancel's reason) and who
    # approved it
    content: Content | None = None
    reason: str | None = None
    approved_by: str | None = None


@dataclass(slots=True)
class Outgoing:
    """A version on its way to the ledger."""

    alert: AlertVersion
    level: Level
    now: datetime
    kind: str = "internal"  # the warning's: internal, public
    by_officer: bool = False  # a person asked for this version: it waits for no group timer
    previous_level: Level | None = None
    last_dispatch_at: datetime | None = None  # the warning's, before this version
    again: bool = False  # a held version looked at again: it is on alerts.v1 already
    told: bool = False  # an earlier version of the warning went out
    endpoints: list[Recipient] = field(default_factory=list)  # webhooks, robots, alerts.v1
    people: list[Recipient] = field(default_factory=list)  # the people in scope, per channel
    confirmers: list[Person] = field(default_factory=list)  # who must confirm it (叫应)
    held: set[tuple[str, str]] = field(default_factory=set)  # (recipient, channel) storm holds
    created: int = 0  # ledger rows written


T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Stage(Protocol[T_contra]):
    """One step. ``__call__`` does its part for one item (False stops it there); ``many`` for
    several items of different groups at once, in few statements, and answers those that go on,
    in order."""

    async def __call__(self, conn: Conn, item: T_contra, /) -> bool: ...

    async def many(self, conn: Conn, items: Sequence[T_contra], /) -> list[Any]: ...


class ItemStage(Generic[T]):
    """A stage written for one item at a time; ``many`` runs it item after item."""

    async def __call__(self, conn: Conn, item: T, /) -> bool:
        raise NotImplementedError

    async def many(self, conn: Conn, items: Sequence[T], /) -> list[T]:
        return [item for item in items if await self(conn, item)]


class SetStage(Generic[T]):
    """A stage written for a set of items (set-based statements); one item is a set of one."""

    async def __call__(self, conn: Conn, item: T, /) -> bool:
        return bool(await self.many(conn, [item]))

    async def many(self, conn: Conn, items: Sequence[T], /) -> list[T]:
        raise NotImplementedError


def waves(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` in waves holding at most one item of each key, each key's items in order
    across the waves: a wave's items are of different groups, so a set-based stage may decide
    them together, and a group's second item sees what its first did."""
    out: list[list[T]] = []
    seen: dict[Hashable, int] = {}
    for item in items:
        k = key(item)
        i = seen.get(k, 0)
        seen[k] = i + 1
        if i == len(out):
            out.append([])
        out[i].append(item)
    return out


@dataclass(frozen=True)
class Chain(Generic[T]):
    """Stages run in order until one stops the item."""

    name: str
    stages: Sequence[Stage[T]]

    async def run(self, conn: Conn, item: T) -> bool:
        for stage in self.stages:
            if not await stage(conn, item):
                return False
        return True

    async def run_many(self, conn: Conn, items: Sequence[T]) -> list[T]:
        """Items of different groups, stage by stage; those that pass every stage, in order."""
        going: list[T] = list(items)
        for stage in self.stages:
            if not going:
                break
            going = await stage.many(conn, going)
        return going

    def __add__(self, other: Chain[T]) -> Chain[T]:
        return Chain(f"{self.name}+{other.name}", [*self.stages, *other.stages])
