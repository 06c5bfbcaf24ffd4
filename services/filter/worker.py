"""The `jobs.filter` consumer: score a batch of candidates, then decide the round.

Scores are written once per candidate (primary key = result id), so a redelivered batch
re-scores nothing and republishes the same SCORED event (same Nats-Msg-Id, deduplicated).
The last batch of a round to commit sees the round complete; a compare-and-set on the
round row lets exactly one of them run the selection, whose event goes out through the
filter's outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from headshots.v1 import headshots_pb2, jobs_pb2
from services.common import metrics
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext
from services.common.bus.erasure import ErasedOrders
from services.common.bus.handler import JobHandler, Stage
from services.common.bus.outbox import enqueue
from services.common.db.engine import compare_and_set
from services.common.storage.base import BlobStore
from services.filter.tables import candidates, outbox, rounds

log = logging.getLogger(__name__)


@dataclass
class CandidateVerdict:
    """What the face stack says about one generated image."""

    scores: dict[str, float]
    reasons: list[str]
    embedding: np.ndarray | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons


class Scorer:
    """Interface of services.filter.scoring.CandidateScorer (kept here to type the worker)."""

    def score(
        self, images: Sequence[bytes], reference: np.ndarray | None
    ) -> list[CandidateVerdict]:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class Pick:
    result_id: str
    style_id: str
    scores: dict[str, float]
    embedding: np.ndarray | None


def scores_pb(scores: dict[str, float]) -> headshots_pb2.Scores:
    fields = headshots_pb2.Scores.DESCRIPTOR.fields_by_name
    return headshots_pb2.Scores(**{k: float(v) for k, v in scores.items() if k in fields})


class FilterWorker(JobHandler[jobs_pb2.FilterJob]):
    STAGE = Stage("filtering", headshots_pb2.STAGE_FILTERING, ids.FILTER, "filter")
    JOB = jobs_pb2.FilterJob

    def __init__(
        self,
        engine: AsyncEngine,
        blobs: BlobStore,
        bus: Bus,
        scorer: Scorer,
        select: object,
        *,
        erased: ErasedOrders | None = None,
        batch: int = 16,
    ) -> None:
        super().__init__(bus, erased)
        self.engine = engine
        self.blobs = blobs
        self.scorer = scorer
        # services.filter.selection.select_results(picks, n) -> (ranked ids, gate counts)
        self.select = select
        self.batch = batch

    async def run(self, job: jobs_pb2.FilterJob, ctx: JobContext) -> None:
        await self._handle(job)

    def event_parts(self, job: jobs_pb2.FilterJob) -> tuple[str | int, ...]:
        # A failure is per batch: each failed batch of a round is its own fact.
        return (f"r{job.round}", f"b{job.batch}")

    def event_fields(self, job: jobs_pb2.FilterJob) -> dict[str, object]:
        return {"round": job.round}

    def failure_reason(self, reason: str) -> str:
        # Without this batch the round never completes: a dead filter job fails its order.
        return f"filtering failed: {reason}"

    async def _handle(self, job: jobs_pb2.FilterJob) -> None:
        t, o = job.tenant_id, job.order_id
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(rounds)
                .values(
                    tenant_id=t,
                    order_id=o,
                    round=job.round,
                    round_total=job.round_total,
                    result_count=job.result_count or 100,
                    final_round=job.final_round,
                    state="scoring",
                    version=0,
                )
                .on_conflict_do_nothing()
            )
            done = set(
                (
                    await conn.execute(
                        sa.select(candidates.c.result_id).where(
                            candidates.c.tenant_id == t,
                            candidates.c.order_id == o,
                            candidates.c.result_id.in_([c.result_id for c in job.candidates]),
                        )
                    )
                ).scalars()
            )
        todo = [c for c in job.candidates if c.result_id not in done]
        reference = (
            np.asarray(job.reference_embedding, dtype=np.float32)
            if len(job.reference_embedding)
            else None
        )
        model_s = 0.0
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            images = await asyncio.gather(*(self.blobs.get(c.blob_key) for c in chunk))
            t0 = time.perf_counter()
            verdicts = await asyncio.to_thread(self.scorer.score, images, reference)
            model_s += time.perf_counter() - t0
            rows = []
            for cand, verdict in zip(chunk, verdicts, strict=True):
                rows.append(
                    {
                        "tenant_id": t,
                        "order_id": o,
                        "result_id": cand.result_id,
                        "round": job.round,
                        "batch": job.batch,
                        "style_id": cand.style_id,
                        "seed": cand.seed,
                        "blob_key": cand.blob_key,
                        "candidate": cand.SerializeToString(),
                        "passed": verdict.passed,
                        "reasons": verdict.reasons,
                        "scores": verdict.scores,
                        "embedding": verdict.embedding.astype(np.float32).tobytes()
                        if verdict.embedding is not None
                        else None,
                    }
                )
                for reason in verdict.reasons:
                    metrics.REJECTIONS.labels(reason).inc()
            async with self.engine.begin() as conn:
                await conn.execute(insert(candidates).values(rows).on_conflict_do_nothing())
            metrics.IMAGES.labels("filter", "scored").inc(len(rows))
        metrics.MODEL_SECONDS.labels("filter", "face_stack").inc(model_s)
        await self._publish_scored(job, model_s)
        await self._maybe_decide(job)

    async def _publish_scored(self, job: jobs_pb2.FilterJob, model_s: float) -> None:
        t, o = job.tenant_id, job.order_id
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(candidates).where(
                        candidates.c.tenant_id == t,
                        candidates.c.order_id == o,
                        candidates.c.result_id.in_([c.result_id for c in job.candidates]),
                    )
                )
            ).all()
            scored_in_round = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(candidates)
                    .where(
                        candidates.c.tenant_id == t,
                        candidates.c.order_id == o,
                        candidates.c.round == job.round,
                    )
                )
            ).scalar_one()
        result = jobs_pb2.FilterBatchResult(round=job.round, batch=job.batch)
        for r in sorted(rows, key=lambda r: r.result_id):
            cand = jobs_pb2.Candidate()
            cand.ParseFromString(r.candidate)
            result.scored.add(
                candidate=cand, scores=scores_pb(r.scores), rejection_reasons=list(r.reasons)
            )
        event = jobs_pb2.OrderEvent(
            event_id=ids.event_id(o, "filtering", "scored", f"r{job.round}", f"b{job.batch}"),
            tenant_id=t,
            order_id=o,
            stage=headshots_pb2.STAGE_FILTERING,
            kind=jobs_pb2.EVENT_KIND_SCORED,
            done=scored_in_round,
            total=job.round_total,
            job_id=job.job_id,
            scored=result,
            model_seconds=model_s,
            round=job.round,
        )
        event.time.GetCurrentTime()
        await self.bus.publish("events.filtering.scored", event, msg_id=event.event_id)

    async def _maybe_decide(self, job: jobs_pb2.FilterJob) -> None:
        t, o = job.tenant_id, job.order_id
        async with self.engine.begin() as conn:
            rnd = (
                await conn.execute(
                    sa.select(rounds).where(
                        rounds.c.tenant_id == t, rounds.c.order_id == o, rounds.c.round == job.round
                    )
                )
            ).one()
            if rnd.state != "scoring":
                return
            scored = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(candidates)
                    .where(
                        candidates.c.tenant_id == t,
                        candidates.c.order_id == o,
                        candidates.c.round == job.round,
                    )
                )
            ).scalar_one()
            if scored < rnd.round_total:
                return
            every = (
                await conn.execute(
                    sa.select(candidates).where(
                        candidates.c.tenant_id == t, candidates.c.order_id == o
                    )
                )
            ).all()
            passed = [
                Pick(
                    r.result_id,
                    r.style_id,
                    dict(r.scores),
                    np.frombuffer(r.embedding, dtype=np.float32) if r.embedding else None,
                )
                for r in every
                if r.passed
            ]
            wanted = rnd.result_count
            if not await compare_and_set(
                conn,
                rounds,
                {"tenant_id": t, "order_id": o, "round": job.round},
                rnd.version,
                {"state": "decided"},
            ):
                return  # another replica decided this round
            event = jobs_pb2.OrderEvent(
                tenant_id=t,
                order_id=o,
                stage=headshots_pb2.STAGE_FILTERING,
                job_id=job.job_id,
                round=job.round,
                done=len(passed),
                total=wanted,
            )
            event.time.GetCurrentTime()
            if len(passed) >= wanted or job.final_round:
                ranked, gates = self.select(passed, wanted)
                summary = headshots_pb2.RejectionSummary(
                    candidates=len(every), passed=len(passed), delivered=len(ranked)
                )
                for r in every:
                    for reason in r.reasons:
                        summary.by_reason[reason] = summary.by_reason.get(reason, 0) + 1
                event.event_id = ids.event_id(o, "filtering", "completed")
                event.kind = jobs_pb2.EVENT_KIND_COMPLETED
                event.selection.CopyFrom(jobs_pb2.Selection(result_ids=ranked, summary=summary))
                event.detail = json.dumps({"gates": gates})
                subject = "events.filtering.completed"
            else:
                event.event_id = ids.event_id(o, "filtering", "needs_more", f"r{job.round}")
                event.kind = jobs_pb2.EVENT_KIND_NEEDS_MORE
                event.needs_more.CopyFrom(
                    jobs_pb2.MoreCandidatesNeeded(
                        round=job.round, passed=len(passed), wanted=wanted
                    )
                )
                subject = "events.filtering.needs_more"
            await enqueue(conn, outbox, subject, event, event.event_id, tenant_id=t, order_id=o)
        log.info(
            "round decided",
            extra={
                "fields": {"order": o, "round": job.round, "passed": len(passed), "event": subject}
            },
        )
