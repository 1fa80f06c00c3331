"""Our warning versions in the national release system's own message form (国家突发事件预警信息
发布系统, the GB/T 35965.1 profile as the provincial and national platforms exchange it), for an
upper-level platform that takes that form rather than OASIS CAP.

Its layout follows a real provincial message (``tests/data/national_gale_update.xml``): ``<alert>``
in no namespace; ``<sender>`` the bureau's name and ``<senderCode>`` its 14 digits; times as
``2020-02-05 10:45:00+08:00``; a ``<code>`` block with one ``<method>`` per channel and its own
text (here SMS, the text our SMS carries, and WEB, the long form); ``<references>`` the earlier
versions' identifiers; ``<info>`` with the event code (``<eventType>``), the level as a colour
(``<severity>``) and the ``<geocode>`` list comma-separated. What we leave empty (``<onset/>``,
``<audienceGrp/>``) the national form leaves empty too.

A version whose hazard has no GB/T 35965.1 event code (and was given none) cannot be said in this
form: :class:`NoEventType`. Pure: a version in, bytes out."""

from __future__ import annotations

from lxml import etree

from services.alerting.domain.capout import CapVersion
from services.alerting.domain.lifecycle import BEIJING
from shared.contracts import Level

COLOUR = {Level.blue: "Blue", Level.yellow: "Yellow", Level.orange: "Orange", Level.red: "Red"}


class NoEventType(ValueError):
    """The version's hazard has no event code of the standard, so no national message."""


def national_time(v: CapVersion, which: str) -> str:
    at = {"sent": v.sent, "effective": v.effective or v.sent, "expires": v.expires}[which]
    return at.astimezone(BEIJING).replace(microsecond=0).isoformat(sep=" ") if at else ""


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text:
        el.text = text
    return el


def national_xml(v: CapVersion, *, sender_code: str, sms: str) -> bytes:
    """The national message of a version; ``sms`` is the text our SMS carries."""
    if not v.event_type:
        raise NoEventType(
            f"hazard {v.hazard!r} has no GB/T 35965.1 event type; an officer's warning can give one"
        )
    root = etree.Element("alert")
    _sub(root, "identifier", v.identifier)
    _sub(root, "sender", v.sender_name)
    _sub(root, "senderCode", sender_code)
    _sub(root, "sendTime", national_time(v, "sent"))
    _sub(root, "status", v.status)
    _sub(root, "msgType", v.msg_type)
    _sub(root, "scope", "Public" if v.kind == "public" else "Restricted")
    code = _sub(root, "code")
    for method, message in (("SMS", sms), ("WEB", f"{v.headline}\n{v.description}")):
        m = _sub(code, "method")
        _sub(m, "methodName", method)
        _sub(m, "message", message)
        _sub(m, "audienceGrp")
    _sub(root, "secClassification", "None")
    _sub(root, "note")
    # the earlier versions, by identifier (the national form names no sender or time there)
    _sub(root, "references", " ".join(r.split(",")[1] for r in v.references if "," in r))
    info = _sub(root, "info")
    _sub(info, "language", "zh-CN")
    _sub(info, "eventType", v.event_type)
    if v.msg_type == "Cancel":
        _sub(info, "urgency", "Past")
    else:
        _sub(info, "urgency", "Immediate" if v.level >= Level.orange else "Expected")
    _sub(info, "severity", COLOUR.get(v.level, "Unknown"))
    _sub(info, "certainty", "Likely" if v.areas else "Observed")
    _sub(info, "effective", national_time(v, "effective"))
    _sub(info, "onset")
    _sub(info, "expires", national_time(v, "expires"))
    _sub(info, "senderName", v.sender_name)
    _sub(info, "headline", v.headline)
    _sub(info, "description", v.description)
    _sub(info, "instruction", v.what_to_do)
    _sub(info, "web")
    area = _sub(info, "area")
    _sub(area, "areaDesc", v.area_desc or ",".join(v.area_codes))
    _sub(area, "polygon", v.polygon)
    _sub(area, "circle")
    _sub(area, "geocode", ",".join(v.area_codes))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
