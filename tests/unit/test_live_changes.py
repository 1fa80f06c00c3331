"""What a change notification says and who hears of it (services/gateway/domain/live.py)."""

from __future__ import annotations

import orjson

from services.gateway.domain.live import RESYNC, Change, parse


def test_a_notification_is_read_and_anything_else_ignored():
    doc = {"kind": "warning", "warnings": [{"id": "w1", "region": "110101001000"}], "more": False}
    assert parse(orjson.dumps(doc).decode()) == Change("warning", (("w1", "110101001000"),))
    assert parse("not json") is None
    assert parse('{"kind": "drop table"}') is None
    assert parse('{"warnings": []}') is None
    assert parse('{"kind": "warning", "warnings": [{"id": "w1"}]}') is None


def test_an_operator_hears_only_of_warnings_in_their_region():
    change = Change("delivery", (("w1", "110101001000"), ("w2", "120101001000")))
    assert change.seen_by("110101") == Change("delivery", (("w1", "110101001000"),))
    assert change.seen_by("") == change
    assert change.seen_by("130") is None
    # a list cut short may hold one of theirs: they hear of it, without the others' ids
    cut = Change("warning", (("w2", "120101001000"),), more=True)
    assert cut.seen_by("110101") == Change("warning", (), more=True)
    assert RESYNC.seen_by("130") == RESYNC


def test_a_change_is_one_server_sent_event():
    sse = Change("confirmation", (("w1", "110101001000"),)).as_sse(7)
    lines = sse.decode().split("\n")
    assert lines[:2] == ["id: 7", "event: change"]
    assert orjson.loads(lines[2].removeprefix("data: ")) == {
        "kind": "confirmation",
        "warnings": ["w1"],
        "more": False,
    }
    assert sse.endswith(b"\n\n")
