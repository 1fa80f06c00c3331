"""A record from a form, a CSV or an Excel sheet, or the reasons it cannot be one; a sheet's rows
with their row and column named; what storing records changes."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson

from services.ingest.domain.atlas.checks import PHONE, REGION_CODE, gcj02_to_wgs84, uscc_problem
from services.ingest.domain.atlas.registries import Field, Registry

CRS_NAMES = {"wgs84": "wgs84", "cgcs2000": "cgcs2000", "gcj02": "gcj02", "": "wgs84"}
TRUE_WORDS = {"1", "true", "yes", "y", "是", "需要", "开放", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "否", "不需要", "关闭", "f", ""}

# ---------------------------------------------------------------------------------------------
# one record


Value = str | int | float | bool | list[str] | None


@dataclass(frozen=True)
class FieldError:
    column: str
    reason: str


@dataclass(frozen=True)
class Record:
    """A record as stored: its key, its column values (``geom`` as EWKT) and a digest of them
    that says whether a stored copy is the same."""

    key: str
    values: dict[str, Value]
    digest: str


def key_of(registry: Registry, values: Mapping[str, Value]) -> str:
    return "/".join(str(values[k]) for k in registry.key)


def _scalar(f: Field, raw: object) -> tuple[Value, str | None]:
    """The field's value from what a form or a sheet gave, or why it is not one."""
    if isinstance(raw, str):
        raw = raw.strip()
    if raw is None or raw == "" or raw == []:
        if f.required:
            return None, "is required"
        return (False if f.type == "bool" else None), None
    if f.type in ("int", "number"):
        try:
            number = float(raw) if isinstance(raw, int | float | str) else math.nan
            number = math.nan if isinstance(raw, bool) else number
        except (TypeError, ValueError):
            return None, f"{raw!r} is not a number"
        if not math.isfinite(number):
            return None, f"{raw!r} is not a number"
        if f.type == "int" and number != int(number):
            return None, f"{raw!r} is not a whole number"
        if f.minimum is not None and number < f.minimum:
            return None, f"{raw!r} is below {f.minimum:g}"
        if f.maximum is not None and number > f.maximum:
            return None, f"{raw!r} is above {f.maximum:g}"
        return (int(number) if f.type == "int" else number), None
    if f.type == "bool":
        text = str(raw).strip().lower()
        if raw is True or text in TRUE_WORDS:
            return True, None
        if raw is False or text in FALSE_WORDS:
            return False, None
        return None, f"{raw!r} is not yes/no (是/否)"
    if f.type == "codes":
        items = raw if isinstance(raw, list) else re.split(r"[;；,，\s]+", str(raw))
        codes = [str(c).strip() for c in items if str(c).strip()]
        bad = [c for c in codes if not REGION_CODE.match(c)]
        if bad:
            return None, f"{bad[0]!r} is not a 12-digit division code"
        return codes, None
    text = str(raw)
    if isinstance(raw, float) and raw.is_integer():
        text = str(int(raw))  # a spreadsheet's number cell holding a code or phone
    if len(text) > f.max_len:
        return None, f"is longer than {f.max_len} characters"
    if f.type == "choice":
        if text in f.choices:
            return text, None
        for value, label in f.choices.items():
            if text == label:
                return value, None
        allowed = "、".join(f"{v}（{lab}）" for v, lab in f.choices.items())
        return None, f"{text!r} is not one of {allowed}"
    if f.type == "phone":
        compact = re.sub(r"[\s()（）]", "", text).removeprefix("+86")
        if not PHONE.match(compact):
            return None, f"{text!r} is not a phone number"
        return compact, None
    if f.type == "uscc":
        problem = uscc_problem(text.upper())
        return (None, problem) if problem else (text.upper(), None)
    if f.type == "region":
        if not REGION_CODE.match(text):
            return None, f"{text!r} is not a 12-digit division code"
        return text, None
    return text, None


def parse_record(registry: Registry, raw: Mapping[str, object]) -> Record | list[FieldError]:
    """A record from named values (a JSON body, or a sheet row by column), or every reason it
    is not one. ``crs`` (wgs84, cgcs2000, gcj02) says which frame ``lon``/``lat`` are in."""
    values: dict[str, Value] = {}
    errors: list[FieldError] = []
    for f in registry.all_fields:
        value, why = _scalar(f, raw.get(f.name))
        if why:
            errors.append(FieldError(f.name, why))
        else:
            values[f.name] = value
    crs = str(raw.get("crs") or "").strip().lower().replace("-", "").replace(" ", "")
    if crs not in CRS_NAMES:
        errors.append(FieldError("crs", f"{crs!r} is not wgs84, cgcs2000 or gcj02"))
    unknown = sorted(set(raw) - {f.name for f in registry.all_fields} - {"crs"})
    if unknown:
        errors.append(FieldError(unknown[0], "is not a field of this registry"))
    if registry.located != "none" and not errors:
        lon, lat = values.pop("lon"), values.pop("lat")
        if (lon is None) != (lat is None):
            errors.append(FieldError("lat" if lat is None else "lon", "give both lon and lat"))
        elif isinstance(lon, float) and isinstance(lat, float):
            if CRS_NAMES[crs] == "gcj02":
                lon, lat = gcj02_to_wgs84(lon, lat)
            values["geom"] = f"SRID=4326;POINT({lon:.7f} {lat:.7f})"
        else:
            values["geom"] = None
    if errors:
        return errors
    return Record(key_of(registry, values), values, digest(values))


def digest(values: Mapping[str, Value]) -> str:
    return hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# a sheet of rows


@dataclass(frozen=True)
class RowError:
    row: int  # the sheet's row number, the heading being row 1
    column: str
    reason: str


def heading_name(registry: Registry, heading: str) -> str | None:
    """The field a column heading names: the field's name, its Chinese label, or the template's
    ``label（name）``."""
    text = heading.strip()
    m = re.search(r"[（(]([a-z][a-z0-9_]*)[)）]\s*$", text)
    if m:
        text = m.group(1)
    for f in registry.all_fields:
        if text in (f.name, f.label):
            return f.name
    if text in ("crs", "坐标系"):
        return "crs"
    return None


def template_headings(registry: Registry) -> list[str]:
    out = [f"{f.label}（{f.name}）" for f in registry.all_fields]
    if registry.located != "none":
        out.append("坐标系（crs）")
    return out


@dataclass(frozen=True)
class ParsedSheet:
    records: list[Record]
    errors: list[RowError]
    rows: list[int] = field(default_factory=list)  # each record's row number


def parse_rows(registry: Registry, rows: Sequence[Sequence[object]]) -> ParsedSheet:
    """Records from a sheet whose first row names the columns. Every bad cell is reported with
    its row and column; a key given twice is an error on its second row."""
    if not rows:
        return ParsedSheet([], [RowError(1, "", "the file is empty: the first row names columns")])
    names: list[str | None] = [heading_name(registry, str(h or "")) for h in rows[0]]
    errors = [
        RowError(1, str(h), "is not a column of this registry (see the template)")
        for h, n in zip(rows[0], names, strict=True)
        if n is None and str(h or "").strip()
    ]
    missing = [f.name for f in registry.all_fields if f.required and f.name not in names]
    errors += [RowError(1, m, "this required column is missing") for m in missing]
    if errors:
        return ParsedSheet([], errors)
    records: list[Record] = []
    numbers: list[int] = []
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if all(c is None or str(c).strip() == "" for c in row):
            continue
        raw = {n: c for n, c in zip(names, row, strict=False) if n is not None}
        parsed = parse_record(registry, raw)
        if isinstance(parsed, list):
            errors += [RowError(number, e.column, e.reason) for e in parsed]
            continue
        if parsed.key in first_row:
            errors.append(
                RowError(number, registry.key[-1], f"repeats row {first_row[parsed.key]}")
            )
            continue
        first_row[parsed.key] = number
        records.append(parsed)
        numbers.append(number)
    return ParsedSheet(records, errors, numbers)


def export_row(registry: Registry, stored: Mapping[str, object]) -> list[object]:
    """A stored record (as the adapter reads it) as a sheet row in template order; lists are
    joined with ``;`` so that the file imports again unchanged."""
    row: list[object] = []
    for f in registry.all_fields:
        v = stored.get(f.name)
        row.append(";".join(v) if isinstance(v, list) else v)
    if registry.located != "none":
        row.append("wgs84")
    return row


# ---------------------------------------------------------------------------------------------
# what changes when records are stored


Action = Literal["create", "update", "unchanged"]


def classify(records: Iterable[Record], stored: Mapping[str, str]) -> dict[str, Action]:
    """Per key: created, updated or unchanged, given the digests stored now."""
    out: dict[str, Action] = {}
    for r in records:
        was = stored.get(r.key)
        out[r.key] = "create" if was is None else "unchanged" if was == r.digest else "update"
    return out
