"""The `jobs.generate` consumer: render a round of candidates and hand them on in batches.

Per batch: render on the warm pipeline (in a worker thread, so acks and publishes keep
flowing), then, while the next batch renders, encode the images, write them to the blob
store under their deterministic names and publish a `jobs.filter` job that references them.
Filtering therefore runs while sampling continues.

Idempotent under redelivery: a candidate whose blob already exists is not rendered again;
its batch's filter job is re-published under the same `Nats-Msg-Id` (dropped by the server
inside the dedup window; the filter is idempotent per result id after it). A kill -9 at any
point therefore ends with every image stored exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from headshots.v1 import headshots_pb2, jobs_pb2
from services.common import metrics
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, Worker
from services.common.bus.erasure import ErasedOrders
from services.common.bus.handler import JobHandler, JobRefused, Stage
from services.common.storage.base import BlobNotFound, BlobStore, InvalidKey, blob_key, order_prefix
from services.generator.output import EXTENSIONS, encode_image
from services.generator.pipeline import AdapterError, WarmPipeline, parse_adapter
from services.generator.sampling import (
    EtaTracker,
    PlannedBatch,
    PlannedImage,
    plan_round,
)
from services.generator.settings import GeneratorSettings
from services.policy.limits import limits
from services.policy.prompt_screen import screen_prompt
from services.policy.styles import StyleCatalogue, StyleError

LIMITS = limits()

log = logging.getLogger(__name__)

SUBJECT = "jobs.generate"
DURABLE = "generator"
# Batches encoded/uploaded/published while the next one renders.
MAX_PENDING_PUBLISHES = 2


@dataclass(frozen=True, slots=True)
class StoredCandidate:
    image: PlannedImage
    key: str
    size: int


def _round_of(name: str) -> int | None:
    """`r3-00012.png` -> 3."""
    if not name.startswith("r") or "-" not in name:
        return None
    head = name[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


class GeneratorWorker(JobHandler[jobs_pb2.GenerateJob]):
    STAGE = Stage("generation", headshots_pb2.STAGE_GENERATION, ids.GENERATE, "generator")
    JOB = jobs_pb2.GenerateJob

    def __init__(
        self,
        settings: GeneratorSettings,
        pipeline: WarmPipeline,
        blobs: BlobStore,
        bus: Bus,
        catalogue: StyleCatalogue,
        *,
        erased: ErasedOrders | None = None,
        after_batch: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(bus, erased)
        self.settings = settings
        self.pipeline = pipeline
        self.blobs = blobs
        self.catalogue = catalogue
        # Test hook: awaited after each batch is rendered (e.g. to observe pipelining).
        self.after_batch = after_batch
        self.fmt = settings.output_format
        self.ext = EXTENSIONS[self.fmt]

    # ------------------------------------------------------------------ entry points

    def worker(self) -> Worker:
        return self.consumer(
            ack_wait=self.settings.ack_wait_s, max_deliver=self.settings.max_deliver
        )

    async def run(self, job: jobs_pb2.GenerateJob, ctx: JobContext) -> None:
        await self.run_job(job)

    def event_parts(self, job: jobs_pb2.GenerateJob) -> tuple[str | int, ...]:
        return (f"r{job.round}",)

    def event_fields(self, job: jobs_pb2.GenerateJob) -> dict[str, object]:
        return {"round": job.round}

    # ------------------------------------------------------------------ one round

    def _validate(self, job: jobs_pb2.GenerateJob) -> tuple[list, str]:
        try:
            order_prefix(job.tenant_id, job.order_id)
        except InvalidKey as err:
            raise JobRefused(str(err)) from err
        if job.count < 1:
            raise JobRefused(f"generate job asks for {job.count} images; at least 1 is needed")
        if job.round < 0 or job.round >= LIMITS.max_rounds:
            raise JobRefused(
                f"round {job.round} is beyond the budget of {LIMITS.max_rounds}  rounds per order"
            )
        if not job.adapter_key:
            raise JobRefused("generate job has no adapter_key")
        try:
            styles = self.catalogue.resolve(job.style_ids)
        except StyleError as err:
            raise JobRefused(str(err)) from err
        screened = screen_prompt(job.custom_prompt)
        if not screened.ok:
            raise JobRefused(screened.reason)
        return styles, screened.text

    async def run_job(self, job: jobs_pb2.GenerateJob) -> None:
        styles, custom = self._validate(job)
        t, o, r = job.tenant_id, job.order_id, job.round
        cand_prefix = order_prefix(t, o) + "candidates/"
        listing = await self.blobs.list(cand_prefix)
        existing: dict[str, int] = {}
        earlier = 0
        for info in listing:
            name = info.key[len(cand_prefix) :]
            rnd = _round_of(name)
            if rnd is None:
                continue
            if rnd < r:
                earlier += 1
            elif rnd == r:
                existing[name.rsplit(".", 1)[0]] = info.size
        allowed = LIMITS.max_images_per_order - earlier
        if allowed <= 0:
            raise JobRefused(
                f"the order's generation budget ({LIMITS.max_images_per_order} images) is spent"
            )
        count = min(job.count, allowed)
        w, h = self.pipeline.width, self.pipeline.height
        batch_size = self.settings.batch_size or self.pipeline.auto_batch_size(w, h)
        batches = plan_round(
            round_=r,
            count=count,
            seed_base=job.seed_base,
            styles=styles,
            catalogue=self.catalogue,
            instance_prompt=job.instance_prompt,
            custom_prompt=custom,
            batch_size=batch_size,
        )
        to_render = sum(1 for b in batches for i in b.images if i.result_id not in existing)
        log.info(
            "generating",
            extra={
                "fields": {
                    "job": job.job_id,
                    "round": r,
                    "count": count,
                    "batch_size": batch_size,
                    "batches": len(batches),
                    "already_stored": count - to_render,
                }
            },
        )
        if to_render:
            await self._activate_adapter(job.adapter_key)
            if to_render >= self.settings.fuse_min_images:
                await asyncio.to_thread(self.pipeline.fuse)
        eta = EtaTracker(count)
        model_s = 0.0
        pending: set[asyncio.Task[None]] = set()
        try:
            for batch in batches:
                if self.erased is not None and self.erased.is_erased(t, o):
                    log.info("order erased mid-round; stopping", extra={"fields": {"job": o}})
                    return
                missing = [i for i in batch.images if i.result_id not in existing]
                rendered = None
                t0 = time.perf_counter()
                if missing:
                    rendered = await asyncio.to_thread(
                        self.pipeline.render,
                        [i.prompt for i in missing],
                        [i.negative_prompt for i in missing],
                        [i.seed for i in missing],
                    )
                    model_s += time.perf_counter() - t0
                    metrics.MODEL_SECONDS.labels("generator", "diffusion").inc(
                        time.perf_counter() - t0
                    )
                    metrics.IMAGES.labels("generator", "rendered").inc(len(missing))
                eta.add(len(batch.images), bool(missing), time.perf_counter() - t0)
                if self.after_batch is not None:
                    await self.after_batch(batch.number)
                while len(pending) >= MAX_PENDING_PUBLISHES:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for d in done:
                        d.result()
                task = asyncio.create_task(
                    self._store_and_publish(
                        job, batch, missing, rendered, existing, count, eta.done, eta.eta_seconds()
                    )
                )
                pending.add(task)
            if pending:
                done, _ = await asyncio.wait(pending)
                for d in done:
                    d.result()
                pending = set()
        finally:
            for task in pending:
                task.cancel()
        await self._publish_event(
            job,
            "completed",
            jobs_pb2.EVENT_KIND_COMPLETED,
            done=count,
            total=count,
            model_seconds=model_s,
        )
        log.info("round generated", extra={"fields": {"job": job.job_id, "images": count}})

    async def _activate_adapter(self, key: str) -> None:
        sd = self.pipeline.adapters.get(key)
        if sd is None:
            try:
                data = await self.blobs.get(key)
            except BlobNotFound as err:
                raise JobRefused(f"the order's adapter {key!r} is not in the blob store") from err
            try:
                sd = parse_adapter(data)
            except AdapterError as err:
                raise JobRefused(str(err)) from err
        try:
            swap = await asyncio.to_thread(self.pipeline.activate, key, sd)
        except AdapterError as err:
            raise JobRefused(str(err)) from err
        log.info(
            "adapter active",
            extra={"fields": {"mode": swap.mode, "ms": round(swap.seconds * 1000, 1)}},
        )

    async def _store_and_publish(
        self,
        job: jobs_pb2.GenerateJob,
        batch: PlannedBatch,
        missing: list[PlannedImage],
        rendered: list | None,
        existing: dict[str, int],
        total: int,
        done: int,
        eta_s: float,
    ) -> None:
        t, o = job.tenant_id, job.order_id
        sizes = dict(existing)
        if rendered is not None:
            encoded = await asyncio.to_thread(
                lambda: [encode_image(a, self.fmt, self.settings.jpeg_quality) for a in rendered]
            )
            for img, enc in zip(missing, encoded, strict=True):
                key = blob_key(t, o, "candidates", f"{img.result_id}.{self.ext}")
                await self.blobs.put(key, enc.data, enc.content_type)
                sizes[img.result_id] = len(enc.data)
        w, h = self.pipeline.width, self.pipeline.height
        content_type = "image/png" if self.fmt == "png" else "image/jpeg"
        candidates = [
            jobs_pb2.Candidate(
                result_id=img.result_id,
                blob_key=blob_key(t, o, "candidates", f"{img.result_id}.{self.ext}"),
                style_id=img.style_id,
                seed=img.seed,
                index=img.index,
                model_id=self.pipeline.model_id,
                width=w,
                height=h,
                content_type=content_type,
                size_bytes=sizes.get(img.result_id, 0),
            )
            for img in batch.images
        ]
        fjob = jobs_pb2.FilterJob(
            job_id=ids.filter_job_id(o, job.round, batch.number),
            tenant_id=t,
            order_id=o,
            round=job.round,
            batch=batch.number,
            candidates=candidates,
            round_total=total,
            reference_embedding=job.reference_embedding,
            result_count=job.result_count,
            final_round=job.final_round,
        )
        await self.bus.publish("jobs.filter", fjob, msg_id=fjob.job_id)
        await self._publish_event(
            job,
            "progress",
            jobs_pb2.EVENT_KIND_PROGRESS,
            detail=f"b{batch.number}",
            done=done,
            total=total,
            eta_seconds=eta_s,
        )

    async def _publish_event(
        self, job: jobs_pb2.GenerateJob, name: str, kind: int, *, detail: str = "", **fields: Any
    ) -> None:
        parts = (detail,) if detail else ()
        await self.publish(self.event(job, name, kind, *parts, detail=detail, **fields), name)
