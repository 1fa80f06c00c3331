"""The short form of ``make chaos`` (bench/chaos.py), in CI: the whole pipeline under a steady
push while ingest, risk and alerting are each killed with SIGKILL, PostgreSQL is restarted and
the first SMS provider goes down and then turns slow. Afterwards the books balance: every reading
answered 202 stored once, every dispatched warning version texted to every cadre exactly once."""

from __future__ import annotations

from bench.chaos import Plan, report, run


async def test_short_chaos_loses_nothing_and_doubles_nothing(tmp_path):
    plan = Plan()
    books = await run(plan, tmp_path)
    summary = report(plan, books)
    assert books.kills == {"ingest": 1, "risk": 1, "alerting": 1}, summary
    assert books.postgres_restarts == 1, summary
    assert books.accepted > 0, summary
    assert books.stored == books.accepted, summary
    assert books.dispatched >= 2, summary  # warnings were issued and cancelled under the faults
    assert books.sms_sent == books.dispatched * plan.stations, summary
    assert books.provider_messages == books.sms_sent, summary
    assert books.lost == [], summary
    assert books.doubled == [], summary
