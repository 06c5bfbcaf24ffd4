"""The async SDK of the public API: HeadshotService for a tenant's key, AdminService for the
operator's token, over one grpc.aio channel.

    async with connect("127.0.0.1:50051", admin_token) as admin:
        tenant, secret = await admin.bootstrap_tenant("acme")
        client = admin.with_token(secret)
        order = await client.create_order(tenant, display_name="me")
        upload = await client.upload_photos(order.name, photo_files(Path("selfies")))
        for photo in upload.refused:            # refused photos are an answer, not an error
            print(photo.filename, photo.reason)
        await client.submit(order.name)
        final = await client.watch(order.name, within_s=1800)
        results, summary = await client.list_results(order.name)

Every other failure is raised as the call's `grpc.aio.AioRpcError`; `clients.errors` reads
its details.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import grpc

from clients.errors import error_details, rich_status, unpack_detail
from clients.order_states import TERMINAL_STATES, StageClock, state_name
from clients.photos import (
    CHUNK_BYTES,
    PhotoFolderError,
    PhotoSource,
    photo_files,
    source_name,
    upload_requests,
)
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc

__all__ = [
    "ADMIN_TOKEN_ENV",
    "CHUNK_BYTES",
    "TERMINAL_STATES",
    "HeadshotsClient",
    "OrderRun",
    "PhotoFolderError",
    "PhotoSource",
    "RefusedPhoto",
    "StageClock",
    "Upload",
    "bearer",
    "connect",
    "open_channel",
    "photo_files",
    "refused_upload",
    "state_name",
    "tenant_name",
]

# The variable through which the operator's token reaches the gateway, and the CLI.
ADMIN_TOKEN_ENV = "HS_GATEWAY_ADMIN_TOKEN"
# Results and previews come back in messages of a few MiB at most; 16 MiB leaves room.
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
# Per-call deadlines (seconds). An upload runs the selfie checks before it answers.
CALL_TIMEOUT_S = 30.0
# Tries of an upload answered UNAVAILABLE (nothing stored), 2 s, 4 s, 8 s apart.
UPLOAD_ATTEMPTS = 4
UPLOAD_TIMEOUT_S = 300.0
LIST_RESULTS_TIMEOUT_S = 60.0
DOWNLOAD_TIMEOUT_S = 120.0
# A watch whose gateway stays unreachable this long gives up (a restart takes seconds).
REATTACH_WITHIN_S = 60.0
PAGE_SIZE = 200
KEEPALIVE_MS = 300_000


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def tenant_name(tenant: str) -> str:
    """The resource name of a tenant given by id ("acme") or by name ("tenants/acme")."""
    return tenant if tenant.startswith("tenants/") else f"tenants/{tenant}"


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


P = TypeVar("P", bound=_Page)


async def _all_pages(fetch: Callable[[str], Awaitable[P]]) -> list[P]:
    """Every page of a List call, following next_page_token from the first page."""
    pages = [await fetch("")]
    while pages[-1].next_page_token:
        pages.append(await fetch(pages[-1].next_page_token))
    return pages


class RefusedPhoto(NamedTuple):
    """A photo the gateway did not store, and why ("CODE: photo 3 (x.jpg) was refused: ...")."""

    filename: str
    reason: str

    @property
    def code(self) -> str:
        """The machine-readable part, e.g. UNREADABLE, BLURRED, DUPLICATE."""
        return self.reason.partition(": ")[0]

    @property
    def message(self) -> str:
        """The sentence for a person (the reason without its code)."""
        return self.reason.partition(": ")[2] or self.reason


@dataclass
class Upload:
    """The answer to one upload: photos stored with their checks, and the refused ones."""

    stored: pb.UploadPhotosResponse
    refused: list[RefusedPhoto]

    @property
    def all_kept(self) -> bool:
        return not self.refused


@dataclass
class OrderRun:
    """What one order went through, as a client saw it."""

    order: pb.Order
    upload: Upload
    clock: StageClock
    upload_s: float
    wall_s: float


def refused_outcomes(stored: pb.UploadPhotosResponse) -> list[RefusedPhoto]:
    """The refused photos of a successful upload, worded like the error's violations."""
    return [
        RefusedPhoto(
            o.filename, f"{o.code}: photo {o.index + 1} ({o.filename}) was refused: {o.message}"
        )
        for o in stored.outcomes
        if not o.stored
    ]


def refused_upload(err: grpc.RpcError, photos: Sequence[PhotoSource]) -> Upload | None:
    """The Upload an UploadPhotos failure carries, or None when it is a real error.

    When no photo was stored the gateway answers INVALID_ARGUMENT (RESOURCE_EXHAUSTED when
    the order is full) with the UploadPhotosResponse (every photo's outcome) and a BadRequest
    whose violations name the refused ones as `photos[i]`.
    """
    if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return None
    stored = unpack_detail(rich_status(err), pb.UploadPhotosResponse)
    if stored is None:
        return None
    refused = []
    for field_path, why in error_details(err).field_violations:
        index = field_path.removeprefix("photos[").removesuffix("]")
        if field_path.startswith("photos[") and index.isdigit() and int(index) < len(photos):
            refused.append(RefusedPhoto(source_name(photos[int(index)]), why))
        else:
            refused.append(RefusedPhoto(field_path, why))
    return Upload(stored, refused) if refused else None


class HeadshotsClient:
    """One caller of the public API: a tenant's API key, or the operator's admin token."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.channel = channel
        self.token = token
        self._api = pb_grpc.HeadshotServiceStub(channel)
        self._admin = pb_grpc.AdminServiceStub(channel)

    def with_token(self, token: str) -> HeadshotsClient:
        """Another caller on the same channel (e.g. the tenant after the admin made its key)."""
        return HeadshotsClient(self.channel, token)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    # ---- admin (operator's token) -------------------------------------------------

    async def create_tenant(
        self,
        tenant_id: str,
        display_name: str = "",
        *,
        requests_per_minute: int = 0,
        max_orders_in_flight: int = 0,
    ) -> pb.Tenant:
        return await self._admin.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=pb.Tenant(
                    display_name=display_name,
                    requests_per_minute=requests_per_minute,
                    max_orders_in_flight=max_orders_in_flight,
                ),
            ),
            metadata=self.metadata,
            timeout=CALL_TIMEOUT_S,
        )

    async def create_api_key(self, tenant: str, display_name: str = "") -> pb.CreateApiKeyResponse:
        """A new key for `tenant`; its secret is in the answer only (stored as a hash)."""
        return await self._admin.CreateApiKey(
            pb.CreateApiKeyRequest(
                parent=tenant_name(tenant), api_key=pb.ApiKey(display_name=display_name)
            ),
            metadata=self.metadata,
            timeout=CALL_TIMEOUT_S,
        )

    async def revoke_api_key(self, name: str) -> pb.ApiKey:
        return await self._admin.RevokeApiKey(
            pb.RevokeApiKeyRequest(name=name), metadata=self.metadata, timeout=CALL_TIMEOUT_S
        )

    async def bootstrap_tenant(
        self, tenant_id: str, display_name: str = "", requests_per_minute: int = 0
    ) -> tuple[str, str]:
        """Create a tenant and an API key for it; returns (tenant name, secret)."""
        tenant = await self.create_tenant(
            tenant_id, display_name or tenant_id, requests_per_minute=requests_per_minute
        )
        key = await self.create_api_key(tenant.name, "bootstrap")
        return tenant.name, key.secret

    # ---- orders (tenant's key) ----------------------------------------------------

    async def list_styles(self) -> list[pb.Style]:
        pages = await _all_pages(
            lambda token: self._api.ListStyles(
                pb.ListStylesRequest(page_size=PAGE_SIZE, page_token=token),
                metadata=self.metadata,
                timeout=CALL_TIMEOUT_S,
            )
        )
        return [s for page in pages for s in page.styles]

    async def create_order(
        self, tenant: str, *, request_id: str | None = None, **fields: object
    ) -> pb.Order:
        """`fields` are those of `pb.Order` (display_name, style_ids, candidate_count, ...).
        A retry with the same `request_id` returns the same order."""
        return await self._api.CreateOrder(
            pb.CreateOrderRequest(
                parent=tenant_name(tenant),
                order=pb.Order(**fields),  # type: ignore[arg-type]
                request_id=request_id or str(uuid.uuid4()),
            ),
            metadata=self.metadata,
            timeout=CALL_TIMEOUT_S,
        )

    async def get_order(self, order_name: str) -> pb.Order:
        return await self._api.GetOrder(
            pb.GetOrderRequest(name=order_name), metadata=self.metadata, timeout=CALL_TIMEOUT_S
        )

    async def list_orders(
        self, tenant: str, state: pb.OrderState = pb.ORDER_STATE_UNSPECIFIED
    ) -> list[pb.Order]:
        """Every order of the tenant (only those in `state`, when given)."""
        pages = await _all_pages(
            lambda token: self._api.ListOrders(
                pb.ListOrdersRequest(
                    parent=tenant_name(tenant), page_size=50, page_token=token, state=state
                ),
                metadata=self.metadata,
                timeout=CALL_TIMEOUT_S,
            )
        )
        return [o for page in pages for o in page.orders]

    async def upload_photos(
        self, order_name: str, photos: Sequence[PhotoSource], chunk_bytes: int = CHUNK_BYTES
    ) -> Upload:
        """Upload the photos in one stream (chunked, see `clients.photos.upload_requests`).

        Photos that fail a check are not stored; they come back in `Upload.refused` with
        their filename and the reason, beside what was stored, rather than as an error.
        """
        for attempt in range(UPLOAD_ATTEMPTS):
            try:
                stored = await self._api.UploadPhotos(
                    upload_requests(order_name, photos, chunk_bytes),
                    metadata=self.metadata,
                    timeout=UPLOAD_TIMEOUT_S,
                )
                break
            except grpc.aio.AioRpcError as err:
                # UNAVAILABLE stores nothing (the photo check is busy or down): send again
                # after a growing pause, as the status's retry advice asks.
                if err.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < UPLOAD_ATTEMPTS:
                    await asyncio.sleep(2.0 * 2**attempt)
                    continue
                upload = refused_upload(err, photos)
                if upload is None:
                    raise
                return upload
        # Partial success is a success: the refused photos are in the per-photo outcomes.
        return Upload(stored, refused_outcomes(stored))

    async def submit(self, order_name: str, request_id: str | None = None) -> pb.Order:
        """Queue the order for training (it must have enough usable photos)."""
        return await self._api.SubmitOrder(
            pb.SubmitOrderRequest(name=order_name, request_id=request_id or str(uuid.uuid4())),
            metadata=self.metadata,
            timeout=2 * CALL_TIMEOUT_S,
        )

    async def watch(
        self,
        order_name: str,
        within_s: float | None = None,
        clock: StageClock | None = None,
        on_update: Callable[[pb.Order], None] | None = None,
    ) -> pb.Order:
        """Follow WatchOrder until the order is terminal and return it.

        Re-attaches when the stream breaks (a gateway restart, a transient network error),
        for up to REATTACH_WITHIN_S of unreachability. With `within_s`, raises TimeoutError
        naming the last state seen when the order is not terminal by then.
        """
        deadline = None if within_s is None else time.monotonic() + within_s
        unreachable_since: float | None = None
        last: pb.Order | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                seen = state_name(last.state) if last else "nothing"
                raise TimeoutError(
                    f"{order_name} not terminal after {within_s:.0f}s; last state {seen}"
                    + (f" ({last.progress.detail})" if last and last.progress.detail else "")
                )
            call = self._api.WatchOrder(
                pb.WatchOrderRequest(name=order_name), metadata=self.metadata, timeout=remaining
            )
            try:
                async for resp in call:
                    unreachable_since = None
                    last = resp.order
                    if clock is not None:
                        clock.see(last.state)
                    if on_update is not None:
                        on_update(last)
                    if last.state in TERMINAL_STATES:
                        call.cancel()
                        return last
            except grpc.aio.AioRpcError as err:
                if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since > REATTACH_WITHIN_S:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    continue  # the loop turns it into TimeoutError with the last state
                raise
            # The server ended the stream before a terminal state: watch again.
            await asyncio.sleep(0.2)

    async def list_results(
        self, order_name: str, include_rejected: bool = True
    ) -> tuple[list[pb.Result], pb.RejectionSummary]:
        """Every result of the order (with the rejected candidates and their reasons when
        `include_rejected`), and the order's rejection summary."""
        pages = await _all_pages(
            lambda token: self._api.ListResults(
                pb.ListResultsRequest(
                    parent=order_name,
                    page_size=PAGE_SIZE,
                    page_token=token,
                    include_rejected=include_rejected,
                ),
                metadata=self.metadata,
                timeout=LIST_RESULTS_TIMEOUT_S,
            )
        )
        summaries = [page.summary for page in pages if page.HasField("summary")]
        results = [r for page in pages for r in page.results]
        return results, summaries[-1] if summaries else pb.RejectionSummary()

    async def download(self, result_name: str) -> bytes:
        """The image of one result (streamed in chunks, joined here)."""
        parts: list[bytes] = []
        async for resp in self._api.DownloadResult(
            pb.DownloadResultRequest(name=result_name),
            metadata=self.metadata,
            timeout=DOWNLOAD_TIMEOUT_S,
        ):
            parts.append(resp.data)
        return b"".join(parts)

    async def erase(self, order_name: str, request_id: str | None = None) -> pb.DeletionReceipt:
        """Erase the order now (photos, model, results, its data key); returns the receipt."""
        return await self._api.DeleteOrder(
            pb.DeleteOrderRequest(name=order_name, request_id=request_id or str(uuid.uuid4())),
            metadata=self.metadata,
            timeout=CALL_TIMEOUT_S,
        )

    async def preview(
        self,
        tenant: str,
        style_id: str,
        photo: PhotoSource,
        *,
        count: int = 0,
        custom_prompt: str = "",
    ) -> pb.CreatePreviewResponse:
        """A few quick images of a style on one selfie, before any order (count 0 = 2)."""
        data = photo.read_bytes() if isinstance(photo, Path) else photo[1]
        return await self._api.CreatePreview(
            pb.CreatePreviewRequest(
                parent=tenant_name(tenant),
                style_id=style_id,
                photo=data,
                count=count,
                custom_prompt=custom_prompt,
                request_id=str(uuid.uuid4()),
            ),
            metadata=self.metadata,
            timeout=DOWNLOAD_TIMEOUT_S,
        )

    async def run_order(
        self,
        tenant: str,
        photos: Sequence[PhotoSource],
        *,
        within_s: float | None = None,
        on_update: Callable[[pb.Order], None] | None = None,
        on_uploaded: Callable[[pb.Order, Upload], None] | None = None,
        **order_fields: object,
    ) -> OrderRun:
        """Create, upload, submit and watch one order to a terminal state."""
        t0 = time.monotonic()
        order = await self.create_order(tenant, **order_fields)
        upload = await self.upload_photos(order.name, photos)
        upload_s = time.monotonic() - t0
        if on_uploaded is not None:
            on_uploaded(order, upload)
        clock = StageClock(t0=t0)  # states' first-seen times count from the order's start
        await self.submit(order.name)
        final = await self.watch(order.name, within_s, clock, on_update)
        return OrderRun(final, upload, clock, upload_s, time.monotonic() - t0)


@contextlib.asynccontextmanager
async def open_channel(
    addr: str, *, ready_within_s: float | None = 30.0
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the gateway; waits until it connects unless `ready_within_s` is None
    (then the first call fails fast with UNAVAILABLE if nothing listens)."""
    channel = grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # A ping at most every 5 minutes: a gRPC server's default floor for pings
            # between messages; pinging more often gets the connection closed (GOAWAY
            # too_many_pings) in the middle of a quiet watch.
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ],
    )
    try:
        if ready_within_s is not None:
            await asyncio.wait_for(channel.channel_ready(), timeout=ready_within_s)
        yield channel
    finally:
        await channel.close()


@contextlib.asynccontextmanager
async def connect(
    addr: str, token: str, *, ready_within_s: float | None = 30.0
) -> AsyncIterator[HeadshotsClient]:
    """A client for one caller on a channel of its own, closed on exit."""
    async with open_channel(addr, ready_within_s=ready_within_s) as channel:
        yield HeadshotsClient(channel, token)
