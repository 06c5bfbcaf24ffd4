"""The `google.api.http` annotations of a gRPC service, read from its descriptors at run time.

`routes(service_descriptor)` turns each rule into a `Route`: HTTP method, path template,
body selector, and a matcher that maps a request path to the request's fields
(`{name=tenants/*/orders/*}` -> `name = "tenants/t1/orders/o1"`). rest.py dispatches with it
and openapi.py documents the same routes, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

_VAR = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=([^}]*))?\}")
# A path segment matched by `*`: no "/" and no ":" (":" starts a custom verb).
SEGMENT = r"[^/:]+"


@dataclass(frozen=True)
class PathParam:
    """One wildcard segment of a template, as OpenAPI sees it (`tenants/{tenant}`)."""

    name: str  # OpenAPI parameter name, e.g. "tenant"
    field: str  # the request field it builds, e.g. "parent"


@dataclass
class Route:
    http_method: str
    template: str  # as written in the proto, e.g. /v1/{parent=tenants/*}/orders
    body: str  # "", "*" or a field name
    method: MethodDescriptor
    regex: re.Pattern[str]
    # field -> pattern with its wildcards, e.g. "parent" -> "tenants/*"
    variables: dict[str, str] = field(default_factory=dict)
    openapi_path: str = ""
    path_params: list[PathParam] = field(default_factory=list)

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        return {var: m.group(f"v{i}") for i, var in enumerate(self.variables)}


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("s", "")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + repl
    return word


def compile_template(template: str) -> tuple[re.Pattern[str], dict[str, str], str, list[PathParam]]:
    """Regex, variables, OpenAPI path and path parameters of one template."""
    regex = ""
    variables: dict[str, str] = {}
    openapi = ""
    params: list[PathParam] = []
    pos = 0
    for m in _VAR.finditer(template):
        literal = template[pos : m.start()]
        regex += re.escape(literal)
        openapi += literal
        var, pattern = m.group(1), m.group(2) or "*"
        index = len(variables)
        variables[var] = pattern
        parts = pattern.split("/")
        sub = []
        api_parts = []
        previous = var
        for part in parts:
            if part == "*":
                sub.append(SEGMENT)
                name = _singular(previous) if previous != var else var
                params.append(PathParam(_unique(name, params), var))
                api_parts.append("{" + params[-1].name + "}")
            elif part == "**":
                sub.append(r"[^:]+")
                params.append(PathParam(_unique(var, params), var))
                api_parts.append("{" + params[-1].name + "}")
            else:
                sub.append(re.escape(part))
                api_parts.append(part)
                previous = part
        regex += f"(?P<v{index}>{'/'.join(sub)})"
        openapi += "/".join(api_parts)
        pos = m.end()
    regex += re.escape(template[pos:])
    openapi += template[pos:]
    return re.compile(regex), variables, openapi, params


def _unique(name: str, params: list[PathParam]) -> str:
    taken = {p.name for p in params}
    out, n = name, 2
    while out in taken:
        out, n = f"{name}{n}", n + 1
    return out


def _rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def routes(*services: ServiceDescriptor) -> list[Route]:
    out: list[Route] = []
    for service in services:
        for method in service.methods:
            for rule in _rules(method):
                kind = rule.WhichOneof("pattern")
                if kind is None:
                    continue
                if kind == "custom":
                    verb, template = rule.custom.kind.upper(), rule.custom.path
                else:
                    verb, template = kind.upper(), getattr(rule, kind)
                regex, variables, openapi, params = compile_template(template)
                out.append(
                    Route(verb, template, rule.body, method, regex, variables, openapi, params)
                )
    # Literal-heavy templates first, so `/v1/styles` never loses to a variable route.
    out.sort(key=lambda r: (-len(r.template.split("{")[0]), r.template))
    return out
