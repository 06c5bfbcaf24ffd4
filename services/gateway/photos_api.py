"""HeadshotService's photo methods: the upload pipeline, listing and deleting photos.

Uploads keep what passes and say what became of every photo: each photo of an UploadPhotos
call is decoded, re-encoded, analysed by the filter and, if it passes, written to the blob
store as soon as its last chunk arrives, so at most one photo's raw and cleaned bytes are
held at a time (plus each photo's few KB of facts), never a whole call. Then the set's
verdict is asked over the stored facts of the order's earlier photos and of this call's
(no image is analysed twice), photos the set refuses (a near-copy, another person) are
removed again, and the response lists an outcome per photo sent (stored, or refused
with the code and a sentence). A call that fails or is cancelled leaves nothing behind.
Partial success is a success. Only when nothing was stored does the call fail:
INVALID_ARGUMENT (RESOURCE_EXHAUSTED when the order was full) with one field violation
per refused photo (`photos[i]`, "CODE: photo i+1 (name) ...") and the
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
from services.gateway.photo_analysis import describe, facts_input, judge_set
from services.gateway.photo_store import Spilled
from services.gateway.uploads import Refusal, check_size, clean
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
    # Set once the photo passed its own checks and is in the blob store.
    photo_id: str = ""
    spilled: Spilled | None = None
    verdict: internal_pb2.SelfieAnalysis | None = None
    facts: internal_pb2.SelfieFacts | None = None


@dataclass
class Upload:
    """One UploadPhotos call: the order, what it held before, and the photos so far."""

    row: Any
    existing: list[Any]
    room: int
    items: list[Incoming] = field(default_factory=list)
    # Blobs this call wrote and nothing owns yet: removed if the call does not succeed.
    keys: list[str] = field(default_factory=list)

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


def set_verdict_values(
    usable: int, check: pb.SetCheck, analysis: internal_pb2.AnalyzeSelfiesResponse
) -> dict[str, Any]:
    """The order's columns that follow a fresh verdict on its photo set."""
    return {
        "photo_count": usable,
        "set_check": check.SerializeToString(),
        "reference_embedding": embedding_bytes(analysis.set.reference_embedding),
        "progress": om.make_progress(
            pb.STAGE_UPLOAD,
            done=usable,
            total=limits().min_photos,
            detail=f"{usable} usable photo(s)",
        ).SerializeToString(),
    }


def refusal_of(verdict: internal_pb2.SelfieAnalysis | None) -> Refusal:
    blocking = [f for f in (verdict.findings if verdict else []) if f.blocking]
    if not blocking:
        return Refusal("REFUSED", "the photo check refused it")
    return Refusal(blocking[0].code, "; ".join(f.message for f in blocking))


class PhotosApi(TenantApi):
    async def UploadPhotos(
        self,
        request_iterator: AsyncIterator[pb.UploadPhotosRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadPhotosResponse:
        tenant_id = await self._caller(context)
        keys: list[str] = []  # blobs this call wrote that no row owns yet
        try:
            upload = await self._receive(tenant_id, request_iterator, keys)
            return await self._store_upload(tenant_id, upload)
        except BaseException:
            # Nothing of a failed, refused or cancelled upload stays behind.
            await self._forget(keys)
            raise

    async def _forget(self, keys: list[str]) -> None:
        while keys:
            key = keys.pop()
            try:
                await self.d.blobs.delete(key)
            except Exception:
                log.exception("could not remove blob %s of a failed upload", key)

    async def _receive(
        self,
        tenant_id: str,
        request_iterator: AsyncIterator[pb.UploadPhotosRequest],
        keys: list[str],
    ) -> Upload:
        """Read the call, taking each photo in (`_take`) as soon as its last chunk is here;
        the blobs written go into `keys`."""
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
                upload = Upload(row, existing, limits().max_photos - len(existing), keys=keys)
            elif msg.parent and msg.parent != parent:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "one call uploads to one order",
                    [("parent", "differs from the first message")],
                )
            if msg.filename:
                if current is not None:
                    await self._take(tenant_id, upload, current)
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
        await self._take(tenant_id, upload, current)
        return upload

    def _full(self, upload: Upload) -> Refusal:
        most = limits().max_photos
        return Refusal(
            "TOO_MANY_PHOTOS",
            f"an order holds at most {most} photos: {len(upload.existing)} were stored"
            f" before this call and {upload.taken} earlier photo(s) of this call took the"
            " remaining room",
        )

    async def _take(self, tenant_id: str, upload: Upload, item: Incoming) -> None:
        """One complete photo: decoded and re-encoded (its raw bytes dropped), analysed on
        its own by the filter, and, if it passes, written to the blob store (its cleaned
        bytes dropped). What stays is a few KB: its verdict and facts."""
        data, item.data = bytes(item.data), bytearray()
        if item.refusal is not None:
            return
        if upload.room <= 0:
            item.refusal = self._full(upload)
            return
        try:
            photo = await asyncio.to_thread(clean, data, self.d.limits)
        except Refusal as refusal:
            item.refusal = refusal
            return
        del data
        photo_id = names.new_id("p", 6)
        verdict = await describe(self.d.filter, photo_id, photo.data, self.s.filter_timeout_s)
        if not verdict.usable or not verdict.HasField("facts"):
            item.refusal = refusal_of(verdict)
            return
        key = photo_store.photo_key(tenant_id, upload.row.order_id, photo_id)
        upload.keys.append(key)  # listed first: a put cut short is removed too
        await self.d.blobs.put(key, photo.data, "image/jpeg")
        item.spilled = Spilled(photo.width, photo.height, len(photo.data), photo.sha256)
        item.facts = verdict.facts
        verdict.ClearField("facts")
        verdict.ClearField("embedding")  # in the facts already
        item.verdict, item.photo_id = verdict, photo_id
        upload.room -= 1

    async def _store_upload(self, tenant_id: str, upload: Upload) -> pb.UploadPhotosResponse:
        row, existing, incoming = upload.row, upload.existing, upload.items
        fresh = [i for i in incoming if i.photo_id]
        filenames = {p.photo_id: p.filename for p in existing}
        filenames.update({i.photo_id: i.filename for i in fresh})
        stored_rows: list[Any] = []
        check = pb.SetCheck.FromString(bytes(row.set_check or b""))
        if fresh:
            analysis, measured = await judge_set(
                self.d.filter,
                self.d.blobs,
                [p for p in existing if p.usable],
                [facts_input(i.photo_id, i.facts) for i in fresh if i.facts is not None],
                self.s.filter_timeout_s,
            )
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
                    # Refused by the set (a near-copy, another person): its blob goes again.
                    i.refusal = refusal_of(verdict)
                    key = photo_store.photo_key(tenant_id, row.order_id, i.photo_id)
                    upload.keys.remove(key)
                    await self._forget([key])
                else:
                    accepted.append(i)
            stored_rows = await self._commit_photos(
                tenant_id, upload, accepted, by_id, check, analysis, measured
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
        upload: Upload,
        accepted: list[Incoming],
        by_id: dict[str, internal_pb2.SelfieAnalysis],
        check: pb.SetCheck,
        analysis: internal_pb2.AnalyzeSelfiesResponse,
        measured: dict[str, internal_pb2.SelfieFacts],
    ) -> list[Any]:
        """One transaction: the accepted photos' rows (their blobs are stored already), the
        earlier photos' fresh verdicts and the order's counts. On success the rows own the
        blobs; on failure the caller removes them."""
        row = upload.row
        new_ids = {i.photo_id for i in accepted}
        async with self.d.engine.begin() as conn:
            current = await om.load(conn, row.order_id, lock=True)
            if current is None or om.state_of(current) not in om.EDITABLE:
                raise om.refuse_transition(current or row, "upload photos to")
            for i in accepted:
                assert i.spilled is not None and i.facts is not None
                verdict = by_id[i.photo_id]
                # The photo's own measurements come from its own analysis; the verdict
                # (findings, usable, distance) from the set's.
                verdict.sharpness = i.verdict.sharpness if i.verdict else 0.0
                verdict.face_size_px = i.verdict.face_size_px if i.verdict else 0.0
                await photo_store.insert_photo(
                    conn, tenant_id, row.order_id, i.photo_id, i.filename, i.spilled,
                    verdict, i.facts,
                )  # fmt: skip
            # Photos stored earlier get the fresh verdict of the whole set.
            for pid, a in by_id.items():
                if pid not in new_ids:
                    await photo_store.update_verdict(conn, row.order_id, a, measured.get(pid))
            usable = await photo_store.usable_count(conn, row.order_id)
            if accepted or usable != current.photo_count:
                await om.apply(
                    conn,
                    current,
                    state=om.UPLOADING,
                    values=set_verdict_values(usable, check, analysis),
                )
            stored = await photo_store.photos_by_id(conn, row.order_id, sorted(new_ids))
        upload.keys.clear()  # committed: the rows own the blobs now
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
            # The set changed under its verdict: no reference until it is judged again.
            changed = await om.apply(
                conn,
                current,
                values={"photo_count": max(0, count), "reference_embedding": None},
            )
        await self.d.blobs.delete(photo.blob_key)
        if changed is not None:
            await self._judge_again(tenant_id, changed)
        return pb.DeletePhotoResponse()

    async def _judge_again(self, tenant_id: str, row: Any) -> None:
        """The set's verdict after a deletion, from the remaining photos' stored facts (a
        few milliseconds of the filter's time). Best effort: when a photo has no facts yet,
        the filter does not answer, or the order changed meanwhile, the reference stays
        cleared and SubmitOrder judges the set."""
        remaining = await photo_store.stored_photos(self.d.engine, row.order_id)
        usable = [r for r in remaining if r.usable]
        if not usable or any(not r.selfie_facts for r in usable):
            return
        try:
            analysis, _ = await judge_set(
                self.d.filter, self.d.blobs, usable, [], self.s.filter_timeout_s
            )
        except ApiError:
            log.info("order %s: the set is judged again at submission", row.order_id)
            return
        filenames = {r.photo_id: r.filename for r in remaining}
        for verdict in analysis.photos:
            for finding in verdict.findings:
                finding.message = with_filenames(finding.message, filenames)
        check = set_check_of(analysis.set, {r.photo_id: photo_proto(r).name for r in remaining})
        async with self.d.engine.begin() as conn:
            current = await om.load(conn, row.order_id, tenant_id, lock=True)
            if current is None or current.version != row.version:
                return
            for verdict in analysis.photos:
                await photo_store.update_verdict(conn, row.order_id, verdict)
            count = await photo_store.usable_count(conn, row.order_id)
            await om.apply(
                conn,
                current,
                values=set_verdict_values(count, check, analysis),
            )
