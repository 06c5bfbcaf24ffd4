"""Wakes WatchOrder streams when an order changes, on whichever replica changed it.

`orders.apply` sends `NOTIFY gateway_orders, '<order id>'` in the changing transaction, so
the notice arrives after commit. Each gateway process keeps one LISTEN connection and sets
the events of its local watchers. A notice can be missed (reconnect), so watchers also
re-read on a timer; notices only make them prompt, the change log makes them complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.gateway.orders import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class WatchHub:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._conn: AsyncConnection | None = None
        self._raw: Any = None

    async def start(self) -> None:
        self._conn = await self.engine.connect()
        raw = await self._conn.get_raw_connection()
        self._raw = raw.driver_connection
        await self._raw.add_listener(NOTIFY_CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                await self._raw.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = self._raw = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._waiters.get(payload, ()):
            event.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[order_id].add(event)
        try:
            yield event
        finally:
            self._waiters[order_id].discard(event)
            if not self._waiters[order_id]:
                del self._waiters[order_id]
