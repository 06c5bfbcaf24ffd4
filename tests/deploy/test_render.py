"""The overlays render, and what they render is valid Kubernetes.

Built-in kinds are checked by kubernetes-validate in strict mode (unknown fields are errors) at
the schema version of a current cluster; KEDA's CRDs, which it has no schema for, against a
small schema written here from KEDA's ScaledObject reference.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from conftest import CLUSTER_SCOPED, COMPONENTS, OVERLAYS, SERVICES, Doc, Manifests
from crd_schemas import SCHEMAS

from services.common.settings import ServiceSettings

# The oldest Kubernetes these manifests support (native gRPC probes, the preStop sleep action)
# and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.33", "1.37")
CRD_GROUPS = (
    "keda.sh/",
    "cert-manager.io/",
    "gateway.networking.k8s.io/",
    "postgresql.cnpg.io/",
    "barmancloud.cnpg.io/",
    "monitoring.coreos.com/",
)

# keda.sh/v1alpha1 ScaledObject: the fields these manifests use, strictly (a typo is an error).
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"enum": ["Deployment", "StatefulSet"]},
                        "name": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 1},
                        # KEDA >= 2.17.
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                            ]
                        },
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"behavior": {"type": "object"}},
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            # KEDA reads trigger metadata as strings only.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}

NATS_JETSTREAM_METADATA = {
    "required": ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"],
    "allowed": {
        "natsServerMonitoringEndpoint",
        "account",
        "stream",
        "consumer",
        "lagThreshold",
        "activationLagThreshold",
        "useHttps",
    },
}


def is_crd(doc: Doc) -> bool:
    return str(doc.get("apiVersion", "")).startswith(CRD_GROUPS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_service_into_its_namespace(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    deployments = {d["metadata"]["name"] for d in m.of_kind("Deployment")}
    assert set(SERVICES) <= deployments
    assert m.get("StatefulSet", "nats")
    for doc in m.docs:
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
            continue
        assert doc["metadata"].get("namespace") == "headshots", (
            f"{doc['kind']}/{doc['metadata']['name']} is outside the headshots namespace"
        )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_pass_strict_schema_validation(
    overlay: str, version: str, manifests: dict[str, Manifests]
) -> None:
    errors = []
    checked = 0
    for doc in manifests[overlay].docs:
        if is_crd(doc):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
    assert not errors, "\n".join(errors)
    assert checked >= 30


def test_strict_validation_rejects_a_misspelt_field(manifests: dict[str, Manifests]) -> None:
    # The check above is only worth something if a typo in a manifest fails it.
    deployment = copy.deepcopy(manifests["gpu"].get("Deployment", "generator"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def _crd_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for d in docs:
        if not is_crd(d):
            continue
        if d["kind"] == "ScaledObject":
            schema = SCALED_OBJECT_SCHEMA
        else:
            schema = SCHEMAS.get((d["apiVersion"], d["kind"]))
            if schema is None:
                problems.append(f"{d['apiVersion']} {d['kind']}: no schema here")
                continue
        validator = jsonschema.Draft202012Validator(schema)
        problems += [
            f"{d['kind']}/{d['metadata']['name']} {'/'.join(map(str, e.path))}: {e.message}"
            for e in validator.iter_errors(d)
        ]
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_match_their_schema(overlay: str, manifests: dict[str, Manifests]) -> None:
    m = manifests[overlay]
    assert _crd_problems(m.docs) == []
    for so in m.of_kind("ScaledObject"):
        target = so["spec"]["scaleTargetRef"]["name"]
        assert m.get(so["spec"]["scaleTargetRef"].get("kind", "Deployment"), target)
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "nats-jetstream"
            keys = set(trigger["metadata"])
            assert set(NATS_JETSTREAM_METADATA["required"]) <= keys
            assert keys <= NATS_JETSTREAM_METADATA["allowed"], keys


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_renders_and_validates(
    component: str, version: str, component_renders: dict[str, list[Doc]]
) -> None:
    docs = component_renders[component]
    assert _crd_problems(docs) == []
    errors = []
    for doc in docs:
        if is_crd(doc):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
    assert not errors, "\n".join(errors)


def test_crd_schemas_reject_a_misplaced_field(manifests: dict[str, Manifests]) -> None:
    m = manifests["production"]
    cluster = copy.deepcopy(m.get("Cluster", "headshots-pg"))
    cluster["spec"]["storage"]["storageClassName"] = cluster["spec"]["storage"].pop("storageClass")
    route = copy.deepcopy(m.get("HTTPRoute", "headshots-rest"))
    route["spec"]["rules"][0]["timeout"] = route["spec"]["rules"][0].pop("timeouts")
    backup = copy.deepcopy(m.get("ScheduledBackup", "headshots-pg-nightly"))
    backup["spec"]["schedule"] = "0 2 * * *"  # five fields: CloudNativePG wants six
    for broken in (cluster, route, backup):
        assert _crd_problems([broken]), broken["kind"]


def test_schema_rejects_a_misspelt_scaled_object_field(manifests: dict[str, Manifests]) -> None:
    so = copy.deepcopy(manifests["gpu"].of_kind("ScaledObject")[0])
    so["spec"]["maxReplicas"] = so["spec"].pop("maxReplicaCount")
    assert list(jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).iter_errors(so))


def _known_setting_names() -> set[str]:
    names: set[str] = set()
    for field in ServiceSettings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias]) if alias is not None else []
        names.update(str(c) for c in choices)
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_names_settings_the_services_read(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    # A misspelt variable is silently ignored by pydantic-settings (extra="ignore"): catch it here.
    known = _known_setting_names()
    service_prefixes = tuple(f"HS_{s.upper()}_" for s in SERVICES)
    # Variables for the libraries underneath, and ones requested from their owners (see the
    # deployment report): HS_JETSTREAM_REPLICAS for Bus.ensure_streams(replicas=...).
    # Composition variables: parts of DATABASE_URL / HS_NATS_URL filled from Secrets by the
    # kubelet's $(VAR) expansion, and the trust store nats-py's TLS context reads.
    other = {
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "AWS_REGION",
        "HS_JETSTREAM_REPLICAS",
        "DB_USER",
        "DB_PASSWORD",
        "NATS_PASSWORD",
        "SSL_CERT_FILE",
    }
    m = manifests[overlay]
    names = set(m.configmap_data("headshots-config"))
    for name in SERVICES:
        for c in Manifests.containers(m.get("Deployment", name)):
            names |= set(Manifests.env(c))
    unknown = {
        n
        for n in names
        if n not in known
        and n not in other
        and not n.startswith(service_prefixes)
        and not n.startswith("AWS_")
    }
    assert not unknown, f"settings nobody reads: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_gets_its_port_secrets_and_shared_settings(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    config = m.configmap_data("headshots-config")
    assert config["HS_METRICS_PORT"] == "9090"
    assert config["HS_MODELS_DIR"] == "/models"
    assert config["HS_NATS_URL"].startswith("nats://nats")
    for name, port in SERVICES.items():
        c = Manifests.containers(m.get("Deployment", name), init=False)[0]
        env = Manifests.env(c)
        assert env["HS_GRPC_PORT"]["value"] == str(port)
        assert c["command"] == ["python", "-m", f"services.{name}"]
        assert {p["containerPort"] for p in c["ports"]} >= {port, 9090}
        assert any(
            r.get("configMapRef", {}).get("name", "").startswith("headshots-config-")
            for r in c.get("envFrom", [])
        )
        ref = env["HS_MASTER_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "master-key" and ref["name"].startswith("headshots-secrets")
        assert "value" not in env["HS_MASTER_KEY"]
        # DATABASE_URL: the DML role's URL from a Secret, whole or composed from a Secret's
        # username and password; never a literal credential.
        url = env["DATABASE_URL"]
        if "valueFrom" in url:
            ref = url["valueFrom"]["secretKeyRef"]
            assert ref["key"] == "database-url" and ref["name"].startswith("headshots-secrets")
        else:
            assert "$(DB_USER):$(DB_PASSWORD)@" in url["value"]
            for part in ("DB_USER", "DB_PASSWORD"):
                assert env[part]["valueFrom"]["secretKeyRef"]["name"] == "headshots-db-app"
