"""Where each service's schema and migrations live, and PostgreSQL URL normalisation.

Shared by the engine and the Alembic environment, which must not import each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Schema names double as Python package names under services/, so keep them identifier-safe.
_SERVICE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# services/ (the package that holds one sub-package per service)
SERVICES_DIR = Path(__file__).resolve().parents[2]
# Schemas owned by shared code rather than a service package.
_SHARED_TREES = {"keyring": SERVICES_DIR / "common" / "keys" / "migrations"}


def normalize_url(url: str) -> str:
    """Any PostgreSQL URL → the SQLAlchemy asyncpg form.

    Accepts `postgres://`, `postgresql://`, `postgresql+<driver>://` and libpq Unix-socket
    URIs (`postgresql://user@/db?host=/run/pg`; asyncpg takes `host` from the query).
    libpq's `sslmode=` becomes asyncpg's `ssl=` (same values), since asyncpg rejects the former.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgres", "postgresql") and not scheme.startswith("postgresql+"):
        raise ValueError(f"not a PostgreSQL URL (scheme {scheme!r}): {_redact(url)}")
    parts = urlsplit("postgresql+asyncpg://" + rest)
    query = [("ssl", v) if k == "sslmode" else (k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def migrations_dir(service: str) -> Path:
    return _SHARED_TREES.get(service) or SERVICES_DIR / service / "migrations"


def check_service_name(service: str) -> str:
    if not isinstance(service, str) or not _SERVICE_RE.match(service):
        raise ValueError(
            f"service name {service!r} is not a valid schema name ([a-z][a-z0-9_]{{0,62}})"
        )
    return service
