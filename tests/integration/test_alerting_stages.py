"""Each stage of alerting's pipeline on its own, on a migrated database: what it reads, what it
writes, and whether it lets the item go on. (The whole pipeline is driven through the consumer
in test_grouping, test_silences, test_expiry and the end-to-end tests.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.alerting.adapters import stations as levels_store
from services.alerting.adapters import warnings as store
from services.alerting.app import MIGRATIONS
from services.alerting.domain.grouping import GroupPolicy
from services.alerting.domain.lifecycle import ExpiryPolicy
from services.alerting.domain.states import Dispatch, MsgType
from services.alerting.domain.storm import StormPolicy
from services.alerting.pipeline import builder
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
    WithdrawHeldCancel,
)
from services.alerting.pipeline.items import Change, NewVersion, Outgoing
from services.alerting.pipeline.mute import Inhibition, Maintenance, Silences, StormLimit
from services.alerting.pipeline.version import GroupTimer, WriteVersion
from services.alerting.settings import AlertingSettings
from shared.contracts import Evidence, Level, RiskEvent, Topics
from shared.db import create_pool, migrate
from tests.factories import TOWNSHIP, VILLAGE, add_person, add_warning

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)
SENDER = "11010100000000"


def event(level: str, station: str = "WL1", *, n: int = 1, hazard: str = "flood") -> RiskEvent:
    return RiskEvent(
        event_id=f"ev-{station}-{n}",
        produced_at=T0,
        scope="station",
        station_id=station,
        region_code=VILLAGE,
        hazard=hazard,
        rule_id="threshold:water_level",
        previous_level="none",
        level=level,  # type: ignore[arg-type]
        change="raised",
        event_time=T0,
        evidence=Evidence(rule_id="threshold:water_level", metric="water_level", value=1.0),
    )


def change(ev: RiskEvent) -> Change:
    assert ev.station_id is not None
    return Change(ev, ev.station_id, TOWNSHIP, T0)


@pytest.fixture
async def conn(database: str) -> AsyncIterator[Any]:
    pool = await create_pool(database)
    await migrate(pool, "alerting", MIGRATIONS)
    try:
        async with pool.acquire() as c, c.transaction():
            yield c
    finally:
        await pool.close()


async def issued(conn: Any, level: str = "orange", hazard: str = "flood") -> Outgoing:
    """The group's first version, written: what the dispatch stages take."""
    c = change(event(level, hazard=hazard))
    assert await LoadGroup()(conn, c)
    assert await Decide(sender_code=SENDER, status="Actual")(conn, c)
    assert c.new is not None
    return await WriteVersion(sender_code=SENDER, expiry=ExpiryPolicy(*[timedelta(hours=1)] * 3))(
        conn, c.new
    )


# -- the event stages -----------------------------------------------------------------------


async def test_deduplicate_lets_an_event_through_once(conn):
    c = change(event("red"))
    assert await Deduplicate()(conn, c)
    assert not await Deduplicate()(conn, change(event("red")))


async def test_load_group_finds_the_open_warning_and_its_levels(conn):
    c = change(event("red"))
    assert await LoadGroup()(conn, c)
    assert (c.warning, c.levels) == (None, {})
    await add_warning(conn, "w1", region_code=TOWNSHIP, level=3, state="issued")
    await conn.execute(
        """INSERT INTO alerting.warning_stations (warning_id, station_id, rule_id, level, event_id)
           VALUES ('w1', 'WL9', 'r', 3, 'e')"""
    )
    c = change(event("red"))
    await LoadGroup()(conn, c)
    assert c.warning is not None
    assert (c.warning.id, c.warning.level) == ("w1", Level.orange)
    assert c.levels == {("WL9", "r"): Level.orange}


async def test_decide_opens_updates_and_clears_the_groups_warning(conn):
    decide = Decide(sender_code=SENDER, status="Actual")
    c = change(event("orange"))
    await LoadGroup()(conn, c)
    assert await decide(conn, c)
    assert c.new is not None
    assert (c.new.msg_type, c.new.version, c.new.level) == (MsgType.Alert, 1, Level.orange)
    assert c.new.warning.identifier.startswith(f"{SENDER}_20260701160000_")
    again = change(event("orange", n=2))  # the same level: nothing to say
    await LoadGroup()(conn, again)
    assert not await decide(conn, again)
    up = change(event("red", n=3))
    await LoadGroup()(conn, up)
    assert await decide(conn, up)
    assert up.new is not None
    assert (up.new.msg_type, up.new.version, up.new.previous_level) == (
        MsgType.Update,
        2,
        Level.orange,
    )
    gone = change(event("none", n=4))
    await LoadGroup()(conn, gone)
    assert await decide(conn, gone)
    assert gone.new is not None
    assert gone.new.msg_type == MsgType.Cancel
    assert await levels_store.rule_levels(conn, gone.new.warning.id) == {}


async def test_maintenance_mutes_a_raise_and_lets_a_lowering_through(conn):
    await conn.execute(
        """INSERT INTO alerting.maintenance (station_id, starts_at, ends_at, author, reason)
           VALUES ('WL1', $1, $2, 'officer', 'calibration')""",
        T0 - timedelta(hours=1),
        T0 + timedelta(hours=1),
    )
    stage = IgnoreMuted([Maintenance()])
    raising = change(event("red"))
    assert not await stage(conn, raising)
    audit = await conn.fetchrow("SELECT actor, action, detail FROM alerting.audit_log")
    assert (audit["actor"], audit["action"]) == ("system:risk", "maintenance.ignored")
    lowering = change(event("blue"))
    lowering.levels = {("WL1", "threshold:water_level"): Level.red}
    assert await stage(conn, lowering)


async def test_a_held_all_clear_is_withdrawn_when_the_group_rises_again(conn):
    out = await issued(conn)
    # the all-clear, waiting for its group timer
    await store.set_latest(
        conn, out.alert.warning_id, level=Level.orange, version=2, msg_type=MsgType.Cancel,
        expires=None,
    )  # fmt: skip
    await store.insert_version(
        conn,
        (out.alert.warning_id, 2, "Cancel", 3, "x_v2", T0, "h", "d", [], [], "e", None, None),
    )
    await store.set_dispatch(
        conn, out.alert.warning_id, 2, Dispatch.scheduled, at=T0 + timedelta(minutes=5)
    )
    assert await WithdrawHeldCancel()(conn, change(event("red", n=9)))
    w = await conn.fetchrow("SELECT state, version FROM alerting.warnings")
    assert (w["state"], w["version"]) == ("issued", 1)
    assert await conn.fetchval("SELECT count(*) FROM alerting.warning_versions") == 1
    assert await conn.fetchval(
        "SELECT action FROM alerting.audit_log WHERE actor = 'system:flapping'"
    ) == ("cancel.withdrawn")


# -- the version and schedule stages -------------------------------------------------------


async def test_write_version_references_every_earlier_version(conn):
    out = await issued(conn)
    w = await store.warning(conn, out.alert.warning_id)
    write = WriteVersion(sender_code=SENDER, expiry=ExpiryPolicy(*[timedelta(hours=1)] * 3))
    later = await write(
        conn,
        NewVersion(
            warning=w,
            version=2,
            msg_type=MsgType.Update,
            level=Level.red,
            stations={"WL1": Level.red},
            previous_level=Level.orange,
            cause=("ev-2", T0),
            actor="system:risk",
            now=T0 + timedelta(minutes=1),
        ),
    )
    assert later.alert.identifier == f"{w.identifier}_v2"
    # the earlier version's CAP `sent` (Beijing time, to the second)
    assert later.alert.references == [f"{SENDER},{w.identifier},2026-07-01T16:00:00+08:00"]
    assert later.alert.expires == T0 + timedelta(minutes=61)
    state = await conn.fetchrow("SELECT state, level, version FROM alerting.warnings")
    assert tuple(state.values()) == ("updated", 4, 2)


async def test_group_timer_schedules_a_lowering_and_lets_a_raise_go(conn):
    out = await issued(conn, "red")
    timer = GroupTimer(GroupPolicy(group_interval=timedelta(minutes=5)))
    out.last_dispatch_at, out.previous_level = T0, Level.red
    out.alert = out.alert.model_copy(update={"msg_type": "Update"})
    out.level = Level.orange
    assert not await timer(conn, out)
    assert await store.dispatch_of(conn, out.alert.warning_id, 1) == Dispatch.scheduled
    out.level, out.previous_level = Level.red, Level.orange
    assert await timer(conn, out)


# -- the dispatch stages -------------------------------------------------------------------


async def test_supersede_earlier_drops_an_all_clear_nobody_heard_of(conn):
    out = await issued(conn)
    out.alert = out.alert.model_copy(update={"msg_type": "Cancel", "version": 2})
    await store.insert_version(
        conn,
        (out.alert.warning_id, 2, "Cancel", 3, "x_v2", T0, "h", "d", [], [], "e", None, None),
    )
    await store.set_dispatch(conn, out.alert.warning_id, 1, Dispatch.scheduled, at=T0)
    assert not await SupersedeEarlier()(conn, out)
    assert await store.dispatch_of(conn, out.alert.warning_id, 1) == Dispatch.superseded
    assert await store.dispatch_of(conn, out.alert.warning_id, 2) == Dispatch.superseded


async def test_a_silence_holds_a_version_and_puts_it_on_alerts_v1_only(conn):
    await conn.execute(
        """INSERT INTO alerting.silences (starts_at, ends_at, hazard, reason, author)
           VALUES ($1, $2, 'flood', 'drill week', 'officer')""",
        T0 - timedelta(hours=1),
        T0 + timedelta(hours=1),
    )
    out = await issued(conn)
    stage = HoldMuted([Inhibition([("flood", "rainstorm")]), Silences()], topic="alerts.v1")
    assert not await stage(conn, out)
    assert await store.dispatch_of(conn, out.alert.warning_id, 1) == Dispatch.silenced
    rows = await conn.fetch("SELECT recipient, channel, target FROM alerting.deliveries")
    assert [tuple(r.values()) for r in rows] == [("topic:alerts", "kafka", "alerts.v1")]


async def test_a_higher_warning_of_a_source_hazard_inhibits(conn):
    await add_warning(conn, "flood-red", hazard="flood", region_code=TOWNSHIP, level=4)
    rain = await issued(conn, "blue", hazard="rainstorm")
    inhibition = Inhibition([("flood", "rainstorm")])
    [mute] = await inhibition.mutes(conn, [rain])
    assert mute is not None
    assert (mute.by, mute.ref) == ("inhibited", "flood-red")
    await conn.execute("UPDATE alerting.warnings SET level = 1 WHERE id = 'flood-red'")
    assert await inhibition.mutes(conn, [rain]) == [None]  # no longer higher


async def test_recipients_storm_hold_and_ledger_write_the_rows(conn):
    officer = await add_person(conn, name="村干部", phone="13300000001")
    out = await issued(conn, "orange")
    assert await Recipients(topic="alerts.v1", confirm_orange=True)(conn, out)
    assert out.endpoints == [("topic:alerts", "kafka", "alerts.v1")]
    assert out.people == [(f"person:{officer}", "sms", "13300000001")]
    assert [p.id for p in out.confirmers] == [officer]  # orange, with 叫应 for orange
    # storm mode off (no limit): nothing held
    assert await StormHold(StormLimit(StormPolicy(limit=0)))(conn, out)
    assert out.held == set()
    assert await Ledger()(conn, out)
    rows = await conn.fetch("SELECT recipient, state FROM alerting.deliveries ORDER BY id")
    assert [tuple(r.values()) for r in rows] == [
        ("topic:alerts", "pending"),
        (f"person:{officer}", "pending"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM alerting.confirm_tasks") == 1
    assert await store.dispatch_of(conn, out.alert.warning_id, 1) == Dispatch.dispatched
    assert out.created == 2


async def test_storm_mode_holds_a_person_over_the_limit(conn):
    pid = await add_person(conn, name="网格员", role="grid_worker", phone="13300000002")
    for i in range(2):
        await conn.execute(
            """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel, target,
                   idempotency_key, created_at)
               VALUES ('old', $4, $1, 'sms', 't', $2, $3)""",
            f"person:{pid}",
            f"k{i}",
            T0 - timedelta(minutes=10),
            i + 1,
        )
    out = await issued(conn, "blue")
    await Recipients(topic="alerts.v1", confirm_orange=False)(conn, out)
    assert await StormHold(StormLimit(StormPolicy(limit=2)))(conn, out)
    assert out.held == {(f"person:{pid}", "sms")}


def test_the_builder_lists_the_stages_in_order():
    p = builder.build(AlertingSettings(), Topics("t."))
    assert [type(s).__name__ for s in p.event.stages] == [
        "Deduplicate",
        "LockGroup",
        "WithdrawHeldCancel",
        "LoadGroup",
        "IgnoreMuted",
        "Decide",
    ]
    assert [type(s).__name__ for s in p.schedule.stages] == ["RequestRepublication", "GroupTimer"]
    assert [type(s).__name__ for s in p.dispatch.stages] == [
        "SupersedeEarlier",
        "HoldMuted",
        "Recipients",
        "StormHold",
        "Ledger",
    ]


# -- a set of events at once (the consumer's waves) ------------------------------------------

OTHER_VILLAGE = "110101002001"  # a village of another township: a group of its own


def elsewhere(ev: RiskEvent) -> RiskEvent:
    return ev.model_copy(update={"region_code": OTHER_VILLAGE})


async def test_a_batch_decides_its_groups_together_and_each_groups_events_in_order(conn):
    p = builder.build(AlertingSettings(), Topics("t."))
    batch = [event("red"), elsewhere(event("red", "WL9")), event("none", n=2)]
    await p.apply(conn, batch, T0)
    rows = await conn.fetch(
        """SELECT w.region_code, v.version, v.msg_type, v.refs
             FROM alerting.warning_versions v JOIN alerting.warnings w ON w.id = v.warning_id
            ORDER BY 1, 2"""
    )
    got = [(r["region_code"], r["version"], r["msg_type"]) for r in rows]
    # the first township: raised, then all clear (the second event of its group saw the first);
    # the other township: raised
    assert got == [
        (TOWNSHIP, 1, MsgType.Alert),
        (TOWNSHIP, 2, MsgType.Cancel),
        ("110101002000", 1, MsgType.Alert),
    ]
    assert len(rows[1]["refs"]) == 1  # the all-clear references the alert
    # the same batch again (a poll delivered twice) changes nothing
    assert await p.apply(conn, batch, T0) == 0
    assert await conn.fetchval("SELECT count(*) FROM alerting.warning_versions") == 3


async def test_storm_mode_counts_the_rows_of_earlier_versions_in_the_same_batch(conn):
    pid = await add_person(
        conn,
        name="县值班员",
        role="county_duty_officer",
        region_code="110101000000",
        phone="13300000009",
        on_duty=(T0 - timedelta(hours=1), T0 + timedelta(hours=1)),
    )
    p = builder.build(AlertingSettings(storm_limit=1), Topics("t."))
    # two townships' warnings in one batch, both in the county officer's scope
    await p.apply(conn, [event("yellow"), elsewhere(event("yellow", "WL9"))], T0)
    states = [
        r["state"]
        for r in await conn.fetch(
            "SELECT state FROM alerting.deliveries WHERE recipient = $1 ORDER BY id",
            f"person:{pid}",
        )
    ]
    assert sorted(states) == ["held", "pending"]
