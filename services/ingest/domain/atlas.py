"""The 一张图's registries as data: what each registry holds, how a row of a form, a CSV or an
Excel sheet becomes a record (or the reasons it cannot), and the checks the records need (the
unified social credit code's check character, phone numbers, division codes, GCJ-02 positions).

Pure: no I/O. The adapter (``services.ingest.adapters.atlas``) stores what this returns; the sheet
reader (``services.ingest.adapters.sheets``) hands rows of strings to :func:`parse_rows`.

Positions are stored in WGS 84 (EPSG:4326). CGCS2000, the national frame, differs from WGS 84 by
centimetres, less than any register's survey, and is taken as is. A source that flags its
positions as GCJ-02 (the frame of Chinese web maps) has them converted to WGS 84 here.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import orjson

FieldType = Literal["text", "int", "number", "bool", "choice", "codes", "phone", "uscc", "region"]
Located = Literal["required", "optional", "none"]

# ---------------------------------------------------------------------------------------------
# checks


_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_SHAPE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{2}\d{6}[0-9A-HJ-NP-RTUWXY]{10}$")


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code (GB 32100-2015 §5: weights 3^i mod 31
    over the 31-character alphabet without I, O, Z, S, V)."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """Why ``code`` is not a unified social credit code, or None when it is one."""
    if len(code) != 18:
        return f"a unified social credit code has 18 characters, not {len(code)}"
    if not _USCC_SHAPE.match(code):
        return "a unified social credit code uses digits and capitals other than I, O, Z, S, V"
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        return f"the check character is {code[17]!r}, the first 17 characters give {expected!r}"
    return None


_PHONE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8}(-\d{1,6})?|\d{3,8})$")
_REGION = re.compile(r"^\d{12}$")


def region_prefix(code: str) -> str:
    """The prefix a division code's area covers: a county ``511124000000`` covers ``511124``."""
    for keep, zeros in ((2, 10), (4, 8), (6, 6), (9, 3)):
        if code[keep:] == "0" * zeros:
            return code[:keep]
    return code


# ---------------------------------------------------------------------------------------------
# GCJ-02 → WGS 84


_A = 6378245.0
_EE = 0.00669342162296594323


def _outside_china(lon: float, lat: float) -> bool:
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _delta(lon: float, lat: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    dlat += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    dlat += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    dlat += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    dlon += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    dlon += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    dlon += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2 / 3
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """The published GCJ-02 offset applied to a WGS 84 position (unchanged outside China)."""
    if _outside_china(lon, lat):
        return lon, lat
    dlon, dlat = _delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """The WGS 84 position whose GCJ-02 offset lands on (lon, lat): the offset has no closed
    inverse, so it is iterated until it agrees within about a millimetre."""
    if _outside_china(lon, lat):
        return lon, lat
    wlon, wlat = lon, lat
    for _ in range(30):
        glon, glat = wgs84_to_gcj02(wlon, wlat)
        dlon, dlat = glon - lon, glat - lat
        wlon, wlat = wlon - dlon, wlat - dlat
        if abs(dlon) < 1e-9 and abs(dlat) < 1e-9:
            break
    return wlon, wlat


# ---------------------------------------------------------------------------------------------
# registries


@dataclass(frozen=True)
class Field:
    name: str
    label: str  # the column's Chinese heading in templates and exports
    type: FieldType = "text"
    required: bool = False
    choices: Mapping[str, str] = field(default_factory=dict)  # value → Chinese label
    max_len: int = 200
    minimum: float | None = None
    maximum: float | None = None
    references: str | None = None  # the registry whose id this field names


@dataclass(frozen=True)
class Registry:
    kind: str  # the path segment and the registry's name
    table: str  # atlas.<table>
    title: str  # Chinese name
    fields: tuple[Field, ...]  # after the common ones
    located: Located = "required"
    key: tuple[str, ...] = ("id",)
    has_region: bool = True
    has_contact: bool = True

    @property
    def all_fields(self) -> tuple[Field, ...]:
        common: list[Field] = []
        if self.key == ("id",):
            common.append(ID_FIELDS.get(self.kind, _ID))
        if self.kind != "stock":
            common.append(Field("name", "名称", required=True))
        if self.has_region:
            common.append(Field("region_code", "行政区划代码", "region", required=True))
        if self.located != "none":
            req = self.located == "required"
            common += [
                Field("lon", "经度", "number", required=req, minimum=-180, maximum=180),
                Field("lat", "纬度", "number", required=req, minimum=-90, maximum=90),
            ]
            common.append(Field("address", "地址", max_len=500))
        if self.has_contact:
            common += [
                Field("contact_name", "联系人", max_len=50),
                Field("contact_phone", "联系电话", "phone"),
            ]
        return (*common, *self.fields)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's data columns (lon/lat are stored as ``geom``)."""
        names = [f.name for f in self.all_fields if f.name not in ("lon", "lat")]
        if self.located != "none":
            names.append("geom")
        return tuple(names)

    def field(self, name: str) -> Field:
        for f in self.all_fields:
            if f.name == name:
                return f
        raise KeyError(name)


_ID = Field("id", "编号", required=True, max_len=64)
ID_FIELDS = {"enterprises": Field("id", "统一社会信用代码", "uscc", required=True)}

SECTORS = {
    "hazchem_production": "危险化学品生产",
    "hazchem_storage": "危险化学品经营（储存）",
    "hazchem_use": "危险化学品使用",
    "coal_mine": "煤矿",
    "non_coal_mine": "非煤矿山",
    "tailings_dam": "尾矿库",
    "dust_explosion": "粉尘涉爆",
    "metallurgy": "冶金",
    "fireworks": "烟花爆竹",
    "other": "其他工贸",
}
RISK_GRADES = {"red": "重大风险", "orange": "较大风险", "yellow": "一般风险", "blue": "低风险"}
TEAM_TYPES = {
    "fire_rescue": "综合性消防救援",
    "forest_fire": "森林消防",
    "flood": "防汛抗旱",
    "mine_rescue": "矿山救护",
    "hazchem": "危险化学品救援",
    "geohazard": "地质灾害救援",
    "medical": "医疗救护",
    "militia": "民兵应急",
    "social": "社会救援力量",
    "other": "其他",
}
TARGET_TYPES = {
    "school": "学校",
    "kindergarten": "幼儿园",
    "hospital": "医院",
    "nursing_home": "养老机构",
    "community": "社区",
    "village": "村组",
    "other": "其他",
}
SITE_TYPES = {
    "landslide": "滑坡",
    "collapse": "崩塌",
    "debris_flow": "泥石流",
    "subsidence": "地面塌陷",
    "unstable_slope": "不稳定斜坡",
    "other": "其他",
}
HAZARDS = {
    "comprehensive": "总体预案",
    "flood": "防汛抗旱",
    "torrent": "山洪",
    "geohazard": "地质灾害",
    "rainstorm": "暴雨",
    "forest_fire": "森林火灾",
    "earthquake": "地震",
    "hazchem": "危险化学品",
    "mine": "矿山",
    "waterlogging": "城市内涝",
    "snow_ice": "低温雨雪冰冻",
    "other": "其他",
}
LEVELS = {"I": "Ⅰ级", "II": "Ⅱ级", "III": "Ⅲ级", "IV": "Ⅳ级"}
DEPOT_LEVELS = {"city": "市级", "county": "县级", "township": "乡镇级", "village": "村级"}
HAZARD_GRADES = {"1": "一级", "2": "二级", "3": "三级", "4": "四级"}

REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (
        Registry(
            "enterprises",
            "enterprises",
            "企业",
            (
                Field("sector", "行业类别", "choice", required=True, choices=SECTORS),
                Field("risk_grade", "安全风险等级", "choice", choices=RISK_GRADES),
                Field("monitoring_required", "须在线监测", "bool"),
                Field("safety_officer_name", "安全负责人", max_len=50),
                Field("safety_officer_phone", "安全负责人电话", "phone"),
                Field("employees", "从业人员", "int", minimum=0),
            ),
        ),
        Registry(
            "major_hazards",
            "major_hazards",
            "重大危险源",
            (
                Field(
                    "enterprise_id", "企业统一社会信用代码", "uscc", True, references="enterprises"
                ),
                Field("grade", "危险源等级", "choice", required=True, choices=HAZARD_GRADES),
                Field("substances", "主要危险物质", max_len=500),
            ),
        ),
        Registry(
            "teams",
            "teams",
            "救援队伍",
            (
                Field("team_type", "队伍类型", "choice", required=True, choices=TEAM_TYPES),
                Field("members", "人数", "int", required=True, minimum=0),
                Field("equipment", "主要装备", max_len=2000),
                Field("on_call_name", "值班联系人", required=True, max_len=50),
                Field("on_call_phone", "值班电话", "phone", required=True),
            ),
        ),
        Registry(
            "depots",
            "depots",
            "物资储备库",
            (
                Field("depot_level", "储备库级别", "choice", choices=DEPOT_LEVELS),
                Field("area_m2", "库房面积（平方米）", "number", minimum=0),
            ),
        ),
        Registry(
            "stock",
            "stock",
            "储备物资",
            (
                Field("depot_id", "储备库编号", required=True, max_len=64, references="depots"),
                Field("item", "物资名称", required=True, max_len=100),
                Field("quantity", "数量", "number", required=True, minimum=0),
                Field("unit", "单位", required=True, max_len=20),
            ),
            located="none",
            key=("depot_id", "item"),
            has_region=False,
            has_contact=False,
        ),
        Registry(
            "shelters",
            "shelters",
            "避难场所",
            (
                Field("capacity_persons", "容纳人数", "int", required=True, minimum=0),
                Field("area_m2", "有效避难面积（平方米）", "number", minimum=0),
                Field("is_open", "是否开放", "bool"),
                Field("serves", "服务区域（区划代码，分号分隔）", "codes", max_len=2000),
                Field("service_radius_m", "服务半径（米）", "int", minimum=0, maximum=50_000),
            ),
        ),
        Registry(
            "experts",
            "experts",
            "专家",
            (
                Field("expertise", "专业领域", required=True, max_len=100),
                Field("title", "职称", max_len=50),
                Field("organisation", "工作单位", max_len=200),
            ),
            located="optional",
        ),
        Registry(
            "plans",
            "plans",
            "应急预案",
            (
                Field("hazard", "灾种", "choice", required=True, choices=HAZARDS),
                Field("response_level", "最高响应级别", "choice", choices=LEVELS),
                Field("issuer", "发布单位", max_len=200),
                Field("document", "预案文件", max_len=500),
                Field("issued_on", "发布日期", max_len=10),
            ),
            located="none",
        ),
        Registry(
            "targets",
            "targets",
            "重点防护目标",
            (
                Field("target_type", "目标类型", "choice", required=True, choices=TARGET_TYPES),
                Field("population", "人数", "int", required=True, minimum=0),
            ),
        ),
        Registry(
            "hazard_sites",
            "hazard_sites",
            "地质灾害隐患点",
            (
                Field("site_type", "灾害类型", "choice", required=True, choices=SITE_TYPES),
                Field("households", "威胁户数", "int", minimum=0),
                Field("persons", "威胁人数", "int", required=True, minimum=0),
                Field("monitor_name", "群测群防员", max_len=50),
                Field("monitor_phone", "群测群防员电话", "phone"),
            ),
        ),
    )
}

CRS_NAMES = {"wgs84": "wgs84", "cgcs2000": "cgcs2000", "gcj02": "gcj02", "": "wgs84"}
_TRUE = {"1", "true", "yes", "y", "是", "需要", "开放", "t"}
_FALSE = {"0", "false", "no", "n", "否", "不需要", "关闭", "f", ""}


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
        if raw is True or text in _TRUE:
            return True, None
        if raw is False or text in _FALSE:
            return False, None
        return None, f"{raw!r} is not yes/no (是/否)"
    if f.type == "codes":
        items = raw if isinstance(raw, list) else re.split(r"[;；,，\s]+", str(raw))
        codes = [str(c).strip() for c in items if str(c).strip()]
        bad = [c for c in codes if not _REGION.match(c)]
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
        if not _PHONE.match(compact):
            return None, f"{text!r} is not a phone number"
        return compact, None
    if f.type == "uscc":
        problem = uscc_problem(text.upper())
        return (None, problem) if problem else (text.upper(), None)
    if f.type == "region":
        if not _REGION.match(text):
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


# ---------------------------------------------------------------------------------------------
# shelter capacity against the people of an area


SQUARE_METRES_PER_PERSON = 1.5  # the plans' figure for an emergency shelter


@dataclass(frozen=True)
class ShelterBalance:
    people: int
    capacity: int
    shortfall: int
    covered: float | None


def shelter_capacity(capacity_persons: int, area_m2: float | None) -> int:
    """Persons a shelter takes: its stated capacity, bounded by its usable area at 1.5 m² a
    person when the area is known."""
    if area_m2 is None:
        return capacity_persons
    return min(capacity_persons, int(area_m2 / SQUARE_METRES_PER_PERSON))


def balance(people: int, capacity: int) -> ShelterBalance:
    return ShelterBalance(
        people=people,
        capacity=capacity,
        shortfall=max(0, people - capacity),
        covered=None if people == 0 else min(1.0, capacity / people),
    )


# ---------------------------------------------------------------------------------------------
# an area: a warning's regions or its polygon


@dataclass(frozen=True)
class Area:
    """What a warning covers: division codes, or a CAP polygon (which, when given, decides what
    is inside; the regions still choose the plans)."""

    regions: tuple[str, ...] = ()
    polygon: str | None = None  # EWKT

    @property
    def prefixes(self) -> list[str]:
        return [region_prefix(c) + "%" for c in self.regions]


def cap_polygon(text: str) -> str:
    """A CAP polygon (``lat,lon lat,lon …``, first point repeated last, at least four points)
    as EWKT in WGS 84; an unclosed ring is closed. Raises ValueError with the reason."""
    points: list[tuple[float, float]] = []
    for pair in text.split():
        try:
            lat_s, lon_s = pair.split(",")
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise ValueError(f"{pair!r} is not a 'lat,lon' pair") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not math.isfinite(lat + lon):
            raise ValueError(f"{pair!r} is not a position")
        points.append((lon, lat))
    if points and points[0] != points[-1]:
        points.append(points[0])
    if len(points) < 4:
        raise ValueError("a polygon needs at least three distinct points")
    ring = ", ".join(f"{lon} {lat}" for lon, lat in points)
    return f"SRID=4326;POLYGON(({ring}))"


LAYERS = ("targets", "hazard_sites", "enterprises", "shelters", "teams", "depots")


def feature_collection(
    surroundings: Mapping[str, object], area_geojson: Mapping[str, object] | None = None
) -> dict[str, object]:
    """The surroundings as one GeoJSON FeatureCollection (RFC 7946, WGS 84): every located
    record a Point feature whose ``layer`` property names its registry, and the area's polygon
    as the ``area`` layer."""
    features: list[dict[str, object]] = []
    if area_geojson is not None:
        features.append(
            {"type": "Feature", "geometry": dict(area_geojson), "properties": {"layer": "area"}}
        )
    for layer in LAYERS:
        items = surroundings.get(layer)
        if not isinstance(items, list):
            continue
        for item in items:
            props = {k: v for k, v in item.items() if k not in ("lon", "lat")}
            geometry = (
                {"type": "Point", "coordinates": [item["lon"], item["lat"]]}
                if item.get("lon") is not None
                else None
            )
            features.append(
                {
                    "type": "Feature",
                    "id": f"{layer}/{item.get('id')}",
                    "geometry": geometry,
                    "properties": {"layer": layer, **props},
                }
            )
    return {"type": "FeatureCollection", "features": features}


# ---------------------------------------------------------------------------------------------
# 高危企业在线监测率: enterprises, not sensors


ONLINE_TARGET = 0.85
KpiGroupBy = Literal["county", "township", "sector"]


@dataclass(frozen=True)
class EnterpriseFeed:
    """An enterprise that must be monitored online, and what its stations say now."""

    id: str
    name: str
    sector: str
    region_code: str
    stations: int
    online_stations: int
    last_seen: datetime | None  # the newest reading of any of its stations

    @property
    def online(self) -> bool:
        return self.online_stations > 0

    @property
    def why_offline(self) -> str | None:
        if self.online:
            return None
        if self.stations == 0:
            return "no_station"
        return "never_reported" if self.last_seen is None else "offline"


@dataclass(frozen=True)
class KpiGroup:
    group: str
    required: int
    online: int
    rate: float | None
    target: float
    below_target: bool


def group_of(feed: EnterpriseFeed, by: KpiGroupBy) -> str:
    if by == "sector":
        return feed.sector
    return feed.region_code[:6] + "0" * 6 if by == "county" else feed.region_code[:9] + "000"


def online_monitoring(
    feeds: Iterable[EnterpriseFeed], by: KpiGroupBy, target: float = ONLINE_TARGET
) -> list[KpiGroup]:
    """Per group: enterprises that must be monitored and have at least one station online, over
    all of them. An enterprise without a station counts against it."""
    totals: dict[str, list[int]] = {}
    for f in feeds:
        t = totals.setdefault(group_of(f, by), [0, 0])
        t[0] += 1
        t[1] += int(f.online)
    out = []
    for g, (required, online) in sorted(totals.items()):
        rate = online / required if required else None
        out.append(KpiGroup(g, required, online, rate, target, rate is not None and rate < target))
    return out
