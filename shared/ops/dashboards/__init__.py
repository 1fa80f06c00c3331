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

from shared.ops.dashboards.boards import DASHBOARDS, build_all, to_json
from shared.ops.dashboards.panels import POSTGRES, PROMETHEUS
from shared.ops.dashboards.provisioning import (
    configmap,
    dashboard_provider,
    datasources,
    prometheus_rule,
    render,
    write,
)
from shared.ops.dashboards.queries import (
    PanelQuery,
    all_panels,
    panel_queries,
    render_promql,
    render_sql,
)

__all__ = [
    "DASHBOARDS",
    "POSTGRES",
    "PROMETHEUS",
    "PanelQuery",
    "all_panels",
    "build_all",
    "configmap",
    "dashboard_provider",
    "datasources",
    "panel_queries",
    "prometheus_rule",
    "render",
    "render_promql",
    "render_sql",
    "to_json",
    "write",
]
