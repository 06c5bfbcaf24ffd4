"""What every API method needs: the process's resources and the caller's identity.

Tenant isolation: every call resolves the caller's tenant from its API key, and every
resource name must start with `tenants/<that tenant>/`. A name under another tenant is
answered exactly like a name that does not exist (NOT_FOUND, same message), so a caller
cannot learn that someone else's order exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from headshots.v1 import internal_pb2_grpc
from services.common.grpc.errors import not_found
from services.common.storage.base import BlobStore
from services.gateway import orders as om
from services.gateway.auth import Authenticator, request_metadata
from services.gateway.ratelimit import RateLimiter
from services.gateway.settings import GatewaySettings
from services.gateway.uploads import Limits
from services.gateway.validation import ids_of
from services.gateway.watch import WatchHub
from services.policy import names
from services.policy.limits import limits


@dataclass
class Deps:
    settings: GatewaySettings
    engine: AsyncEngine
    blobs: BlobStore
    auth: Authenticator
    limiter: RateLimiter
    hub: WatchHub
    filter: internal_pb2_grpc.FilterServiceStub
    generator: internal_pb2_grpc.GeneratorServiceStub
    retention: internal_pb2_grpc.RetentionServiceStub

    @property
    def limits(self) -> Limits:
        lim, s = limits(), self.settings
        return Limits(
            max_bytes=lim.max_photo_bytes,
            max_pixels=lim.max_photo_pixels,
            min_side=lim.min_photo_side,
            max_side=s.stored_max_side,
            quality=s.stored_jpeg_quality,
        )


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return request_metadata(context)  # with the peer address, for the auth throttle


class TenantApi:
    """Base of the HeadshotService parts: the caller's tenant and the orders it may see."""

    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    async def _caller(self, context: grpc.aio.ServicerContext) -> str:
        caller = await self.d.auth.tenant_of(metadata_of(context))
        await self.d.limiter.hit(caller.tenant_id)
        return caller.tenant_id

    async def _order(self, tenant_id: str, name: str, *, field: str = "name") -> Any:
        t, o = ids_of(name, names.ORDER_RE, "order", field)
        if t != tenant_id:
            raise not_found("order")
        async with self.d.engine.connect() as conn:
            row = await om.load(conn, o, tenant_id)
        if row is None:
            raise not_found("order")
        return row

    def _parent_tenant(self, tenant_id: str, parent: str) -> None:
        (t,) = ids_of(parent, names.TENANT_RE, "tenant", "parent")
        if t != tenant_id:
            raise not_found("tenant")
