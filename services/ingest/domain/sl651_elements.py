"""SL 651-2014's tables as this receiver uses them: the element identifiers (要素标识符) it maps to
a metric with the unit their values come in, the identifiers that are not plain values, and the
station types (测站分类码), and the function codes (功能码) of the reports it reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Element:
    """What an element identifier measures: our metric and the unit its values come in."""

    code: str  # the standard's mnemonic
    metric: str
    unit: str


# SL 651-2014 Table (要素标识符, the element identifiers of the standard's appendix), the ones
# this project maps to a metric; the mnemonic and unit as the standard gives them
ELEMENTS: Mapping[int, Element] = {
    0x02: Element("AI", "temperature", "degC"),  # 瞬时气温
    0x03: Element("C", "water_temperature", "degC"),  # 瞬时水温
    0x08: Element("FL", "air_pressure", "hPa"),  # 气压
    0x0E: Element("H", "groundwater_depth", "m"),  # 地下水瞬时埋深
    0x10: Element("M10", "soil_moisture_10cm", "%"),  # 10 厘米处土壤含水量
    0x11: Element("M20", "soil_moisture_20cm", "%"),
    0x12: Element("M30", "soil_moisture_30cm", "%"),
    0x13: Element("M40", "soil_moisture_40cm", "%"),
    0x14: Element("M50", "soil_moisture_50cm", "%"),
    0x15: Element("M60", "soil_moisture_60cm", "%"),
    0x16: Element("M80", "soil_moisture_80cm", "%"),
    0x17: Element("M100", "soil_moisture_100cm", "%"),
    0x18: Element("MST", "humidity", "%"),  # 湿度
    0x1A: Element("P1", "rainfall_1h", "mm"),  # 1 小时时段降水量
    0x1B: Element("P2", "rainfall_2h", "mm"),
    0x1C: Element("P3", "rainfall_3h", "mm"),
    0x1D: Element("P6", "rainfall_6h", "mm"),
    0x1E: Element("P12", "rainfall_12h", "mm"),
    0x1F: Element("PD", "rainfall_day", "mm"),  # 日降水量 (the day from 08:00)
    0x20: Element("PJ", "rainfall_current", "mm"),  # 当前降水量
    # the period rainfalls are the increments that rules add up in windows
    0x21: Element("PN01", "rainfall", "mm"),  # 1 分钟时段降水量
    0x22: Element("PN05", "rainfall", "mm"),  # 5 分钟
    0x23: Element("PN10", "rainfall", "mm"),  # 10 分钟
    0x24: Element("PN30", "rainfall", "mm"),  # 30 分钟
    0x26: Element("PT", "rainfall_total", "mm"),  # 降水量累计值
    0x27: Element("Q", "flow", "m3/s"),  # 瞬时流量
    0x33: Element("UC", "wind_direction", "deg"),  # 风向
    0x35: Element("US", "wind_speed", "m/s"),  # 风速
    0x36: Element("VA", "velocity", "m/s"),  # 断面平均流速
    0x37: Element("VJ", "velocity_current", "m/s"),  # 当前瞬时流速
    0x38: Element("VT", "voltage", "V"),  # 电源电压
    0x39: Element("Z", "water_level", "m"),  # 瞬时河道水位、潮位
    0x3A: Element("ZB", "water_level_downstream", "m"),  # 库(闸、站)下水位
    0x3B: Element("ZU", "water_level_upstream", "m"),  # 库(闸、站)上水位
}
# not readings: the station's status and alarm bits (表 58), read but not stored as a value
STATUS = 0x45
# series within the hour before the observation time: 12 values, one every 5 minutes
DRP = 0xF4  # 5-minute rainfalls, 1 byte HEX each, 0.1 mm, FF invalid
DRZ = range(0xF5, 0xFD)  # 5-minute water levels 1–8, 2 bytes HEX each, in cm, FFFF invalid
TT, ST, STEP = 0xF0, 0xF1, 0x04
STATION_TYPES = {
    0x50: "rain",  # P
    0x48: "river",  # H
    0x4B: "reservoir",  # K
    0x5A: "sluice",  # Z
    0x44: "pumping",  # D
    0x54: "tide",  # T
    0x4D: "soil",  # M
    0x47: "groundwater",  # G
    0x51: "water_quality",  # Q
    0x49: "intake",  # I
    0x4F: "outlet",  # O
}

# the elements by their mnemonic, as ASCII bodies name them
SYMBOLS: Mapping[str, Element] = {e.code: e for e in ELEMENTS.values()}

# the function codes of the upward reports this receiver reads or answers
FUNCTIONS = {
    0x2F: "keep-alive",
    0x30: "test",
    0x31: "evenly-timed",
    0x32: "timed",
    0x33: "added",
    0x34: "hourly",
    0x35: "manual",
}
