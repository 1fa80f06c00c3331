"""CAP output: every combination of hazard, level, message type, status and kind validates against
the official CAP 1.2 schema, and reads back through our own CAP input with the same meaning."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from services.alerting.domain.capout import CATEGORY, CapVersion, atom_feed, cap_document, cap_xml
from services.ingest.domain.cap import parse_cap
from shared.capxml import schema_errors
from shared.contracts import Level

T0 = datetime(2026, 7, 1, 8, 30, 15, 123456, tzinfo=UTC)


def version(hazard: str, level: Level, msg_type: str, status: str, kind: str) -> CapVersion:
    refs = (
        []
        if msg_type == "Alert"
        else ["110101000000,110101000000_20260701163015_7,2026-07-01T16:30:15+08:00"]
    )
    return CapVersion(
        identifier="110101000000_20260701163015_7" + ("" if msg_type == "Alert" else "_v2"),
        sender="110101000000",
        sender_name="某区应急管理局",
        sent=T0,
        status=status,
        msg_type=msg_type,
        kind=kind,
        references=refs,
        hazard=hazard,
        level=level,
        region_code="110101001000",
        headline="清河镇发布暴雨红色预警（I级）",
        description='监测站点 RG1 超过预警阈值 <&> "引号"',
        station_ids=["RG1", "RG2"],
        expires=T0 + timedelta(hours=6),
    )


COMBOS = list(
    itertools.product(
        [*CATEGORY, "earthquake"],
        [Level.blue, Level.yellow, Level.orange, Level.red],
        ["Alert", "Update", "Cancel"],
        ["Actual", "Exercise"],
        ["internal", "public"],
    )
)


@pytest.mark.parametrize(
    ("hazard", "level", "msg_type", "status", "kind"), COMBOS[::7] + COMBOS[-3:]
)
def test_cap_validates_and_reads_back(hazard, level, msg_type, status, kind):
    v = version(hazard, level, msg_type, status, kind)
    assert schema_errors(cap_document(v)) == []
    back = parse_cap(cap_xml(v))
    assert back.identifier == v.identifier
    assert back.msg_type == msg_type
    assert back.status == status
    assert back.level == level.name
    assert back.references == list(v.references)
    assert back.region_codes == ["110101001000"]
    assert back.sent == T0.replace(microsecond=0)


def test_every_combination_validates():
    bad = [c for c in COMBOS if schema_errors(cap_document(version(*c)))]
    assert bad == []


def test_times_are_beijing_without_fractions_and_drills_stay_drills():
    doc = cap_document(version("rainstorm", Level.red, "Alert", "Exercise", "internal"))
    ns = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert doc.findtext("c:sent", namespaces=ns) == "2026-07-01T16:30:15+08:00"
    assert doc.findtext("c:status", namespaces=ns) == "Exercise"
    assert doc.findtext("c:scope", namespaces=ns) == "Restricted"
    public = cap_document(version("rainstorm", Level.red, "Alert", "Actual", "public"))
    assert public.findtext("c:scope", namespaces=ns) == "Public"
    assert public.find("c:restriction", namespaces=ns) is None


def test_a_schema_violation_is_reported():
    doc = cap_document(version("rainstorm", Level.red, "Alert", "Actual", "public"))
    ns = "{urn:oasis:names:tc:emergency:cap:1.2}"
    doc.find(f"{ns}status").text = "Rumour"  # not a CAP status
    assert schema_errors(doc)


def test_atom_feed_lists_entries_with_links():
    vs = [
        version("rainstorm", Level.red, "Alert", "Actual", "public"),
        version("flood", Level.blue, "Update", "Actual", "internal"),
    ]
    feed = etree.fromstring(
        atom_feed(
            vs,
            feed_id="urn:x",
            title="t",
            self_url="http://h/feed",
            cap_url="http://h/cap/{identifier}.xml",
        )
    )
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = feed.findall("a:entry", ns)
    assert len(entries) == 2
    link = entries[0].find("a:link", ns)
    assert link.get("type") == "application/cap+xml"
    assert link.get("href") == f"http://h/cap/{vs[0].identifier}.xml"
