"""AdminService: the operator's API for tenants and their API keys (admin token only)."""

from __future__ import annotations

from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from services.common.grpc.errors import ApiError, not_found
from services.gateway.deps import Deps, metadata_of
from services.gateway.mappers import api_key_proto, tenant_proto
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.tables import api_keys, tenants
from services.gateway.validation import MAX_DISPLAY_NAME, ids_of
from services.policy import names


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.Tenant:
        self.d.auth.check_admin(metadata_of(context))
        tenant_id = request.tenant_id or names.new_id("t", 5)
        if not names.is_id(tenant_id):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tenant_id must be lower-case letters, digits and '-' (at most 63)",
                [("tenant_id", f"must match {names.ID_RULE}")],
            )
        t = request.tenant
        if t.requests_per_minute < 0 or t.max_orders_in_flight < 0:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "limits must not be negative",
                [("tenant", "requests_per_minute and max_orders_in_flight must be >= 0")],
            )
        async with self.d.engine.begin() as conn:
            row = (
                await conn.execute(
                    insert(tenants)
                    .values(
                        tenant_id=tenant_id,
                        display_name=t.display_name[:MAX_DISPLAY_NAME],
                        requests_per_minute=t.requests_per_minute,
                        max_orders_in_flight=t.max_orders_in_flight,
                    )
                    .on_conflict_do_nothing(index_elements=[tenants.c.tenant_id])
                    .returning(tenants)
                )
            ).one_or_none()
        if row is None:
            raise ApiError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"tenant {tenant_id} already exists",
                reason="TENANT_EXISTS",
                metadata={"tenant": tenant_id},
            )
        return tenant_proto(row)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        self.d.auth.check_admin(metadata_of(context))
        (tenant_id,) = ids_of(request.parent, names.TENANT_RE, "tenant", "parent")
        display_name = request.api_key.display_name[:MAX_DISPLAY_NAME]
        key, created = await self.d.auth.store_key(tenant_id, display_name)
        api_key = pb.ApiKey(
            name=names.api_key_name(tenant_id, key.key_id),
            display_name=display_name,
            prefix=key.prefix,
        )
        api_key.create_time.FromDatetime(created)
        return pb.CreateApiKeyResponse(api_key=api_key, secret=key.secret)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        self.d.auth.check_admin(metadata_of(context))
        tenant_id, key_id = ids_of(request.name, names.KEY_RE, "API key", "name")
        async with self.d.engine.begin() as conn:
            await conn.execute(
                sa.update(api_keys)
                .where(
                    api_keys.c.key_id == key_id,
                    api_keys.c.tenant_id == tenant_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=sa.func.now())
            )
            row = await _api_key_row(conn, tenant_id, key_id)
        return api_key_proto(row)

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.Tenant:
        self.d.auth.check_admin(metadata_of(context))
        (tenant_id,) = ids_of(request.name, names.TENANT_RE, "tenant", "name")
        async with self.d.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(tenants).where(tenants.c.tenant_id == tenant_id))
            ).one_or_none()
        if row is None:
            raise not_found("tenant")
        return tenant_proto(row)

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTenantsResponse:
        self.d.auth.check_admin(metadata_of(context))
        size = page_size(request.page_size)
        offset = offset_of(request.page_token, "tenants")
        async with self.d.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(tenants)
                    .order_by(tenants.c.created_at, tenants.c.tenant_id)
                    .offset(offset)
                    .limit(size + 1)
                )
            )
        resp = pb.ListTenantsResponse(tenants=[tenant_proto(r) for r in rows[:size]])
        if len(rows) > size:
            resp.next_page_token = token_of(offset + size, "tenants")
        return resp

    async def GetApiKey(
        self, request: pb.GetApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        self.d.auth.check_admin(metadata_of(context))
        tenant_id, key_id = ids_of(request.name, names.KEY_RE, "API key", "name")
        async with self.d.engine.connect() as conn:
            row = await _api_key_row(conn, tenant_id, key_id)
        return api_key_proto(row)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        self.d.auth.check_admin(metadata_of(context))
        (tenant_id,) = ids_of(request.parent, names.TENANT_RE, "tenant", "parent")
        size = page_size(request.page_size)
        offset = offset_of(request.page_token, request.parent)
        async with self.d.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(api_keys)
                    .where(api_keys.c.tenant_id == tenant_id)
                    .order_by(api_keys.c.created_at, api_keys.c.key_id)
                    .offset(offset)
                    .limit(size + 1)
                )
            )
        resp = pb.ListApiKeysResponse(api_keys=[api_key_proto(r) for r in rows[:size]])
        if len(rows) > size:
            resp.next_page_token = token_of(offset + size, request.parent)
        return resp


async def _api_key_row(conn: Any, tenant_id: str, key_id: str) -> Any:
    """The tenant's key row, or NOT_FOUND (another tenant's key is not found either)."""
    row = (
        await conn.execute(
            sa.select(api_keys).where(
                api_keys.c.key_id == key_id, api_keys.c.tenant_id == tenant_id
            )
        )
    ).one_or_none()
    if row is None:
        raise not_found("API key")
    return row
