"""The gateway's event consumer: workers' events advance orders.

Durable `gateway-events` on `events.>` (its own `events.lifecycle.*` are skipped). Each
event is applied in one transaction that also records its `event_id` in
`processed_events`: a redelivered or re-published event finds its id there and changes
nothing. State changes go through `orders.apply` (compare-and-set on the version; on a
conflict the whole transaction is retried on a fresh read), and the jobs they cause go
out through the outbox in the same transaction.

    training.started|progress   QUEUED/TRAINING -> TRAINING, progress
    training.completed          -> GENERATING, GenerateJob round 0
    generation.progress         progress
    generation.completed        GENERATING -> FILTERING
    filtering.scored            result rows upserted with scores and reasons, progress
    filtering.needs_more        -> GENERATING, next round (within budget) or finish
    filtering.completed         delivered ranks marked, -> READY
    *.failed                    -> FAILED with the reason
    retention.deleted RESULTS   READY -> EXPIRED; retention.erased -> DELETED
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from google.protobuf.json_format import MessageToDict
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common import metrics
from services.common.bus.consumer import JobContext
from services.gateway import orders as om
from services.gateway import photo_store
from services.gateway.jobs import generate_job
from services.gateway.orders import Outgoing
from services.gateway.result_summary import rejection_summary
from services.gateway.settings import GatewaySettings
from services.gateway.tables import processed_events, results
from services.policy.limits import candidate_budget, limits, next_round_size

LIMITS = limits()

log = logging.getLogger(__name__)
K = jobs_pb2.EventKind
DURABLE = "gateway-events"
SUBJECT = "events.>"
CAS_RETRIES = 8
# Leads the failure reason of an order whose candidates all failed the quality checks
# (clients and the demo match on it).
NOTHING_PASSED = "NOTHING_PASSED"


def said(what: str, done: int, total: int) -> str:
    """Progress in words, from the counts: workers' own detail strings are internal."""
    return f"{what}: {done} of {total}" if total > 0 else what


class Conflict(Exception):
    """Another writer changed the order between our read and our write: retry."""


class Orchestrator:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings) -> None:
        self.engine = engine
        self.s = settings

    async def handle(self, ctx: JobContext) -> None:
        if ctx.subject.startswith("events.lifecycle."):
            return
        event = ctx.parse(jobs_pb2.OrderEvent)
        await self.apply(ctx.subject, event)

    async def apply(self, subject: str, event: jobs_pb2.OrderEvent) -> bool:
        """Apply one event; False when it was already applied or concerns no known order."""
        if not event.event_id or not event.order_id:
            log.warning("event without id or order on %s ignored", subject)
            return False
        for _ in range(CAS_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    row = await om.load(conn, event.order_id, event.tenant_id or None)
                    if row is None:
                        # Unknown or erased order: record nothing (an erased order must not
                        # grow rows again).
                        return False
                    fresh = (
                        await conn.execute(
                            insert(processed_events)
                            .values(
                                event_id=event.event_id,
                                tenant_id=row.tenant_id,
                                order_id=row.order_id,
                            )
                            .on_conflict_do_nothing(index_elements=[processed_events.c.event_id])
                            .returning(processed_events.c.event_id)
                        )
                    ).one_or_none()
                    if fresh is None:
                        return False
                    await self._dispatch(conn, row, subject, event)
                if event.model_seconds > 0:
                    # Counted once per event (processed_events deduplicates): seconds spent
                    # inside model calls on the worker's device, GPU or CPU.
                    stage = pb.Stage.Name(event.stage).removeprefix("STAGE_").lower()
                    metrics.GPU_SECONDS.labels(stage).inc(event.model_seconds)
                return True
            except Conflict:
                continue
        raise RuntimeError(f"order {event.order_id} kept changing under event {event.event_id}")

    async def _change(self, conn: AsyncConnection, row: Any, **kw: Any) -> Any:
        out = await om.apply(conn, row, heartbeat=True, **kw)
        if out is None:
            raise Conflict
        return out

    async def _dispatch(
        self, conn: AsyncConnection, row: Any, subject: str, e: jobs_pb2.OrderEvent
    ) -> None:
        state = om.state_of(row)
        stage, kind = e.stage, e.kind
        if kind == K.EVENT_KIND_FAILED:
            if state in om.LIVE:
                reason = e.failure_reason or e.detail or f"{subject} reported a failure"
                await self._change(
                    conn, row, state=om.FAILED, values={"failure_reason": reason[:2000]}
                )
            return
        if stage == pb.STAGE_RETENTION or subject.startswith("events.retention."):
            await self._retention(conn, row, e)
            return
        if stage == pb.STAGE_TRAINING:
            await self._training(conn, row, state, e)
        elif stage == pb.STAGE_GENERATION:
            await self._generation(conn, row, state, e)
        elif stage == pb.STAGE_FILTERING:
            await self._filtering(conn, row, state, e)

    # ---- training -------------------------------------------------------------

    async def _training(
        self, conn: AsyncConnection, row: Any, state: int, e: jobs_pb2.OrderEvent
    ) -> None:
        if state not in (om.QUEUED, om.TRAINING):
            return  # late or duplicate: the order has moved on
        if e.kind in (K.EVENT_KIND_STARTED, K.EVENT_KIND_PROGRESS):
            progress = om.make_progress(
                pb.STAGE_TRAINING, e.done, e.total, e.eta_seconds, said("training", e.done, e.total)
            )
            await self._change(
                conn, row, state=om.TRAINING, values={"progress": progress.SerializeToString()}
            )
        elif e.kind == K.EVENT_KIND_COMPLETED:
            tr = e.training
            count = row.candidate_count
            budget = self.budget(row)
            final = LIMITS.max_rounds <= 1 or count >= budget
            job = generate_job(row, 0, count, final, tr.adapter_key, tr.instance_prompt)
            await self._change(
                conn,
                row,
                state=om.GENERATING,
                values={
                    "adapter_key": tr.adapter_key,
                    "instance_prompt": tr.instance_prompt,
                    "round": 0,
                    "round_count": count,
                    "round_final": final,
                    "candidates_requested": count,
                    "progress": om.make_progress(
                        pb.STAGE_GENERATION, 0, count, detail="round 1: generating images"
                    ).SerializeToString(),
                },
                messages=[Outgoing("jobs.generate", job, job.job_id)],
            )

    def budget(self, row: Any) -> int:
        return max(row.candidate_count, candidate_budget(row.candidate_count))

    # ---- generation -----------------------------------------------------------

    async def _generation(
        self, conn: AsyncConnection, row: Any, state: int, e: jobs_pb2.OrderEvent
    ) -> None:
        if state != om.GENERATING or e.round != row.round:
            return
        if e.kind in (K.EVENT_KIND_STARTED, K.EVENT_KIND_PROGRESS):
            progress = om.make_progress(
                pb.STAGE_GENERATION,
                e.done,
                e.total or row.round_count,
                e.eta_seconds,
                said(f"round {row.round + 1}: generating", e.done, e.total or row.round_count),
            )
            await self._change(conn, row, values={"progress": progress.SerializeToString()})
        elif e.kind == K.EVENT_KIND_COMPLETED:
            scored = await self._scored_in_round(conn, row)
            progress = om.make_progress(
                pb.STAGE_FILTERING,
                scored,
                row.round_count,
                detail=f"round {row.round + 1}: checking the images",
            )
            await self._change(
                conn, row, state=om.FILTERING, values={"progress": progress.SerializeToString()}
            )

    async def _scored_in_round(self, conn: AsyncConnection, row: Any) -> int:
        return (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(results)
                .where(results.c.order_id == row.order_id, results.c.round == row.round)
            )
        ).scalar_one()

    # ---- filtering ------------------------------------------------------------

    async def _filtering(
        self, conn: AsyncConnection, row: Any, state: int, e: jobs_pb2.OrderEvent
    ) -> None:
        if e.kind == K.EVENT_KIND_SCORED:
            await self._upsert_results(conn, row, e.scored)
            if state in (om.GENERATING, om.FILTERING) and e.round == row.round:
                if state == om.FILTERING:
                    scored = await self._scored_in_round(conn, row)
                    progress = om.make_progress(
                        pb.STAGE_FILTERING,
                        scored,
                        e.total or row.round_count,
                        e.eta_seconds,
                        said(
                            f"round {row.round + 1}: checking", scored, e.total or row.round_count
                        ),
                    )
                    await self._change(conn, row, values={"progress": progress.SerializeToString()})
                else:
                    await om.touch(conn, row.order_id)  # alive; nothing a watcher sees
            return
        if state not in (om.GENERATING, om.FILTERING):
            return
        if e.kind == K.EVENT_KIND_PROGRESS and e.round == row.round and state == om.FILTERING:
            progress = om.make_progress(
                pb.STAGE_FILTERING,
                e.done,
                e.total,
                e.eta_seconds,
                said(f"round {row.round + 1}: checking", e.done, e.total),
            )
            await self._change(conn, row, values={"progress": progress.SerializeToString()})
        elif e.kind == K.EVENT_KIND_NEEDS_MORE:
            if e.needs_more.round != row.round:
                return  # a decision about an older round
            await self._next_round(conn, row, e.needs_more)
        elif e.kind == K.EVENT_KIND_COMPLETED:
            await self._deliver(conn, row, list(e.selection.result_ids), e.detail)

    async def _upsert_results(
        self, conn: AsyncConnection, row: Any, batch: jobs_pb2.FilterBatchResult
    ) -> None:
        values = []
        prefix = f"tenants/{row.tenant_id}/orders/{row.order_id}/"
        for sc in batch.scored:
            c = sc.candidate
            if not c.result_id or not c.blob_key.startswith(prefix):
                log.warning(
                    "scored candidate %r outside order %s ignored", c.result_id, row.order_id
                )
                continue
            values.append(
                {
                    "order_id": row.order_id,
                    "result_id": c.result_id,
                    "tenant_id": row.tenant_id,
                    "round": batch.round,
                    "style_id": c.style_id,
                    "seed": c.seed,
                    "model_id": c.model_id,
                    "blob_key": c.blob_key,
                    "content_type": c.content_type or "image/png",
                    "size_bytes": c.size_bytes,
                    "width": c.width,
                    "height": c.height,
                    "scores": MessageToDict(
                        sc.scores,
                        preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True,
                    ),
                    "rejection_reasons": list(sc.rejection_reasons),
                }
            )
        if not values:
            return
        stmt = insert(results).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[results.c.order_id, results.c.result_id],
            set_={
                "scores": stmt.excluded.scores,
                "rejection_reasons": stmt.excluded.rejection_reasons,
            },
        )
        await conn.execute(stmt)

    async def _next_round(
        self, conn: AsyncConnection, row: Any, nm: jobs_pb2.MoreCandidatesNeeded
    ) -> None:
        remaining = self.budget(row) - row.candidates_requested
        next_round = row.round + 1
        count = next_round_size(
            nm.passed,
            nm.wanted,
            rounds_done=next_round,
            budget=max(0, remaining),
            generated=row.candidates_requested,
        )
        if count <= 0:
            await self._deliver_passed(conn, row)
            return
        final = next_round == LIMITS.max_rounds - 1 or count >= remaining
        job = generate_job(row, next_round, count, final)
        await self._change(
            conn,
            row,
            state=om.GENERATING,
            values={
                "round": next_round,
                "round_count": count,
                "round_final": final,
                "candidates_requested": row.candidates_requested + count,
                "progress": om.make_progress(
                    pb.STAGE_GENERATION,
                    0,
                    count,
                    detail=(
                        f"round {next_round + 1}: {nm.passed} of {nm.wanted} wanted images"
                        " passed so far; generating more"
                    ),
                ).SerializeToString(),
            },
            messages=[Outgoing("jobs.generate", job, job.job_id)],
        )

    async def _deliver(
        self, conn: AsyncConnection, row: Any, ranked: list[str], detail: str = ""
    ) -> None:
        await conn.execute(
            sa.update(results)
            .where(results.c.order_id == row.order_id)
            .values(delivered=False, rank=0)
        )
        for rank, result_id in enumerate(ranked, start=1):
            await conn.execute(
                sa.update(results)
                .where(results.c.order_id == row.order_id, results.c.result_id == result_id)
                .values(delivered=True, rank=rank)
            )
        delivered = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(results)
                .where(results.c.order_id == row.order_id, results.c.delivered)
            )
        ).scalar_one()
        if delivered == 0:
            await self._fail_empty(conn, row)
            return
        progress = om.make_progress(
            pb.STAGE_DELIVERY,
            delivered,
            row.result_count,
            detail=f"{delivered} headshot(s) delivered",
        )
        await self._change(
            conn,
            row,
            state=om.READY,
            values={"delivered_count": delivered, "progress": progress.SerializeToString()},
        )

    async def _fail_empty(self, conn: AsyncConnection, row: Any) -> None:
        """Nothing passed the checks: FAILED with the counts and the commonest reasons, not
        READY with nothing to deliver. The rejected candidates stay listable
        (ListResults include_rejected) until the order is deleted or expires."""
        summary = await rejection_summary(conn, row.order_id)
        top = sorted(summary.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        why = ", ".join(f"{code} {n}" for code, n in top) or "no candidate was scored"
        reason = (
            f"{NOTHING_PASSED}: {summary.candidates} candidate(s) generated, {summary.passed}"
            f" passed the quality checks, 0 delivered (rejections: {why})"
        )
        progress = om.make_progress(
            pb.STAGE_DELIVERY, 0, row.result_count, detail="no headshot passed the checks"
        )
        await self._change(
            conn,
            row,
            state=om.FAILED,
            values={
                "delivered_count": 0,
                "failure_reason": reason,
                "progress": progress.SerializeToString(),
            },
        )

    async def _deliver_passed(self, conn: AsyncConnection, row: Any) -> None:
        """Budget spent and the filter still wants more: deliver what passed, best first."""
        passed = await conn.execute(
            sa.select(results.c.result_id)
            .where(
                results.c.order_id == row.order_id,
                sa.func.cardinality(results.c.rejection_reasons) == 0,
            )
            .order_by(results.c.scores["quality"].as_float().desc(), results.c.result_id)
            .limit(row.result_count)
        )
        await self._deliver(conn, row, [r.result_id for r in passed])

    # ---- retention ------------------------------------------------------------

    async def _retention(self, conn: AsyncConnection, row: Any, e: jobs_pb2.OrderEvent) -> None:
        state = om.state_of(row)
        if e.detail in ("PHOTOS", "EMBEDDINGS"):
            # The photos are gone by policy: what the filter measured of them goes too.
            await photo_store.forget_facts(conn, row.order_id)
        if e.detail == "RESULTS" and state == om.READY:
            await self._change(conn, row, state=om.EXPIRED)
        elif e.detail == "ERASED" and state != om.DELETED:
            await self._change(conn, row, state=om.DELETED)
