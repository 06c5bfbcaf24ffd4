"""What a service opens at start-up and closes at shutdown, as one async context manager.

The database (when the service has tables, or the blob store needs the keyring), the blob
store, the JetStream connection with its streams, and the erased-orders listener. Closing
runs in reverse order, so nothing still running writes to a closed connection, and a
shutdown during start-up closes exactly what was opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus.client import Bus
from services.common.bus.erasure import ErasedOrders
from services.common.db import engine as db
from services.common.db.migrate import prepare_schemas
from services.common.settings import ServiceSettings
from services.common.storage.base import BlobStore
from services.common.storage.factory import open_blob_store


@dataclass
class Resources:
    url: str | None
    engine: AsyncEngine | None
    blobs: BlobStore
    bus: Bus
    erased: ErasedOrders | None


@asynccontextmanager
async def open_resources(
    settings: ServiceSettings,
    name: str,
    *,
    schemas: Iterable[str] = (),
    erasures: bool = True,
    database: bool = False,
) -> AsyncIterator[Resources]:
    """`schemas`: the service's own migrations, run after the keyring's. `erasures`: listen
    for erased orders (workers drop their jobs). `database`: connect even without tables."""
    schemas = list(schemas)
    async with AsyncExitStack() as stack:
        # 1. The database: encrypted blobs need the keyring's tables.
        url = engine = None
        if database or schemas or settings.master_key is not None:
            url = db.database_url(settings)
            await prepare_schemas(settings, url, "keyring", *schemas)
            engine = db.create_engine(url)
            stack.push_async_callback(engine.dispose)
        # 2. The blob store (encrypted under the order's key when a master key is set).
        blobs = open_blob_store(settings, engine=engine)
        # 3. JetStream, with the platform's streams.
        bus = await Bus.connect(settings.nats_url, name)
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(replicas=settings.jetstream_replicas)
        # 4. Erasures, so a job of an erased order is dropped rather than done.
        erased = None
        if erasures:
            erased = ErasedOrders(bus)
            await erased.start()
            stack.push_async_callback(erased.stop)
        yield Resources(url, engine, blobs, bus, erased)
