"""The `jobs.train` consumer: photos -> aligned crops -> LoRA -> adapter in the blob store.

One job at a time per process (one GPU). The training loop runs in a worker thread, so
the event loop keeps sending in-progress acks (every AckWait/3, by the bus worker) and
progress events (`events.training.progress`, at least every `progress_interval_s`).

Long-job behaviour:
- the training state goes to `checkpoints/train-state.pt` every M steps; a redelivered job
  (the process was killed, the node drained) resumes from it instead of starting over;
- SIGTERM (`request_stop`): the loop checkpoints at the next step and the job is handed
  back (nak) for another replica;
- GPU out of memory: one retry with a smaller micro-batch (same effective batch), then the
  order fails with the reason;
- idempotent: the adapter's name is deterministic (`adapter/lora.safetensors`) and carries
  its training result in the file's metadata; a job whose adapter already exists (a late
  redelivery after the ack was lost) only re-publishes `completed` under the same event
  id, so exactly one adapter is ever written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from headshots.v1 import headshots_pb2, jobs_pb2
from services.common import metrics
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, Worker
from services.common.bus.erasure import ErasedOrders
from services.common.bus.handler import JobHandler, JobRefused, Stage
from services.common.storage.base import BlobNotFound, BlobStore, InvalidKey, blob_key, order_prefix
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

SUBJECT = "jobs.train"
DURABLE = "trainer"
ADAPTER_NAME = "lora.safetensors"
CLASS_WORDS = {
    headshots_pb2.SUBJECT_CLASS_MAN: "man",
    headshots_pb2.SUBJECT_CLASS_WOMAN: "woman",
    headshots_pb2.SUBJECT_CLASS_PERSON: "person",
}


class TrainerWorker(JobHandler[jobs_pb2.TrainJob]):
    STAGE = Stage("training", headshots_pb2.STAGE_TRAINING, ids.TRAIN, "trainer")
    JOB = jobs_pb2.TrainJob

    def __init__(
        self,
        settings: TrainerSettings,
        blobs: BlobStore,
        bus: Bus,
        *,
        erased: ErasedOrders | None = None,
    ) -> None:
        super().__init__(bus, erased)
        self.settings = settings
        self.blobs = blobs
        self._stop = threading.Event()
        self._face_models: tuple[Any, Any] | None = None
        self._face_lock = threading.Lock()

    # ------------------------------------------------------------------ entry points

    def worker(self) -> Worker:
        return self.consumer(
            ack_wait=self.settings.ack_wait_s, max_deliver=self.settings.max_deliver
        )

    def request_stop(self) -> None:
        """SIGTERM: checkpoint at the next step and hand the job back."""
        self._stop.set()

    async def run(self, job: jobs_pb2.TrainJob, ctx: JobContext) -> None:
        await self.run_job(job, delivery=ctx.num_delivered)

    async def run_job(self, job: jobs_pb2.TrainJob, delivery: int = 1) -> None:
        from services.trainer.checkpointing import BlobCheckpointStore
        from services.trainer.lora_training import (
            TrainingFailed,
            TrainingInterrupted,
            adapter_metadata,
            train_lora,
        )

        t, o = job.tenant_id, job.order_id
        try:
            order_prefix(t, o)
        except InvalidKey as err:
            raise JobRefused(str(err)) from err
        adapter_key = blob_key(t, o, "adapter", ADAPTER_NAME)
        if await self.blobs.exists(adapter_key):
            # Trained before; the ack (or the completed event) was lost. Say it again.
            meta = adapter_metadata(await self.blobs.get(adapter_key))
            await self._publish_completed(job, adapter_key, meta, resumed="already trained")
            return
        await self._publish_event(job, "started", jobs_pb2.EVENT_KIND_STARTED, detail="")
        photos = await self._photos(job)
        crops = await asyncio.to_thread(self._preprocess, photos)
        class_word = CLASS_WORDS.get(job.subject_class, self.settings.class_word)
        config = self.settings.for_order(
            photos=len(crops),
            class_word=class_word,
            rank=job.config.rank,
            steps=job.config.steps,
            learning_rate=job.config.learning_rate,
            train_text_encoder=job.config.train_text_encoder or None,
        )
        loop = asyncio.get_running_loop()
        store = BlobCheckpointStore(
            self.blobs, blob_key(t, o, "checkpoints", "train-state.pt"), loop
        )
        resume = await store.aload()
        # Nothing more is written for an order erased while it trains.
        save = store.save
        store.save = lambda state: None if self.is_erased(job) else save(state)  # type: ignore[method-assign]
        scorer = await asyncio.to_thread(self._scorer, job, crops)

        def on_progress(p: Any) -> None:
            asyncio.run_coroutine_threadsafe(self._publish_progress(job, p), loop)

        def should_stop() -> bool:
            return self._stop.is_set() or self.is_erased(job)

        log.info(
            "training",
            extra={
                "fields": {
                    "job": job.job_id,
                    "photos": len(crops),
                    "steps": config.steps,
                    "rank": config.rank,
                    "resume_step": resume.step if resume else 0,
                    "delivery": delivery,
                }
            },
        )
        t0 = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(
                train_lora,
                self.settings.base_model_path(),
                crops,
                config,
                on_progress=on_progress,
                checkpoint_store=store,
                resume_from=resume,
                should_stop=should_stop,
                likeness=scorer,
                metadata={"headshots.base_model_id": self.settings.resolved_model_id()},
            )
        except TrainingInterrupted as stop:
            if self.is_erased(job):
                log.info(
                    "training abandoned: order erased",
                    extra={"fields": {"job": job.job_id, "step": stop.step}},
                )
                return
            log.info(
                "training handed back", extra={"fields": {"job": job.job_id, "step": stop.step}}
            )
            # The bus worker naks a cancelled handler at once, without counting it a failure.
            raise asyncio.CancelledError from stop
        except TrainingFailed as err:
            raise JobRefused(str(err)) from err
        if self.is_erased(job):
            return
        await self.blobs.put(adapter_key, outcome.adapter, "application/octet-stream")
        meta = adapter_metadata(outcome.adapter)
        meta["headshots.model_seconds"] = f"{time.perf_counter() - t0:.3f}"
        metrics.MODEL_SECONDS.labels("trainer", "lora").inc(time.perf_counter() - t0)
        resumed = f"resumed from step {outcome.resumed_from}" if outcome.resumed_from else ""
        await self._publish_completed(job, adapter_key, meta, resumed=resumed)
        # The state is not needed any more (and holds what was learnt from the photos).
        try:
            await asyncio.to_thread(store.clear)
        except Exception as err:
            log.warning("checkpoint not deleted: %r", err)
        log.info(
            "trained",
            extra={
                "fields": {
                    "job": job.job_id,
                    "chosen_step": outcome.chosen_step,
                    "metric": outcome.metric,
                    "s_per_step": round(outcome.seconds_per_step, 4),
                    "resumed_from": outcome.resumed_from,
                }
            },
        )

    async def _photos(self, job: jobs_pb2.TrainJob) -> list[tuple[str, bytes]]:
        if not job.photo_keys:
            raise JobRefused("the train job lists no photos")
        out = []
        prefix = order_prefix(job.tenant_id, job.order_id)
        for key in job.photo_keys:
            if not key.startswith(prefix):
                raise JobRefused(f"photo {key!r} does not belong to the order")
            try:
                out.append((key.rsplit("/", 1)[-1], await self.blobs.get(key)))
            except (BlobNotFound, InvalidKey) as err:
                raise JobRefused(f"photo {key!r} is not in the blob store") from err
        return out

    def _load_face_models(self) -> tuple[Any, Any]:
        with self._face_lock:
            if self._face_models is None:
                from services.faces.face_stack import FaceStack

                identity = None
                stack = FaceStack.load(self.settings.face_models_path())
                try:
                    from services.faces.identity import IdentityModel

                    identity = IdentityModel.load(self.settings.face_models_path())
                except (ImportError, FileNotFoundError, OSError, ValueError) as err:
                    log.warning("identity model unavailable (%s); choosing by validation loss", err)
                self._face_models = (stack, identity)
            return self._face_models

    def _preprocess(self, photos: list[tuple[str, bytes]]) -> list[Any]:
        from services.trainer.preprocess import (
            CropGeometry,
            Preprocessor,
            model_resolution,
        )

        s = self.settings
        try:
            stack, _ = self._load_face_models()
        except FileNotFoundError as err:
            raise JobRefused(f"face models missing: {err}") from err
        res = s.resolution or model_resolution(s.base_model_path())
        geo = CropGeometry(res, s.eye_line, s.face_scale, s.max_upscale, s.max_outside)
        result = Preprocessor(stack, geo).run(photos)
        if len(result.crops) < s.min_photos:
            raise JobRefused(
                f"only {len(result.crops)} of {len(photos)} photos can be trained on "
                f"(at least {s.min_photos} needed): {result.summary()}"
            )
        return result.crops

    def _scorer(self, job: jobs_pb2.TrainJob, crops: list[Any]) -> Any:
        import numpy as np

        from services.trainer.likeness import LikenessScorer

        stack, identity = self._load_face_models()
        if identity is None:
            return None
        if len(job.reference_embedding):
            reference = np.asarray(job.reference_embedding, dtype=np.float32)
        else:
            from services.faces.identity import identity_centre

            chips = [c.identity_chip for c in crops if c.identity_chip is not None]
            if not chips:
                return None
            reference = identity_centre(identity.embed(np.stack(chips)))
        return LikenessScorer(stack, identity, reference)

    # ------------------------------------------------------------------ events

    async def _publish_progress(self, job: jobs_pb2.TrainJob, p: Any) -> None:
        try:
            await self._publish_event(
                job,
                "progress",
                jobs_pb2.EVENT_KIND_PROGRESS,
                detail=f"s{p.step}",
                text=f"training step {p.step}/{p.total}, loss {p.loss:.4f}",
                done=p.step,
                total=p.total,
                eta_seconds=p.eta_seconds,
            )
        except Exception as err:  # progress is best effort; the job goes on
            log.info("progress event not published: %r", err)

    async def _publish_completed(
        self, job: jobs_pb2.TrainJob, adapter_key: str, meta: dict[str, str], resumed: str
    ) -> None:
        def num(key: str, default: float = 0.0) -> float:
            try:
                return float(meta.get(key, default))
            except ValueError:
                return default

        steps = int(num("headshots.steps"))
        likeness = num("headshots.likeness", math.nan)
        result = jobs_pb2.TrainingResult(
            adapter_key=adapter_key,
            rank=int(num("headshots.rank")),
            steps=steps,
            chosen_step=int(num("headshots.chosen_step")),
            final_loss=num("headshots.final_loss"),
            likeness=0.0 if math.isnan(likeness) else likeness,
            instance_prompt=meta.get("headshots.instance_prompt", ""),
            base_model_id=meta.get("headshots.base_model_id", self.settings.resolved_model_id()),
        )
        metric = meta.get("headshots.metric", "")
        await self._publish_event(
            job,
            "completed",
            jobs_pb2.EVENT_KIND_COMPLETED,
            text="; ".join(x for x in (f"checkpoint chosen by {metric}", resumed) if x),
            done=steps,
            total=steps,
            training=result,
            model_seconds=num("headshots.model_seconds"),
        )

    async def _publish_event(
        self,
        job: jobs_pb2.TrainJob,
        name: str,
        kind: int,
        *,
        detail: str = "",
        text: str = "",
        training: jobs_pb2.TrainingResult | None = None,
        **fields: Any,
    ) -> None:
        parts = (detail,) if detail else ()
        event = self.event(job, name, kind, *parts, detail=text or detail, **fields)
        if training is not None:
            event.training.CopyFrom(training)
        await self.publish(event, name)
