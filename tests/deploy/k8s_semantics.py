"""Rules the API server (or the kubelet) enforces that an OpenAPI schema cannot express.

`problems(docs, provided)` reads a rendered set of objects and returns one sentence per
violation; empty means an `apply` of these objects would not be refused for these reasons and
the pods would start. Checked:

- resources: each request <= its limit (what rejected retention's 1Gi/512Mi on a real cluster);
  extended resources (nvidia.com/...) integral with request == limit;
- names: object names DNS-1123, container/Service port names IANA service names (<= 15
  characters, a letter, no "--"), Service ports named when there are several, unique;
- probes: the port a probe names (by name or number) is a port of that container; gRPC probes
  by number;
- selectors: workload selectors match their own template; Services, PDBs, PodMonitors and
  autoscalers find the pods/targets they name; a Service's named targetPort exists on them;
- references: every Secret / ConfigMap (and key) that env, envFrom, volumes or a known custom
  resource names is produced by the render or listed in `provided` (operator-created);
  PVC claims exist; volume mounts name volumes; `$(VAR)` in env is defined before its use;
- Jobs restart OnFailure/Never; PriorityClasses named by pods exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Doc = dict[str, Any]

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def quantity(value: object) -> Decimal:
    """A Kubernetes resource.Quantity as a number ("500m" → 0.5, "1Gi" → 1073741824)."""
    match = QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix in ("E",) and "e" in number.lower():
        raise ValueError(f"ambiguous quantity: {value!r}")
    return Decimal(number) * Decimal(SUFFIXES[suffix])


@dataclass(frozen=True)
class Pod:
    where: str
    labels: dict[str, str]
    spec: Doc
    # A StatefulSet's volumeClaimTemplates: volumes its pods get from the controller.
    claim_volumes: frozenset[str] = frozenset()


def iana_service_name(name: str) -> bool:
    return (
        len(name) <= 15
        and bool(IANA_SVC_NAME.match(name))
        and "--" not in name
        and bool(re.search("[a-z]", name))
    )


def _name(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_template(doc: Doc) -> Doc | None:
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template") if doc.get("kind") in WORKLOADS else None


def pods(docs: list[Doc]) -> Iterator[Pod]:
    for d in docs:
        template = pod_template(d)
        if template is not None:
            claims = frozenset(
                t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates") or []
            )
            labels = dict(template.get("metadata", {}).get("labels") or {})
            yield Pod(_name(d), labels, template["spec"], claims)


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def selector_matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


class Checker:
    def __init__(self, docs: list[Doc], provided: dict[str, set[str]]) -> None:
        self.docs = docs
        self.provided = provided
        self.out: list[str] = []
        self.pods = list(pods(docs))
        self.secrets: dict[str, set[str]] = {}
        self.configmaps: dict[str, set[str]] = {}
        for d in docs:
            name = d.get("metadata", {}).get("name", "")
            if d.get("kind") == "Secret":
                self.secrets[name] = set(d.get("data") or {}) | set(d.get("stringData") or {})
            elif d.get("kind") == "ConfigMap":
                self.configmaps[name] = set(d.get("data") or {}) | set(d.get("binaryData") or {})
            elif d.get("kind") == "Certificate":
                # cert-manager writes these three keys into spec.secretName.
                self.secrets[d["spec"]["secretName"]] = {"tls.crt", "tls.key", "ca.crt"}

    def problem(self, text: str) -> None:
        self.out.append(text)

    # ------------------------------------------------------------------ references

    def secret_key(self, where: str, name: str, key: str | None, optional: bool = False) -> None:
        keys = self.secrets.get(name)
        if keys is None:
            keys = self.provided.get(name)
        if keys is None:
            if not optional:
                self.problem(f"{where}: Secret {name} is neither rendered nor operator-provided")
            return
        if key is not None and key not in keys and not optional:
            self.problem(f"{where}: Secret {name} has no key {key!r} (has {sorted(keys)})")

    def configmap_key(self, where: str, name: str, key: str | None, optional: bool = False) -> None:
        keys = self.configmaps.get(name)
        if keys is None:
            if not optional:
                self.problem(f"{where}: ConfigMap {name} is not rendered")
            return
        if key is not None and key not in keys and not optional:
            self.problem(f"{where}: ConfigMap {name} has no key {key!r}")

    # ------------------------------------------------------------------ rules

    def names(self) -> None:
        for d in self.docs:
            name = d.get("metadata", {}).get("name", "")
            if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
                self.problem(f"{_name(d)}: name is not a DNS-1123 subdomain")
            for key, value in (d.get("metadata", {}).get("labels") or {}).items():
                if len(str(value)) > 63:
                    self.problem(f"{_name(d)}: label {key} value longer than 63 characters")

    def pod_rules(self, pod: Pod) -> None:
        spec = pod.spec
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        if len(volumes) != len(spec.get("volumes") or []):
            self.problem(f"{pod.where}: duplicate volume names")
        env_sources: set[str] = set()
        port_names: set[str] = set()
        for c in containers(spec):
            where = f"{pod.where}[{c['name']}]"
            self.resources(where, c.get("resources") or {})
            ports = c.get("ports") or []
            numbers = {p["containerPort"] for p in ports}
            named = {p["name"]: p["containerPort"] for p in ports if "name" in p}
            for p in ports:
                n = p.get("name")
                if n is None:
                    continue
                if not iana_service_name(n):
                    self.problem(f"{where}: port name {n!r} is not an IANA service name (<= 15)")
                if n in port_names:
                    self.problem(f"{where}: port name {n!r} used twice in the pod")
                port_names.add(n)
            for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(probe_kind)
                if not probe:
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler not in probe:
                        continue
                    port = probe[handler].get("port")
                    if handler == "grpc" and not isinstance(port, int):
                        self.problem(f"{where}: {probe_kind} grpc port must be a number")
                    elif isinstance(port, str) and port not in named:
                        self.problem(f"{where}: {probe_kind} names port {port!r}, not declared")
                    elif isinstance(port, int) and port not in numbers:
                        self.problem(f"{where}: {probe_kind} probes port {port}, not declared")
            mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
            if len(set(mounts)) != len(mounts):
                self.problem(f"{where}: two volumes mounted at one path")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and m["name"] not in pod.claim_volumes:
                    self.problem(f"{where}: mounts volume {m['name']!r}, not in the pod")
            defined: set[str] = set()
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    ref = src["configMapRef"]
                    self.configmap_key(where, ref["name"], None, ref.get("optional", False))
                    defined |= self.configmaps.get(ref["name"], set())
                if "secretRef" in src:
                    ref = src["secretRef"]
                    self.secret_key(where, ref["name"], None, ref.get("optional", False))
                    defined |= self.secrets.get(ref["name"], self.provided.get(ref["name"], set()))
            for e in c.get("env") or []:
                for var in VAR_REF.findall(str(e.get("value", ""))):
                    if var not in defined:
                        self.problem(
                            f"{where}: env {e['name']} uses $({var}) before it is defined: "
                            "the kubelet leaves it unexpanded"
                        )
                defined.add(e["name"])
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    self.secret_key(where, r["name"], r["key"], r.get("optional", False))
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    self.configmap_key(where, r["name"], r["key"], r.get("optional", False))
            for word in [*(c.get("command") or []), *(c.get("args") or [])]:
                for var in VAR_REF.findall(str(word)):
                    if var not in defined:
                        self.problem(f"{where}: command/args use $({var}), not in its env")
            env_sources |= defined
        for v in volumes.values():
            where = f"{pod.where} volume {v['name']}"
            if "secret" in v:
                s = v["secret"]
                for item in s.get("items") or [None]:
                    key = item and item["key"]
                    self.secret_key(where, s["secretName"], key, s.get("optional", False))
            if "configMap" in v:
                cm = v["configMap"]
                for item in cm.get("items") or [None]:
                    key = item and item["key"]
                    self.configmap_key(where, cm["name"], key, cm.get("optional", False))
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if not any(
                    d.get("kind") == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
                    for d in self.docs
                ):
                    self.problem(f"{where}: claim {claim} is not rendered")
        if (pc := spec.get("priorityClassName")) and not any(
            d.get("kind") == "PriorityClass" and d["metadata"]["name"] == pc for d in self.docs
        ):
            self.problem(f"{pod.where}: priorityClassName {pc} is not rendered")

    def resources(self, where: str, res: Doc) -> None:
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for name in set(requests) | set(limits):
            try:
                req = quantity(requests[name]) if name in requests else None
                lim = quantity(limits[name]) if name in limits else None
            except ValueError as e:
                self.problem(f"{where}: {name}: {e}")
                continue
            if req is not None and lim is not None and req > lim:
                self.problem(
                    f"{where}: {name} request {requests[name]} exceeds its limit {limits[name]} "
                    "(the API server refuses this)"
                )
            if "/" in name and not name.startswith(("kubernetes.io/", "hugepages-")):
                if lim is None:
                    self.problem(f"{where}: extended resource {name} without a limit")
                elif req is not None and req != lim:
                    self.problem(f"{where}: extended resource {name} request != limit")
                elif lim != lim.to_integral_value():
                    self.problem(f"{where}: extended resource {name} must be a whole number")

    def workload_selectors(self) -> None:
        for d in self.docs:
            template = pod_template(d)
            if template is None or d["kind"] in ("Job", "CronJob"):
                continue
            labels = template.get("metadata", {}).get("labels") or {}
            if not selector_matches(d["spec"].get("selector"), labels):
                self.problem(f"{_name(d)}: spec.selector does not match its template's labels")
            if d["kind"] == "StatefulSet":
                svc = d["spec"].get("serviceName")
                if svc and not self.find("Service", svc):
                    self.problem(f"{_name(d)}: serviceName {svc} is not rendered")
        for d in self.docs:
            if d.get("kind") in ("Job", "CronJob"):
                policy = pod_template(d)["spec"].get("restartPolicy")
                if policy not in ("OnFailure", "Never"):
                    self.problem(f"{_name(d)}: a Job's restartPolicy must be OnFailure or Never")

    def find(self, kind: str, name: str) -> Doc | None:
        for d in self.docs:
            if d.get("kind") == kind and d["metadata"]["name"] == name:
                return d
        return None

    def services(self) -> None:
        for d in self.of("Service"):
            where = _name(d)
            ports = d["spec"].get("ports") or []
            names = [p.get("name") for p in ports]
            if len(ports) > 1 and any(n is None for n in names):
                self.problem(f"{where}: with several ports every port needs a name")
            if len({n for n in names if n}) != len([n for n in names if n]):
                self.problem(f"{where}: duplicate port names")
            for n in names:
                if n is not None and not DNS1123_LABEL.match(n):
                    self.problem(f"{where}: port name {n!r} is not a DNS-1123 label")
            keys = [(p["port"], p.get("protocol", "TCP")) for p in ports]
            if len(set(keys)) != len(keys):
                self.problem(f"{where}: duplicate port/protocol")
            selector = d["spec"].get("selector")
            if not selector:
                continue
            targets = self.selected({"matchLabels": selector})
            if not targets:
                self.problem(f"{where}: selector {selector} matches no pod in the render")
                continue
            for p in ports:
                target = p.get("targetPort", p["port"])
                for pod in targets:
                    declared = [
                        port
                        for c in pod.spec.get("containers") or []
                        for port in c.get("ports") or []
                    ]
                    if isinstance(target, str) and target not in {x.get("name") for x in declared}:
                        self.problem(f"{where}: targetPort {target!r} is not a port of {pod.where}")

    def selected(self, selector: Doc | None) -> list[Pod]:
        return [p for p in self.pods if selector_matches(selector, p.labels)]

    def of(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") == kind]

    def selectors_find_pods(self) -> None:
        for kind in ("PodDisruptionBudget", "PodMonitor"):
            for d in self.of(kind):
                if not self.selected(d["spec"].get("selector")):
                    self.problem(f"{_name(d)}: selector matches no pod in the render")
        for d in self.of("PodMonitor"):
            for endpoint in d["spec"].get("podMetricsEndpoints") or []:
                port = endpoint.get("port")
                for pod in self.selected(d["spec"]["selector"]):
                    names = {
                        x.get("name") for c in containers(pod.spec) for x in c.get("ports") or []
                    }
                    if port not in names:
                        self.problem(f"{_name(d)}: port {port!r} is not a port of {pod.where}")
        for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            for d in self.of(kind):
                ref = d["spec"]["scaleTargetRef"]
                if not self.find(ref.get("kind", "Deployment"), ref["name"]):
                    self.problem(f"{_name(d)}: scale target {ref['name']} is not rendered")

    def custom_resources(self) -> None:
        """Secret references inside the custom resources these manifests use."""
        for d in self.of("Gateway"):
            for listener in d["spec"].get("listeners") or []:
                for ref in (listener.get("tls") or {}).get("certificateRefs") or []:
                    self.secret_key(_name(d), ref["name"], "tls.crt")
        for d in self.of("ObjectStore"):
            creds = d["spec"]["configuration"].get("s3Credentials") or {}
            for value in creds.values():
                if isinstance(value, dict) and "name" in value:
                    self.secret_key(_name(d), value["name"], value["key"])
        for d in self.of("Cluster"):
            for role in (d["spec"].get("managed") or {}).get("roles") or []:
                if "passwordSecret" in role:
                    for key in ("username", "password"):
                        self.secret_key(_name(d), role["passwordSecret"]["name"], key)
        for d in self.of("Issuer"):
            if "ca" in d["spec"]:
                self.secret_key(_name(d), d["spec"]["ca"]["secretName"], "tls.key")
        for d in self.of("ScheduledBackup") + self.of("Pooler"):
            cluster = d["spec"]["cluster"]["name"]
            if not self.find("Cluster", cluster):
                self.problem(f"{_name(d)}: cluster {cluster} is not rendered")
        for kind in ("GRPCRoute", "HTTPRoute"):
            for d in self.of(kind):
                for parent in d["spec"].get("parentRefs") or []:
                    gw = self.find("Gateway", parent["name"])
                    if gw is None:
                        self.problem(f"{_name(d)}: parent Gateway {parent['name']} not rendered")
                    elif parent.get("sectionName") and parent["sectionName"] not in {
                        x["name"] for x in gw["spec"]["listeners"]
                    }:
                        self.problem(f"{_name(d)}: no listener {parent['sectionName']}")
                for rule in d["spec"].get("rules") or []:
                    for backend in rule.get("backendRefs") or []:
                        svc = self.find("Service", backend["name"])
                        if svc is None or backend["port"] not in {
                            p["port"] for p in svc["spec"]["ports"]
                        }:
                            self.problem(f"{_name(d)}: backend {backend} is not a Service port")

    def run(self) -> list[str]:
        self.names()
        for pod in self.pods:
            self.pod_rules(pod)
        self.workload_selectors()
        self.services()
        self.selectors_find_pods()
        self.custom_resources()
        return self.out


def problems(docs: list[Doc], provided: dict[str, set[str]]) -> list[str]:
    return Checker(docs, provided).run()
