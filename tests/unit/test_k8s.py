"""deploy/k8s, validated offline: the core kinds against Kubernetes' own
schemas (kubernetes-validate, strict: an unknown field fails), KEDA's
ScaledObjects against KEDA's CRD schema and its JetStream scaler's fields,
and every setting, secret, probe and port against the project."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema_rs
import kubernetes_validate
import yaml

from shared import roster
from tests.unit.test_deploy import DATABASES, OWN_DATABASE, container_command, setting_names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"
# The nats-jetstream trigger's metadata (KEDA pkg/scalers/nats_jetstream_scaler.go).
JETSTREAM_FIELDS = {
    "natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer",
    "lagThreshold", "activationLagThreshold", "useHttps",
}  # fmt: skip


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def test_core_kinds_are_valid_kubernetes() -> None:
    for doc in documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_scaled_objects_follow_kedas_schema() -> None:
    crd = yaml.safe_load((ROOT / "tests/schemas/keda.sh_scaledobjects.yaml").read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    validator = jsonschema_rs.validator_for(served["schema"]["openAPIV3Schema"])
    deployments = {d["metadata"]["name"] for d in by_kind("Deployment")}
    scaled = by_kind("ScaledObject")
    assert {s["metadata"]["name"] for s in scaled} == {"click-recorder", "analytics"}
    for obj in scaled:
        errors = [e.message for e in validator.iter_errors(obj)]
        assert not errors, errors
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert set(meta) <= JETSTREAM_FIELDS
        assert meta["stream"] == "CLICKS"
        assert meta["consumer"] == obj["metadata"]["name"]  # the durable's name
        # Clustered: KEDA asks the consumer's leader by pod name, under the
        # headless service.
        assert meta["natsServerMonitoringEndpoint"].startswith("nats-headless.")


def test_every_service_is_deployed_as_linkflow_expects() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    budgets = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for d in by_kind("PodDisruptionBudget")}  # fmt: skip
    secret_keys = {
        line.split("=", 1)[0]
        for line in (K8S / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    config = by_kind("ConfigMap")[0]["data"]
    assert set(deployments) == {s.label for s in roster.ALL}
    for s in roster.ALL:
        pod = deployments[s.label]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == container_command(s)
        assert container["ports"] == [{"name": "http", "containerPort": s.port}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert s.label in budgets
        known = setting_names(s.name)
        for var in container["env"]:
            assert var["name"] in known, f"{s.label}: {var['name']} is read by no setting"
            # URLs carry passwords: from the Secret, never a value here.
            if var["name"].endswith("_URL") and "configMapKeyRef" not in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "linkflow"
                assert ref["key"] in secret_keys
            # A service that reads only some of the shared settings takes those.
            if "configMapKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["configMapKeyRef"]
                assert ref["name"] == "linkflow"
                assert ref["key"] == var["name"]
                assert ref["key"] in config
        if {"configMapRef": {"name": "linkflow"}} in container.get("envFrom", []):
            assert set(config) <= known, s.label
    (job,) = by_kind("Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["linkflow", "migrate"]
    env = {v["name"]: v for v in migrate["env"]}
    assert env["LINKFLOW_STREAM_REPLICAS"]["value"] == "3"
    assert env["LINKFLOW_NATS_URL"]["valueFrom"]["secretKeyRef"]["key"] in secret_keys


def test_kustomization_names_only_files_that_exist() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (K8S / name).exists(), name
    (generator,) = kustomization["secretGenerator"]
    assert generator["envs"] == ["secrets.env"]
    assert (K8S / "secrets.env.example").exists()
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/secrets.env" in ignored


def test_nats_values_name_only_keys_the_chart_has() -> None:
    chart = yaml.safe_load((ROOT / "tests/schemas/nats-chart-values.yaml").read_text())
    ours = yaml.safe_load((K8S / "values-nats.yaml").read_text())

    def unknown(values: dict[str, Any], defaults: Any, path: str) -> list[str]:
        found = []
        for key, value in values.items():
            if not isinstance(defaults, dict) or key not in defaults:
                found.append(f"{path}{key}")
            elif isinstance(value, dict) and defaults[key]:
                found += unknown(value, defaults[key], f"{path}{key}.")
        return found

    assert not unknown(ours, chart, "")
    cluster = ours["config"]["cluster"]
    assert {k: cluster[k] for k in ("enabled", "replicas")} == {"enabled": True, "replicas": 3}
    assert ours["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert ours["promExporter"]["enabled"] is True


def test_the_gateway_is_scheduled_before_the_work_behind_it() -> None:
    classes = {c["metadata"]["name"]: c for c in by_kind("PriorityClass")}
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    for s in roster.ALL:
        name = deployments[s.label]["spec"]["template"]["spec"]["priorityClassName"]
        assert name in classes
    gateway = classes[deployments["link"]["spec"]["template"]["spec"]["priorityClassName"]]
    for s in roster.ALL:
        if s.nice:
            pod = deployments[s.label]["spec"]["template"]["spec"]
            background = classes[pod["priorityClassName"]]
            assert background["value"] < gateway["value"]
            assert background["preemptionPolicy"] == "Never"


def cpu_weights(request: str) -> tuple[int, int, int]:
    """A CPU request as the weight the kernel gives the container: the
    kubelet's shares (cgroup v1; pkg/kubelet/cm MilliCPUToShares), and on
    cgroup v2 runc's old linear and newer quadratic conversions of them."""
    milli = int(request[:-1]) if request.endswith("m") else int(float(request) * 1000)
    shares = max(2, milli * 1024 // 1000)
    linear = 1 + (shares - 2) * 9999 // 262142
    log = math.log2(shares)
    quadratic = math.ceil(10 ** ((log * log + 125 * log) / 612 - 7 / 34))
    return shares, linear, quadratic


def test_the_gateway_wins_a_shared_nodes_cpu() -> None:
    """What decides who runs on a busy node is the CPU weight, which comes
    from the request: the gateway's is at least eight times that of each
    service behind it, however the node's runtime converts it (compose's
    cpu_shares and nice 19 under linkflow up give 64 to 68)."""
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}

    def weights(label: str) -> tuple[int, int, int]:
        (container,) = deployments[label]["spec"]["template"]["spec"]["containers"]
        return cpu_weights(str(container["resources"]["requests"]["cpu"]))

    assert cpu_weights("1") == (1024, 39, 100)  # the kubelet's and runc's own figures
    gateway = weights("link")
    for s in roster.ALL:
        if s.nice:
            for ours, theirs in zip(gateway, weights(s.label), strict=True):
                assert ours >= 8 * theirs, (s.label, gateway, weights(s.label))


def secrets_example() -> dict[str, str]:
    lines = (K8S / "secrets.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_nats_routes_authenticate() -> None:
    """The chart puts routeURLs' user and password in the cluster's
    authorization block and in every route URL (files/config/cluster.yaml);
    the password is given at install, never kept in the values file."""
    values = (K8S / "values-nats.yaml").read_text()
    routes = yaml.safe_load(values)["config"]["cluster"]["routeURLs"]
    assert routes["user"] == "route"
    assert not routes.get("password"), "a password in the values file"
    assert "--set-string config.cluster.routeURLs.password=" in values


def test_each_service_connects_to_its_own_database_as_its_own_role() -> None:
    from urllib.parse import urlsplit

    secrets = secrets_example()
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    for s in roster.ALL:
        (container,) = deployments[s.label]["spec"]["template"]["spec"]["containers"]
        urls = {v["name"]: v for v in container["env"] if "DATABASE" in v["name"]}
        setting, database = DATABASES.get(s.name, OWN_DATABASE)
        assert set(urls) == {setting}, (s.label, sorted(urls))
        url = urlsplit(secrets[urls[setting]["valueFrom"]["secretKeyRef"]["key"]])
        assert (url.username, url.path) == (f"linkflow_{s.name}", f"/{database}"), s.label
        # The password migrate gives the role is the one in the service's URL.
        assert url.password == secrets[f"LINKFLOW_{s.name.upper()}_DATABASE_PASSWORD"]
    (job,) = by_kind("Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    env = {
        v["name"]: v["valueFrom"]["secretKeyRef"]["key"] for v in migrate["env"] if "valueFrom" in v
    }
    for setting, _ in (OWN_DATABASE, *DATABASES.values()):
        assert urlsplit(secrets[env[setting]]).username == "linkflow", setting
    for s in roster.ALL:
        variable = f"LINKFLOW_{s.name.upper()}_DATABASE_PASSWORD"
        assert env[variable] == variable


def test_the_migrate_job_runs_as_confined_as_the_services() -> None:
    deployment = by_kind("Deployment")[0]["spec"]["template"]["spec"]
    (service,) = deployment["containers"]
    job = by_kind("Job")[0]["spec"]["template"]["spec"]
    (migrate,) = job["containers"]
    assert job["securityContext"] == deployment["securityContext"]
    assert migrate["securityContext"] == service["securityContext"]
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
    assert migrate["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in migrate["volumeMounts"]}
    assert mounts["/tmp"] in {v["name"] for v in job["volumes"]}
