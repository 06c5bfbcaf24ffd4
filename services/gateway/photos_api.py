"""HeadshotService's photo methods: the upload pipeline, listing and deleting photos.

Uploads keep what passes and say what became of every photo: each photo of an UploadPhotos
call is decoded and re-encoded as soon as its last chunk arrives (only one photo's raw
bytes are held at a time, never a whole call), photos that pass decoding and the selfie
check are stored, and the response lists an outcome per photo sent (stored, or refused
with the code and a sentence). Partial success is a success. Only when nothing was stored
does the call fail: INVALID_ARGUMENT (RESOURCE_EXHAUSTED when the order was full) with one
field violation per refused photo (`photos[i]`, "CODE: photo i+1 (name) ...") and the
UploadPhotosResponse with the outcomes packed in the details.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2
from services.common.grpc.errors import ApiError, clip, not_found
from services.gateway import orders as om
from services.gateway import photo_store
from services.gateway.deps import TenantApi
from services.gateway.mappers import embedding_bytes, photo_proto, set_check_of
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.photo_analysis import analyze
from services.gateway.uploads import CleanPhoto, Refusal, check_size, clean
from services.gateway.validation import ids_of
from services.policy import names
from services.policy.limits import limits

log = logging.getLogger(__name__)
MAX_FILENAME = 200
_PHOTO_ID = re.compile(r"\bp-[0-9a-f]{12}\b")


@dataclass
class UploadRefused(ApiError):
    """An ApiError that also carries the UploadPhotosResponse (every photo's outcome)."""

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


@dataclass
class Upload:
    """One UploadPhotos call: the order, what it held before, and the photos so far."""

    row: Any
    existing: list[Any]
    room: int
    items: list[Incoming] = field(default_factory=list)

    @property
    def taken(self) -> int:
        return sum(1 for i in self.items if i.photo_id)


def filename_of(raw: str) -> str:
    # Shown back in outcomes and errors, stored in PostgreSQL (no NUL there): clipped,
    # control characters replaced.
    return clip(raw, MAX_FILENAME)


def with_filenames(text: str, filenames: dict[str, str]) -> str:
    """Photo ids in a finding's sentence replaced by the file names the client knows."""
    return _PHOTO_ID.sub(lambda m: repr(filenames.get(m.group(0), m.group(0))), text)


class PhotosApi(TenantApi):
    async def UploadPhotos(
        self,
        request_iterator: AsyncIterator[pb.UploadPhotosRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadPhotosResponse:
        tenant_id = await self._caller(context)
        parent = ""
        upload: Upload | None = None
        current: Incoming | None = None
        cap = limits().max_photo_bytes
        async for msg in request_iterator:
            if upload is None:
                if not msg.parent:
                    raise ApiError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the first message must name the order (parent)",
                        [("parent", "required on the first message")],
                    )
                parent = msg.parent
                row = await self._order(tenant_id, parent, field="parent")
                if om.state_of(row) not in om.EDITABLE:
                    raise om.refuse_transition(row, "upload photos to")
                existing = await photo_store.stored_photos(self.d.engine, row.order_id)
                upload = Upload(row, existing, limits().max_photos - len(existing))
            elif msg.parent and msg.parent != parent:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "one call uploads to one order",
                    [("parent", "differs from the first message")],
                )
            if msg.filename:
                if current is not None:
                    await self._decode(upload, current)
                current = Incoming(len(upload.items), filename_of(msg.filename), msg.content_type)
                upload.items.append(current)
                if upload.room <= 0:
                    current.refusal = self._full(upload)
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
        if upload is None:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "no photos were sent", [("parent", "required")]
            )
        if current is None:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "no photos were sent", [("filename", "required")]
            )
        await self._decode(upload, current)
        return await self._store_upload(tenant_id, upload)

    def _full(self, upload: Upload) -> Refusal:
        most = limits().max_photos
        return Refusal(
            "TOO_MANY_PHOTOS",
            f"an order holds at most {most} photos: {len(upload.existing)} were stored"
            f" before this call and {upload.taken} earlier photo(s) of this call took the"
            " remaining room",
        )

    async def _decode(self, upload: Upload, item: Incoming) -> None:
        """Decode and re-encode one photo as soon as it is complete; drop its raw bytes."""
        data, item.data = bytes(item.data), bytearray()
        if item.refusal is not None:
            return
        if upload.room <= 0:
            item.refusal = self._full(upload)
            return
        try:
            item.clean = await asyncio.to_thread(clean, data, self.d.limits)
        except Refusal as refusal:
            item.refusal = refusal
            return
        upload.room -= 1
        item.photo_id = names.new_id("p", 6)

    async def _store_upload(self, tenant_id: str, upload: Upload) -> pb.UploadPhotosResponse:
        row, existing, incoming = upload.row, upload.existing, upload.items
        fresh = [i for i in incoming if i.clean is not None]
        filenames = {p.photo_id: p.filename for p in existing}
        filenames.update({i.photo_id: i.filename for i in fresh})
        stored_rows: list[Any] = []
        check = pb.SetCheck()
        if fresh:
            usable_existing = [p for p in existing if p.usable]
            items = [(p.photo_id, await self.d.blobs.get(p.blob_key)) for p in usable_existing]
            items += [(i.photo_id, i.clean.data) for i in fresh if i.clean is not None]
            analysis = await analyze(self.d.filter, items, self.s.filter_timeout_s)
            for verdict in analysis.photos:
                for finding in verdict.findings:
                    finding.message = with_filenames(finding.message, filenames)
            by_id = {a.photo_id: a for a in analysis.photos}
            photo_names = {p.photo_id: photo_proto(p).name for p in existing}
            for i in fresh:
                photo_names[i.photo_id] = names.photo_name(tenant_id, row.order_id, i.photo_id)
            check = set_check_of(analysis.set, photo_names)
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
        stored_by_id = {r.photo_id: r for r in stored_rows}
        response = pb.UploadPhotosResponse(
            photos=[photo_proto(r) for r in stored_rows], set_check=check
        )
        for i in incoming:
            out = response.outcomes.add(index=i.index, filename=i.filename)
            if i.photo_id in stored_by_id:
                out.stored = True
                out.photo = names.photo_name(tenant_id, row.order_id, i.photo_id)
            elif i.refusal is not None:
                out.code, out.message = i.refusal.code, i.refusal.message
        refused = [i for i in incoming if i.refusal is not None]
        if stored_rows or not refused:
            return response
        lim = limits()
        quota_hit = any(i.refusal.code == "TOO_MANY_PHOTOS" for i in refused if i.refusal)
        violations = [
            (
                f"photos[{i.index}]",
                f"{i.refusal.code}: photo {i.index + 1} ({i.filename}) was refused: "
                f"{i.refusal.message}",
            )
            for i in refused
            if i.refusal is not None
        ]
        order_name = names.order_name(tenant_id, row.order_id)
        raise UploadRefused(
            grpc.StatusCode.RESOURCE_EXHAUSTED if quota_hit else grpc.StatusCode.INVALID_ARGUMENT,
            f"none of the {len(incoming)} photo(s) was stored; see the field violations",
            field_violations=violations,
            quota_violations=(
                [(order_name + "/photos", f"at most {lim.max_photos} photos per order")]
                if quota_hit
                else []
            ),
            reason="ORDER_FULL" if quota_hit else "PHOTOS_REFUSED",
            metadata={"stored": "0", "refused": str(len(refused))},
            stored=response,
        )

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
        new_ids = {i.photo_id for i in accepted}
        try:
            for i in accepted:
                assert i.clean is not None
                key = photo_store.photo_key(tenant_id, row.order_id, i.photo_id)
                await self.d.blobs.put(key, i.clean.data, "image/jpeg")
                keys.append(key)
            async with self.d.engine.begin() as conn:
                current = await om.load(conn, row.order_id, lock=True)
                if current is None or om.state_of(current) not in om.EDITABLE:
                    raise om.refuse_transition(current or row, "upload photos to")
                for i in accepted:
                    assert i.clean is not None
                    await photo_store.insert_photo(
                        conn, tenant_id, row.order_id, i.photo_id, i.filename, i.clean,
                        by_id[i.photo_id],
                    )  # fmt: skip
                # Photos stored earlier get the fresh verdict of the whole set.
                for pid, a in by_id.items():
                    if pid not in new_ids:
                        await photo_store.update_verdict(conn, row.order_id, a)
                usable = await photo_store.usable_count(conn, row.order_id)
                if accepted or usable != current.photo_count:
                    await om.apply(
                        conn,
                        current,
                        state=om.UPLOADING,
                        values={
                            "photo_count": usable,
                            "set_check": check.SerializeToString(),
                            "reference_embedding": embedding_bytes(
                                analysis.set.reference_embedding
                            ),
                            "progress": om.make_progress(
                                pb.STAGE_UPLOAD,
                                done=usable,
                                total=limits().min_photos,
                                detail=f"{usable} usable photo(s)",
                            ).SerializeToString(),
                        },
                    )
                stored = await photo_store.photos_by_id(conn, row.order_id, sorted(new_ids))
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
        row = await self._order(tenant_id, request.parent, field="parent")
        size = page_size(request.page_size)
        offset = offset_of(request.page_token, request.parent)
        rows = await photo_store.page(self.d.engine, row.order_id, offset, size + 1)
        resp = pb.ListPhotosResponse(photos=[photo_proto(r) for r in rows[:size]])
        if row.set_check:
            resp.set_check.ParseFromString(bytes(row.set_check))
        if len(rows) > size:
            resp.next_page_token = token_of(offset + size, request.parent)
        return resp

    async def DeletePhoto(
        self, request: pb.DeletePhotoRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePhotoResponse:
        tenant_id = await self._caller(context)
        t, o, p = ids_of(request.name, names.PHOTO_RE, "photo", "name")
        if t != tenant_id:
            raise not_found("photo")
        async with self.d.engine.begin() as conn:
            current = await om.load(conn, o, tenant_id, lock=True)
            if current is None:
                raise not_found("photo")
            photo = await photo_store.photo(conn, o, p)
            if photo is None:
                raise not_found("photo")
            if om.state_of(current) not in om.EDITABLE:
                raise om.refuse_transition(current, "delete photos of")
            await photo_store.delete_photo(conn, o, p)
            count = current.photo_count - (1 if photo.usable else 0)
            # The set changed under its verdict: SubmitOrder judges it again.
            await om.apply(
                conn,
                current,
                values={"photo_count": max(0, count), "reference_embedding": None},
            )
        await self.d.blobs.delete(photo.blob_key)
        return pb.DeletePhotoResponse()
