"""Reading a board's queries back, and rendering them as Grafana would send them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.ops.dashboards.panels import POSTGRES


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    datasource: str
    query: str


def panel_queries(board: dict[str, Any]) -> Iterator[PanelQuery]:
    for panel in all_panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            text = target.get("rawSql") if uid == POSTGRES.uid else target.get("expr")
            yield PanelQuery(board["uid"], panel.get("title", ""), uid, text or "")


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([\w.]+)\s*\)")
_TIME_GROUP = re.compile(r"\$__timeGroupAlias\(\s*([\w.]+)\s*,\s*'(\d+)([smhd])'\s*\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def render_sql(sql: str, start: datetime, end: datetime, variables: dict[str, str]) -> str:
    """The SQL Grafana's PostgreSQL data source sends for ``sql`` (the macros used here)."""
    frm, to = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    sql = _TIME_FILTER.sub(lambda m: f"{m[1]} BETWEEN {frm} AND {to}", sql)
    sql = _TIME_GROUP.sub(
        lambda m: (
            f"floor(extract(epoch from {m[1]})/{int(m[2]) * _SECONDS[m[3]]})"
            f'*{int(m[2]) * _SECONDS[m[3]]} AS "time"'
        ),
        sql,
    )
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)

    def var(m: re.Match[str]) -> str:
        value = variables[m[1]]
        if m[2] == "sqlstring":
            return "'" + value.replace("'", "''") + "'"
        if m[2] is None:
            return value
        raise ValueError(f"format {m[2]} of ${m[1]} is not rendered here")

    return _VARIABLE.sub(var, sql)


def render_promql(expr: str, rate_interval: str = "1m", range_: str = "1h") -> str:
    """The PromQL Grafana sends for ``expr`` (its interval variables filled in)."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
