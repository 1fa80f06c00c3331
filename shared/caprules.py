"""What CAP 1.2 requires beyond its XML schema (OASIS CAP v1.2, section 3), checked on a message
the schema has accepted. Each refusal names the rule and the element.

- ``identifier`` and ``sender``: no spaces, commas or restricted characters (``<``, ``&``)
  (3.2.1 ``identifier``, ``sender``);
- ``references``: space-separated ``sender,identifier,sent`` triples, ``sent`` a CAP date-time
  (3.2.1 ``references``); an Update or Cancel names what it replaces, so it has one at least;
- ``polygon``: at least four ``lat,lon`` pairs, the first and the last the same, every one a
  WGS 84 point (3.2.4 ``polygon``);
- ``circle``: ``lat,lon radius``, the radius in kilometres and not negative (3.2.4 ``circle``);
- ``ceiling`` only with ``altitude``, and not below it (3.2.4 ``altitude``, ``ceiling``).

Pure: an element tree in, nothing out or a :class:`CapRuleBroken`."""

from __future__ import annotations

import math
import re

from lxml import etree

from shared.capxml import NS

RESTRICTED = re.compile(r"[\s,<&]")
# CAP's date-time: 2026-07-01T09:30:00+08:00 (no fractions, an offset always, 3.3.2)
_CAP_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
_C = {"c": NS}


class CapRuleBroken(ValueError):
    """A schema-valid message that breaks one of CAP's written rules."""


def check(doc: etree._Element) -> None:
    for tag in ("identifier", "sender"):
        value = _text(doc, tag)
        if RESTRICTED.search(value):
            raise CapRuleBroken(
                f"<{tag}> {value!r} holds a space, a comma, '<' or '&', which CAP forbids"
            )
    _references(doc)
    for area in doc.iterfind("c:info/c:area", _C):
        for el in area.iterfind("c:polygon", _C):
            polygon(el.text or "")
        for el in area.iterfind("c:circle", _C):
            circle(el.text or "")
        _altitude(area)


def _text(el: etree._Element, tag: str) -> str:
    found = el.find(f"c:{tag}", _C)
    return (found.text or "").strip() if found is not None else ""


def _references(doc: etree._Element) -> None:
    msg_type = _text(doc, "msgType")
    refs = _text(doc, "references").split()
    if msg_type in ("Update", "Cancel") and not refs:
        raise CapRuleBroken(f"<references> is empty: an {msg_type} names the message it replaces")
    for ref in refs:
        parts = ref.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapRuleBroken(
                f"<references> entry {ref!r} is not a sender,identifier,sent triple"
            )
        if not _CAP_TIME.match(parts[2]):
            raise CapRuleBroken(
                f"<references> entry {ref!r}: {parts[2]!r} is not a CAP date-time "
                "(such as 2026-07-01T09:30:00+08:00)"
            )


def _point(pair: str, where: str) -> tuple[float, float]:
    lat_s, sep, lon_s = pair.partition(",")
    try:
        if not sep:
            raise ValueError
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise CapRuleBroken(f"<{where}> point {pair!r} is not lat,lon in numbers") from None
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise CapRuleBroken(f"<{where}> point {pair!r} lies outside -90..90, -180..180")
    return lat, lon


def polygon(text: str) -> None:
    pairs = text.split()
    if len(pairs) < 4:
        raise CapRuleBroken(
            f"<polygon> has {len(pairs)} points; a polygon has four at least, the first "
            "repeated last"
        )
    points = [_point(p, "polygon") for p in pairs]
    if points[0] != points[-1]:
        raise CapRuleBroken("<polygon> is not closed: its last point must be its first")


def circle(text: str) -> None:
    parts = text.split()
    if len(parts) != 2:
        raise CapRuleBroken(f"<circle> {text.strip()!r} is not 'lat,lon radius'")
    _point(parts[0], "circle")
    try:
        radius = float(parts[1])
    except ValueError:
        raise CapRuleBroken(f"<circle> radius {parts[1]!r} is not a number") from None
    if not math.isfinite(radius) or radius < 0:
        raise CapRuleBroken(f"<circle> radius {parts[1]!r} must be 0 km or more")


def _altitude(area: etree._Element) -> None:
    altitude, ceiling = _text(area, "altitude"), _text(area, "ceiling")
    if ceiling and not altitude:
        raise CapRuleBroken("<ceiling> is given without <altitude>, which CAP forbids")
    if altitude and ceiling and float(ceiling) < float(altitude):
        raise CapRuleBroken(f"<ceiling> {ceiling} lies below <altitude> {altitude}")
