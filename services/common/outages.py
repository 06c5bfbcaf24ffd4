"""Which failures mean "a dependency is down; the same call will work later".

One rule for every caller: the job consumer naks these with backoff instead of spending
deliveries on them, and the gRPC server answers them with UNAVAILABLE and a retry hint
instead of INTERNAL. Everything else is a fault of the request or of the code.

Types are matched by their qualified names along the MRO, so the rule needs none of the
optional client libraries (botocore) to be importable, and wrapped errors (SQLAlchemy
around asyncpg, asyncpg around an OSError) are recognised through their cause chain.
"""

from __future__ import annotations

import errno
import random

from services.common.settings import ServiceSettings

# Qualified class names (any class in the exception's MRO) that mean "dependency down".
_DOWN = frozenset(
    {
        # PostgreSQL (asyncpg): connection lost or refused, server starting or shutting
        # down, out of connection slots, and the transaction retry classes (40001, 40P01).
        "asyncpg.exceptions.PostgresConnectionError",
        "asyncpg.exceptions.CannotConnectNowError",
        "asyncpg.exceptions.AdminShutdownError",
        "asyncpg.exceptions.CrashShutdownError",
        "asyncpg.exceptions.TooManyConnectionsError",
        "asyncpg.exceptions.SerializationError",
        "asyncpg.exceptions.DeadlockDetectedError",
        # SQLAlchemy: pool exhausted / connection invalidated.
        "sqlalchemy.exc.TimeoutError",
        "sqlalchemy.exc.DisconnectionError",
        # NATS: no server, reconnecting, no JetStream answering (yet).
        "nats.errors.ConnectionClosedError",
        "nats.errors.ConnectionReconnectingError",
        "nats.errors.NoServersError",
        "nats.errors.NoRespondersError",
        "nats.errors.StaleConnectionError",
        "nats.errors.TimeoutError",
        "nats.errors.OutboundBufferLimitError",
        "nats.js.errors.NoStreamResponseError",
        "nats.js.errors.ServiceUnavailableError",
        # S3-compatible blob stores (botocore / aiobotocore).
        "botocore.exceptions.EndpointConnectionError",
        "botocore.exceptions.ConnectionClosedError",
        "botocore.exceptions.ConnectTimeoutError",
        "botocore.exceptions.ReadTimeoutError",
        "aiohttp.client_exceptions.ClientConnectionError",
    }
)
# S3 error codes that mean "try again" rather than "your request is wrong".
_S3_RETRY_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
)
# Modules whose OSErrors are connection failures (a missing Unix socket is ENOENT).
_NETWORK_MODULES = ("asyncpg", "sqlalchemy", "nats", "aiohttp", "botocore", "aiobotocore")
_MAX_CHAIN = 16


def dependency_down(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from, says a dependency is unreachable."""
    for err in _chain(exc):
        if _down(err):
            return True
    return False


def what_is_down(exc: BaseException) -> str:
    """ "database", "bus", "blob store" or "a dependency", for messages and logs."""
    for err in _chain(exc):
        if not _down(err):
            continue
        names = " ".join(_qualnames(err))
        if "asyncpg" in names or "sqlalchemy" in names:
            return "database"
        if "nats" in names:
            return "bus"
        if "botocore" in names or "aiohttp" in names:
            return "blob store"
        if _raised_in(err, ("asyncpg", "sqlalchemy")):
            return "database"
        if _raised_in(err, ("nats",)):
            return "bus"
    return "a dependency"


def _down(err: BaseException) -> bool:
    names = _qualnames(err)
    if names & _DOWN:
        return True
    if getattr(err, "connection_invalidated", False):  # sqlalchemy.exc.DBAPIError
        return True
    if "botocore.exceptions.ClientError" in names:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        return code in _S3_RETRY_CODES
    if _grpc_unavailable(err):
        return True
    if isinstance(err, ConnectionError):  # refused, reset, aborted, broken pipe
        return True
    if isinstance(err, OSError) and err.filename is None:
        # Socket-level failures carry no file name; a missing blob file does. Only those
        # raised inside a network client count (a Unix socket that is gone is ENOENT).
        if err.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            return _raised_in(err, _NETWORK_MODULES)
    return False


def _grpc_unavailable(err: BaseException) -> bool:
    code = getattr(err, "code", None)
    if not callable(code) or "grpc" not in type(err).__module__:
        return False
    try:
        return getattr(code(), "name", "") == "UNAVAILABLE"
    except Exception:
        return False


def _qualnames(err: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}


def _raised_in(err: BaseException, modules: tuple[str, ...]) -> bool:
    tb = err.__traceback__
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        if name.split(".")[0] in modules:
            return True
        tb = tb.tb_next
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < _MAX_CHAIN:
        err = todo.pop(0)
        if any(err is seen for seen in out):
            continue
        out.append(err)
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)
        if err.__cause__ is not None:
            todo.append(err.__cause__)
        elif err.__context__ is not None and not err.__suppress_context__:
            todo.append(err.__context__)
    return out


class RetryPolicy:
    """Backoff for failures caused by a dependency outage: `base * 2^(n-1)` capped at `cap`,
    with "equal jitter" (half fixed, half random) so a fleet of workers that failed together
    does not come back together; given up `budget_s` after the first such failure."""

    def __init__(self, budget_s: float = 300.0, base_s: float = 0.5, cap_s: float = 15.0) -> None:
        if budget_s <= 0 or base_s <= 0 or cap_s < base_s:
            raise ValueError("need budget_s > 0 and 0 < base_s <= cap_s")
        self.budget_s = budget_s
        self.base_s = base_s
        self.cap_s = cap_s

    @classmethod
    def from_settings(cls, settings: ServiceSettings | None = None) -> RetryPolicy:
        """The policy of HS_RETRY_BUDGET_SECONDS / _BASE_ / _CAP_ (read now if not given)."""
        s = settings or ServiceSettings()
        return cls(s.retry_budget_s, s.retry_base_s, s.retry_cap_s)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        full = min(self.cap_s, self.base_s * 2 ** max(0, failures - 1))
        return full / 2 + (rng or random).uniform(0, full / 2)
