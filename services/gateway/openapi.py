"""OpenAPI 3.1 for the REST routes, generated from the same descriptors rest.py serves.

Schemas follow protobuf's JSON mapping (what `json_format` writes and reads): lowerCamel
field names, 64-bit integers as strings, bytes as base64, enums by name, Timestamp as an
RFC 3339 string, Duration as `"1.5s"`. Paths use one parameter per wildcard segment
(`/v1/tenants/{tenant}/orders/{order}`), which is how clients build them, rather than one
`{name}` parameter that would need its slashes escaped.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    ServiceDescriptor,
)

from services.gateway.httprules import Route, routes

INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
INT64 = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"}
UINT64 = {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with the google.rpc details of the gRPC status.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string", "description": "gRPC status code name"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "reason": {"type": "string"},
        "violations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
            },
        },
        "quotaViolations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"subject": {"type": "string"}, "description": {"type": "string"}},
            },
        },
        "retryAfterSeconds": {"type": "number"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "detail"],
}
SEGMENT_SCHEMA = {"type": "string", "pattern": "^[^/:]+$", "minLength": 1}


class SchemaBuilder:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, desc: Descriptor | EnumDescriptor) -> dict[str, Any]:
        name = desc.full_name
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursion stops here
            if isinstance(desc, EnumDescriptor):
                self.schemas[name] = {"type": "string", "enum": [v.name for v in desc.values]}
            else:
                self.schemas[name] = self.message(desc)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, desc: Descriptor, skip: set[str] | None = None) -> dict[str, Any]:
        props = {}
        for fd in desc.fields:
            if skip and fd.name in skip:
                continue
            props[fd.json_name] = self.field(fd)
        return {"type": "object", "properties": props, "additionalProperties": False}

    def field(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value = fd.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if fd.is_repeated:
            return {"type": "array", "items": self.single(fd)}
        return self.single(fd)

    def single(self, fd: FieldDescriptor) -> dict[str, Any]:
        t = fd.type
        if t == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(fd.message_type)
        if t == FieldDescriptor.TYPE_ENUM:
            return self.ref(fd.enum_type)
        if t == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if t == FieldDescriptor.TYPE_STRING:
            return {"type": "string"}
        if t == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        if t in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return dict(INT64)
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return dict(UINT64)
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return dict(UINT32)
        return dict(INT32)


def _query_parameters(route: Route, builder: SchemaBuilder) -> list[dict[str, Any]]:
    params = []
    for fd in route.method.input_type.fields:
        if fd.name in route.variables or fd.message_type is not None:
            continue
        schema = builder.field(fd)
        param: dict[str, Any] = {"name": fd.json_name, "in": "query", "schema": schema}
        if fd.is_repeated:
            param["explode"] = True
        params.append(param)
    return params


def _operation(route: Route, builder: SchemaBuilder) -> dict[str, Any]:
    method = route.method
    op: dict[str, Any] = {
        "operationId": f"{method.containing_service.name}_{method.name}",
        "tags": [method.containing_service.name],
        "summary": method.name,
        "parameters": [
            {"name": p.name, "in": "path", "required": True, "schema": dict(SEGMENT_SCHEMA)}
            for p in route.path_params
        ],
    }
    input_type = method.input_type
    if route.client_streaming:
        item = builder.message(input_type, skip=set(route.variables))
        op["requestBody"] = {
            "required": True,
            "description": "The client stream as a JSON array of messages (a single message "
            "is accepted too), or the raw bytes of one image with ?filename=.",
            "content": {
                "application/json": {
                    "schema": {"oneOf": [{"type": "array", "items": item, "minItems": 1}, item]}
                },
                "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}},
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
            },
        }
        op["parameters"].append(
            {"name": "filename", "in": "query", "required": False, "schema": {"type": "string"}}
        )
    elif route.body == "*":
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": builder.message(input_type, skip=set(route.variables))
                }
            },
        }
    elif route.body:
        fd = input_type.fields_by_name[route.body]
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": builder.ref(fd.message_type)}},
        }
        op["parameters"].extend(
            p for p in _query_parameters(route, builder) if p["name"] != fd.json_name
        )
    else:
        op["parameters"].extend(_query_parameters(route, builder))
    out = builder.ref(method.output_type)
    if route.server_streaming and "data" in method.output_type.fields_by_name:
        content = {
            "application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
            }
        }
        description = "The raw bytes (Content-Type is the result's image type)."
    elif route.server_streaming:
        content = {
            NDJSON_TYPE: {"schema": out},
            "text/event-stream": {"schema": {"type": "string"}},
        }
        description = (
            "A stream: one JSON message a line (application/x-ndjson), or Server-Sent Events "
            "with Accept: text/event-stream. Ends when the order is final."
        )
    else:
        content = {"application/json": {"schema": out}}
        description = "OK"
    op["responses"] = {
        "200": {"description": description, "content": content},
        "default": {
            "description": "Error (gRPC status as problem details)",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    }
    return op


NDJSON_TYPE = "application/x-ndjson"


def build_openapi(
    *services: ServiceDescriptor, title: str = "Headshots API", version: str = "v1"
) -> dict[str, Any]:
    builder = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes(*services):
        paths.setdefault(route.openapi_path, {})[route.http_method.lower()] = _operation(
            route, builder
        )
    builder.schemas["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST transcoding of the headshots.v1 gRPC services "
            "(generated from the protos' google.api.http annotations).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant API key (HeadshotService) or the operator's "
                    "admin token (AdminService).",
                }
            },
        },
        "security": [{"apiKey": []}],
    }
