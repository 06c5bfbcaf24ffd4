"""The tail of every worker service's shutdown, after its worker has stopped taking jobs:
stop listening for erasures, close NATS, close the database pool, stop an embedded
PostgreSQL. In this order, so nothing still running writes to a closed connection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def close_resources(state: Mapping[str, Any]) -> None:
    """Close what `state` holds under the keys "erased", "bus", "engine", "pg" (any may be
    absent: a service stopped during start-up holds only some of them)."""
    if (erased := state.get("erased")) is not None:
        await erased.stop()
    if (bus := state.get("bus")) is not None:
        await bus.close()
    if (engine := state.get("engine")) is not None:
        await engine.dispose()
    if (pg := state.get("pg")) is not None:
        pg.stop()
