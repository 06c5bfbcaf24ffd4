"""First tenant and API key, created inside the gateway's own image with its own settings.

An operator runs it once after install, where the gateway's Secrets are already mounted:

    kubectl -n headshots exec deploy/gateway -- \\
      python -m services.gateway.bootstrap create-tenant acme --display-name "Acme"

It writes the same rows AdminService.CreateTenant / CreateApiKey write (the gateway's tables
and `Authenticator`), hashes the key with the pepper the gateway uses (HS_GATEWAY_KEY_PEPPER)
and prints the key once, as JSON on stdout. It needs no admin token and no network path to
the gateway, only the database; after it, further tenants go through AdminService with the
admin token (`headshots admin ...`).

It refuses to run without a pepper: keys hashed with an empty pepper stop working the day a
pepper is set, so a key made that way would be a trap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from services.common.db import engine as db
from services.common.db.migrate import prepare_schemas
from services.common.grpc.errors import ApiError
from services.gateway.auth import Authenticator
from services.gateway.settings import GatewaySettings
from services.gateway.tables import tenants
from services.policy.names import is_id

EXIT_USAGE = 2
EXIT_EXISTS = 3


class BootstrapError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _pepper(settings: GatewaySettings) -> bytes:
    pepper = settings.key_pepper.get_secret_value().encode()
    if not pepper:
        raise BootstrapError(
            "HS_GATEWAY_KEY_PEPPER is empty: set it (Secret headshots-gateway, key key-pepper) "
            "before creating keys; keys hashed without it would stop working once it is set"
        )
    return pepper


async def create_tenant(
    settings: GatewaySettings,
    tenant_id: str,
    *,
    display_name: str = "",
    key_name: str = "bootstrap",
    exists_ok: bool = False,
) -> dict[str, Any]:
    """Create the tenant (unless it exists and `exists_ok`) and one new API key for it."""
    if not is_id(tenant_id):
        raise BootstrapError("tenant id must be lower-case letters, digits and '-' (at most 63)")
    pepper = _pepper(settings)
    if not settings.database_url:
        raise BootstrapError("DATABASE_URL is not set: nothing to bootstrap")
    url = db.database_url(settings)
    await prepare_schemas(settings, url, "keyring", "gateway", wait_s=0.0)
    engine = db.create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            created = (
                await conn.execute(
                    insert(tenants)
                    .values(tenant_id=tenant_id, display_name=display_name[:200])
                    .on_conflict_do_nothing(index_elements=[tenants.c.tenant_id])
                    .returning(tenants.c.tenant_id)
                )
            ).one_or_none()
        if created is None and not exists_ok:
            raise BootstrapError(
                f"tenant {tenant_id} already exists (--exists-ok adds a key to it)", EXIT_EXISTS
            )
        key, key_created = await Authenticator(engine, pepper, None).store_key(
            tenant_id, key_name[:200]
        )
    finally:
        await engine.dispose()
    return {
        "tenant": f"tenants/{tenant_id}",
        "tenant_created": created is not None,
        "api_key_name": f"tenants/{tenant_id}/apiKeys/{key.key_id}",
        "api_key": key.secret,
        "created_at": key_created.isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.bootstrap")
    sub = parser.add_subparsers(dest="command", required=True)
    ct = sub.add_parser("create-tenant", help="create a tenant and print a new API key for it")
    ct.add_argument("tenant_id")
    ct.add_argument("--display-name", default="")
    ct.add_argument("--key-name", default="bootstrap", help="display name of the key")
    ct.add_argument("--exists-ok", action="store_true", help="tenant may exist; a new key is added")
    args = parser.parse_args(argv)
    settings = GatewaySettings(service_name="gateway-bootstrap")
    try:
        result = asyncio.run(
            create_tenant(
                settings,
                args.tenant_id,
                display_name=args.display_name,
                key_name=args.key_name,
                exists_ok=args.exists_ok,
            )
        )
    except BootstrapError as e:
        print(f"bootstrap: {e}", file=sys.stderr)
        return e.code
    except ApiError as e:
        print(f"bootstrap: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print("The api_key is shown once; store it now.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
