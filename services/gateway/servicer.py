"""HeadshotService (tenants' API) and AdminService (operator's API) over PostgreSQL.

Tenant isolation: every call resolves the caller's tenant from its API key, and every
resource name must start with `tenants/<that tenant>/`. A name under another tenant is
answered exactly like a name that does not exist (NOT_FOUND, same message), so a caller
cannot learn that someone else's order exists.

Uploads keep what passes: in one UploadPhotos call, photos that pass decoding and the
selfie check are stored; photos that do not are not stored at all, and the call then ends
with INVALID_ARGUMENT (RESOURCE_EXHAUSTED when a photo was over the per-order limit) whose
details carry a BadRequest with one violation per refused photo (`photos[i]`, "CODE: photo
i+1 (name) ...") and the UploadPhotosResponse of what *was* stored. A client that only
looks at the status still knows which photos to fix; one that reads the details also
knows what is already in the order (no re-upload needed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import sqlalchemy as sa
from google.protobuf import any_pb2
from google.rpc import status_pb2
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from headshots.v1 import internal_pb2, internal_pb2_grpc, jobs_pb2
from services.common.bus import ids
from services.common.grpc.errors import ApiError, not_found
from services.common.grpc.server import outgoing_timeout
from services.common.storage.base import BlobNotFound, BlobStore, blob_key, order_prefix
from services.gateway import orders as om
from services.gateway.auth import Authenticator, request_metadata
from services.gateway.orders import Outgoing
from services.gateway.ratelimit import RateLimiter
from services.gateway.settings import GatewaySettings
from services.gateway.tables import api_keys, order_changes, orders, photos, results, tenants
from services.gateway.uploads import CleanPhoto, Limits, Refusal, check_size, clean
from services.gateway.watch import WatchHub
from services.policy.limits import limits
from services.policy.prompt_screen import screen_prompt
from services.policy.retention import load as load_retention
from services.policy.styles import platform_catalogue

LIMITS = limits()
CATALOGUE = platform_catalogue()
STYLES: tuple[pb.Style, ...] = tuple(s.to_pb() for s in CATALOGUE.styles)

log = logging.getLogger(__name__)

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
TENANT_RE = re.compile(r"^tenants/([^/]+)$")
ORDER_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)$")
PHOTO_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)/photos/([^/]+)$")
RESULT_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)/results/([^/]+)$")
KEY_RE = re.compile(r"^tenants/([^/]+)/apiKeys/([^/]+)$")
DOWNLOAD_CHUNK = 1024 * 1024
DEFAULT_PAGE = 50
MAX_PAGE = 200


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return request_metadata(context)  # with the peer address, for the auth throttle


def _ids(name: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    m = pattern.match(name or "")
    if m is None or not all(ID_RE.fullmatch(g) for g in m.groups()):
        raise not_found(what)
    return m.groups()


def _page(token: str, scope: str) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] != scope or int(data["o"]) < 0:
            raise ValueError
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as err:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token is not valid for this request",
            field_violations=[("page_token", "not a token from the previous page")],
        ) from err


def _token(offset: int, scope: str) -> str:
    raw = json.dumps({"s": scope, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_size(size: int) -> int:
    if size < 0:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size must not be negative",
            field_violations=[("page_size", "must be >= 0")],
        )
    return min(size or DEFAULT_PAGE, MAX_PAGE)


def quota(message: str, subject: str, description: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        quota_violations=[(subject, description)],
        reason="QUOTA",
    )


@dataclass
class UploadRefused(ApiError):
    """An ApiError that also carries the UploadPhotosResponse of the photos that were kept."""

    stored: pb.UploadPhotosResponse = field(default_factory=pb.UploadPhotosResponse)

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        extra = any_pb2.Any()
        extra.Pack(self.stored)
        status.details.append(extra)
        return status


@dataclass
class Incoming:
    index: int
    filename: str
    content_type: str
    data: bytearray = field(default_factory=bytearray)
    refusal: Refusal | None = None
    clean: CleanPhoto | None = None
    photo_id: str = ""


# ------------------------------------------------------------------------------ shared


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
        s = self.settings
        return Limits(
            max_bytes=LIMITS.max_photo_bytes,
            max_pixels=LIMITS.max_photo_pixels,
            min_side=LIMITS.min_photo_side,
            max_side=s.stored_max_side,
            quality=s.stored_jpeg_quality,
        )


def photo_proto(row: Any) -> pb.Photo:
    p = pb.Photo(
        name=f"tenants/{row.tenant_id}/orders/{row.order_id}/photos/{row.photo_id}",
        filename=row.filename,
        usable=row.usable,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        sharpness=row.sharpness,
        face_size_px=row.face_size_px,
        identity_distance=row.identity_distance,
        findings=[pb.PhotoFinding(**f) for f in row.findings],
    )
    p.create_time.FromDatetime(row.created_at)
    return p


def result_proto(row: Any) -> pb.Result:
    r = pb.Result(
        name=f"tenants/{row.tenant_id}/orders/{row.order_id}/results/{row.result_id}",
        rank=row.rank,
        delivered=row.delivered,
        style_id=row.style_id,
        seed=int(row.seed),
        model_id=row.model_id,
        scores=pb.Scores(**{k: float(v) for k, v in row.scores.items() if k in _SCORE_FIELDS}),
        rejection_reasons=list(row.rejection_reasons),
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        width=row.width,
        height=row.height,
        round=row.round,
    )
    r.create_time.FromDatetime(row.created_at)
    return r


_SCORE_FIELDS = frozenset(pb.Scores.DESCRIPTOR.fields_by_name)


def finding_dicts(findings: Sequence[pb.PhotoFinding]) -> list[dict[str, Any]]:
    return [{"code": f.code, "message": f.message, "blocking": f.blocking} for f in findings]


def set_check_of(analysis: internal_pb2.SetAnalysis, names: dict[str, str]) -> pb.SetCheck:
    return pb.SetCheck(
        different_person=[names.get(p, p) for p in analysis.different_person],
        variety_score=analysis.variety_score,
        usable_count=analysis.usable_count,
        findings=list(analysis.findings),
    )


def embedding_bytes(values: Sequence[float]) -> bytes | None:
    return np.asarray(values, dtype=np.float32).tobytes() if len(values) else None


def embedding_list(data: bytes | None) -> list[float]:
    return np.frombuffer(data, dtype=np.float32).tolist() if data else []


# ------------------------------------------------------------------------------ service


class HeadshotServicer(pb_grpc.HeadshotServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    # ---- helpers ------------------------------------------------------------

    async def _caller(self, context: grpc.aio.ServicerContext) -> str:
        caller = await self.d.auth.tenant_of(_metadata(context))
        await self.d.limiter.hit(caller.tenant_id)
        return caller.tenant_id

    async def _order(self, tenant_id: str, name: str, *, lock: bool = False) -> Any:
        t, o = _ids(name, ORDER_RE, "order")
        if t != tenant_id:
            raise not_found("order")
        async with self.d.engine.connect() as conn:
            row = await om.load(conn, o, tenant_id)
        if row is None:
            raise not_found("order")
        return row

    def _parent_tenant(self, tenant_id: str, parent: str) -> None:
        (t,) = _ids(parent, TENANT_RE, "tenant")
        if t != tenant_id:
            raise not_found("tenant")

    async def _analyze(self, items: list[tuple[str, bytes]]) -> internal_pb2.AnalyzeSelfiesResponse:
        request = internal_pb2.AnalyzeSelfiesRequest(
            photos=[internal_pb2.SelfieInput(photo_id=pid, image=data) for pid, data in items]
        )
        try:
            return await self.d.filter.AnalyzeSelfies(
                request, timeout=outgoing_timeout(self.s.filter_timeout_s)
            )
        except grpc.aio.AioRpcError as err:
            log.warning("AnalyzeSelfies failed: %s %s", err.code(), err.details())
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE,
                "the photo check is unavailable right now; nothing was stored, please retry",
                reason="FILTER_UNAVAILABLE",
                retry_after_s=5.0,
            ) from err

    async def _stored_photos(self, order_id: str) -> list[Any]:
        async with self.d.engine.connect() as conn:
            return list(
                await conn.execute(
                    sa.select(photos)
                    .where(photos.c.order_id == order_id)
                    .order_by(photos.c.created_at, photos.c.photo_id)
                )
            )

    # ---- orders -------------------------------------------------------------

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        spec = request.order
        values = self._validate_order(spec)
        order_id = "o-" + secrets.token_hex(8)
        async with self.d.engine.begin() as conn:
            if request.request_id:
                existing = (
                    await conn.execute(
                        sa.select(orders).where(
                            orders.c.tenant_id == tenant_id,
                            orders.c.request_id == request.request_id,
                        )
                    )
                ).one_or_none()
                if existing is not None:
                    return om.to_proto(existing)
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        sa.insert(orders).values(
                            order_id=order_id,
                            tenant_id=tenant_id,
                            state="CREATED",
                            request_id=request.request_id or None,
                            progress=om.make_progress(pb.STAGE_UPLOAD).SerializeToString(),
                            **values,
                        )
                    )
            except IntegrityError:
                # The same request_id raced with itself: the other call's order is the answer.
                existing = (
                    await conn.execute(
                        sa.select(orders).where(
                            orders.c.tenant_id == tenant_id,
                            orders.c.request_id == request.request_id,
                        )
                    )
                ).one()
                return om.to_proto(existing)
            row = await om.load(conn, order_id)
            await om.record_change(conn, row)
            await om.enqueue(conn, tenant_id, order_id, om.lifecycle_message(row, om.CREATED))
        return om.to_proto(row)

    def _validate_order(self, spec: pb.Order) -> dict[str, Any]:
        violations: list[tuple[str, str]] = []
        unknown = [x for x in spec.style_ids if x not in CATALOGUE.ids()]
        if unknown:
            violations.append(
                ("order.style_ids", f"unknown style(s) {', '.join(unknown)}; see ListStyles")
            )
        prompt = spec.custom_prompt.strip()
        # The generator's own screen, so a prompt it would refuse never trains a model.
        screened = screen_prompt(prompt)
        if not screened.ok:
            violations.append(("order.custom_prompt", screened.reason))
        keep = load_retention().photo_days_bounds()
        days = spec.photo_retention_days or keep.default
        if not keep.low <= days <= keep.high:
            violations.append(("order.photo_retention_days", f"must be {keep.low}..{keep.high}"))
        if spec.candidate_count < 0 or spec.result_count < 0:
            violations.append(("order", "candidate_count and result_count must not be negative"))
        if spec.subject_class not in pb.SubjectClass.values():
            violations.append(("order.subject_class", "unknown subject class"))
        if len(spec.display_name) > 200:
            violations.append(("order.display_name", "longer than 200 characters"))
        if violations:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the order is not valid", violations)
        candidates = spec.candidate_count or LIMITS.default_candidate_count
        results_n = spec.result_count or LIMITS.default_result_count
        if candidates > LIMITS.max_candidate_count:
            raise quota(
                f"candidate_count {candidates} is over the limit of {LIMITS.max_candidate_count}",
                "order.candidate_count",
                f"at most {LIMITS.max_candidate_count} candidates per order",
            )
        if results_n > LIMITS.max_result_count:
            raise quota(
                f"result_count {results_n} is over the limit of {LIMITS.max_result_count}",
                "order.result_count",
                f"at most {LIMITS.max_result_count} results per order",
            )
        return {
            "display_name": spec.display_name,
            "style_ids": list(spec.style_ids),
            "custom_prompt": prompt,
            "subject_class": spec.subject_class,
            "candidate_count": candidates,
            "result_count": results_n,
            "photo_retention_days": days,
            "keep_model": spec.keep_model,
        }

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
        size = _page_size(request.page_size)
        scope = f"{request.parent}|{request.state}"
        offset = _page(request.page_token, scope)
        q = sa.select(orders).where(orders.c.tenant_id == tenant_id)
        if request.state:
            q = q.where(orders.c.state == om.state_name(request.state))
        q = q.order_by(orders.c.created_at.desc(), orders.c.order_id).offset(offset).limit(size + 1)
        async with self.d.engine.connect() as conn:
            rows = list(await conn.execute(q))
        resp = pb.ListOrdersResponse(orders=[om.to_proto(r) for r in rows[:size]])
        if len(rows) > size:
            resp.next_page_token = _token(offset + size, scope)
        return resp

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.name)
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
        row = await self._order(tenant_id, request.name)
        if om.state_value(row.state) in om.IN_FLIGHT | {om.READY}:
            return om.to_proto(row)  # submitted before: a retry gets the same answer
        if row.state != "UPLOADING":
            raise om.refuse_transition(row, "submit")
        stored = [p for p in await self._stored_photos(row.order_id) if p.usable]
        self._check_photo_count(row, len(stored))
        # The set as a whole, once more: deletes since the last upload change the reference.
        items = [(p.photo_id, await self.d.blobs.get(p.blob_key)) for p in stored]
        analysis = await self._analyze(items)
        by_id = {a.photo_id: a for a in analysis.photos}
        usable = [p for p in stored if by_id.get(p.photo_id, None) and by_id[p.photo_id].usable]
        self._check_photo_count(row, len(usable))
        names = {p.photo_id: photo_proto(p).name for p in stored}
        check = set_check_of(analysis.set, names)
        s = self.s
        async with self.d.engine.begin() as conn:
            tenant = (
                await conn.execute(
                    sa.select(tenants).where(tenants.c.tenant_id == tenant_id).with_for_update()
                )
            ).one()
            limit = tenant.max_orders_in_flight or s.max_orders_in_flight
            in_flight = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(orders)
                    .where(
                        orders.c.tenant_id == tenant_id,
                        orders.c.state.in_([om.state_name(x) for x in om.IN_FLIGHT]),
                    )
                )
            ).scalar_one()
            if in_flight >= limit:
                raise quota(
                    f"{in_flight} orders are in flight; the limit is {limit}",
                    f"tenants/{tenant_id}",
                    f"at most {limit} orders between QUEUED and READY",
                )
            current = await om.load(conn, row.order_id, lock=True)
            if current is None or current.state != "UPLOADING":
                raise om.refuse_transition(current or row, "submit")
            job = jobs_pb2.TrainJob(
                job_id=ids.train_job_id(row.order_id),
                tenant_id=tenant_id,
                order_id=row.order_id,
                photo_keys=[p.blob_key for p in usable],
                subject_class=row.subject_class,
                reference_embedding=list(analysis.set.reference_embedding),
            )
            fresh = await om.apply(
                conn,
                current,
                state=om.QUEUED,
                values={
                    "submitted_at": sa.func.now(),
                    "reference_embedding": embedding_bytes(analysis.set.reference_embedding),
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

    def _check_photo_count(self, row: Any, usable: int) -> None:
        if usable < LIMITS.min_photos:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the order has {usable} usable photos; at least {LIMITS.min_photos} are needed",
                precondition_violations=[
                    (
                        "PHOTOS",
                        om.order_name(row.tenant_id, row.order_id),
                        f"upload at least {LIMITS.min_photos - usable} more usable photo(s)",
                    )
                ],
                reason="NOT_ENOUGH_PHOTOS",
            )

    async def DeleteOrder(
        self, request: pb.DeleteOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletionReceipt:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.name)
        if row.state != "DELETED":
            async with self.d.engine.begin() as conn:
                current = await om.load(conn, row.order_id, lock=True)
                if current is not None and current.state != "DELETED":
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
                    request_id=request.request_id or f"delete:{row.order_id}",
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
        return reply.receipt

    # ---- photos -------------------------------------------------------------

    async def UploadPhotos(
        self,
        request_iterator: AsyncIterator[pb.UploadPhotosRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadPhotosResponse:
        tenant_id = await self._caller(context)
        parent = ""
        incoming: list[Incoming] = []
        current: Incoming | None = None
        cap = LIMITS.max_photo_bytes
        async for msg in request_iterator:
            if not parent:
                if not msg.parent:
                    raise ApiError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the first message must name the order (parent)",
                        [("parent", "required on the first message")],
                    )
                parent = msg.parent
                row = await self._order(tenant_id, parent)
                if row.state not in ("CREATED", "UPLOADING"):
                    raise om.refuse_transition(row, "upload photos to")
            elif msg.parent and msg.parent != parent:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "one call uploads to one order",
                    [("parent", "differs from the first message")],
                )
            if msg.filename:
                if current is not None:
                    # Cleaned as soon as it is complete: one raw photo in memory, not a call.
                    await self._clean_one(current)
                current = Incoming(len(incoming), msg.filename[:200], msg.content_type)
                incoming.append(current)
            elif current is None:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "a photo starts with a message that sets filename",
                    [("filename", "required on the first chunk of each photo")],
                )
            if current.refusal is None and msg.data:
                if len(current.data) + len(msg.data) > cap:
                    # Counted before decoding; the rest of this photo is read and dropped.
                    try:
                        check_size(len(current.data) + len(msg.data), self.d.limits)
                    except Refusal as refusal:
                        current.refusal = refusal
                    current.data = bytearray()
                else:
                    current.data.extend(msg.data)
        if not parent:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "no photos were sent", [("parent", "required")]
            )
        if not incoming:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "no photos were sent", [("filename", "required")]
            )
        return await self._store_upload(tenant_id, row, incoming)

    async def _clean_one(self, item: Incoming) -> None:
        if item.refusal is None and item.clean is None:
            try:
                item.clean = await asyncio.to_thread(clean, bytes(item.data), self.d.limits)
            except Refusal as refusal:
                item.refusal = refusal
        item.data = bytearray()

    async def _store_upload(
        self, tenant_id: str, row: Any, incoming: list[Incoming]
    ) -> pb.UploadPhotosResponse:
        existing = await self._stored_photos(row.order_id)
        room = LIMITS.max_photos - len(existing)
        for item in incoming:
            await self._clean_one(item)
        quota_hit = False
        for item in incoming:
            if item.clean is None:
                continue
            if room <= 0:
                item.clean = None
                item.refusal = Refusal(
                    "TOO_MANY_PHOTOS",
                    f"the order already has {LIMITS.max_photos} photos (the most allowed)",
                )
                quota_hit = True
                continue
            room -= 1
            item.photo_id = "p-" + secrets.token_hex(6)
        fresh = [i for i in incoming if i.clean is not None]
        stored_rows: list[Any] = []
        check = pb.SetCheck()
        analysis: internal_pb2.AnalyzeSelfiesResponse | None = None
        if fresh:
            usable_existing = [p for p in existing if p.usable]
            items = [(p.photo_id, await self.d.blobs.get(p.blob_key)) for p in usable_existing]
            items += [(i.photo_id, i.clean.data) for i in fresh if i.clean is not None]
            analysis = await self._analyze(items)
            by_id = {a.photo_id: a for a in analysis.photos}
            names = {p.photo_id: photo_proto(p).name for p in existing}
            for i in fresh:
                names[i.photo_id] = f"{om.order_name(tenant_id, row.order_id)}/photos/{i.photo_id}"
            check = set_check_of(analysis.set, names)
            accepted = []
            for i in fresh:
                verdict = by_id.get(i.photo_id)
                if verdict is None or not verdict.usable:
                    blocking = [f for f in (verdict.findings if verdict else []) if f.blocking]
                    first = (
                        blocking[0]
                        if blocking
                        else pb.PhotoFinding(code="REFUSED", message="the photo check refused it")
                    )
                    i.refusal = Refusal(
                        first.code, "; ".join(f.message for f in blocking) or first.message
                    )
                    i.clean = None
                else:
                    accepted.append(i)
            stored_rows = await self._commit_photos(
                tenant_id, row, accepted, by_id, check, analysis
            )
        refused = [i for i in incoming if i.refusal is not None]
        response = pb.UploadPhotosResponse(
            photos=[photo_proto(r) for r in stored_rows], set_check=check
        )
        if refused:
            violations = [
                (
                    f"photos[{i.index}]",
                    f"{i.refusal.code}: photo {i.index + 1} ({i.filename}) was refused: "
                    f"{i.refusal.message}",
                )
                for i in refused
                if i.refusal is not None
            ]
            summary = (
                f"{len(refused)} of {len(incoming)} photo(s) refused, "
                f"{len(stored_rows)} stored; see the field violations"
            )
            raise UploadRefused(
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if quota_hit
                else grpc.StatusCode.INVALID_ARGUMENT,
                summary,
                field_violations=violations,
                quota_violations=(
                    [
                        (
                            om.order_name(tenant_id, row.order_id) + "/photos",
                            f"at most {LIMITS.max_photos} photos per order",
                        )
                    ]
                    if quota_hit
                    else []
                ),
                reason="PHOTOS_REFUSED",
                metadata={"stored": str(len(stored_rows)), "refused": str(len(refused))},
                stored=response,
            )
        return response

    async def _commit_photos(
        self,
        tenant_id: str,
        row: Any,
        accepted: list[Incoming],
        by_id: dict[str, internal_pb2.SelfieAnalysis],
        check: pb.SetCheck,
        analysis: internal_pb2.AnalyzeSelfiesResponse,
    ) -> list[Any]:
        keys = []
        try:
            for i in accepted:
                assert i.clean is not None
                key = blob_key(tenant_id, row.order_id, "photos", f"{i.photo_id}.jpg")
                await self.d.blobs.put(key, i.clean.data, "image/jpeg")
                keys.append(key)
            async with self.d.engine.begin() as conn:
                current = await om.load(conn, row.order_id, lock=True)
                if current is None or current.state not in ("CREATED", "UPLOADING"):
                    raise om.refuse_transition(current or row, "upload photos to")
                for i in accepted:
                    assert i.clean is not None
                    a = by_id[i.photo_id]
                    await conn.execute(
                        sa.insert(photos).values(
                            order_id=row.order_id,
                            photo_id=i.photo_id,
                            tenant_id=tenant_id,
                            filename=i.filename,
                            blob_key=blob_key(
                                tenant_id, row.order_id, "photos", f"{i.photo_id}.jpg"
                            ),
                            usable=True,
                            findings=finding_dicts(a.findings),
                            width=i.clean.width,
                            height=i.clean.height,
                            size_bytes=len(i.clean.data),
                            sha256=i.clean.sha256,
                            sharpness=a.sharpness,
                            face_size_px=a.face_size_px,
                            identity_distance=a.identity_distance,
                        )
                    )
                # Photos stored earlier get the fresh verdict of the whole set.
                for pid, a in by_id.items():
                    if any(pid == i.photo_id for i in accepted):
                        continue
                    await conn.execute(
                        sa.update(photos)
                        .where(photos.c.order_id == row.order_id, photos.c.photo_id == pid)
                        .values(
                            usable=a.usable,
                            findings=finding_dicts(a.findings),
                            identity_distance=a.identity_distance,
                        )
                    )
                usable_count = (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(photos)
                        .where(photos.c.order_id == row.order_id, photos.c.usable)
                    )
                ).scalar_one()
                if accepted or usable_count != current.photo_count:
                    await om.apply(
                        conn,
                        current,
                        state=om.UPLOADING,
                        values={
                            "photo_count": usable_count,
                            "set_check": check.SerializeToString(),
                            "reference_embedding": embedding_bytes(
                                analysis.set.reference_embedding
                            ),
                            "progress": om.make_progress(
                                pb.STAGE_UPLOAD,
                                done=usable_count,
                                total=LIMITS.min_photos,
                                detail=f"{usable_count} usable photo(s)",
                            ).SerializeToString(),
                        },
                    )
                stored = list(
                    await conn.execute(
                        sa.select(photos).where(
                            photos.c.order_id == row.order_id,
                            photos.c.photo_id.in_([i.photo_id for i in accepted]),
                        )
                    )
                )
        except BaseException:
            # Nothing of a failed upload stays behind.
            for key in keys:
                try:
                    await self.d.blobs.delete(key)
                except Exception:
                    log.exception("could not remove blob %s of a failed upload", key)
            raise
        order = {i.photo_id: i.index for i in accepted}
        return sorted(stored, key=lambda r: order[r.photo_id])

    async def ListPhotos(
        self, request: pb.ListPhotosRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPhotosResponse:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.parent)
        size = _page_size(request.page_size)
        offset = _page(request.page_token, request.parent)
        async with self.d.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(photos)
                    .where(photos.c.order_id == row.order_id)
                    .order_by(photos.c.created_at, photos.c.photo_id)
                    .offset(offset)
                    .limit(size + 1)
                )
            )
        resp = pb.ListPhotosResponse(photos=[photo_proto(r) for r in rows[:size]])
        if row.set_check:
            resp.set_check.ParseFromString(bytes(row.set_check))
        if len(rows) > size:
            resp.next_page_token = _token(offset + size, request.parent)
        return resp

    async def DeletePhoto(
        self, request: pb.DeletePhotoRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePhotoResponse:
        tenant_id = await self._caller(context)
        t, o, p = _ids(request.name, PHOTO_RE, "photo")
        if t != tenant_id:
            raise not_found("photo")
        async with self.d.engine.begin() as conn:
            current = await om.load(conn, o, tenant_id, lock=True)
            if current is None:
                raise not_found("photo")
            photo = (
                await conn.execute(
                    sa.select(photos).where(photos.c.order_id == o, photos.c.photo_id == p)
                )
            ).one_or_none()
            if photo is None:
                raise not_found("photo")
            if current.state not in ("CREATED", "UPLOADING"):
                raise om.refuse_transition(current, "delete photos of")
            await conn.execute(
                sa.delete(photos).where(photos.c.order_id == o, photos.c.photo_id == p)
            )
            count = current.photo_count - (1 if photo.usable else 0)
            await om.apply(conn, current, values={"photo_count": max(0, count)})
        await self.d.blobs.delete(photo.blob_key)
        return pb.DeletePhotoResponse()

    # ---- results ------------------------------------------------------------

    async def ListResults(
        self, request: pb.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResultsResponse:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.parent)
        size = _page_size(request.page_size)
        scope = f"{request.parent}|{int(request.include_rejected)}"
        offset = _page(request.page_token, scope)
        q = sa.select(results).where(results.c.order_id == row.order_id)
        if not request.include_rejected:
            q = q.where(results.c.delivered)
        q = q.order_by(
            results.c.delivered.desc(),
            results.c.rank,
            sa.func.cardinality(results.c.rejection_reasons),
            results.c.result_id,
        )
        async with self.d.engine.connect() as conn:
            rows = list(await conn.execute(q.offset(offset).limit(size + 1)))
            summary = await rejection_summary(conn, row.order_id)
        resp = pb.ListResultsResponse(
            results=[result_proto(r) for r in rows[:size]], summary=summary
        )
        if len(rows) > size:
            resp.next_page_token = _token(offset + size, scope)
        return resp

    async def DownloadResult(
        self, request: pb.DownloadResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadResultResponse]:
        tenant_id = await self._caller(context)
        t, o, r = _ids(request.name, RESULT_RE, "result")
        if t != tenant_id:
            raise not_found("result")
        async with self.d.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(results).where(
                        results.c.order_id == o,
                        results.c.result_id == r,
                        results.c.tenant_id == tenant_id,
                    )
                )
            ).one_or_none()
        if row is None or not row.blob_key.startswith(order_prefix(tenant_id, o)):
            raise not_found("result")
        try:
            data = await self.d.blobs.get(row.blob_key)
        except BlobNotFound as err:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND, "the result's image has been deleted"
            ) from err
        for start in range(0, max(1, len(data)), DOWNLOAD_CHUNK):
            chunk = pb.DownloadResultResponse(data=data[start : start + DOWNLOAD_CHUNK])
            if start == 0:
                chunk.content_type = row.content_type or "image/png"
                chunk.total_size = len(data)
            yield chunk

    # ---- previews and styles ---------------------------------------------------

    async def CreatePreview(
        self, request: pb.CreatePreviewRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePreviewResponse:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        violations = []
        if request.style_id not in CATALOGUE.ids():
            violations.append(("style_id", "unknown style; see ListStyles"))
        if not 0 <= request.count <= 4:
            violations.append(("count", "must be 1..4 (0 = 2)"))
        screened = screen_prompt(request.custom_prompt)
        if not screened.ok:
            violations.append(("custom_prompt", screened.reason))
        if violations:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the preview is not valid", violations)
        try:
            photo = await asyncio.to_thread(clean, request.photo, self.d.limits)
        except Refusal as refusal:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the photo was refused: {refusal.message}",
                [("photo", f"{refusal.code}: {refusal.message}")],
            ) from refusal
        seed = int.from_bytes(secrets.token_bytes(4), "big")
        t0 = time.perf_counter()
        try:
            reply = await self.d.generator.Preview(
                internal_pb2.PreviewRequest(
                    image=photo.data,
                    style_id=request.style_id,
                    count=request.count or 2,
                    seed=seed,
                    custom_prompt=request.custom_prompt,
                ),
                timeout=outgoing_timeout(self.s.preview_timeout_s),
            )
        except grpc.aio.AioRpcError as err:
            log.warning("Preview failed: %s %s", err.code(), err.details())
            code = (
                err.code()
                if err.code()
                in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
                else grpc.StatusCode.UNAVAILABLE
            )
            raise ApiError(code, f"the preview could not be made: {err.details()}") from err
        resp = pb.CreatePreviewResponse(images=list(reply.images), model_id=reply.model_id)
        resp.latency.FromNanoseconds(int((time.perf_counter() - t0) * 1e9))
        return resp

    async def ListStyles(
        self, request: pb.ListStylesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStylesResponse:
        await self._caller(context)
        size = _page_size(request.page_size)
        offset = _page(request.page_token, "styles")
        resp = pb.ListStylesResponse(styles=list(STYLES[offset : offset + size]))
        if offset + size < len(STYLES):
            resp.next_page_token = _token(offset + size, "styles")
        return resp


async def rejection_summary(conn: Any, order_id: str) -> pb.RejectionSummary:
    counts = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count().filter(sa.func.cardinality(results.c.rejection_reasons) == 0),
                sa.func.count().filter(results.c.delivered),
            ).where(results.c.order_id == order_id)
        )
    ).one()
    reason = sa.func.unnest(results.c.rejection_reasons).label("reason")
    sub = sa.select(reason).where(results.c.order_id == order_id).subquery()
    by_reason = await conn.execute(sa.select(sub.c.reason, sa.func.count()).group_by(sub.c.reason))
    return pb.RejectionSummary(
        candidates=counts[0],
        passed=counts[1],
        delivered=counts[2],
        by_reason={r: int(n) for r, n in by_reason},
    )


# ------------------------------------------------------------------------------ admin


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.Tenant:
        self.d.auth.check_admin(_metadata(context))
        tenant_id = request.tenant_id or "t-" + secrets.token_hex(5)
        if not ID_RE.fullmatch(tenant_id):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tenant_id must be lower-case letters, digits and '-' (at most 63)",
                [("tenant_id", "must match [a-z0-9][a-z0-9-]{0,62}")],
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
                        display_name=t.display_name[:200],
                        requests_per_minute=t.requests_per_minute,
                        max_orders_in_flight=t.max_orders_in_flight,
                    )
                    .on_conflict_do_nothing(index_elements=[tenants.c.tenant_id])
                    .returning(tenants)
                )
            ).one_or_none()
        if row is None:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"tenant {tenant_id} already exists")
        return tenant_proto(row)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        self.d.auth.check_admin(_metadata(context))
        (tenant_id,) = _ids(request.parent, TENANT_RE, "tenant")
        key, created = await self.d.auth.store_key(tenant_id, request.api_key.display_name[:200])
        api_key = pb.ApiKey(
            name=f"tenants/{tenant_id}/apiKeys/{key.key_id}",
            display_name=request.api_key.display_name[:200],
            prefix=key.prefix,
        )
        api_key.create_time.FromDatetime(created)
        return pb.CreateApiKeyResponse(api_key=api_key, secret=key.secret)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        self.d.auth.check_admin(_metadata(context))
        tenant_id, key_id = _ids(request.name, KEY_RE, "API key")
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
            row = (
                await conn.execute(
                    sa.select(api_keys).where(
                        api_keys.c.key_id == key_id, api_keys.c.tenant_id == tenant_id
                    )
                )
            ).one_or_none()
        if row is None:
            raise not_found("API key")
        key = pb.ApiKey(
            name=request.name, display_name=row.display_name, prefix=f"hs_{row.key_id}_"
        )
        key.create_time.FromDatetime(row.created_at)
        key.revoke_time.FromDatetime(row.revoked_at)
        return key


def tenant_proto(row: Any) -> pb.Tenant:
    t = pb.Tenant(
        name=f"tenants/{row.tenant_id}",
        display_name=row.display_name,
        requests_per_minute=row.requests_per_minute,
        max_orders_in_flight=row.max_orders_in_flight,
    )
    t.create_time.FromDatetime(row.created_at)
    return t


__all__ = ["AdminServicer", "Deps", "HeadshotServicer", "order_changes"]
