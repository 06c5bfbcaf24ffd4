"""HeadshotService's order methods: create, read, list, watch, submit, delete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2
from services.common.grpc.errors import ApiError, not_found
from services.common.grpc.server import outgoing_timeout
from services.gateway import orders as om
from services.gateway import receipts
from services.gateway.deps import TenantApi
from services.gateway.jobs import train_job
from services.gateway.mappers import embedding_bytes, embedding_list, photo_proto, set_check_of
from services.gateway.orders import Outgoing
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.photo_analysis import judge_set
from services.gateway.photo_store import store_facts, stored_photos
from services.gateway.tables import orders, tenants
from services.gateway.validation import (
    check_photo_count,
    check_request_id,
    ids_of,
    order_values,
    quota,
    request_hash,
    reused,
)
from services.policy import names

log = logging.getLogger(__name__)


class OrdersApi(TenantApi):
    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        check_request_id(request.request_id)
        values = order_values(request.order)
        digest = request_hash(request)
        order_id = names.new_id("o")
        async with self.d.engine.begin() as conn:
            if request.request_id:
                existing = await self._by_request_id(conn, tenant_id, request.request_id)
                if existing is not None:
                    return self._same_request(existing, request.request_id, digest)
            try:
                async with conn.begin_nested():
                    row = await om.create(
                        conn,
                        tenant_id,
                        order_id,
                        {
                            **values,
                            "request_id": request.request_id or None,
                            "request_hash": digest if request.request_id else None,
                        },
                    )
            except IntegrityError:
                # The same request_id raced with itself: the other call's order is the answer.
                existing = await self._by_request_id(conn, tenant_id, request.request_id)
                if existing is None:
                    raise
                return self._same_request(existing, request.request_id, digest)
        return om.to_proto(row)

    @staticmethod
    def _same_request(row: Any, request_id: str, digest: str) -> pb.Order:
        if row.request_hash is not None and row.request_hash != digest:
            raise reused(request_id)
        return om.to_proto(row)

    @staticmethod
    async def _by_request_id(conn: AsyncConnection, tenant_id: str, rid: str) -> Any:
        return (
            await conn.execute(
                sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.request_id == rid)
            )
        ).one_or_none()

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        tenant_id = await self._caller(context)
        return om.to_proto(await self._order(tenant_id, request.name))

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        if request.state not in pb.OrderState.values():
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "unknown state", [("state", "unknown")]
            )
        size = page_size(request.page_size)
        scope = f"{request.parent}|{request.state}"
        offset = offset_of(request.page_token, scope)
        q = sa.select(orders).where(orders.c.tenant_id == tenant_id)
        if request.state:
            q = q.where(om.in_states([request.state]))
        q = q.order_by(orders.c.created_at.desc(), orders.c.order_id).offset(offset).limit(size + 1)
        async with self.d.engine.connect() as conn:
            rows = list(await conn.execute(q))
        resp = pb.ListOrdersResponse(orders=[om.to_proto(r) for r in rows[:size]])
        if len(rows) > size:
            resp.next_page_token = token_of(offset + size, scope)
        return resp

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.name)
        if om.state_of(row) in om.EDITABLE:
            # Nothing changes before the client itself uploads or submits: waiting here
            # would hold the stream open for nothing.
            yield pb.WatchOrderResponse(order=om.to_proto(row), sequence=row.version)
            return
        last = row.version - 1
        async with self.d.hub.subscribe(row.order_id) as wake:
            while True:
                wake.clear()
                async with self.d.engine.connect() as conn:
                    changes = await om.changes_since(conn, row.order_id, last)
                    if not changes and last < row.version:
                        # The change log was pruned: the current order is the best we have.
                        current = await om.load(conn, row.order_id)
                        if current is None:
                            return
                        changes = [(current.version, om.to_proto(current))]
                for version, order in changes:
                    last = version
                    yield pb.WatchOrderResponse(order=order, sequence=version)
                    if order.state in om.FINAL:
                        return
                if not changes:
                    async with self.d.engine.connect() as conn:
                        if await om.load(conn, row.order_id) is None:
                            return  # erased
                try:
                    await asyncio.wait_for(wake.wait(), self.s.watch_poll_s)
                except TimeoutError:
                    pass

    async def SubmitOrder(
        self, request: pb.SubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        tenant_id = await self._caller(context)
        check_request_id(request.request_id)
        row = await self._order(tenant_id, request.name)
        if om.state_of(row) in om.IN_FLIGHT | {om.READY}:
            return om.to_proto(row)  # submitted before: a retry gets the same answer
        if om.state_of(row) != om.UPLOADING:
            raise om.refuse_transition(row, "submit")
        stored = [p for p in await stored_photos(self.d.engine, row.order_id) if p.usable]
        check_photo_count(row, len(stored))
        if row.reference_embedding is not None:
            # The last upload judged this very set (a photo deletion clears the reference):
            # its verdicts are in the rows, nothing needs analysing again.
            usable, reference = stored, embedding_list(row.reference_embedding)
            check = pb.SetCheck.FromString(bytes(row.set_check))
            measured: dict[str, internal_pb2.SelfieFacts] = {}
        else:
            # Judged again from the photos' stored facts: no image is analysed twice.
            analysis, measured = await judge_set(
                self.d.filter, self.d.blobs, stored, [], self.s.filter_timeout_s
            )
            by_id = {a.photo_id: a for a in analysis.photos}
            usable = [p for p in stored if p.photo_id in by_id and by_id[p.photo_id].usable]
            check_photo_count(row, len(usable))
            photo_names = {p.photo_id: photo_proto(p).name for p in stored}
            check = set_check_of(analysis.set, photo_names)
            reference = list(analysis.set.reference_embedding)
        async with self.d.engine.begin() as conn:
            tenant = (
                await conn.execute(
                    sa.select(tenants).where(tenants.c.tenant_id == tenant_id).with_for_update()
                )
            ).one()
            limit = tenant.max_orders_in_flight or self.s.max_orders_in_flight
            in_flight = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(orders)
                    .where(orders.c.tenant_id == tenant_id, om.in_states(om.IN_FLIGHT))
                )
            ).scalar_one()
            if in_flight >= limit:
                raise quota(
                    f"{in_flight} orders are in flight; the limit is {limit}",
                    names.tenant_name(tenant_id),
                    f"at most {limit} orders between QUEUED and READY",
                )
            current = await om.load(conn, row.order_id, lock=True)
            if current is None or om.state_of(current) != om.UPLOADING:
                raise om.refuse_transition(current or row, "submit")
            await store_facts(conn, row.order_id, measured)
            job = train_job(current, [p.blob_key for p in usable], reference)
            fresh = await om.apply(
                conn,
                current,
                state=om.QUEUED,
                values={
                    "submitted_at": sa.func.now(),
                    "reference_embedding": embedding_bytes(reference),
                    "set_check": check.SerializeToString(),
                    "photo_count": len(usable),
                    "progress": om.make_progress(
                        pb.STAGE_TRAINING, detail="queued for training"
                    ).SerializeToString(),
                },
                messages=[Outgoing("jobs.train", job, job.job_id)],
                heartbeat=True,
            )
            if fresh is None:
                raise ApiError(grpc.StatusCode.ABORTED, "the order changed; retry")
        return om.to_proto(fresh)

    async def DeleteOrder(
        self, request: pb.DeleteOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletionReceipt:
        tenant_id = await self._caller(context)
        check_request_id(request.request_id)
        t, o = ids_of(request.name, names.ORDER_RE, "order", "name")
        if t != tenant_id:
            raise not_found("order")
        async with self.d.engine.connect() as conn:
            if request.request_id:
                kept = await receipts.by_request(conn, tenant_id, request.request_id)
                if kept is not None:
                    if kept.order_key != receipts.order_key(request.name):
                        raise reused(request.request_id)
                    return pb.DeletionReceipt.FromString(bytes(kept.receipt))
            row = await om.load(conn, o, tenant_id)
            if row is None:
                # Erased before: a retry whose first answer was lost gets the same receipt.
                earlier = await receipts.by_order(conn, tenant_id, request.name)
                if earlier is None:
                    raise not_found("order")
                return earlier
        if om.state_of(row) != om.DELETED:
            async with self.d.engine.begin() as conn:
                current = await om.load(conn, row.order_id, lock=True)
                if current is not None and om.state_of(current) != om.DELETED:
                    await om.apply(
                        conn,
                        current,
                        state=om.DELETED,
                        values={
                            "progress": om.make_progress(pb.STAGE_RETENTION).SerializeToString()
                        },
                    )
        try:
            reply = await self.d.retention.Erase(
                internal_pb2.EraseRequest(
                    tenant_id=tenant_id,
                    order_id=row.order_id,
                    # One erasure per order, whatever ids the client's retries carry.
                    request_id=f"delete:{row.order_id}",
                    reason="deleted by the tenant through the API",
                ),
                timeout=outgoing_timeout(self.s.erase_timeout_s),
            )
        except grpc.aio.AioRpcError as err:
            log.warning("Erase failed: %s %s", err.code(), err.details())
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE,
                "the order is marked deleted; erasure could not finish now, retry DeleteOrder",
                reason="ERASURE_PENDING",
                retry_after_s=5.0,
            ) from err
        async with self.d.engine.begin() as conn:
            return await receipts.keep(conn, tenant_id, request.request_id, reply.receipt)

    async def GetDeletionReceipt(
        self, request: pb.GetDeletionReceiptRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletionReceipt:
        tenant_id = await self._caller(context)
        t, receipt_id = ids_of(request.name, names.RECEIPT_RE, "deletion receipt", "name")
        async with self.d.engine.connect() as conn:
            found = await receipts.by_id(conn, tenant_id, receipt_id) if t == tenant_id else None
        if found is None:
            raise not_found("deletion receipt")
        return found
