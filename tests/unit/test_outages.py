"""Which failures count as "a dependency is down", and the backoff used while one is.

The integration tests raise the real thing (a stopped PostgreSQL); here the edges of the
rule: wrapped errors are recognised through their cause chain, a missing file is not an
outage, a programming error is not an outage."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import asyncpg
import nats.errors
import pytest
import sqlalchemy.exc

from services.common.outages import RetryPolicy, dependency_down, what_is_down


def raised(make: object) -> BaseException:
    try:
        make()  # type: ignore[operator]
    except BaseException as err:
        return err
    raise AssertionError("nothing raised")


def test_a_refused_connection_is_an_outage() -> None:
    assert dependency_down(ConnectionRefusedError(111, "Connection refused"))


def test_a_missing_unix_socket_is_an_outage_of_the_database() -> None:
    """What asyncpg raises while PostgreSQL is stopped: ENOENT for the socket path."""

    async def connect() -> None:
        path = Path(tempfile.mkdtemp()) / ".s.PGSQL.5432"
        await asyncpg.connect(host=str(path.parent), port=5432, user="x", timeout=2)

    err = raised(lambda: asyncio.run(connect()))
    assert isinstance(err, OSError), repr(err)
    assert dependency_down(err)
    assert what_is_down(err) == "database"


def test_wrapped_connection_errors_are_found_through_the_chain() -> None:
    def wrapped() -> None:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation")
        except Exception as inner:
            raise sqlalchemy.exc.DBAPIError("select 1", None, inner) from inner

    err = raised(wrapped)
    assert dependency_down(err)
    assert what_is_down(err) == "database"
    assert dependency_down(nats.errors.NoServersError())
    assert what_is_down(nats.errors.NoServersError()) == "bus"


def test_a_missing_file_and_a_bug_are_not_outages() -> None:
    missing = raised(lambda: open("/nonexistent/blob.bin", "rb"))
    assert isinstance(missing, FileNotFoundError) and not dependency_down(missing)
    assert not dependency_down(ValueError("bad input"))
    assert not dependency_down(asyncpg.exceptions.UniqueViolationError("duplicate key"))


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(budget_s=60, base_s=0.5, cap_s=8)
    rng = random.Random(7)
    for failures, full in ((1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (9, 8.0)):
        delays = [policy.delay(failures, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays), (failures, delays)
        assert max(delays) - min(delays) > 0  # jitter: replicas do not retry in step
    with pytest.raises(ValueError):
        RetryPolicy(budget_s=0)
