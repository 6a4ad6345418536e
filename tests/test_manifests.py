"""The deployment manifests (deploy/compose, deploy/helm, the Collector image), checked by real validators.

What checks what:
- Compose file: the Compose Specification's JSON schema (vendored by check-jsonschema, from PyPI), then
  the references a schema cannot see (build files, bind mounts, named volumes, networks, depends_on,
  health checks, secrets only from the git-ignored .env).
- Helm chart: `helm lint --strict` and `helm template` (Helm built from the Go module proxy, cached by
  `make manifest-tools`), every rendered object against Kubernetes' own JSON schemas in strict mode
  (kubernetes-validate, from PyPI), then selectors, ports, Secrets, ConfigMaps and the cluster layout.
- The Collector as both deployments run it: the real binary's `validate` with config.yaml, the PII
  config rendered by the launcher's renderer and the listen overlay, under the deployment's environment.
- Dagster's instance file: Dagster's own instance-config validation. Superset's config: executed.
- ClickHouse users: a real ClickHouse (the embedded engine, metrics_platform/stack/clickhouse_server.py)
  loads users.d/metrics-platform.xml; the writer applies every migration, the reader answers the
  dashboards and is refused writes, temporary tables, setting changes and url()/file()/remote().
Nothing here runs Docker or Kubernetes: neither exists on the machines the tests run on.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import importlib.resources
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from clickhouse_connect.driver.exceptions import DatabaseError

from metrics_platform import clickhouse, dashboards
from metrics_platform.settings import ClickHouseSettings, Settings
from metrics_platform.stack import collector, pii_policy
from metrics_platform.stack.process import Daemon, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
CHART = ROOT / "deploy" / "helm" / "metrics-platform"
CHART_VALUES_DIR = ROOT / "deploy" / "helm" / "values"
USERS_XML = CHART / "files" / "clickhouse" / "users.d" / "metrics-platform.xml"
LISTEN_OVERLAY = CHART / "files" / "otelcol-listen.yaml"
NAMESPACE = "metrics"
RELEASE = "mp"
# Oldest and newest Kubernetes the rendered objects are checked against (the chart needs >= 1.28).
KUBE_VERSIONS = ("1.28.0", "1.37.0")
# The sizes and requests the chart refuses to guess; any values render the same objects.
HELM_TEST_VALUES = {
    "kafka.clusterId": "MkU3OEVBNTcwNTJENDM2Qk",
    "kafka.storage.size": "10Gi",
    "keeper.storage.size": "1Gi",
    "clickhouse.storage.size": "10Gi",
    "collector.resources.requests.cpu": "500m",
}
# Keys of the pre-created Secret (values.yaml `existingSecret`; docs/runbook.md creates it).
SECRET_KEYS = {"clickhouse-writer-password", "clickhouse-reader-password", "clickhouse-cluster-secret", "pii-salt"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|SALT|TOKEN|_KEY$|^PASS$")
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
TOOLS_HINT = "run `make manifest-tools` (make test does) to install the manifest validators"


# --- tools -------------------------------------------------------------------------------------------


def _helm() -> Path:
    found = sorted((ROOT / ".cache" / "helm").glob("*/helm"))
    if not found:
        pytest.fail(f"helm is not built under .cache/helm: {TOOLS_HINT}")
    return found[-1]


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: {TOOLS_HINT}")


def _run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


# --- Compose -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ (a literal $)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""

    return INTERPOLATION.sub(one, value).replace("$$", "$")


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_every_yaml_file_parses() -> None:
    files = [
        p
        for base in (COMPOSE_DIR, ROOT / "deploy" / "helm")
        for p in sorted(base.rglob("*.y*ml"))
        if "templates" not in p.parts  # Go templates: checked rendered, below
    ]
    assert len(files) >= 6
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), f"{path} is empty"


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    _import("check_jsonschema")
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema is strict enough to catch a misspelt key (so the check above means something).
    broken = copy.deepcopy(compose)
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(broken))


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes = set(compose.get("volumes", {}))
    declared_networks = set(compose.get("networks", {}))
    used_volumes: set[str] = set()
    problems = []
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"{name}: neither image nor build")
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: no Dockerfile at {dockerfile}")
        if not _one_shot(service) and "test" not in service.get("healthcheck", {}):
            problems.append(f"{name}: a long-running service without a health check")
        for target, condition in service.get("depends_on", {}).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
            elif _one_shot(services[target]) != (condition["condition"] == "service_completed_successfully"):
                problems.append(f"{name}: waits for {target} with {condition['condition']}")
            elif not _one_shot(services[target]) and condition["condition"] != "service_healthy":
                problems.append(f"{name}: starts before {target} is healthy")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                if not (COMPOSE_DIR / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist")
            else:
                used_volumes.add(source)
                if source not in declared_volumes:
                    problems.append(f"{name}: volume {source} is not declared")
        for network in service.get("networks", []):
            if network not in declared_networks:
                problems.append(f"{name}: network {network} is not declared")
        for port in service.get("ports", []):
            # Nothing is published beyond loopback unless the operator sets a *_BIND variable.
            if not re.match(r"^\$\{\w+_BIND:-127\.0\.0\.1\}:", port):
                problems.append(f"{name}: port {port} is not bound to ${{..._BIND:-127.0.0.1}}")
    assert problems == []
    assert used_volumes == declared_volumes, "declared volumes nobody mounts"


def test_compose_takes_every_secret_from_the_uncommitted_env_file(compose: dict[str, Any]) -> None:
    example = _env_example()
    problems = []
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)):
                problems.append(f"{name}: {key} is not a required ${{VAR:?...}} from .env")
    assert problems == []
    referenced = set(m.group(1) for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text()))
    assert referenced <= set(example), f"variables missing from .env.example: {sorted(referenced - set(example))}"
    # .env.example ships no secret values, and the real .env can never be committed.
    assert all(value == "" for key, value in example.items() if SECRET_NAME.search(key) or key == "KAFKA_CLUSTER_ID")
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/compose/.env must be git-ignored"


def test_compose_collector_sets_what_the_launcher_sets(compose: dict[str, Any]) -> None:
    env = compose["services"]["collector"]["environment"]
    settings = _collector_settings()
    # Every variable the local launcher gives the Collector, plus the listen address of the overlay.
    assert set(env) == set(collector.environment(settings)) | {"METRICS_PLATFORM_COLLECTOR_LISTEN_HOST"}
    for key in ("OTLP_MAX_REQUEST_BYTES", "COLLECTOR_BATCH_MAX_BYTES", "COLLECTOR_MAX_RECORD_BYTES"):
        name = f"METRICS_PLATFORM_{key}"
        assert env[name] == collector.environment(settings)[name], name
    for name, value in collector.GO_RUNTIME.items():
        assert env[name] == value, name
    # The broker's record limit is the one the Collector's producer limit was derived from.
    kafka_env = compose["services"]["kafka"]["environment"]
    assert int(kafka_env["KAFKA_MESSAGE_MAX_BYTES"]) == settings.kafka.max_message_bytes


def test_dagster_instance_file_is_valid_for_dagster() -> None:
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(COMPOSE_DIR / "dagster"))
    assert set(config["storage"]) == {"postgres"}
    # The pilot keeps the repository instance's limits: only the storage differs.
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert {k: v for k, v in config.items() if k != "storage"} == {k: v for k, v in local.items() if k != "storage"}


def test_superset_config_reads_everything_from_the_environment() -> None:
    source = (COMPOSE_DIR / "superset" / "superset_config.py").read_text()
    env = {
        "SUPERSET_SECRET_KEY": "k" * 32,
        "SUPERSET_PG_PASSWORD": "p@ss:w/rd%",
        "SUPERSET_PG_HOST": "postgres",
        "SUPERSET_PG_DB": "superset",
        "SUPERSET_PG_USER": "superset",
    }
    namespace: dict[str, Any] = {}
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        exec(compile(source, "superset_config.py", "exec"), namespace)
        os.environ.pop("SUPERSET_SECRET_KEY")
        with pytest.raises(RuntimeError, match="SUPERSET_SECRET_KEY"):
            exec(compile(source, "superset_config.py", "exec"), {})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert namespace["SECRET_KEY"] == "k" * 32
    assert (
        namespace["SQLALCHEMY_DATABASE_URI"]
        == "postgresql+psycopg2://superset:p%40ss%3Aw%2Frd%25@postgres:5432/superset"
    )


# --- Dockerfiles --------------------------------------------------------------------------------------


def _dockerignore_allows(path: str, ignore_file: Path) -> bool:
    """Docker's rules, last match wins; `**` also matches no directory at all."""
    allowed = True
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = {pattern, pattern.replace("**/", "")}
        if any(fnmatch.fnmatchcase(path, p) or path.startswith(p + "/") for p in candidates):
            allowed = negate
    return allowed


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            sources.extend(p for p in parts[1:-1] if not p.startswith("--"))
    return sources


@pytest.mark.parametrize(
    "dockerfile",
    [ROOT / "deploy" / "otelcol" / "Dockerfile", COMPOSE_DIR / "Dockerfile.platform"],
    ids=lambda p: p.name,
)
def test_dockerfile_copies_exist_and_pass_its_ignore_file(dockerfile: Path) -> None:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    for source in _copy_sources(dockerfile):
        path = ROOT / source
        assert path.exists(), f"{dockerfile.name}: COPY {source} does not exist"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        assert any(_dockerignore_allows(str(f.relative_to(ROOT)), ignore) for f in files), f"{source} is ignored"


def test_collector_image_builds_like_the_launcher() -> None:
    dockerfile = (ROOT / "deploy" / "otelcol" / "Dockerfile").read_text()
    ignore = ROOT / "deploy" / "otelcol" / "Dockerfile.dockerignore"
    # Every file the launcher hashes into the binary's cache key reaches the image's build.
    for path in collector._build_files():
        assert _dockerignore_allows(str(path.relative_to(ROOT)), ignore), f"{path} is not in the build context"
    go_version = re.search(r"^go (\S+)$", (collector.SOURCE_DIR / "go.mod").read_text(), re.M).group(1)
    assert f"FROM golang:{go_version}-" in dockerfile
    assert 'go build -trimpath -ldflags="-s -w"' in dockerfile
    assert f"CGO_ENABLED={collector.go_env(_collector_settings())['CGO_ENABLED']}" in dockerfile


def test_platform_image_serves_the_code_location_the_project_declares() -> None:
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    values = yaml.safe_load((CHART_VALUES_DIR / "dagster.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == module


# --- the Collector under both deployments' environments ---------------------------------------------


def _collector_settings() -> Settings:
    """Settings as the deployments configure them: 4 MiB requests, the default 16 MiB record limit."""
    settings = Settings.from_env()
    return dataclasses.replace(
        settings,
        collector=dataclasses.replace(settings.collector, max_request_mib=4, pii_keep_content=False),
        kafka=dataclasses.replace(settings.kafka, max_message_bytes=16 * 1024 * 1024),
    )


def _validate_collector(env: dict[str, str], tmp_path: Path) -> None:
    settings = _collector_settings()
    binary = collector.build(settings)  # cached; `make test` builds it before the tests
    pii = pii_policy.write(settings.collector.pii_policy, False, tmp_path / "pii-processors.json")
    configs = [collector.CONFIG, pii, LISTEN_OVERLAY]
    referenced = set()
    for config in configs:
        without_comments = re.sub(r"(^|\s)#.*$", "", config.read_text(), flags=re.M)
        referenced |= set(re.findall(r"\$\{env:(\w+)\}", without_comments))
    assert referenced <= set(env), f"not set by the deployment: {sorted(referenced - set(env))}"
    env = {**env, "METRICS_PLATFORM_COLLECTOR_STORAGE_DIR": str(tmp_path / "queue")}
    argv = [binary, "validate", *[f"--config={c}" for c in configs]]
    _run(argv, env={"PATH": os.environ["PATH"], **env})


def test_collector_config_validates_under_the_compose_environment(compose: dict[str, Any], tmp_path: Path) -> None:
    sample = {"METRICS_PLATFORM_PII_SALT": "0123456789abcdef"}
    env = {k: _interpolate(str(v), sample) for k, v in compose["services"]["collector"]["environment"].items()}
    _validate_collector(env, tmp_path)
    command = compose["services"]["collector"]["command"]
    assert command == [
        "--config=/etc/otelcol/config.yaml",
        "--config=/etc/otelcol/pii-processors.json",
        "--config=/etc/otelcol/listen.yaml",
        "--config=/etc/otelcol/otlp-tls.yaml",
        "--config=/etc/otelcol/otlp-auth.yaml",
    ]


def test_collector_config_validates_under_the_chart_environment(rendered: list[dict], tmp_path: Path) -> None:
    container = _pod_spec(_find(rendered, "Deployment", f"{RELEASE}-metrics-platform-collector"))["containers"][0]
    env = {e["name"]: e.get("value", "0123456789abcdef") for e in container["env"]}  # secrets: a sample salt
    _validate_collector(env, tmp_path)
    launcher = collector.environment(_collector_settings())
    for key in ("OTLP_MAX_REQUEST_BYTES", "COLLECTOR_BATCH_MAX_BYTES", "COLLECTOR_MAX_RECORD_BYTES"):
        name = f"METRICS_PLATFORM_{key}"
        assert env[name] == launcher[name], name
    for name, value in collector.GO_RUNTIME.items():
        assert env[name] == value, name


# --- OTLP TLS and bearer tokens: the manifests' overlays against the launcher's rendering -----------------

OTLP_OVERRIDES = {name: COMPOSE_DIR / f"docker-compose.otlp-{name}.yml" for name in ("tls", "auth")}
OTLP_OPTIONS = [(True, False), (False, True), (True, True)]


def _merge_compose(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f base -f override``'s merge for the keys our overrides use (the Compose
    Specification's merge rules): mappings merge, ``volumes`` by container path, ``secrets`` append."""
    merged = copy.deepcopy(base)
    for name, service in override.get("services", {}).items():
        target = merged["services"][name]
        target["environment"] = {**target.get("environment", {}), **service.get("environment", {})}
        mounts = {v.split(":")[1]: v for v in target.get("volumes", [])}
        mounts |= {v.split(":")[1]: v for v in service.get("volumes", [])}
        target["volumes"] = list(mounts.values())
        target["secrets"] = [*target.get("secrets", []), *service.get("secrets", [])]
    merged["secrets"] = {**merged.get("secrets", {}), **override.get("secrets", {})}
    return merged


def _effective_otlp(argv_configs: list[str], files: dict[str, Path], env: dict[str, str], tmp_path: Path) -> dict:
    """What the real Collector makes of a command line's --config files (``files`` maps each in-container
    path to the repository's file) under ``env``: its receivers' TLS/auth, the authenticator, the extensions."""
    settings = _collector_settings()
    paths = [files[c.removeprefix("--config=")] for c in argv_configs]
    env = {"PATH": os.environ["PATH"], **env, "METRICS_PLATFORM_COLLECTOR_STORAGE_DIR": str(tmp_path / "queue")}
    argv = [collector.build(settings), "print-config", "--mode=unredacted", "--format=json"]
    config = json.loads(_run([*argv, *[f"--config={p}" for p in paths]], env=env).stdout)
    return _otlp_security(config)


def _otlp_security(config: dict) -> dict:
    protocols = config["receivers"]["otlp"]["protocols"]
    return {
        "protocols": {p: {k: protocols[p].get(k) for k in ("tls", "auth")} for p in ("grpc", "http")},
        "bearertokenauth": (config.get("extensions") or {}).get("bearertokenauth"),
        "service_extensions": config["service"]["extensions"],
    }


def _launcher_otlp(env: dict[str, str], tls: bool, auth: bool, tmp_path: Path) -> dict:
    """The same, for `make up` with the TLS/token settings the manifests give the container."""
    settings = _collector_settings()
    c = dataclasses.replace(
        settings.collector,
        tls_cert=env["METRICS_PLATFORM_OTLP_TLS_CERT"] if tls else "",
        tls_key=env["METRICS_PLATFORM_OTLP_TLS_KEY"] if tls else "",
        auth=auth,
        token_file=env["METRICS_PLATFORM_OTLP_TOKEN_FILE"] if auth else "",
    )
    settings = dataclasses.replace(settings, collector=c, state_dir=tmp_path / "launcher")
    pii = pii_policy.write(settings.collector.pii_policy, False, tmp_path / "pii-processors.json")
    network = collector.write_network_config(settings)
    assert network is not None
    files = {str(p): p for p in (collector.CONFIG, pii, network)}
    return _effective_otlp([f"--config={p}" for p in files], files, env, tmp_path)


def _compose_otlp(service: dict[str, Any], tmp_path: Path) -> tuple[dict[str, str], dict]:
    """The Compose collector's environment and its effective OTLP security, with its bind-mounted files."""
    sample = {"METRICS_PLATFORM_PII_SALT": "0123456789abcdef"}
    env = {k: _interpolate(str(v), sample) for k, v in service["environment"].items()}
    files = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve() for v in service["volumes"] if v[0] == "."}
    pii = pii_policy.write(_collector_settings().collector.pii_policy, False, tmp_path / "pii-processors.json")
    files |= {"/etc/otelcol/config.yaml": collector.CONFIG, "/etc/otelcol/pii-processors.json": pii}
    return env, _effective_otlp(service["command"], files, env, tmp_path)


@pytest.mark.parametrize(("tls", "auth"), OTLP_OPTIONS)
def test_compose_otlp_overrides_give_the_launchers_tls_and_token_config(
    compose: dict[str, Any], tls: bool, auth: bool, tmp_path: Path
) -> None:
    merged = compose
    for name, on in (("tls", tls), ("auth", auth)):
        if on:
            merged = _merge_compose(merged, yaml.safe_load(OTLP_OVERRIDES[name].read_text()))
    _import("check_jsonschema")
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    errors = [e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(merged)]
    assert errors == []
    service = merged["services"]["collector"]
    assert set(service["secrets"]) <= set(merged["secrets"])
    env, got = _compose_otlp(service, tmp_path)
    assert got == _launcher_otlp(env, tls, auth, tmp_path)
    assert (got["protocols"]["grpc"]["tls"] is not None) == tls and (got["bearertokenauth"] is not None) == auth
    # The secrets' files come from the uncommitted .env, like every other secret.
    for secret in service["secrets"]:
        assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", merged["secrets"][secret]["file"]), secret
    referenced = {m.group(1) for path in OTLP_OVERRIDES.values() for m in INTERPOLATION.finditer(path.read_text())}
    assert referenced <= set(_env_example())


def test_compose_without_overrides_has_no_otlp_tls_or_token(compose: dict[str, Any], tmp_path: Path) -> None:
    _, got = _compose_otlp(compose["services"]["collector"], tmp_path)
    assert got["protocols"] == {p: {"tls": None, "auth": None} for p in ("grpc", "http")}
    assert got["bearertokenauth"] is None and "bearertokenauth" not in got["service_extensions"]


@pytest.mark.parametrize(("tls", "auth"), OTLP_OPTIONS)
def test_helm_otlp_options_give_the_launchers_tls_and_token_config(tls: bool, auth: bool, tmp_path: Path) -> None:
    options = {
        "collector.otlp.tls.enabled": str(tls).lower(),
        "collector.otlp.tls.secretName": "otlp-tls",
        "collector.otlp.auth.enabled": str(auth).lower(),
        "collector.otlp.auth.secretName": "otlp-tokens",
    }
    argv = [_helm(), "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[-1]]
    out = _run([*argv, *_helm_args(), *[a for k, v in options.items() for a in ("--set", f"{k}={v}")]])
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kubernetes_validate = _import("kubernetes_validate")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    name = f"{RELEASE}-metrics-platform-collector"
    pod = _pod_spec(_find(docs, "Deployment", name))
    container = pod["containers"][0]
    env = {e["name"]: e.get("value", "0123456789abcdef") for e in container["env"]}
    files = {}
    for key, text in _find(docs, "ConfigMap", name)["data"].items():
        (tmp_path / key).write_text(text)
        files[f"/etc/otelcol-listen/{key}"] = tmp_path / key
    pii = pii_policy.write(_collector_settings().collector.pii_policy, False, tmp_path / "pii-processors.json")
    files |= {"/etc/otelcol/config.yaml": collector.CONFIG, "/etc/otelcol/pii-processors.json": pii}
    got = _effective_otlp(container["args"], files, env, tmp_path)
    assert got == _launcher_otlp(env, tls, auth, tmp_path)
    # The files the config names are where the Secrets are mounted.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    if tls:
        assert secrets["otlp-tls"] == "otlp-tls"
        assert env["METRICS_PLATFORM_OTLP_TLS_CERT"] == f"{mounts['otlp-tls']}/tls.crt"
    if auth:
        assert secrets["otlp-token"] == "otlp-tokens"
        assert env["METRICS_PLATFORM_OTLP_TOKEN_FILE"] == f"{mounts['otlp-token']}/token"


def test_helm_otlp_tls_needs_its_secret() -> None:
    argv = [_helm(), "template", RELEASE, CHART, "--kube-version", KUBE_VERSIONS[-1], *_helm_args()]
    for option in ("tls", "auth"):
        result = subprocess.run(
            [*map(str, argv), "--set", f"collector.otlp.{option}.enabled=true"], capture_output=True, text=True
        )
        assert result.returncode != 0 and f"collector.otlp.{option}.secretName is required" in result.stderr


# --- Helm ---------------------------------------------------------------------------------------------


def _helm_args() -> list[str]:
    return [arg for key, value in HELM_TEST_VALUES.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = _run(
        [
            _helm(),
            "template",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSIONS[-1],
            *_helm_args(),
        ]
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, "helm template rendered nothing"
    return docs


def _find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def _pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def test_helm_lint_passes() -> None:
    _run([_helm(), "lint", "--strict", CHART, *_helm_args()])


def test_helm_refuses_to_guess_sizes() -> None:
    argv = [str(_helm()), "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[-1]]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode != 0 and "is required" in result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_objects_match_the_kubernetes_schemas(rendered: list[dict], kube_version: str) -> None:
    kubernetes_validate = _import("kubernetes_validate")
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert errors == []
    # Strict mode rejects an unknown field, so a pass above means the fields exist.
    broken = copy.deepcopy(_find(rendered, "Deployment", f"{RELEASE}-metrics-platform-collector"))
    broken["spec"]["replicass"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kube_version, strict=True)


def test_rendered_objects_reference_each_other(rendered: list[dict]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in rendered:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in _workloads(rendered)}
    problems = []
    for name, doc in {**by_kind["Deployment"], **by_kind["StatefulSet"]}.items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if not doc["spec"]["selector"]["matchLabels"].items() <= labels.items():
            problems.append(f"{name}: selector does not match its pod labels")
    for name, service in by_kind["Service"].items():
        selected = [
            t for t in pods.values() if service["spec"]["selector"].items() <= t["metadata"].get("labels", {}).items()
        ]
        if not selected:
            problems.append(f"Service {name} selects no pod")
        for port in service["spec"]["ports"]:
            for template in selected:
                names = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
                if port["targetPort"] not in names:
                    problems.append(f"Service {name}: port {port['targetPort']} is not a container port")
    for name, sts in by_kind["StatefulSet"].items():
        headless = by_kind["Service"].get(sts["spec"]["serviceName"])
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problems.append(f"{name}: serviceName is not a rendered headless Service")
    for name, pdb in by_kind["PodDisruptionBudget"].items():
        if not any(
            pdb["spec"]["selector"]["matchLabels"].items() <= t["metadata"]["labels"].items() for t in pods.values()
        ):
            problems.append(f"PDB {name} selects no pod")
    for hpa in by_kind["HorizontalPodAutoscaler"].values():
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in by_kind.get(target["kind"], {}):
            problems.append(f"HPA {hpa['metadata']['name']} scales a missing {target['kind']}")
    for name, template in pods.items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        owner = next(d for d in _workloads(rendered) if d["metadata"]["name"] == name)
        volumes |= {c["metadata"]["name"]: c for c in owner["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in by_kind["ConfigMap"]:
                problems.append(f"{name}: ConfigMap {volume['configMap']['name']} is not rendered")
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{name}/{container['name']}: mounts unknown volume {mount['name']}")
                volume = volumes.get(mount["name"], {})
                if "subPath" in mount and "configMap" in volume:
                    data = by_kind["ConfigMap"].get(volume["configMap"]["name"], {}).get("data", {})
                    if mount["subPath"] not in data:
                        problems.append(f"{name}: {mount['subPath']} is not a key of {volume['configMap']['name']}")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and (ref["name"] != "metrics-platform" or ref["key"] not in SECRET_KEYS):
                    problems.append(f"{name}: {env['name']} reads {ref['name']}/{ref['key']}, not a documented key")
                if SECRET_NAME.search(env["name"]) and "value" in env:
                    problems.append(f"{name}: {env['name']} is a literal value, not a secretKeyRef")
    assert problems == []
    assert "Secret" not in by_kind, "the chart must not create Secrets: they are created beforehand"


def test_clickhouse_cluster_layout_names_the_rendered_pods(rendered: list[dict]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    shards, replicas = values["clickhouse"]["shards"], values["clickhouse"]["replicasPerShard"]
    config = _find(rendered, "ConfigMap", f"{RELEASE}-metrics-platform-clickhouse")["data"]
    cluster = ET.fromstring(config["cluster.xml"])
    pod_hosts = set()
    for sts in rendered:
        if sts["kind"] == "StatefulSet":
            for i in range(sts["spec"]["replicas"]):
                pod_hosts.add(
                    f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
                )
    layout = cluster.find("remote_servers")[0]
    assert layout.tag == values["clickhouse"]["cluster"]
    assert layout.find("secret").get("from_env") == "CLICKHOUSE_CLUSTER_SECRET"
    shard_hosts = [[r.findtext("host") for r in s.findall("replica")] for s in layout.findall("shard")]
    assert [len(h) for h in shard_hosts] == [replicas] * shards
    assert {h for hosts in shard_hosts for h in hosts} <= pod_hosts
    # The read layer's every-server cluster: each pod a shard of its own.
    every = cluster.find("remote_servers").find(values["clickhouse"]["cluster"] + "_every_server")
    assert [[r.findtext("host") for r in s.findall("replica")] for s in every.findall("shard")] == [
        [h] for hosts in shard_hosts for h in hosts
    ]
    keeper_hosts = {n.findtext("host") for n in cluster.find("zookeeper")}
    assert len(keeper_hosts) == values["keeper"]["replicas"] and keeper_hosts <= pod_hosts
    keeper = ET.fromstring(
        _find(rendered, "ConfigMap", f"{RELEASE}-metrics-platform-keeper")["data"]["keeper_config.xml"]
    )
    raft = {s.findtext("hostname") for s in keeper.iter("server")}
    assert raft == keeper_hosts
    # The users file inside the chart is the one Compose mounts and the ClickHouse test loads.
    assert config["users.xml"].strip() == USERS_XML.read_text().strip()
    kafka = _pod_spec(_find(rendered, "StatefulSet", f"{RELEASE}-metrics-platform-kafka"))["containers"][0]
    voters = next(e["value"] for e in kafka["env"] if e["name"] == "KAFKA_CONTROLLER_QUORUM_VOTERS").split(",")
    assert [v.split("@")[0] for v in voters] == [str(i) for i in range(values["kafka"]["replicas"])]
    assert {v.split("@")[1].rsplit(":", 1)[0] for v in voters} <= pod_hosts


def test_official_chart_values_hold_no_literal_secrets() -> None:
    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                secret_like = re.search(r"password|secret|salt|token", str(key), re.I)
                names_a_secret = re.search(r"SecretName|secretName|envFromSecret", str(key))
                if secret_like and not names_a_secret and isinstance(value, str | int) and value:
                    yield f"{path}.{key}"
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, dict) and "name" in item and "value" in item and SECRET_NAME.search(item["name"]):
                    yield f"{path}[{i}] {item['name']}"
                yield from walk(item, f"{path}[{i}]")

    for path in sorted(CHART_VALUES_DIR.glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        assert list(walk(values, path.name)) == []


# --- ClickHouse users on a real server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ClickHouse:
    """An embedded ClickHouse with the deployment's users file; HTTP queries as a given user."""

    def __init__(self, http_port: int) -> None:
        self.http_port = http_port

    def query(self, user: str, password: str, sql: str, database: str = "default") -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/?database={database}",
            data=sql.encode(),
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


PASSWORDS = {"CLICKHOUSE_WRITER_PASSWORD": "writer-test-password", "CLICKHOUSE_READER_PASSWORD": "reader-test-password"}


@pytest.fixture(scope="module")
def clickhouse_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ClickHouse]:
    base = tmp_path_factory.mktemp("clickhouse-users")
    users_dir = base / "users"
    (users_dir / "users.d").mkdir(parents=True)
    (users_dir / "users.xml").write_text("<clickhouse/>\n")
    shutil.copy(USERS_XML, users_dir / "users.d" / "metrics-platform.xml")
    # The embedded engine runs its own session as `default`, which the deployment file removes;
    # this test-only file gives it back, reachable from loopback only (merged after ours).
    (users_dir / "users.d" / "zz-embedded-engine.xml").write_text(
        "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users><default>"
        "<password/><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile>"
        "<quota>default</quota></default></users></clickhouse>\n"
    )
    run_dir = base / "run"
    (run_dir / "config.d").mkdir(parents=True)
    (run_dir / "config.d" / "users.xml").write_text(
        f"<clickhouse><users_config>{users_dir / 'users.xml'}</users_config></clickhouse>\n"
    )
    http_port, tcp_port = _free_port(), _free_port()
    # A cluster of this one server, as the chart's servers see theirs (test_runner_on_a_cluster_...).
    (run_dir / "config.d" / "cluster.xml").write_text(
        f"<clickhouse><remote_servers><metrics><shard><replica><host>127.0.0.1</host><port>{tcp_port}</port>"
        "</replica></shard></metrics></remote_servers></clickhouse>\n"
    )
    server = Daemon("clickhouse-users-test", base / "pids", base / "logs")
    argv = [sys.executable, "-m", "metrics_platform.stack.clickhouse_server", "--data-dir", base / "data",
            "--run-dir", run_dir, "--http-port", http_port, "--tcp-port", tcp_port]  # fmt: skip
    server.start([str(a) for a in argv], env={**os.environ, **PASSWORDS})
    ch = _ClickHouse(http_port)
    try:
        wait_until(lambda: ch.query("metrics_writer", PASSWORDS["CLICKHOUSE_WRITER_PASSWORD"], "SELECT 1")[0] == 200,
                   60, "the embedded ClickHouse with the deployment's users", server)  # fmt: skip
        yield ch
    finally:
        server.stop(timeout_s=60)


def _platform_env(user: str, password: str, port: int, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKHOUSE_", "METRICS_PLATFORM_"))}
    return {
        **env,
        "CLICKHOUSE_URL": f"http://{user}:{password}@127.0.0.1:{port}/metrics",
        # Kafka engine tables are created with this list; nothing consumes in this test.
        "METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "METRICS_PLATFORM_STATE_DIR": str(state),
    }


def test_writer_owns_the_metrics_database_and_nothing_else(clickhouse_users: _ClickHouse, tmp_path: Path) -> None:
    ch, password = clickhouse_users, PASSWORDS["CLICKHOUSE_WRITER_PASSWORD"]
    assert ch.query("metrics_writer", password, "CREATE DATABASE IF NOT EXISTS metrics") == (200, "")
    cli = Path(sys.executable).with_name("metrics-platform")
    _run([cli, "migrate"], env=_platform_env("metrics_writer", password, ch.http_port, tmp_path))
    status, tables = ch.query(
        "metrics_writer", password, "SELECT count() FROM system.tables WHERE database = 'metrics'"
    )
    assert status == 200 and int(tables) > 0
    # Retention checks read part sizes.
    assert ch.query("metrics_writer", password, "SELECT count() FROM system.parts WHERE database = 'metrics'")[0] == 200
    for sql, grant in [
        ("CREATE DATABASE elsewhere", "CREATE DATABASE"),
        ("SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')", "READ ON URL"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "READ ON FILE"),
        ("CREATE TABLE metrics.log_engine (x UInt8) ENGINE = Log", "TABLE ENGINE ON Log"),
    ]:
        status, error = ch.query("metrics_writer", password, sql, "metrics")
        assert status != 200 and "ACCESS_DENIED" in error and grant in error, sql


def test_runner_on_a_cluster_creates_the_read_layer_with_the_deployments_accounts(
    clickhouse_users: _ClickHouse, tmp_path: Path
) -> None:
    """What the chart's migration Job does, with the deployment's accounts: `migrate` with a read database finds the
    servers in system.clusters (here a cluster of this one server), migrates each and creates the Distributed
    tables as the writer; the reader reads them."""
    ch, writer = clickhouse_users, PASSWORDS["CLICKHOUSE_WRITER_PASSWORD"]
    assert ch.query("metrics_writer", writer, "CREATE DATABASE IF NOT EXISTS metrics")[0] == 200
    env = {
        **_platform_env("metrics_writer", writer, ch.http_port, tmp_path),
        "METRICS_PLATFORM_CLICKHOUSE_READ_DATABASE": "metrics_cluster",
    }
    result = _run([Path(sys.executable).with_name("metrics-platform"), "migrate"], env=env)
    assert "shard 1 replica 1 (127.0.0.1):" in result.stdout, result.stdout
    reader = PASSWORDS["CLICKHOUSE_READER_PASSWORD"]
    sql = "SELECT engine FROM system.tables WHERE database = 'metrics_cluster' AND name = 'agent_events'"
    status, engine = ch.query("metrics_reader", reader, sql)
    assert (status, engine.strip()) == (200, "Distributed")
    assert ch.query("metrics_reader", reader, "SELECT count() FROM metrics_cluster.agent_events") == (200, "0\n")


def test_reader_reads_dashboards_and_nothing_more(clickhouse_users: _ClickHouse, tmp_path: Path) -> None:
    ch = clickhouse_users
    writer = PASSWORDS["CLICKHOUSE_WRITER_PASSWORD"]
    assert ch.query("metrics_writer", writer, "CREATE DATABASE IF NOT EXISTS metrics")[0] == 200
    cli = Path(sys.executable).with_name("metrics-platform")
    _run([cli, "migrate"], env=_platform_env("metrics_writer", writer, ch.http_port, tmp_path))
    reader = PASSWORDS["CLICKHOUSE_READER_PASSWORD"]
    # Every saved dashboard question through clickhouse-connect (what Superset uses) as the read-only
    # user: none may be refused for lack of rights. Whether each answers correctly is
    # tests/test_dashboards.py's business, so other errors (a schema mid-change) are not counted here.
    settings = ClickHouseSettings(
        host="127.0.0.1",
        http_port=ch.http_port,
        tcp_port=0,
        user="metrics_reader",
        password=reader,
        database="metrics",
        secure=False,
        embedded=False,
    )
    client = clickhouse.client(settings)
    answered, refused_dashboards = [], []
    try:
        for name in dashboards.available():
            try:
                answered.append(dashboards.run(client, name).name)
            except DatabaseError as exc:
                if re.search(r"ACCESS_DENIED|READONLY|AUTHENTICATION_FAILED|QUOTA", str(exc)):
                    refused_dashboards.append(f"{name}: {exc}")
    finally:
        client.close()
    assert refused_dashboards == []
    assert answered, "no dashboard question answered as metrics_reader"
    refused = {
        "INSERT INTO metrics.agent_events (service) VALUES ('x')": "ACCESS_DENIED",
        "CREATE TEMPORARY TABLE scratch (x UInt8)": "ACCESS_DENIED",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')": "ACCESS_DENIED",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')": "ACCESS_DENIED",
        f"SELECT * FROM remote('127.0.0.1:{ch.http_port}', system.one)": "ACCESS_DENIED",
        "SELECT 1 SETTINGS max_threads = 1": "READONLY",
        "CREATE TABLE metrics.t (x UInt8) ENGINE = MergeTree ORDER BY x": "ACCESS_DENIED",
    }
    for sql, code in refused.items():
        status, error = ch.query("metrics_reader", reader, sql, "metrics")
        assert status != 200 and code in error, f"{sql}: {status} {error[:200]}"
    assert ch.query("metrics_reader", "wrong-password", "SELECT 1")[0] != 200


def test_deployment_file_removes_the_default_user() -> None:
    users = ET.parse(USERS_XML).getroot().find("users")
    assert users.find("default").get("remove") == "remove"
    for name in ("metrics_writer", "metrics_reader"):
        user = users.find(name)
        assert user.find("password").get("from_env") and not (user.find("password").text or "").strip()
        assert user.find("access_management") is None
    assert ET.parse(USERS_XML).getroot().find("profiles/metrics_reader/readonly").text == "1"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_cluster_database_statement_parses(clickhouse_users: _ClickHouse, rendered: list[dict]) -> None:
    job = next(d for d in rendered if d["kind"] == "Job")
    init = {c["name"]: c for c in _pod_spec(job)["initContainers"]}["database"]
    statement = next(e["value"] for e in init["env"] if e["name"] == "CREATE_DATABASE")
    status, formatted = clickhouse_users.query(
        "metrics_writer", PASSWORDS["CLICKHOUSE_WRITER_PASSWORD"], f"SELECT formatQuery({_sql_string(statement)})"
    )
    assert status == 200, formatted
    assert "ON CLUSTER metrics" in formatted and "ENGINE = Replicated(" in formatted
