"""An upstream warning as read from either intake format (OASIS CAP 1.2, or the national
platform's GB/T 35965.1 message), and the refusal of a message that is neither."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from shared.contracts import LevelName

# a level's colour as warnings name it, in Chinese or in English (暴雨红色预警, Red)
COLOURS: tuple[tuple[str, LevelName], ...] = (
    ("红色", "red"),
    ("橙色", "orange"),
    ("黄色", "yellow"),
    ("蓝色", "blue"),
    ("red", "red"),
    ("orange", "orange"),
    ("yellow", "yellow"),
    ("blue", "blue"),
)
# a division code of 6, 9 or 12 digits (county, township, village)
ADMIN_CODE = re.compile(r"^\d{6}(\d{3})?(\d{3})?$")


class CapRejected(ValueError):
    """The message is not acceptable CAP; the text says why."""


@dataclass(frozen=True, slots=True)
class CapWarning:
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    references: list[str]  # "sender,identifier,sent" each
    event: str
    level: LevelName
    headline: str
    region_codes: list[str]
    expires: datetime | None

    @property
    def referenced_identifiers(self) -> list[str]:
        """CAP's references are sender,identifier,sent triples; the national format's are the
        identifiers themselves."""
        return [r.split(",")[1] if r.count(",") >= 2 else r for r in self.references]
