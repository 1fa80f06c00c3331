# The compiled kernel (_native.c); services.ingest.domain.kernel documents the contract.
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from services.ingest.domain.rows import Row
from services.ingest.domain.validation import CheckPlan, StationInfo

def copy_rows(rows: list[Row], /) -> tuple[bytes, bool]: ...
def reading_events(
    rows: list[Row], stations: Mapping[str, StationInfo], produced_at: datetime, /
) -> list[tuple[str, bytes]]: ...
def event_ids(rows: list[Row], /) -> list[str]: ...
def blake2b_16(data: bytes, /) -> bytes: ...
def plan_batch(
    topics: list[str],
    recs: list[Any],
    stations: dict[str, StationInfo],
    entries: dict[tuple[str, str], tuple[StationInfo, CheckPlan]],
    get_plan: Callable[[StationInfo, str], CheckPlan],
    /,
) -> tuple[list[CheckPlan | None], set[tuple[str, str]], dict[tuple[str, str], int]]: ...
def check_batch(
    recs: list[Any],
    plans: list[CheckPlan | None],
    latest: datetime,
    recent: dict[tuple[str, str], Any],
    keep: int,
    seen: dict[str, datetime],
    row_type: type[Row],
    /,
) -> tuple[list[Row], list[tuple[int, Row]], list[int], dict[str, datetime]]: ...
