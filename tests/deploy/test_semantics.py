"""Every rendered object of every overlay and component against the API server's semantic
rules (k8s_semantics.py): what strict schema validation passes and `kubectl apply` still
refuses, or what applies and then never starts (a missing Secret key, an unexpanded $(VAR)).
The checker is shown to catch each rule on a deliberately broken copy, starting with the
retention Deployment whose ephemeral-storage request exceeded its limit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
import yaml
from conftest import COMPONENTS, DEPLOY, OPERATOR_PROVIDED, OVERLAYS, Doc, Manifests
from k8s_semantics import problems, quantity


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_meets_the_api_servers_semantic_rules(
    overlay: str, manifests: dict[str, Manifests], operator_provided: dict[str, set[str]]
) -> None:
    assert problems(manifests[overlay].docs, operator_provided) == []


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_meets_the_api_servers_semantic_rules(
    component: str,
    component_renders: dict[str, list[Doc]],
    operator_provided: dict[str, set[str]],
) -> None:
    assert problems(component_renders[component], operator_provided) == []


def test_quantities_compare_as_the_api_server_does() -> None:
    assert quantity("1Gi") > quantity("512Mi")
    assert quantity("500m") == quantity("0.5")
    assert quantity("1G") < quantity("1Gi")
    assert quantity("2") == quantity("2000m")
    assert quantity("1e3") == quantity("1k")
    with pytest.raises(ValueError):
        quantity("1 GB")


def _container(d: Doc, name: str | None = None) -> Doc:
    cs = Manifests.containers(d, init=False)
    return next(c for c in cs if name is None or c["name"] == name)


def _retention_bug(docs: list[Doc]) -> None:
    # The values on main before this fix (deploy/k8s/base/retention.yaml).
    res = _container(_get(docs, "Deployment", "retention"))["resources"]
    res["requests"]["ephemeral-storage"] = "1Gi"
    res["limits"]["ephemeral-storage"] = "512Mi"


def _long_port_name(docs: list[Doc]) -> None:
    _container(_get(docs, "Deployment", "gateway"))["ports"][0]["name"] = "grpc-public-api-port"


def _probe_port_missing(docs: list[Doc]) -> None:
    _container(_get(docs, "Deployment", "gateway"))["livenessProbe"]["httpGet"]["port"] = "rest"


def _selector_mismatch(docs: list[Doc]) -> None:
    d = _get(docs, "Deployment", "filter")
    d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "filters"


def _service_selects_nothing(docs: list[Doc]) -> None:
    _get(docs, "Service", "generator")["spec"]["selector"] = {"app.kubernetes.io/name": "gen"}


def _unnamed_service_port(docs: list[Doc]) -> None:
    del _get(docs, "Service", "gateway")["spec"]["ports"][1]["name"]


def _missing_secret_key(docs: list[Doc]) -> None:
    env = _container(_get(docs, "Deployment", "gateway"))["env"]
    next(e for e in env if e["name"] == "HS_GATEWAY_KEY_PEPPER")["valueFrom"]["secretKeyRef"][
        "key"
    ] = "pepper"


def _unknown_secret(docs: list[Doc]) -> None:
    env = _container(_get(docs, "Deployment", "trainer"))["env"]
    next(e for e in env if e["name"] == "HS_MASTER_KEY")["valueFrom"]["secretKeyRef"]["name"] = (
        "master-key"
    )


def _var_used_before_defined(docs: list[Doc]) -> None:
    env = _container(_get(docs, "Deployment", "trainer"))["env"]
    env.insert(0, {"name": "DATABASE_URL", "value": "postgresql://$(DB_USER)@db/headshots"})
    env.append({"name": "DB_USER", "value": "headshots_app"})


def _gpu_request_below_limit(docs: list[Doc]) -> None:
    res = _container(_get(docs, "Deployment", "generator"))["resources"]
    res["requests"]["nvidia.com/gpu"] = "0"


def _missing_claim(docs: list[Doc]) -> None:
    docs[:] = [d for d in docs if d["kind"] != "PersistentVolumeClaim"]


BREAKAGES: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "retention ephemeral-storage 1Gi > 512Mi": (_retention_bug, r"ephemeral-storage request 1Gi"),
    "port name over 15 characters": (_long_port_name, r"not an IANA service name"),
    "probe names an undeclared port": (_probe_port_missing, r"names port 'rest'"),
    "selector does not match the template": (_selector_mismatch, r"does not match its template"),
    "Service selects no pod": (_service_selects_nothing, r"matches no pod"),
    "Service port without a name": (_unnamed_service_port, r"every port needs a name"),
    "Secret key nobody creates": (_missing_secret_key, r"no key 'pepper'"),
    "Secret nobody creates": (_unknown_secret, r"Secret master-key is neither"),
    "$(VAR) before its definition": (_var_used_before_defined, r"uses \$\(DB_USER\) before"),
    "GPU request != limit": (_gpu_request_below_limit, r"nvidia.com/gpu request != limit"),
    "volume claim not rendered": (_missing_claim, r"claim headshots-models is not rendered"),
}


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_checker_catches_a_deliberately_broken_object(
    breakage: str, manifests: dict[str, Manifests], operator_provided: dict[str, set[str]]
) -> None:
    docs = copy.deepcopy(manifests["gpu"].docs)
    assert problems(docs, operator_provided) == []
    mutate, expected = BREAKAGES[breakage]
    mutate(docs)
    found = problems(docs, operator_provided)
    assert any(re.search(expected, p) for p in found), found


def test_every_operator_provided_secret_is_documented_and_used(
    manifests: dict[str, Manifests], component_renders: dict[str, list[Doc]]
) -> None:
    guide = (DEPLOY / "README.md").read_text()
    listed = yaml.safe_load(OPERATOR_PROVIDED.read_text())["secrets"]
    rendered = [d for m in manifests.values() for d in m.docs] + [
        d for docs in component_renders.values() for d in docs
    ]
    text = yaml.safe_dump_all(rendered)
    for name, entry in listed.items():
        assert f"`{name}`" in guide, f"{name} is not documented in deploy/README.md"
        for key in entry["keys"]:
            assert key in guide, f"{name}/{key} is not documented in deploy/README.md"
        assert f"name: {name}" in text, f"{name} is listed but no manifest refers to it"
