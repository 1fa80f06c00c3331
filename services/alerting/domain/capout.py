"""CAP 1.2 output (GB/T 35965.1 profile) for warning versions, and the Atom feed that lists them.

Pure functions: they take the version's data and return bytes. Every document validates against
the official OASIS schema (tested). Times are Beijing time without fractions, as the profile
asks; ``references`` carries every earlier version as ``sender,identifier,sent``.

An internal alarm has scope ``Restricted`` (responsible persons only); a public warning
``Public``; a drill keeps status ``Exercise`` end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from services.alerting.domain.lifecycle import BEIJING, HAZARD_CN
from services.alerting.domain.messages import instruction
from shared.capxml import NS
from shared.contracts import AlertVersion, Level

ATOM = "http://www.w3.org/2005/Atom"

CATEGORY = {
    "rainstorm": "Met",
    "flood": "Met",
    "gale": "Met",
    "heat": "Met",
    "geohazard": "Geo",
    "forest_fire": "Fire",
    "coal_mine_gas": "Safety",
    "hazardous_chemicals": "CBRNE",
}


@dataclass(frozen=True, slots=True)
class CapVersion:
    identifier: str
    sender: str
    sender_name: str
    sent: datetime
    status: str  # Actual | Exercise | Test
    msg_type: str  # Alert | Update | Cancel
    kind: str  # internal | public
    references: Sequence[str]
    hazard: str
    level: Level
    region_code: str
    headline: str
    description: str
    station_ids: Sequence[str]
    expires: datetime | None = None
    area_desc: str | None = None  # the region in words; its code stands in when unknown
    # an officer's warning: its divisions (empty: region_code), polygon, own instruction, when
    # it takes effect, and its GB/T 35965.1 event type
    areas: Sequence[str] = ()
    polygon: str | None = None
    instruction: str | None = None
    effective: datetime | None = None
    event_type: str | None = None

    @classmethod
    def of(cls, a: AlertVersion, *, sender: str, sender_name: str, kind: str) -> CapVersion:
        """The document of an ``alerts.v1`` version."""
        return cls(
            identifier=a.identifier,
            sender=a.relayed_from or sender,
            sender_name=a.relayed_from or sender_name,
            sent=a.sent,
            status=a.status,
            msg_type=a.msg_type,
            kind=kind,
            references=a.references,
            hazard=a.hazard,
            level=Level.parse(a.level),
            region_code=a.region_code,
            headline=a.headline,
            description=a.description,
            station_ids=a.station_ids,
            expires=a.expires,
            area_desc=a.area_desc,
            areas=a.areas,
            polygon=a.polygon,
            instruction=a.instruction,
            effective=a.effective,
            event_type=a.event_type,
        )

    @property
    def area_codes(self) -> Sequence[str]:
        return self.areas or (self.region_code,)

    @property
    def what_to_do(self) -> str:
        return self.instruction or instruction(self.hazard, self.level, self.msg_type)


def cap_time(t: datetime) -> str:
    return t.astimezone(BEIJING).replace(microsecond=0).isoformat()


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def cap_document(v: CapVersion) -> etree._Element:
    root = etree.Element(f"{{{NS}}}alert", nsmap={None: NS})
    _sub(root, "identifier", v.identifier)
    _sub(root, "sender", v.sender)
    _sub(root, "sent", cap_time(v.sent))
    _sub(root, "status", v.status)
    _sub(root, "msgType", v.msg_type)
    if v.kind == "public":
        _sub(root, "scope", "Public")
    else:
        _sub(root, "scope", "Restricted")
        _sub(root, "restriction", "内部预警，仅限责任人")
    if v.references:
        _sub(root, "references", " ".join(v.references))
    info = _sub(root, "info")
    _sub(info, "language", "zh-CN")
    _sub(info, "category", CATEGORY.get(v.hazard, "Other"))
    name = HAZARD_CN.get(v.hazard, v.hazard)
    _sub(info, "event", f"{name}预警")
    if v.msg_type == "Cancel":
        _sub(info, "responseType", "AllClear")
        _sub(info, "urgency", "Past")
    else:
        _sub(info, "responseType", "Prepare" if v.level <= Level.yellow else "Evacuate")
        _sub(info, "urgency", "Immediate" if v.level >= Level.orange else "Expected")
    _sub(info, "severity", v.level.cap_severity)
    _sub(info, "certainty", "Observed" if not v.areas else "Likely")
    if v.event_type:
        ec = _sub(info, "eventCode")
        _sub(ec, "valueName", "GB/T 35965.1")
        _sub(ec, "value", v.event_type)
    _sub(info, "effective", cap_time(v.effective or v.sent))
    if v.expires is not None:
        _sub(info, "expires", cap_time(v.expires))
    _sub(info, "senderName", v.sender_name)
    _sub(info, "headline", v.headline)
    _sub(info, "description", v.description)
    _sub(info, "instruction", v.what_to_do)
    for value_name, value in (
        ("预警级别", v.level.chinese),
        ("level", f"{v.level.name} {v.level.roman}"),
        ("stations", " ".join(v.station_ids)),
    ):
        p = _sub(info, "parameter")
        _sub(p, "valueName", value_name)
        _sub(p, "value", value)
    area = _sub(info, "area")
    _sub(area, "areaDesc", v.area_desc or "、".join(f"行政区划代码 {c}" for c in v.area_codes))
    if v.polygon:
        _sub(area, "polygon", v.polygon)
    for code in v.area_codes:
        g = _sub(area, "geocode")
        _sub(g, "valueName", "GB/T 2260")
        _sub(g, "value", code)
    return root


def cap_xml(v: CapVersion) -> bytes:
    return etree.tostring(cap_document(v), xml_declaration=True, encoding="UTF-8")


def atom_feed(
    versions: Sequence[CapVersion], *, feed_id: str, title: str, self_url: str, cap_url: str
) -> bytes:
    """An Atom feed of versions, newest first; each entry links its CAP document at
    ``cap_url.format(identifier=…)``."""
    a = f"{{{ATOM}}}"
    feed = etree.Element(f"{a}feed", nsmap={None: ATOM})
    etree.SubElement(feed, f"{a}id").text = feed_id
    etree.SubElement(feed, f"{a}title").text = title
    updated = max((v.sent for v in versions), default=None)
    etree.SubElement(feed, f"{a}updated").text = (
        cap_time(updated) if updated else "1970-01-01T08:00:00+08:00"
    )
    etree.SubElement(feed, f"{a}link", rel="self", href=self_url)
    for v in versions:
        e = etree.SubElement(feed, f"{a}entry")
        etree.SubElement(e, f"{a}id").text = f"urn:cap:{v.identifier}"
        etree.SubElement(e, f"{a}title").text = v.headline
        etree.SubElement(e, f"{a}updated").text = cap_time(v.sent)
        author = etree.SubElement(e, f"{a}author")
        etree.SubElement(author, f"{a}name").text = v.sender_name
        etree.SubElement(e, f"{a}summary").text = v.description
        etree.SubElement(
            e,
            f"{a}link",
            rel="alternate",
            type="application/cap+xml",
            href=cap_url.format(identifier=v.identifier),
        )
        etree.SubElement(e, f"{a}category", term=v.msg_type)
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8")
