"""One sweep from the command line: `python -m services.retention.sweep [--at ISO-TIME]`.

Operators use it for a dry look at what is due (`--list`) or to run a sweep by hand; the
tests use it to kill a sweep mid-way and resume it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime

from services.common.db import engine as db
from services.common.db.migrate import prepare_schemas
from services.common.keys.keyring import Keyring, load_master_key
from services.common.storage.factory import open_blob_store
from services.retention.clock import FixedClock, SystemClock
from services.retention.core import Retention
from services.retention.settings import RetentionSettings


async def run(at: datetime | None) -> dict[str, object]:
    settings = RetentionSettings(service_name="retention-sweep")
    url = db.database_url(settings)
    await prepare_schemas(settings, url, "keyring", "retention")
    engine = db.create_engine(url)
    try:
        keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)
        retention = Retention(
            engine,
            open_blob_store(settings, engine=engine),
            keyring,
            clock=FixedClock(at) if at else SystemClock(),
            step_delay_s=settings.debug_step_delay_s,
        )
        report = await retention.sweep_once()
        return {"deleted": dict(report.deleted), "keys_destroyed": report.keys_destroyed}
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=datetime.fromisoformat, default=None)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(run(ns.at))))


if __name__ == "__main__":
    main()
