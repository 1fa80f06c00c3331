"""Message texts: Chinese templates per hazard and level, with instructions, and SMS segmentation.

Pure functions; the channels call them. A drill (CAP status ``Exercise``) always carries the
【演练】 prefix, on every channel, so no reader can take it for a real warning.

SMS length follows the carriers' rules: text that fits the GSM 7-bit alphabet is 160 characters
in one message and 153 per part when concatenated; anything else (every Chinese text) is sent as
UCS-2, 70 characters in one message and 67 per part. A character outside the Basic Multilingual
Plane takes two UCS-2 code units.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.contracts import AlertVersion, Level

DRILL_PREFIX = "【演练】"

# what people should do, per hazard and level; a level without its own text uses the nearest
# lower one that has one
INSTRUCTIONS: Mapping[str, Mapping[Level, str]] = {
    "rainstorm": {
        Level.blue: "注意防范暴雨，检查城市、农田、鱼塘排水系统。",
        Level.yellow: "做好防御准备，危险地带人员注意避险，暂停户外作业。",
        Level.orange: "立即转移低洼危险地带人员，停止户外作业，做好山洪、地质灾害防御。",
        Level.red: "立即组织危险区域人员撤离，停课停业停工，全力做好抢险救灾。",
    },
    "flood": {
        Level.blue: "加强巡堤查险，做好防汛准备。",
        Level.yellow: "加密巡查，转移河道内作业人员和物资。",
        Level.orange: "组织沿河低洼地区人员转移，抢险队伍上堤。",
        Level.red: "立即组织受威胁区域人员全部撤离，全力抢险。",
    },
    "geohazard": {
        Level.blue: "加强隐患点巡查。",
        Level.yellow: "加密监测，做好人员转移准备。",
        Level.orange: "立即转移受威胁群众，严禁进入危险区。",
        Level.red: "立即撤离全部受威胁人员，封控危险区域。",
    },
    "coal_mine_gas": {
        Level.blue: "核查传感器与通风情况。",
        Level.orange: "立即停止作业，切断电源，撤出人员。",
        Level.red: "立即停止作业，切断电源，撤出全部人员并报告。",
    },
    "hazardous_chemicals": {
        Level.blue: "立即现场核查，排查泄漏点。",
        Level.orange: "启动应急处置，疏散无关人员。",
        Level.red: "启动应急预案，疏散周边人员，报告上级。",
    },
}
GENERIC_INSTRUCTION = "请相关责任人立即核查并做好防范。"
CANCEL_INSTRUCTION = "预警已解除，请做好善后工作。"


def instruction(hazard: str, level: Level, msg_type: str) -> str:
    if msg_type == "Cancel":
        return CANCEL_INSTRUCTION
    table = INSTRUCTIONS.get(hazard, {})
    for lvl in range(int(level), 0, -1):
        text = table.get(Level(lvl))
        if text:
            return text
    return GENERIC_INSTRUCTION


def what_to_do(alert: AlertVersion) -> str:
    """The version's instruction: an officer's own, or the hazard's for its level."""
    if alert.instruction and alert.msg_type != "Cancel":
        return alert.instruction
    return instruction(alert.hazard, Level.parse(alert.level), alert.msg_type)


def drill_prefix_for(status: str) -> str:
    return DRILL_PREFIX if status == "Exercise" else ""


def drill_prefix(alert: AlertVersion) -> str:
    return drill_prefix_for(alert.status)


def sms_text(
    alert: AlertVersion,
    *,
    signature: str = "",
    confirm: bool = False,
    confirm_url: str | None = None,
) -> str:
    """The SMS body (the signature, e.g. 【某某区应急管理局】, is added by the carrier in front)."""
    parts = [f"{drill_prefix(alert)}{alert.headline}。", what_to_do(alert)]
    if confirm_url:
        parts.append(f"收到请回复1或点击 {confirm_url} 确认。")
    elif confirm:
        parts.append("收到请回复1确认。")
    text = "".join(parts)
    return f"{signature}{text}" if signature else text


def full_text(alert: AlertVersion) -> str:
    """The long form for WeChat, WeCom and e-mail."""
    return (
        f"{drill_prefix(alert)}{alert.headline}\n{alert.description}\n"
        f"{what_to_do(alert)}\n编号：{alert.identifier}"
    )


def voice_text(alert: AlertVersion) -> str:
    return (
        f"{drill_prefix(alert)}这里是应急管理局预警叫应。{alert.headline}。"
        f"{what_to_do(alert)}请回复短信1确认收到。"
    )


# the GSM 03.38 default alphabet; the characters of its extension table count twice
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("^{}\\[~]|€\f")


def sms_units(text: str) -> tuple[str, int]:
    """(encoding, length in that encoding's units)."""
    if all(c in _GSM_BASIC or c in _GSM_EXT for c in text):
        return "gsm7", sum(2 if c in _GSM_EXT else 1 for c in text)
    return "ucs2", sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def sms_segments(text: str) -> int:
    """How many messages the carrier bills for ``text``."""
    encoding, n = sms_units(text)
    single, part = (160, 153) if encoding == "gsm7" else (70, 67)
    if n <= single:
        return 1
    return -(-n // part)
