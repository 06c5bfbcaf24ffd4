"""The layout's rules, checked over the source: no service imports another service, no
import cycle in product code, and product code never imports test, demo or client code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("services",)
NOT_PRODUCT = ("tests", "devstack", "clients", "bench")


def _modules() -> dict[str, Path]:
    out = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path) -> Iterator[str]:
    # Every import, also those inside functions or TYPE_CHECKING blocks: a lazy import is
    # still a dependency.
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for name in _imports(path):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != mod:
                graph[mod].add(name)
    return graph


def _services() -> set[str]:
    return {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}


def _service_of(module: str, services: set[str]) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in services else None


def test_the_five_services_are_found() -> None:
    assert _services() == {"gateway", "trainer", "generator", "filter", "retention"}


def test_no_service_imports_another_service() -> None:
    services = _services()
    crossings = sorted(
        f"{a} -> {b}"
        for a, targets in _graph().items()
        for b in targets
        if _service_of(a, services) and _service_of(b, services)
        if _service_of(a, services) != _service_of(b, services)
    )
    assert crossings == []


def test_product_code_imports_no_test_demo_or_client_code() -> None:
    bad = sorted(
        f"{mod} imports {name}"
        for mod, path in _modules().items()
        for name in _imports(path)
        if name.split(".")[0] in NOT_PRODUCT
    )
    assert bad == []


def test_no_import_cycle_in_product_code() -> None:
    graph = _graph()
    # Tarjan's strongly connected components; any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_only_public_grpc_modules_are_used() -> None:
    private = sorted(
        f"{mod} imports {name}"
        for mod, path in _modules().items()
        for name in _imports(path)
        if name.startswith(("grpc", "grpc_health", "grpc_status", "grpc_reflection"))
        and any(part.startswith("_") for part in name.split("."))
    )
    assert private == []
