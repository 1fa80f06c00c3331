"""Upstream warnings in CAP 1.2 (and its national profile GB/T 35965.1-2018) → ``UpstreamWarning``.

Pure: bytes in, a parsed warning or a :class:`CapRejected` with the reason out.

- Every message is validated against the official OASIS schema (``schemas/CAP-v1.2.xsd``): any
  schema-valid CAP 1.2 message from any sender is accepted; an invalid one is refused with the
  schema's first complaint and its line.
- The parser never resolves entities, never reads the network, and refuses DTDs (no XXE, no
  billion laughs).
- The level: the colour named in the event (``暴雨红色预警`` → red), else a ``level`` /
  ``预警级别`` / ``颜色`` parameter, else CAP severity (Extreme → red, Severe → orange,
  Moderate → yellow, Minor → blue).
- The regions: ``geocode`` values named as administrative division codes (``行政区划代码``,
  GB/T 2260, ``adcode``) of 6, 9 or 12 digits, padded to 12. A valid message without any
  (another country's, say) is accepted and relayed; it places no station at risk.
- ``references`` ("sender,identifier,sent" …) link an Update or Cancel to what it replaces.
- An ``<alert>`` in no namespace is the national platform's GB/T 35965.1 message, read by
  ``national``.
- Then the rules CAP writes down beyond its schema (``caprules``): identifiers, references,
  polygons, circles, altitude and ceiling.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from services.ingest.domain import capsig, national
from services.ingest.domain.model import ADMIN_CODE, COLOURS, CapRejected, CapWarning
from shared import caprules
from shared.capxml import NS, cap_schema, safe_parser
from shared.contracts import LevelName

__all__ = ["MAX_BYTES", "CapRejected", "CapWarning", "parse_cap"]

MAX_BYTES = 1 << 20

_SEVERITY: dict[str, LevelName] = {
    "Extreme": "red",
    "Severe": "orange",
    "Moderate": "yellow",
    "Minor": "blue",
}
_LEVEL_PARAMS = {"level", "预警级别", "颜色", "color", "colour", "signal_level"}


_schema = cap_schema
_parser = safe_parser


def parse_cap(data: bytes, *, trusted_ca: str | None = None) -> CapWarning:
    """``trusted_ca``: a PEM file of the certificates a signed message's signer must chain to (see
    ``capsig``); without them a signed message must verify against its own certificate."""
    if len(data) > MAX_BYTES:
        raise CapRejected(f"a CAP message is at most {MAX_BYTES} bytes")
    try:
        doc = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise CapRejected(f"not well-formed XML: {exc}") from exc
    if doc.getroottree().docinfo.doctype:
        raise CapRejected("a DOCTYPE is not allowed in CAP")
    if national.is_national(doc):
        return national.read_national(doc)
    schema = _schema()
    if not schema.validate(doc):
        err = schema.error_log.last_error
        where = f"line {err.line}: " if err is not None else ""
        raise CapRejected(f"not valid CAP 1.2: {where}{err.message if err else 'invalid'}")
    try:
        caprules.check(doc)
    except caprules.CapRuleBroken as exc:
        raise CapRejected(f"not valid CAP 1.2: {exc}") from exc
    capsig.verify(data, doc, trusted_ca=trusted_ca)
    return _read(doc)


def _text(el: etree._Element, path: str) -> str:
    found = el.find(path, {"c": NS})
    return (found.text or "").strip() if found is not None else ""


def _read(doc: etree._Element) -> CapWarning:
    msg_type = _text(doc, "c:msgType")
    if msg_type not in ("Alert", "Update", "Cancel"):
        raise CapRejected(f"msgType {msg_type!r} carries no warning (Alert, Update or Cancel)")
    infos = doc.findall("c:info", {"c": NS})
    if not infos and msg_type != "Cancel":
        raise CapRejected("an Alert or Update needs at least one info block")
    # the first info in Chinese if there is one, else the first
    info = next((i for i in infos if _text(i, "c:language").startswith("zh")), None)
    info = info if info is not None else (infos[0] if infos else None)
    event = _text(info, "c:event") if info is not None else ""
    references = _text(doc, "c:references").split()
    regions: list[str] = []
    for i in infos:
        for gc in i.findall("c:area/c:geocode", {"c": NS}):
            value = _text(gc, "c:value")
            if not _is_admin_code_name(_text(gc, "c:valueName")):
                continue  # SAME, FIPS, EMMA … codes of other systems
            if ADMIN_CODE.match(value) and value.ljust(12, "0") not in regions:
                regions.append(value.ljust(12, "0"))
    expires = _text(info, "c:expires") if info is not None else ""
    return CapWarning(
        identifier=_text(doc, "c:identifier"),
        sender=_text(doc, "c:sender"),
        sent=datetime.fromisoformat(_text(doc, "c:sent")),
        status=_text(doc, "c:status"),
        msg_type=msg_type,
        references=references,
        event=event,
        level=_level(info),
        headline=_text(info, "c:headline") if info is not None else "",
        region_codes=regions,
        expires=datetime.fromisoformat(expires) if expires else None,
    )


def _is_admin_code_name(name: str) -> bool:
    """A geocode naming a Chinese administrative division code (GB/T 2260, and the 12-digit
    statistical codes of townships and villages)."""
    n = name.lower().replace(" ", "")
    return "行政区" in n or "2260" in n or n in {"adcode", "admincode", "admin_code", "区划代码"}


def _level(info: etree._Element | None) -> LevelName:
    if info is None:
        return "none"
    event = _text(info, "c:event").lower()
    for word, level in COLOURS:
        if word in event:
            return level
    for p in info.findall("c:parameter", {"c": NS}):
        if _text(p, "c:valueName").lower() in _LEVEL_PARAMS:
            value = _text(p, "c:value").lower()
            for word, level in COLOURS:
                if word in value:
                    return level
    return _SEVERITY.get(_text(info, "c:severity"), "none")
