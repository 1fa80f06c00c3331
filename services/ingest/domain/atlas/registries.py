"""What each registry of the 一张图 holds: its fields, their Chinese headings, types and allowed
values, its key, and whether its records have a place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal["text", "int", "number", "bool", "choice", "codes", "phone", "uscc", "region"]
Located = Literal["required", "optional", "none"]


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
