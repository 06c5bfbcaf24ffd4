"""Fault injection for the e2e tests, loaded into a service process through PYTHONPATH.

Python imports `sitecustomize` at start-up. This one installs an import hook that, once
`services.common.bus.consumer` is loaded, wraps every `Worker`'s handler: a job whose order
id is listed in the file named by `HS_E2E_CRASH_FILE` (lines `<subject> <order id>`) makes
the handler raise, on every delivery. Nothing else changes, so the service's own retry,
MaxDeliver and dead-letter paths are what the test observes. Only the e2e stacks set the
variable; production processes never see this folder.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = "services.common.bus.consumer"
JOB_TYPES = {"jobs.train": "TrainJob", "jobs.generate": "GenerateJob", "jobs.filter": "FilterJob"}


class InjectedCrash(RuntimeError):
    """Raised by a handler that was told to crash (not a PermanentError: it is retried)."""


def crash_targets() -> set[tuple[str, str]]:
    path = os.environ.get("HS_E2E_CRASH_FILE")
    if not path:
        return set()
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {tuple(line.split()[:2]) for line in lines if len(line.split()) >= 2}  # type: ignore[misc]


def order_of(subject: str, data: bytes) -> str:
    from headshots.v1 import jobs_pb2

    name = JOB_TYPES.get(subject)
    if name is None:
        return ""
    msg = getattr(jobs_pb2, name)()
    try:
        msg.ParseFromString(data)
    except Exception:
        return ""
    return str(msg.order_id)


def patch(module: ModuleType) -> None:
    worker_cls: Any = module.Worker
    original_init = worker_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        handler = self.handler
        subject = self.subject

        async def crashing(ctx: Any) -> None:
            if (subject, order_of(subject, ctx.data)) in crash_targets():
                raise InjectedCrash(f"injected crash of the {subject} handler (e2e fault test)")
            await handler(ctx)

        self.handler = crashing

    worker_cls.__init__ = __init__


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


if os.environ.get("HS_E2E_CRASH_FILE"):
    sys.meta_path.insert(0, _Finder())
