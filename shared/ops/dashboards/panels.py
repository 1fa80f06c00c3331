"""The parts every board is built from: the data sources, the level colours, panel makers."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="qianshao-prometheus")
POSTGRES = model.DataSourceRef(type_val="grafana-postgresql-datasource", uid="qianshao-postgres")

# the region filter of every SQL panel: a 12-digit code or a prefix of one, empty for all
REGION = "region_code LIKE ${region:sqlstring} || '%'"

LEVELS = (
    (0, "无", "green"),
    (1, "蓝色 IV", "blue"),
    (2, "黄色 III", "yellow"),
    (3, "橙色 II", "orange"),
    (4, "红色 I", "red"),
)


class SqlDataquery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL data source."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.fmt = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": POSTGRES,
            "editorMode": "code",
            "rawQuery": True,
            "format": self.fmt,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, *, fmt: str = "table", ref_id: str = "A") -> None:
        self._query = SqlDataquery(ref_id, " ".join(raw_sql.split()), fmt)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def promql(expr: str, legend: str = "", ref_id: str = "A") -> prom.Dataquery:
    q = prom.Dataquery().expr(" ".join(expr.split())).ref_id(ref_id).datasource(PROMETHEUS)
    return q.legend_format(legend) if legend else q


def _level_thresholds() -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=None if n == 0 else n, color=c) for n, _, c in LEVELS])
    )


def _level_names() -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                str(n): model.ValueMappingResult(text=name, color=c, index=n)
                for n, name, c in LEVELS
            }
        )
    ]


def _series(title: str, unit: str, *targets: prom.Dataquery, w: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).height(8).span(w).datasource(PROMETHEUS)
    return panel.targets(list(targets))


def _quantiles(title: str, metric: str, by: str, qs: tuple[float, ...] = (0.5, 0.95)) -> Any:
    targets = [
        promql(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
            ref_id=chr(ord("A") + i),
        )
        for i, q in enumerate(qs)
    ]
    return _series(title, "s", *targets)


def _sql_table(title: str, sql: str, w: int = 12, h: int = 8) -> table.Panel:
    return table.Panel().title(title).height(h).span(w).datasource(POSTGRES).with_target(Sql(sql))


def _stat(title: str, unit: str, target: cogbuilder.Builder[cogvariants.Dataquery]) -> stat.Panel:
    ds = POSTGRES if isinstance(target, Sql) else PROMETHEUS
    return stat.Panel().title(title).unit(unit).height(4).span(6).datasource(ds).with_target(target)


def _base(uid: str, title: str, description: str) -> dash.Dashboard:
    region = (
        dash.TextBoxVariable("region")
        .label("区划代码 region (prefix)")
        .description("A 12-digit region code or a prefix of one; empty for every region")
        .default_value("")
    )
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["qianshao"])
        .timezone("browser")
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(region)
    )


class _Layer(cogbuilder.Builder[common.MapLayerOptions]):
    def __init__(self, layer: common.MapLayerOptions) -> None:
        self._layer = layer

    def build(self) -> common.MapLayerOptions:
        return self._layer


def _fixed(colour: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": colour}
