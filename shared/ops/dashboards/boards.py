"""The four boards: pipeline health, the four-colour risk map, warnings and deliveries, 叫应."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomap_model

from shared.ops.dashboards.panels import (
    POSTGRES,
    REGION,
    Sql,
    _base,
    _fixed,
    _Layer,
    _level_names,
    _level_thresholds,
    _quantiles,
    _series,
    _sql_table,
    _stat,
    promql,
)
from shared.ops.dashboards.queries import all_panels


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
            _quantiles(
                "DB write time per batch", "qianshao_ingest_db_write_duration_seconds", "job"
            )
        )
        .with_panel(
            _quantiles(
                "Consumer batch time (poll to commit)",
                "qianshao_consumer_batch_duration_seconds",
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
                    """sum by (job, status)
                       (rate(qianshao_http_requests_total[$__rate_interval]))""",
                    "{{job}} {{status}}",
                ),
            )
        )
        .with_panel(_quantiles("Request latency", "qianshao_http_request_duration_seconds", "job"))
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
        .with_panel(
            _quantiles("Provider accept time", "qianshao_delivery_send_duration_seconds", "channel")
        )
        .with_panel(
            _quantiles(
                "Reading taken → provider accepted (end to end)",
                "qianshao_reading_to_delivery_duration_seconds",
                "channel",
                (0.5, 0.99),
            )
        )
        .with_panel(
            _quantiles(
                "Warning version → provider accepted",
                "qianshao_warning_delivery_duration_seconds",
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
        .with_panel(
            _quantiles("Time to confirm", "qianshao_confirm_duration_seconds", "level", (0.5, 0.9))
        )
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


def to_json(board: dash.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, its panels numbered in order."""
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for n, panel in enumerate(all_panels(encoded.get("panels", [])), start=1):
        panel["id"] = n
    return encoded


def build_all() -> dict[str, dict[str, Any]]:
    return {name: to_json(make()) for name, make in DASHBOARDS.items()}
