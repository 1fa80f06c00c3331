"""Our versions in the national release system's message form: what ingest's reader of that form
(built on a real provincial message) reads back is what we said — identifier, sender code, the
level as a colour, every division, the earlier versions — and a hazard with no event code of the
standard is refused by name, not given a guessed one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from services.alerting.domain.capout import CapVersion
from services.alerting.domain.nationalout import NoEventType, national_xml
from services.ingest.domain.model import CapWarning
from services.ingest.domain.national import read_national
from shared.capxml import safe_parser
from shared.contracts import Level

SENT = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
SENDER = "51111200000001"


def version(**kw: object) -> CapVersion:
    base: dict[str, object] = {
        "identifier": f"{SENDER}_20260701160000_3_v2",
        "sender": SENDER,
        "sender_name": "乐山市五通桥区应急管理局",
        "sent": SENT,
        "status": "Actual",
        "msg_type": "Update",
        "kind": "public",
        "references": [f"{SENDER},{SENDER}_20260701153000_3,2026-07-01T15:30:00+08:00"],
        "hazard": "rainstorm",
        "level": Level.orange,
        "region_code": "511112000000",
        "headline": "五通桥区竹根镇、五通桥区牛华镇变更为暴雨橙色预警（II级）",
        "description": "经会商研判……",
        "station_ids": [],
        "expires": SENT + timedelta(hours=6),
        "area_desc": "五通桥区竹根镇、五通桥区牛华镇",
        "areas": ["511112100000", "511112101000"],
        "event_type": "11B03",
    }
    return CapVersion(**{**base, **kw})  # type: ignore[arg-type]


def read(doc: bytes) -> CapWarning:
    return read_national(etree.fromstring(doc, safe_parser()))


def test_what_we_say_is_what_the_national_reader_reads():
    doc = national_xml(version(), sender_code=SENDER, sms="短信正文")
    w = read(doc)
    assert w.identifier == f"{SENDER}_20260701160000_3_v2"
    assert w.sender == SENDER
    assert w.msg_type == "Update"
    assert w.level == "orange"
    assert w.event == "暴雨"
    assert w.region_codes == ["511112100000", "511112101000"]
    assert w.references == [f"{SENDER}_20260701153000_3"]
    assert w.sent == SENT
    root = etree.fromstring(doc, safe_parser())
    assert root.findtext("sendTime") == "2026-07-01 16:00:00+08:00"
    assert root.findtext("info/severity") == "Orange"
    assert root.findtext("info/area/geocode") == "511112100000,511112101000"
    methods = {
        m.findtext("methodName"): m.findtext("message") for m in root.iterfind("code/method")
    }
    assert methods["SMS"] == "短信正文"


def test_a_cancel_names_what_it_ends():
    w = read(national_xml(version(msg_type="Cancel", expires=None), sender_code=SENDER, sms="解除"))
    assert w.msg_type == "Cancel"
    assert w.references == [f"{SENDER}_20260701153000_3"]


def test_a_hazard_without_an_event_code_is_refused_by_name():
    with pytest.raises(NoEventType, match="flood"):
        national_xml(version(hazard="flood", event_type=None), sender_code=SENDER, sms="x")
