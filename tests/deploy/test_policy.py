"""Hardening and platform rules over the rendered overlays (what an admission policy would check).

Pod Security "restricted" plus a read-only root filesystem, resources and probes everywhere,
GPU placement, one autoscaler per Deployment, disruption budgets, grace periods sized to each
service's work, and NetworkPolicies that allow exactly the platform's flows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import GPU_SERVICES, OVERLAYS, SERVICES, Doc, Manifests, labels_match

GPU = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"


def _where(workload: Doc, container: Doc | None = None) -> str:
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    return f"{name}[{container['name']}]" if container else name


def _is_job(workload: Doc) -> bool:
    return workload["kind"] in ("Job", "CronJob")


# ------------------------------------------------------------------ containers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    missing = []
    for w in manifests[overlay].workloads():
        for c in Manifests.containers(w):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        missing.append(f"{_where(w, c)} {kind}.{r}")
    assert not missing, missing


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_readiness_and_liveness_probes(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    missing = []
    for w in manifests[overlay].workloads():
        if _is_job(w):
            continue  # runs to completion: nothing to route to, nothing to restart
        for c in Manifests.containers(w, init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    missing.append(f"{_where(w, c)} {probe}")
    assert not missing, missing


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_use_native_grpc_probes_with_a_startup_budget(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    for name, port in SERVICES.items():
        c = Manifests.containers(m.get("Deployment", name), init=False)[0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name == "gateway" and probe == "livenessProbe":
                continue
            assert c[probe].get("grpc", {}).get("port") == port, f"{name} {probe}"
    # The gateway's liveness goes through REST, so a pod whose REST server died is restarted.
    gateway = Manifests.containers(m.get("Deployment", "gateway"), init=False)[0]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Loading a base model from a volume onto a GPU takes minutes: the startup probe must allow
    # it, or the kubelet restarts the pod in a loop before it ever serves.
    for name in ("generator", "trainer", "filter"):
        sp = Manifests.containers(m.get("Deployment", name), init=False)[0]["startupProbe"]
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        assert budget >= 300, f"{name}: startup budget {budget}s"
    if overlay == "gpu":
        sp = Manifests.containers(m.get("Deployment", "generator"), init=False)[0]["startupProbe"]
        assert sp["periodSeconds"] * sp["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_restricted_pod_security_with_a_read_only_root(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    problems = []
    for w in manifests[overlay].workloads():
        pod = Manifests.pod_spec(w)
        psc = pod.get("securityContext", {})
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{_where(w)} seccompProfile")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(host):
                problems.append(f"{_where(w)} {host}")
        if any("hostPath" in v for v in pod.get("volumes", [])):
            problems.append(f"{_where(w)} hostPath volume")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{_where(w)} mounts a service account token")
        for c in Manifests.containers(w):
            sc = c.get("securityContext", {})
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True or uid in (None, 0):
                problems.append(f"{_where(w, c)} may run as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{_where(w, c)} allowPrivilegeEscalation")
            if sc.get("privileged"):
                problems.append(f"{_where(w, c)} privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{_where(w, c)} writable root filesystem")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                problems.append(f"{_where(w, c)} capabilities")
    assert not problems, problems
    ns = manifests[overlay].get("Namespace", "headshots")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_a_tag(overlay: str, manifests: dict[str, Manifests]) -> None:
    for w in manifests[overlay].workloads():
        for c in Manifests.containers(w):
            image = c["image"]
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert name and tag and tag != "latest" and "/" not in tag, f"{_where(w, c)}: {image}"


# ------------------------------------------------------------------ shutdown


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_periods_cover_each_services_shutdown(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    graces = {}
    for name in SERVICES:
        d = manifests[overlay].get("Deployment", name)
        c = Manifests.containers(d, init=False)[0]
        own = float(Manifests.env(c)["HS_SHUTDOWN_GRACE_SECONDS"]["value"])
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        pod_grace = Manifests.pod_spec(d)["terminationGracePeriodSeconds"]
        # The service must be done (work finished or handed back) before the kubelet's SIGKILL,
        # with a margin for process exit.
        assert own + pre_stop + 5 <= pod_grace, f"{name}: {own}+{pre_stop}s vs {pod_grace}s"
        graces[name] = pod_grace
    # The trainer writes a checkpoint and naks its job: the longest hand-back of all.
    assert graces["trainer"] == max(graces.values())


# ------------------------------------------------------------------ GPU placement


def test_gpu_workloads_request_select_and_tolerate_the_gpu_pool(
    manifests: dict[str, Manifests],
) -> None:
    m = manifests["gpu"]
    gpu_workloads = set()
    for w in m.workloads():
        pod = Manifests.pod_spec(w)
        wants_gpu = any(
            GPU in c.get("resources", {}).get("limits", {}) for c in Manifests.containers(w)
        )
        if not wants_gpu:
            assert GPU_NODE_LABEL not in pod.get("nodeSelector", {}), _where(w)
            continue
        gpu_workloads.add(w["metadata"]["name"])
        for c in Manifests.containers(w, init=False):
            res = c["resources"]
            assert str(res["limits"][GPU]) == "1" and str(res["requests"][GPU]) == "1"
        assert pod["nodeSelector"][GPU_NODE_LABEL] == "true", _where(w)
        assert any(
            t["key"] == GPU and t.get("effect") == "NoSchedule" and t["operator"] == "Exists"
            for t in pod.get("tolerations", [])
        ), f"{_where(w)} does not tolerate the GPU pool's taint"
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {
            vm["mountPath"]: vm for vm in Manifests.containers(w, init=False)[0]["volumeMounts"]
        }
        shm = volumes[mounts["/dev/shm"]["name"]]
        assert shm["emptyDir"]["medium"] == "Memory", f"{_where(w)} /dev/shm"
        models = volumes[mounts["/models"]["name"]]
        assert models["persistentVolumeClaim"]["claimName"] == "headshots-models"
        assert mounts["/models"].get("readOnly") is True
    assert gpu_workloads == set(GPU_SERVICES)
    # Shared by every GPU pod on every node, written by the models-fill Job only.
    claim = m.get("PersistentVolumeClaim", "headshots-models")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"]
    fill = Manifests.pod_spec(m.get("Job", "models-fill"))
    assert fill["volumes"][0]["persistentVolumeClaim"] == {"claimName": "headshots-models"}


def test_gpu_pods_choose_their_gpus_and_busy_trainers_are_not_disrupted(
    manifests: dict[str, Manifests],
) -> None:
    m = manifests["gpu"]
    assert m.get("PriorityClass", "headshots-gpu")["preemptionPolicy"] == "Never"
    minimum_mib = {"trainer": 40000, "generator": 20000}
    for name in GPU_SERVICES:
        pod = Manifests.pod_spec(m.get("Deployment", name))
        assert pod["priorityClassName"] == "headshots-gpu"
        zones = [t for t in pod["topologySpreadConstraints"] if "zone" in t["topologyKey"]]
        assert zones and zones[0]["whenUnsatisfiable"] == "ScheduleAnyway"
        if name in minimum_mib:
            terms = pod["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            (expr,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
            assert expr["key"] == "nvidia.com/gpu.memory" and expr["operator"] == "Gt"
            assert int(expr["values"][0]) == minimum_mib[name]
    annotations = Manifests.pod_template(m.get("Deployment", "trainer"))["metadata"]["annotations"]
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"


def test_keda_fallback_keeps_replicas_and_every_durable_is_created_by_the_setup_job(
    manifests: dict[str, Manifests],
) -> None:
    from services.common.bus.setup import JOB_DURABLES
    from services.filter.worker import FilterWorker
    from services.generator.worker import GeneratorWorker
    from services.trainer.worker import TrainerWorker

    stages = [w.STAGE for w in (FilterWorker, GeneratorWorker, TrainerWorker)]
    assert JOB_DURABLES == {stage.subject: stage.durable for stage in stages}
    m = manifests["gpu"]
    for so in m.of_kind("ScaledObject"):
        assert so["spec"]["fallback"]["behavior"] == "currentReplicasIfHigher"
        assert so["spec"]["triggers"][0]["metadata"]["consumer"] in JOB_DURABLES.values()
    job = Manifests.pod_spec(m.get("Job", "headshots-setup"))
    assert job["containers"][0]["command"] == ["python", "-m", "services.common.bus.setup"]


def test_dev_runs_on_cpu_only(manifests: dict[str, Manifests]) -> None:
    for w in manifests["dev"].workloads():
        pod = Manifests.pod_spec(w)
        assert not pod.get("nodeSelector") and not pod.get("tolerations"), _where(w)
        for c in Manifests.containers(w):
            for kind in ("requests", "limits"):
                assert GPU not in c["resources"].get(kind, {}), _where(w, c)
    config = manifests["dev"].configmap_data("headshots-config")
    assert config["HS_GENERATOR_BASE_MODEL"] == "/models/tiny-sd15"


# ------------------------------------------------------------------ scaling


def _effective_max_replicas(m: Manifests, w: Doc) -> int:
    name, kind = w["metadata"]["name"], w["kind"]
    most = int(w["spec"].get("replicas", 1))
    for hpa in m.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == kind and ref["name"] == name:
            most = max(most, int(hpa["spec"]["maxReplicas"]))
    for so in m.of_kind("ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") == kind and ref["name"] == name:
            most = max(most, int(so["spec"].get("maxReplicaCount", 100)))
    return most


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_deployment_has_both_an_hpa_and_a_scaled_object(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    hpa = {h["spec"]["scaleTargetRef"]["name"] for h in m.of_kind("HorizontalPodAutoscaler")}
    keda = {s["spec"]["scaleTargetRef"]["name"] for s in m.of_kind("ScaledObject")}
    assert not hpa & keda
    assert "gateway" in hpa
    for name in hpa | keda:
        # An autoscaled Deployment must not carry `replicas`, or every apply resets the count.
        assert "replicas" not in m.get("Deployment", name)["spec"], name


def test_gpu_workers_scale_on_their_jetstream_consumer_lag(
    manifests: dict[str, Manifests],
) -> None:
    m = manifests["gpu"]
    by_target = {s["spec"]["scaleTargetRef"]["name"]: s for s in m.of_kind("ScaledObject")}
    assert set(by_target) == {"trainer", "generator", "filter"}
    headless = {
        s["metadata"]["name"] for s in m.of_kind("Service") if s["spec"].get("clusterIP") == "None"
    }
    for durable, so in by_target.items():
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "nats-jetstream"
        assert meta["stream"] == "JOBS" and meta["consumer"] == durable
        host, _, port = meta["natsServerMonitoringEndpoint"].partition(":")
        # The scaler reaches a consumer's leader as <server name>.<host>: a headless Service.
        assert host.split(".")[0] in headless and host.split(".")[1] == "headshots"
        assert port == "8222"
    # Synchronous RPCs (AnalyzeSelfies during upload, Preview) need a warm replica at all times.
    assert by_target["filter"]["spec"]["minReplicaCount"] >= 1
    assert by_target["generator"]["spec"]["minReplicaCount"] >= 1
    # Training is only ever queued work: idle GPUs are released.
    assert by_target["trainer"]["spec"]["minReplicaCount"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicated_workloads_have_a_disruption_budget(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    pdbs = m.of_kind("PodDisruptionBudget")
    replicated = 0
    for w in m.of_kind("Deployment") + m.of_kind("StatefulSet"):
        if _effective_max_replicas(m, w) <= 1:
            continue
        replicated += 1
        labels = Manifests.pod_template(w)["metadata"]["labels"]
        covering = [p for p in pdbs if labels_match(p["spec"]["selector"], labels)]
        assert covering, f"{_where(w)} can have several replicas but no PodDisruptionBudget"
        for p in covering:
            # minAvailable equal to the replica count would block every node drain.
            assert "maxUnavailable" in p["spec"] or p["spec"][
                "minAvailable"
            ] < _effective_max_replicas(m, w)
    assert replicated >= (4 if overlay == "gpu" else 1)


# ------------------------------------------------------------------ NATS and state


def test_nats_is_a_jetstream_statefulset_with_volumes(manifests: dict[str, Manifests]) -> None:
    for overlay, replicas in (("dev", 1), ("gpu", 3)):
        m = manifests[overlay]
        sts = m.get("StatefulSet", "nats")
        assert sts["spec"]["replicas"] == replicas
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        mounts = Manifests.containers(sts, init=False)[0]["volumeMounts"]
        assert any(vm["name"] == claim["metadata"]["name"] for vm in mounts)
        conf = m.configmap_data("nats-config")["nats.conf"]
        assert "jetstream" in conf and "store_dir: /data/" in conf
        routes = conf.count("nats-headless.headshots.svc.cluster.local:6222")
        assert routes == (replicas if replicas > 1 else 0), overlay


def test_database_and_object_store_run_in_cluster_only_in_dev(
    manifests: dict[str, Manifests],
) -> None:
    dev, gpu = manifests["dev"], manifests["gpu"]
    assert dev.get("StatefulSet", "postgresql") and dev.get("StatefulSet", "object-store")
    gpu_sets = {s["metadata"]["name"] for s in gpu.of_kind("StatefulSet")}
    assert gpu_sets == {"nats"}
    # Production Secrets are created by the operator, never rendered from the repository.
    assert not gpu.of_kind("Secret")
    assert {s["metadata"]["name"].rsplit("-", 1)[0] for s in dev.of_kind("Secret")} >= {
        "headshots-secrets",
        "headshots-s3",
    }


# ------------------------------------------------------------------ network policies


@dataclass(frozen=True)
class Peer:
    """One end of a connection: pod labels (empty for an address outside the cluster)."""

    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def pod(namespace: str, **labels: str) -> Peer:
        return Peer(namespace, labels, {"kubernetes.io/metadata.name": namespace})


EXTERNAL = Peer("")


def _peer_matches(rule_peer: Doc, peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        return peer is EXTERNAL or not peer.namespace  # addresses outside the cluster
    if peer is EXTERNAL:
        return False
    if "namespaceSelector" in rule_peer:
        if not labels_match(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    return labels_match(rule_peer.get("podSelector", {}), peer.labels)


def _port_matches(rule: Doc, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)


def _allowed(m: Manifests, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    """Kubernetes semantics: a pod selected by any policy of a direction allows only what some
    rule of those policies allows; both src egress and dst ingress must allow the connection."""

    def direction_allows(pod: Peer, direction: str, other: Peer) -> bool:
        if pod is EXTERNAL or pod.namespace != "headshots":
            return True  # not governed by these policies
        selecting = [
            p
            for p in m.of_kind("NetworkPolicy")
            if direction.capitalize() in p["spec"].get("policyTypes", [])
            and labels_match(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        key, peers_key = (direction, "to" if direction == "egress" else "from")
        for p in selecting:
            for rule in p["spec"].get(key, []):
                peers = rule.get(peers_key)
                if (peers is None or any(_peer_matches(r, other, "headshots") for r in peers)) and (
                    _port_matches(rule, port, protocol)
                ):
                    return True
        return False

    return direction_allows(src, "egress", dst) and direction_allows(dst, "ingress", src)


def _pod(m: Manifests, kind: str, name: str) -> Peer:
    labels = Manifests.pod_template(m.get(kind, name))["metadata"]["labels"]
    return Peer.pod("headshots", **labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_the_platform_flows_and_nothing_else(
    overlay: str, manifests: dict[str, Manifests]
) -> None:
    m = manifests[overlay]
    deny = m.get("NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")

    pods = {n: _pod(m, "Deployment", n) for n in SERVICES}
    nats = _pod(m, "StatefulSet", "nats")
    dns = Peer.pod("kube-system", **{"k8s-app": "kube-dns"})
    otel = Peer.pod("observability", **{"app.kubernetes.io/name": "opentelemetry-collector"})
    keda = Peer.pod("keda", **{"app": "keda-operator"})
    prometheus = Peer.pod("monitoring", **{"app.kubernetes.io/name": "prometheus"})
    if overlay == "dev":
        database, db_port = _pod(m, "StatefulSet", "postgresql"), 5432
        store, store_port = _pod(m, "StatefulSet", "object-store"), 7070
    else:
        database, db_port, store, store_port = EXTERNAL, 5432, EXTERNAL, 443

    for name, pod in pods.items():
        assert _allowed(m, pod, dns, 53, "UDP"), f"{name} → DNS"
        assert _allowed(m, pod, nats, 4222), f"{name} → NATS"
        assert _allowed(m, pod, database, db_port), f"{name} → PostgreSQL"
        assert _allowed(m, pod, store, store_port), f"{name} → object store"
        assert _allowed(m, pod, otel, 4317), f"{name} → OTel collector"
        assert _allowed(m, prometheus, pod, 9090), f"Prometheus → {name} metrics"
    assert _allowed(m, nats, nats, 6222), "NATS cluster routes"
    assert _allowed(m, keda, nats, 8222), "KEDA → NATS monitoring"
    assert _allowed(m, EXTERNAL, pods["gateway"], 50051) and _allowed(
        m, EXTERNAL, pods["gateway"], 8080
    )
    for name in ("filter", "generator", "retention"):
        assert _allowed(m, pods["gateway"], pods[name], SERVICES[name]), f"gateway → {name}"

    # And what must stay closed: workers are not reachable from outside, do not call the
    # gateway or each other, and nothing but services reaches NATS.
    for name in ("filter", "generator", "trainer", "retention"):
        assert not _allowed(m, EXTERNAL, pods[name], SERVICES[name]), f"world → {name}"
        assert not _allowed(m, pods[name], pods["gateway"], 50051), f"{name} → gateway"
    assert not _allowed(m, pods["filter"], pods["retention"], 50055)
    assert not _allowed(m, pods["trainer"], pods["generator"], 50052)
    assert not _allowed(m, EXTERNAL, nats, 4222)
    assert not _allowed(m, pods["generator"], EXTERNAL, 22)
    assert not _allowed(m, pods["generator"], Peer.pod("kube-system", app="other"), 53, "UDP")
