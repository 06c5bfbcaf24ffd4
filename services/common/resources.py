"""What every worker service (trainer, generator, filter) opens at start-up and closes at
shutdown: the database (when it has tables, or the blob store needs the keyring), the blob
store, the JetStream connection with its streams, and the erased-orders listener.

Everything opened is recorded in the service's `state` mapping as soon as it exists, so a
shutdown during start-up closes exactly what was opened.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus.client import Bus
from services.common.bus.erasure import ErasedOrders
from services.common.db import engine as db
from services.common.settings import ServiceSettings
from services.common.storage.base import BlobStore
from services.common.storage.factory import open_blob_store


@dataclass
class WorkerResources:
    engine: AsyncEngine | None
    blobs: BlobStore
    bus: Bus
    erased: ErasedOrders


async def open_worker_resources(
    settings: ServiceSettings,
    name: str,
    state: MutableMapping[str, Any],
    *,
    schemas: Iterable[str] = (),
) -> WorkerResources:
    """`schemas`: the service's own migrations, run after the keyring's."""
    schemas = list(schemas)
    engine = None
    # Encrypted blobs need the keyring's tables; a service with tables of its own needs
    # the database anyway.
    if settings.master_key is not None or schemas:
        url = db.database_url(settings)
        for schema in ("keyring", *schemas):
            await db.migrate(url, schema)
        engine = db.create_engine(url)
        state["engine"] = engine
    blobs = open_blob_store(settings, engine=engine)
    bus = await Bus.connect(settings.nats_url, name)
    state["bus"] = bus
    await bus.ensure_streams(replicas=settings.jetstream_replicas)
    erased = ErasedOrders(bus)
    await erased.start()
    state["erased"] = erased
    return WorkerResources(engine, blobs, bus, erased)


async def close_resources(state: MutableMapping[str, Any]) -> None:
    """After the worker stopped taking jobs: stop listening for erasures, close NATS, the
    database pool; in this order, so nothing still running writes
    to a closed connection. Any of them may be absent."""
    if (erased := state.get("erased")) is not None:
        await erased.stop()
    if (bus := state.get("bus")) is not None:
        await bus.close()
    if (engine := state.get("engine")) is not None:
        await engine.dispose()
