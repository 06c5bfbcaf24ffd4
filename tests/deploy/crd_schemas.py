"""Strict JSON schemas for the custom resources the components use, written here from each
project's API reference for exactly the fields these manifests set (a typo or a field at the
wrong level is an error; a field these manifests do not use is an error too, so a new one is
added here deliberately, after reading its reference).

References: cert-manager.io/v1 (Certificate, Issuer); gateway.networking.k8s.io/v1 (Gateway,
GRPCRoute, HTTPRoute, Gateway API v1.1+); postgresql.cnpg.io/v1 (Cluster, Pooler,
ScheduledBackup, CloudNativePG 1.27); barmancloud.cnpg.io/v1 (ObjectStore, Barman Cloud
plugin); monitoring.coreos.com/v1 (PodMonitor, PrometheusRule).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
DURATION: Schema = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
QUANTITY: Schema = {"type": ["string", "integer"]}


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    return {
        "type": "object",
        "required": list(required),
        "additionalProperties": False,
        "properties": props,
    }


def arr(items: Schema, min_items: int = 0) -> Schema:
    return {"type": "array", "items": items, "minItems": min_items}


def map_of(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def enum(*values: Any) -> Schema:
    return {"enum": list(values)}


METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": STR,
        "namespace": STR,
        "labels": map_of(STR),
        "annotations": map_of(STR),
    },
    "additionalProperties": False,
}


def resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return obj(
        ("apiVersion", "kind", "metadata", "spec"),
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=METADATA,
        spec=spec,
    )


SECRET_KEY = obj(("name", "key"), name=STR, key=STR)
ISSUER_REF = obj(("name",), name=STR, kind=enum("Issuer", "ClusterIssuer"), group=STR)
PRIVATE_KEY = obj(
    (),
    algorithm=enum("RSA", "ECDSA", "Ed25519"),
    size=INT,
    rotationPolicy=enum("Never", "Always"),
)
PARENT_REF = obj(("name",), name=STR, namespace=STR, sectionName=STR, port=INT)
BACKEND_REF = obj(("name", "port"), name=STR, namespace=STR, port=INT, weight=INT)
RESOURCES = obj((), requests=map_of(QUANTITY), limits=map_of(QUANTITY))

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("cert-manager.io/v1", "Certificate"): resource(
        "cert-manager.io/v1",
        "Certificate",
        obj(
            ("secretName", "issuerRef"),
            secretName=STR,
            commonName=STR,
            dnsNames=arr(STR, 1),
            isCA=BOOL,
            duration=DURATION,
            renewBefore=DURATION,
            usages=arr(
                enum(
                    "server auth",
                    "client auth",
                    "digital signature",
                    "key encipherment",
                    "cert sign",
                )
            ),
            privateKey=PRIVATE_KEY,
            issuerRef=ISSUER_REF,
        ),
    ),
    ("cert-manager.io/v1", "Issuer"): resource(
        "cert-manager.io/v1",
        "Issuer",
        {
            "oneOf": [
                obj(("selfSigned",), selfSigned=obj()),
                obj(("ca",), ca=obj(("secretName",), secretName=STR)),
            ]
        },
    ),
    ("gateway.networking.k8s.io/v1", "Gateway"): resource(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        obj(
            ("gatewayClassName", "listeners"),
            gatewayClassName=STR,
            listeners=arr(
                obj(
                    ("name", "protocol", "port"),
                    name=STR,
                    protocol=enum("HTTP", "HTTPS", "TLS", "TCP", "UDP"),
                    port=INT,
                    hostname=STR,
                    tls=obj(
                        ("certificateRefs",),
                        mode=enum("Terminate", "Passthrough"),
                        certificateRefs=arr(obj(("name",), kind=STR, group=STR, name=STR), 1),
                    ),
                    allowedRoutes=obj(
                        (), namespaces=obj((), **{"from": enum("Same", "All", "Selector")})
                    ),
                ),
                1,
            ),
        ),
    ),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): resource(
        "gateway.networking.k8s.io/v1",
        "GRPCRoute",
        obj(
            ("parentRefs", "rules"),
            parentRefs=arr(PARENT_REF, 1),
            hostnames=arr(STR),
            rules=arr(
                obj(
                    ("backendRefs",),
                    matches=arr(
                        obj(
                            (),
                            method=obj(
                                (), type=enum("Exact", "RegularExpression"), service=STR, method=STR
                            ),
                        )
                    ),
                    backendRefs=arr(BACKEND_REF, 1),
                ),
                1,
            ),
        ),
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): resource(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        obj(
            ("parentRefs", "rules"),
            parentRefs=arr(PARENT_REF, 1),
            hostnames=arr(STR),
            rules=arr(
                obj(
                    ("backendRefs",),
                    matches=arr(
                        obj(
                            (),
                            path=obj(
                                ("type", "value"),
                                type=enum("Exact", "PathPrefix", "RegularExpression"),
                                value=STR,
                            ),
                            method=STR,
                        )
                    ),
                    timeouts=obj((), request=DURATION, backendRequest=DURATION),
                    backendRefs=arr(BACKEND_REF, 1),
                ),
                1,
            ),
        ),
    ),
    ("postgresql.cnpg.io/v1", "Cluster"): resource(
        "postgresql.cnpg.io/v1",
        "Cluster",
        obj(
            ("instances", "storage"),
            instances=INT,
            imageName=STR,
            primaryUpdateStrategy=enum("unsupervised", "supervised"),
            postgresql=obj(
                (),
                parameters=map_of(STR),
                synchronous=obj(("method", "number"), method=enum("any", "first"), number=INT),
            ),
            bootstrap=obj(
                (), initdb=obj(("database", "owner"), database=STR, owner=STR, secret=obj())
            ),
            managed=obj(
                (),
                roles=arr(
                    obj(
                        ("name",),
                        name=STR,
                        ensure=enum("present", "absent"),
                        login=BOOL,
                        passwordSecret=obj(("name",), name=STR),
                    )
                ),
            ),
            storage=obj(("size",), storageClass=STR, size=STR),
            walStorage=obj(("size",), storageClass=STR, size=STR),
            resources=RESOURCES,
            affinity=obj(
                (),
                topologyKey=STR,
                podAntiAffinityType=enum("preferred", "required"),
                enablePodAntiAffinity=BOOL,
            ),
            plugins=arr(
                obj(
                    ("name",),
                    name=STR,
                    isWALArchiver=BOOL,
                    parameters=map_of(STR),
                )
            ),
        ),
    ),
    ("postgresql.cnpg.io/v1", "Pooler"): resource(
        "postgresql.cnpg.io/v1",
        "Pooler",
        obj(
            ("cluster", "pgbouncer"),
            cluster=obj(("name",), name=STR),
            instances=INT,
            type=enum("rw", "ro", "r"),
            pgbouncer=obj(
                ("poolMode",),
                poolMode=enum("session", "transaction"),
                parameters=map_of(STR),
            ),
        ),
    ),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): resource(
        "postgresql.cnpg.io/v1",
        "ScheduledBackup",
        obj(
            ("schedule", "cluster"),
            # Six fields: seconds first (CloudNativePG's cron dialect).
            schedule={"type": "string", "pattern": r"^\S+( \S+){5}$"},
            backupOwnerReference=enum("none", "self", "cluster"),
            immediate=BOOL,
            cluster=obj(("name",), name=STR),
            method=enum("barmanObjectStore", "volumeSnapshot", "plugin"),
            pluginConfiguration=obj(("name",), name=STR, parameters=map_of(STR)),
        ),
    ),
    ("barmancloud.cnpg.io/v1", "ObjectStore"): resource(
        "barmancloud.cnpg.io/v1",
        "ObjectStore",
        obj(
            ("configuration",),
            retentionPolicy={"type": "string", "pattern": r"^[1-9][0-9]*[dwm]$"},
            configuration=obj(
                ("destinationPath",),
                destinationPath={"type": "string", "pattern": r"^(s3|gs|https?)://"},
                endpointURL=STR,
                s3Credentials=obj(
                    (),
                    accessKeyId=SECRET_KEY,
                    secretAccessKey=SECRET_KEY,
                    region=SECRET_KEY,
                    inheritFromIAMRole=BOOL,
                ),
                wal=obj((), compression=enum("gzip", "bzip2", "snappy"), maxParallel=INT),
                data=obj((), compression=enum("gzip", "bzip2", "snappy"), jobs=INT),
            ),
        ),
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): resource(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        obj(
            ("selector", "podMetricsEndpoints"),
            selector=obj((), matchLabels=map_of(STR)),
            podMetricsEndpoints=arr(
                obj(("port",), port=STR, path=STR, interval=DURATION, scheme=STR), 1
            ),
        ),
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): resource(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        obj(
            ("groups",),
            groups=arr(
                obj(
                    ("name", "rules"),
                    name=STR,
                    rules=arr(
                        obj(
                            ("alert", "expr"),
                            alert={"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                            expr=STR,
                            **{"for": DURATION},
                            labels=obj(("severity",), severity=enum("info", "warning", "critical")),
                            annotations=obj(("summary",), summary=STR, description=STR),
                        ),
                        1,
                    ),
                ),
                1,
            ),
        ),
    ),
}
