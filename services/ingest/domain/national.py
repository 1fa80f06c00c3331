"""The national emergency-warning release system's message (国家突发事件预警信息发布系统, the
GB/T 35965.1 profile as the provincial and national platforms exchange it) → ``CapWarning``.

It is CAP's shape without CAP's namespace, and with its own fields:

- ``<alert>`` in no namespace; ``<sender>`` the issuing body's name and ``<senderCode>`` its
  14-digit code (ZZZZZZDDDUUUXX: the division, the department, the unit); ``<identifier>`` is
  ``senderCode_YYYYMMDDHHMISS``;
- times as ``2020-02-05 10:45:00+08:00`` (Beijing time, a space or a T);
- ``<code>``: one ``<method>`` per channel (SMS, SPEAKER, WEB, LED, TV …) with its own text (the
  raw document is kept, so are they);
- ``<references>``: the identifiers of the first message of the event (no CAP triples);
- ``<info>``: ``<eventType>`` the event's code (11B03 rainstorm, 11B06 gale …), ``<severity>``
  a colour (Red, Orange, Yellow, Blue, Unknown); empty elements (``<onset/>``, ``<polygon/>``)
  mean absent;
- ``<geocode>``: a comma-separated list of division codes.

A malformed message is refused naming the element. Pure: an element tree in."""

from __future__ import annotations

import re
from datetime import datetime

from lxml import etree

from services.ingest.domain.model import ADMIN_CODE, COLOURS, CapRejected, CapWarning
from shared import caprules
from shared.contracts import LevelName

_SEVERITY: dict[str, LevelName] = {
    "Red": "red",
    "Orange": "orange",
    "Yellow": "yellow",
    "Blue": "blue",
}
# the event codes this table names; any other is named by the message's headline
EVENT_TYPES = {"11B03": "暴雨", "11B06": "大风"}
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
_SENDER_CODE = re.compile(r"^\d{14}$")
_EVENT_TYPE = re.compile(r"^\d{2}[A-Z]\d{2,3}$")


def is_national(doc: etree._Element) -> bool:
    return doc.tag == "alert"


def _text(el: etree._Element | None, tag: str) -> str:
    found = el.find(tag) if el is not None else None
    return (found.text or "").strip() if found is not None else ""


def _required(el: etree._Element | None, tag: str, where: str = "") -> str:
    value = _text(el, tag)
    if not value:
        raise CapRejected(f"national format: <{where}{tag}> is missing or empty")
    return value


def _time(value: str, tag: str) -> datetime:
    if not _TIME.match(value):
        raise CapRejected(
            f"national format: <{tag}> {value!r} is not a date-time such as "
            "2020-02-05 10:45:00+08:00"
        )
    return datetime.fromisoformat(value)


def read_national(doc: etree._Element) -> CapWarning:
    identifier = _required(doc, "identifier")
    if caprules.RESTRICTED.search(identifier):
        raise CapRejected(f"national format: <identifier> {identifier!r} holds a space or comma")
    _required(doc, "sender")
    sender_code = _required(doc, "senderCode")
    if not _SENDER_CODE.match(sender_code):
        raise CapRejected(f"national format: <senderCode> {sender_code!r} is not 14 digits")
    sent = _time(_required(doc, "sendTime"), "sendTime")
    status = _required(doc, "status")
    if status not in ("Actual", "Exercise", "Test", "Draft"):
        raise CapRejected(f"national format: <status> {status!r} is not Actual, Exercise or Test")
    msg_type = _required(doc, "msgType")
    if msg_type not in ("Alert", "Update", "Cancel"):
        raise CapRejected(
            f"national format: <msgType> {msg_type!r} carries no warning (Alert, Update or Cancel)"
        )
    references = [r for r in re.split(r"[\s,]+", _text(doc, "references")) if r]
    if msg_type in ("Update", "Cancel") and not references:
        raise CapRejected(
            f"national format: <references> is empty: an {msg_type} names the first message"
        )
    infos = doc.findall("info")
    if not infos and msg_type != "Cancel":
        raise CapRejected("national format: an Alert or Update needs an <info>")
    info = next((i for i in infos if _text(i, "language").startswith("zh")), None)
    info = info if info is not None else (infos[0] if infos else None)
    event_type = _text(info, "eventType")
    if info is not None and not _EVENT_TYPE.match(event_type):
        raise CapRejected(
            f"national format: <info><eventType> {event_type!r} is not an event code such as 11B03"
        )
    severity = _text(info, "severity")
    if info is not None and severity not in (*_SEVERITY, "Unknown"):
        raise CapRejected(
            f"national format: <info><severity> {severity!r} is not Red, Orange, Yellow, Blue "
            "or Unknown"
        )
    headline = _text(info, "headline")
    regions: list[str] = []
    for i in infos:
        for area in i.findall("area"):
            for code in (c.strip() for c in _text(area, "geocode").split(",")):
                if not code:
                    continue
                if not ADMIN_CODE.match(code):
                    raise CapRejected(
                        f"national format: <area><geocode> {code!r} is not a division code"
                    )
                if code.ljust(12, "0") not in regions:
                    regions.append(code.ljust(12, "0"))
            try:
                if _text(area, "polygon"):
                    caprules.polygon(_text(area, "polygon"))
                if _text(area, "circle"):
                    caprules.circle(_text(area, "circle"))
            except caprules.CapRuleBroken as exc:
                raise CapRejected(f"national format: {exc}") from exc
    if infos and not regions:
        raise CapRejected("national format: <area><geocode> names no division")
    expires = _text(info, "expires")
    return CapWarning(
        identifier=identifier,
        sender=sender_code,
        sent=sent,
        status=status,
        msg_type=msg_type,
        references=references,
        event=EVENT_TYPES.get(event_type, headline),
        level=_level(severity, headline),
        headline=headline,
        region_codes=regions,
        expires=_time(expires, "expires") if expires else None,
    )


def _level(severity: str, headline: str) -> LevelName:
    if severity in _SEVERITY:
        return _SEVERITY[severity]
    for word, level in COLOURS:
        if word in headline:
            return level
    return "none"
