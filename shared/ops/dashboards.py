"""Grafana dashboards as code, built with grafana-foundation-sdk.

``qianshao dashboards`` writes them to ``deploy/grafana/dashboards/`` with Grafana provisioning
files, and as a ConfigMap for the Grafana sidecar of kube-prometheus into ``deploy/k8s/``, next to
the alert rules of ``deploy/prometheus/alerts.yml`` as a PrometheusRule.

Two data sources, provisioned under fixed uids: Prometheus (the services' metrics) and the
PostgreSQL/TimescaleDB database the services share (the station registry, the risk picture, the
warning ledger). SQL panels read the services' schemas through a read-only role.

``panel_queries`` and ``render_sql``/``render_promql`` let the tests run every query of every
dashboard against a real database and a real Prometheus, the way Grafana would send them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomap_model

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


def pipeline() -> dash.Dashboard:
    online = f"""
        SELECT coalesce(s.owner_enterprise, '(unowned)') AS enterprise,
               count(*) AS stations,
               count(*) FILTER (WHERE h.online) AS online,
               round(100.0 * count(*) FILTER (WHERE h.online) / count(*), 1) AS online_pct
        FROM ingest.stations s
        LEFT JOIN ingest.station_health h ON h.station_id = s.id
        WHERE NOT s.maintenance AND s.{REGION}
        GROUP BY 1 ORDER BY online_pct, enterprise"""
    offline = f"""
        SELECT s.id AS station, s.name, s.kind, s.region_code, s.owner_enterprise,
               h.last_seen, h.changed_at AS offline_since
        FROM ingest.stations s JOIN ingest.station_health h ON h.station_id = s.id
        WHERE NOT h.online AND NOT s.maintenance AND s.{REGION}
        ORDER BY h.last_seen LIMIT 500"""
    per_source = """
        SELECT $__timeGroupAlias(minute, '1m'), source AS metric, sum(messages) AS messages
        FROM ingest.source_minutes WHERE $__timeFilter(minute)
        GROUP BY 1, 2 ORDER BY 1"""
    return (
        _base(
            "qianshao-pipeline",
            "前哨 · 数据管线 Pipeline health",
            "Readings in and out, consumer lag, dead letters, source heartbeats, online rate",
        )
        .with_row(dash.Row("Flow"))
        .with_panel(
            _series(
                "Readings stored / s, by quality",
                "reqps",
                promql(
                    "sum by (quality) (rate(qianshao_ingest_readings_total[$__rate_interval]))",
                    "{{quality}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Readings rejected / s, by reason",
                "reqps",
                promql(
                    "sum by (reason) (rate(qianshao_ingest_rejected_total[$__rate_interval]))",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Consumer lag per partition",
                "short",
                promql(
                    "max by (consumer, topic, partition) (qianshao_consumer_lag_messages)",
                    "{{consumer}} {{topic}}[{{partition}}]",
                ),
            )
        )
        .with_panel(
            _series(
                "Dead letters / s, by consumer",
                "reqps",
                promql(
                    """sum by (consumer, topic) (rate(
                        qianshao_consumer_messages_total{outcome="dead_letter"}[$__rate_interval]))""",
                    "{{consumer}} {{topic}}",
                ),
            )
        )
        .with_panel(
            _quantiles("DB write time per batch", "qianshao_ingest_db_write_seconds", "job")
        )
        .with_panel(
            _quantiles(
                "Consumer batch time (poll to commit)",
                "qianshao_consumer_batch_seconds",
                "consumer",
            )
        )
        .with_row(dash.Row("Sources and stations"))
        .with_panel(
            _series(
                "Seconds since a source was last heard, by topic",
                "s",
                promql(
                    """time() - max by (source, topic)
                       (qianshao_ingest_source_last_seen_timestamp_seconds)""",
                    "{{source}} {{topic}}",
                ),
            )
        )
        .with_panel(
            timeseries.Panel()
            .title("Messages per minute, by source")
            .unit("short")
            .height(8)
            .span(12)
            .datasource(POSTGRES)
            .with_target(Sql(per_source, fmt="time_series"))
        )
        .with_panel(_sql_table("Online rate per enterprise (在线率)", online))
        .with_panel(
            _series(
                "Stations offline, by county",
                "short",
                promql("sum by (county) (qianshao_ingest_stations_offline)", "{{county}}"),
            )
        )
        .with_panel(_sql_table("Offline stations", offline, w=24))
        .with_row(dash.Row("HTTP"))
        .with_panel(
            _series(
                "Requests / s, by service and status",
                "reqps",
                promql(
                    """sum by (service, status)
                       (rate(qianshao_http_requests_total[$__rate_interval]))""",
                    "{{service}} {{status}}",
                ),
            )
        )
        .with_panel(_quantiles("Request latency", "qianshao_http_request_seconds", "service"))
    )


def risk_map() -> dash.Dashboard:
    stations = f"""
        SELECT s.id AS station, s.name, s.kind, s.region_code, s.lat, s.lon,
               coalesce(max(r.level), 0) AS level,
               string_agg(DISTINCT r.hazard, ',') FILTER (WHERE r.level > 0) AS hazards,
               coalesce(bool_and(h.online), false) AS online
        FROM ingest.stations s
        LEFT JOIN risk.rule_state r ON r.station_id = s.id
        LEFT JOIN ingest.station_health h ON h.station_id = s.id
        WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL AND s.{REGION}
        GROUP BY s.id ORDER BY level DESC, s.id"""
    counts = f"""
        SELECT count(*) FILTER (WHERE level = 4) AS red,
               count(*) FILTER (WHERE level = 3) AS orange,
               count(*) FILTER (WHERE level = 2) AS yellow,
               count(*) FILTER (WHERE level = 1) AS blue
        FROM (SELECT station_id, max(level) AS level FROM risk.rule_state
              WHERE {REGION} GROUP BY station_id) per_station"""
    regions = f"""
        SELECT region_code, hazard, admin_level, level,
               (counts ->> 'stations')::int AS stations, updated_at
        FROM risk.region_level WHERE level > 0 AND {REGION}
        ORDER BY level DESC, region_code"""
    markers = common.MapLayerOptions(
        type_val="markers",
        name="stations",
        location=common.FrameGeometrySource(
            mode=common.FrameGeometrySourceMode.COORDS, latitude="lat", longitude="lon"
        ),
        config={
            "showLegend": True,
            "style": {
                "color": {"field": "level", "fixed": "green"},
                "size": {"fixed": 8},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                "text": {"field": "name", "mode": "field"},
            },
        },
        tooltip=True,
    )
    geo = (
        geomap.Panel()
        .title("四色图 · stations by current level")
        .height(16)
        .span(16)
        .datasource(POSTGRES)
        .with_target(Sql(stations))
        .view(geomap.MapViewConfig().id("fit").zoom(9))
        .tooltip(geomap.TooltipOptions().mode(geomap_model.TooltipMode.DETAILS))
        .basemap(_Layer(common.MapLayerOptions(type_val="default", name="basemap")))
        .layers([_Layer(markers)])
        .thresholds(_level_thresholds())
        .mappings(_level_names())
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    )
    levels = (
        stat.Panel()
        .title("Stations at each level")
        .height(8)
        .span(8)
        .datasource(POSTGRES)
        .with_target(Sql(counts))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .override_by_name("red", [model.DynamicConfigValue("color", _fixed("red"))])
        .override_by_name("orange", [model.DynamicConfigValue("color", _fixed("orange"))])
        .override_by_name("yellow", [model.DynamicConfigValue("color", _fixed("yellow"))])
        .override_by_name("blue", [model.DynamicConfigValue("color", _fixed("blue"))])
    )
    return (
        _base(
            "qianshao-risk-map",
            "前哨 · 四色图 Risk map",
            "Every station coloured by its current level (its highest rule), and every region",
        )
        .with_panel(geo.grid_pos(model.GridPos(h=16, w=16, x=0, y=0)))
        .with_panel(levels.grid_pos(model.GridPos(h=6, w=8, x=16, y=0)))
        .with_panel(
            _sql_table("Regions above normal", regions)
            .mappings(_level_names())
            .grid_pos(model.GridPos(h=10, w=8, x=16, y=6))
        )
        .with_panel(
            _series(
                "Risk events / s, by level and change",
                "reqps",
                promql(
                    "sum by (level, change) (rate(qianshao_risk_events_total[$__rate_interval]))",
                    "{{level}} {{change}}",
                ),
            ).grid_pos(model.GridPos(h=8, w=12, x=0, y=16))
        )
        .with_panel(
            _series(
                "Readings too late for their window / s",
                "reqps",
                promql("sum(rate(qianshao_risk_late_readings_total[$__rate_interval]))", "late"),
            ).grid_pos(model.GridPos(h=8, w=12, x=12, y=16))
        )
    )


def warnings() -> dash.Dashboard:
    backlog = """
        SELECT channel, state, count(*) AS deliveries, min(next_attempt_at) AS oldest_due
        FROM alerting.deliveries
        WHERE state IN ('queued', 'pending', 'sending', 'held', 'failed')
        GROUP BY channel, state ORDER BY channel, state"""
    recent = f"""
        SELECT w.identifier, w.hazard, w.region_code, w.level, w.state, w.status, w.version,
               w.created_at, w.updated_at
        FROM alerting.warnings w
        WHERE $__timeFilter(w.updated_at) AND w.{REGION}
        ORDER BY w.updated_at DESC LIMIT 200"""
    by_channel = """
        SELECT channel, count(*) AS total,
               count(*) FILTER (WHERE state IN ('sent', 'delivered', 'confirmed')) AS sent,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               round(percentile_cont(0.95) WITHIN GROUP
                     (ORDER BY extract(epoch FROM sent_at - created_at))::numeric, 2) AS p95_s
        FROM alerting.deliveries WHERE $__timeFilter(created_at)
        GROUP BY channel ORDER BY channel"""
    return (
        _base(
            "qianshao-warnings",
            "前哨 · 预警与发布 Warnings and deliveries",
            "Warnings by state and level, deliveries by channel and result, the delivery ledger",
        )
        .with_panel(
            _stat(
                "Open warnings, red",
                "short",
                promql('sum(qianshao_warnings{state=~"issued|updated",level="red"})'),
            )
        )
        .with_panel(
            _stat(
                "Open warnings, orange",
                "short",
                promql('sum(qianshao_warnings{state=~"issued|updated",level="orange"})'),
            )
        )
        .with_panel(
            _stat(
                "Delivery failures in range",
                "short",
                promql('sum(increase(qianshao_deliveries_total{result="failed"}[$__range]))'),
            )
        )
        .with_panel(
            _stat(
                "Ledger rows waiting",
                "short",
                Sql(
                    """SELECT count(*) AS waiting FROM alerting.deliveries
                       WHERE state IN ('queued', 'pending', 'sending')"""
                ),
            )
        )
        .with_panel(
            _series(
                "Warnings by state and level",
                "short",
                promql("sum by (state, level) (qianshao_warnings)", "{{state}} {{level}}"),
            )
        )
        .with_panel(
            _series(
                "Warning versions / s, by message type",
                "reqps",
                promql(
                    "sum by (msg_type) (rate(qianshao_warning_versions_total[$__rate_interval]))",
                    "{{msg_type}}",
                ),
                promql(
                    "sum by (by) (rate(qianshao_warning_versions_held_total[$__rate_interval]))",
                    "held: {{by}}",
                    ref_id="B",
                ),
                promql(
                    "sum(rate(qianshao_warnings_expired_total[$__rate_interval]))",
                    "expired",
                    ref_id="C",
                ),
                promql(
                    "max(qianshao_warnings_expiry_held)",
                    "expiry held (risk not heard)",
                    ref_id="D",
                ),
            )
        )
        .with_panel(
            _series(
                "Deliveries / s, by channel and result",
                "reqps",
                promql(
                    "sum by (channel, result) (rate(qianshao_deliveries_total[$__rate_interval]))",
                    "{{channel}} {{result}}",
                ),
            )
        )
        .with_panel(_quantiles("Provider accept time", "qianshao_delivery_send_seconds", "channel"))
        .with_panel(
            _quantiles(
                "Reading taken → provider accepted (end to end)",
                "qianshao_reading_to_delivery_seconds",
                "channel",
                (0.5, 0.99),
            )
        )
        .with_panel(
            _quantiles(
                "Warning version → provider accepted",
                "qianshao_warning_delivery_latency_seconds",
                "channel",
            )
        )
        .with_panel(_sql_table("Delivery ledger backlog", backlog))
        .with_panel(_sql_table("Deliveries in range, by channel", by_channel))
        .with_panel(_sql_table("Warnings in range", recent, w=24).mappings(_level_names()))
    )


def call_confirm() -> dash.Dashboard:
    waiting = f"""
        SELECT p.name, p.role, t.region_code, t.level, w.identifier AS warning,
               t.created_at AS since,
               extract(epoch FROM now() - t.created_at)::int AS waiting_s,
               t.voice_at AS called_at, t.escalated_at
        FROM alerting.confirm_tasks t
        JOIN alerting.persons p ON p.id = t.person_id
        JOIN alerting.warnings w ON w.id = t.warning_id
        WHERE t.confirmed_at IS NULL AND NOT t.closed AND t.{REGION}
        ORDER BY t.created_at LIMIT 500"""
    per_township = f"""
        SELECT left(region_code, 9) AS township, count(*) AS tasks,
               count(confirmed_at) AS confirmed,
               round(100.0 * count(confirmed_at) / count(*), 1) AS confirmed_pct,
               round(percentile_cont(0.5) WITHIN GROUP
                     (ORDER BY extract(epoch FROM confirmed_at - created_at))::numeric) AS median_s
        FROM alerting.confirm_tasks
        WHERE $__timeFilter(created_at) AND {REGION}
        GROUP BY 1 ORDER BY confirmed_pct, township"""
    return (
        _base(
            "qianshao-call-confirm",
            "前哨 · 叫应 Call and confirm",
            "Who must confirm a red (or orange) warning, how fast they do, calls and escalations",
        )
        .with_panel(
            _stat("Confirmed, last 24 h", "percentunit", promql("max(qianshao_confirm_rate_ratio)"))
        )
        .with_panel(_stat("Waiting to confirm", "short", promql("max(qianshao_confirm_pending)")))
        .with_panel(
            _stat(
                "Voice calls in range",
                "short",
                promql('sum(increase(qianshao_confirm_actions_total{action="voice"}[$__range]))'),
            )
        )
        .with_panel(
            _stat(
                "Escalations in range",
                "short",
                promql(
                    'sum(increase(qianshao_confirm_actions_total{action="escalation"}[$__range]))'
                ),
            )
        )
        .with_panel(_quantiles("Time to confirm", "qianshao_confirm_seconds", "level", (0.5, 0.9)))
        .with_panel(
            _series(
                "Confirmations / s, by how",
                "reqps",
                promql(
                    "sum by (via) (rate(qianshao_confirmations_total[$__rate_interval]))",
                    "{{via}}",
                ),
            )
        )
        .with_panel(
            _sql_table("Not yet confirmed (叫而未应)", waiting, w=24).mappings(_level_names())
        )
        .with_panel(_sql_table("叫应 rate per township, in range", per_township, w=24))
    )


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "pipeline": pipeline,
    "risk-map": risk_map,
    "warnings": warnings,
    "call-confirm": call_confirm,
}


class _Layer(cogbuilder.Builder[common.MapLayerOptions]):
    def __init__(self, layer: common.MapLayerOptions) -> None:
        self._layer = layer

    def build(self) -> common.MapLayerOptions:
        return self._layer


def _fixed(colour: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": colour}


def to_json(board: dash.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, its panels numbered in order."""
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for n, panel in enumerate(_panels(encoded.get("panels", [])), start=1):
        panel["id"] = n
    return encoded


def build_all() -> dict[str, dict[str, Any]]:
    return {name: to_json(make()) for name, make in DASHBOARDS.items()}


# --- provisioning ---------------------------------------------------------------------------


def datasources() -> dict[str, Any]:
    """Grafana data-source provisioning; the password comes from the environment."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": PROMETHEUS.uid,
                "type": PROMETHEUS.type_val,
                "access": "proxy",
                "url": "${QIANSHAO_PROMETHEUS_URL}",
                "isDefault": True,
            },
            {
                "name": "Qianshao PostgreSQL",
                "uid": POSTGRES.uid,
                "type": POSTGRES.type_val,
                "access": "proxy",
                "url": "${QIANSHAO_PG_HOST}",
                "user": "${QIANSHAO_PG_READER}",
                "jsonData": {
                    "database": "${QIANSHAO_PG_DATABASE}",
                    "sslmode": "${QIANSHAO_PG_SSLMODE}",
                    "timescaledb": True,
                    "postgresVersion": 1500,
                },
                "secureJsonData": {"password": "${QIANSHAO_PG_READER_PASSWORD}"},
            },
        ],
    }


def dashboard_provider(path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "qianshao",
                "folder": "Qianshao",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def configmap(boards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One ConfigMap the kube-prometheus Grafana sidecar picks up by its label."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "qianshao-grafana-dashboards",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "qianshao"},
            "annotations": {"grafana_folder": "Qianshao"},
        },
        "data": {f"qianshao-{name}.json": _dump_json(board) for name, board in boards.items()},
    }


def _dump_json(board: dict[str, Any]) -> str:
    return json.dumps(board, ensure_ascii=False, indent=2) + "\n"


def render(root: Path) -> dict[Path, str]:
    """Every generated file under the repository root, with its text."""
    boards = build_all()
    header = "# Generated by `qianshao dashboards` from shared/ops/dashboards.py; do not edit.\n"
    out: dict[Path, str] = {
        root / "deploy/grafana/dashboards" / f"qianshao-{name}.json": _dump_json(board)
        for name, board in boards.items()
    }
    out[root / "deploy/grafana/provisioning/datasources/qianshao.yaml"] = header + _yaml(
        datasources()
    )
    out[root / "deploy/grafana/provisioning/dashboards/qianshao.yaml"] = header + _yaml(
        dashboard_provider("/var/lib/grafana/dashboards/qianshao")
    )
    out[root / "deploy/k8s/base/monitoring/grafana-dashboards.yaml"] = header + _yaml(
        configmap(boards)
    )
    rules = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    out[root / "deploy/k8s/base/monitoring/prometheus-rules.yaml"] = header.replace(
        "shared/ops/dashboards.py", "deploy/prometheus/alerts.yml"
    ) + _yaml(prometheus_rule(rules))
    return out


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """The alert rules of deploy/prometheus as a Prometheus Operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "qianshao", "labels": {"release": "kube-prometheus-stack"}},
        "spec": {"groups": rules["groups"]},
    }


def write(root: Path) -> list[Path]:
    written = []
    for path, text in render(root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def _yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


# --- reading the queries back ---------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    datasource: str
    query: str


def panel_queries(board: dict[str, Any]) -> Iterator[PanelQuery]:
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            text = target.get("rawSql") if uid == POSTGRES.uid else target.get("expr")
            yield PanelQuery(board["uid"], panel.get("title", ""), uid, text or "")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


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
