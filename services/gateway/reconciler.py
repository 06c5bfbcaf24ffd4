"""Re-queues orders whose job went missing, fails orders past their budget.

JetStream can lose an acknowledged write under faults, and an operator can purge a stream;
PostgreSQL holds the truth. Every `interval` the reconciler looks at in-flight orders with
no event for `stuck_after_s`:

- it looks for the order's job in the JOBS stream (work-queue retention: a job is there
  until a worker acks it, so a job being worked on is found too);
- the job is there: the order is only waiting in the queue; nothing to do;
- it is not: the job is re-queued through the outbox under a new message id (the original
  id may still be inside the dedup window) with the same job id, so the worker's
  idempotent handling applies; after `max_requeues` the order fails with the reason.

Orders not READY within `order_budget_s` of submission fail ("past its budget"). Each
decision is a compare-and-set; several reconcilers may run (one per replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import nats.js.errors
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.ids import JOBS_STREAM
from services.gateway import orders as om
from services.gateway.jobs import generate_job, train_job, usable_photo_keys
from services.gateway.orders import Outgoing
from services.gateway.ratelimit import RateLimiter
from services.gateway.settings import GatewaySettings
from services.gateway.tables import orders

log = logging.getLogger(__name__)
# Past this many queued jobs the scan is skipped: with that much backlog a quiet order is
# most likely waiting its turn, and re-queuing it would only add load.
MAX_SCAN = 20_000
_JOB_TYPES = {
    "jobs.train": jobs_pb2.TrainJob,
    "jobs.generate": jobs_pb2.GenerateJob,
    "jobs.filter": jobs_pb2.FilterJob,
}


@dataclass
class Report:
    requeued: list[str]
    failed: list[str]
    waiting: list[str]


class Reconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        settings: GatewaySettings,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.s = settings
        self.limiter = limiter
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.once()
                if self.limiter is not None:
                    await self.limiter.prune()
            except Exception:
                log.exception("reconcile pass failed; trying again next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.s.reconcile_interval_s)

    async def stop(self) -> None:
        self._stopping.set()

    async def queued_jobs(self) -> dict[str, set[str]] | None:
        """order id -> subjects of its jobs now in JOBS; None when the queue is too long."""
        try:
            info = await self.bus.js.stream_info(JOBS_STREAM)
        except nats.js.errors.NotFoundError:
            return {}
        state = info.state
        if state.messages == 0:
            return {}
        if state.messages > MAX_SCAN:
            return None
        found: dict[str, set[str]] = {}
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await self.bus.js.get_msg(JOBS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue  # acked and removed, or deleted
            cls = _JOB_TYPES.get(msg.subject or "")
            if cls is None or msg.data is None:
                continue
            job = cls()
            try:
                job.ParseFromString(msg.data)
            except Exception:
                continue
            found.setdefault(job.order_id, set()).add(msg.subject or "")
        return found

    async def once(self) -> Report:
        report = Report([], [], [])
        budget_cut = sa.func.now() - timedelta(seconds=self.s.order_budget_s)
        stuck_cut = sa.func.now() - timedelta(seconds=self.s.stuck_after_s)
        async with self.engine.connect() as conn:
            over_budget = list(
                await conn.execute(
                    sa.select(orders.c.order_id).where(
                        om.in_states(om.IN_FLIGHT), orders.c.submitted_at < budget_cut
                    )
                )
            )
            stuck = list(
                await conn.execute(
                    sa.select(orders.c.order_id).where(
                        om.in_states(om.IN_FLIGHT), orders.c.heartbeat_at < stuck_cut
                    )
                )
            )
        hours = self.s.order_budget_s / 3600
        for r in over_budget:
            reason = f"not ready within the order budget of {hours:g} h; stopped"
            if await self._fail(r.order_id, reason):
                report.failed.append(r.order_id)
        stuck_ids = [r.order_id for r in stuck if r.order_id not in set(report.failed)]
        if not stuck_ids:
            return report
        queued = await self.queued_jobs()
        if queued is None:
            report.waiting.extend(stuck_ids)
            return report
        for order_id in stuck_ids:
            outcome = await self._recover(order_id, queued.get(order_id, set()))
            getattr(report, outcome).append(order_id)
        if report.requeued or report.failed:
            log.warning(
                "reconciled",
                extra={"fields": {"requeued": report.requeued, "failed": report.failed}},
            )
        return report

    async def _fail(self, order_id: str, reason: str) -> bool:
        for _ in range(5):
            async with self.engine.begin() as conn:
                row = await om.load(conn, order_id)
                if row is None or om.state_of(row) not in om.IN_FLIGHT:
                    return False
                if await om.apply(conn, row, state=om.FAILED, values={"failure_reason": reason}):
                    return True
        return False

    async def _recover(self, order_id: str, subjects: set[str]) -> str:
        async with self.engine.begin() as conn:
            row = await om.load(conn, order_id, lock=True)
            if row is None or om.state_of(row) not in om.IN_FLIGHT:
                return "waiting"
            state = om.state_of(row)
            training = state in (om.QUEUED, om.TRAINING)
            mine = {"jobs.train"} if training else {"jobs.generate", "jobs.filter"}
            if subjects & mine:
                return "waiting"  # its job is in the queue or being worked on
            kind = "train" if training else f"generate:r{row.round}"
            if row.requeues >= self.s.max_requeues:
                reason = (
                    f"the {kind} job went missing {row.requeues + 1} times"
                    f" (no event for {self.s.stuck_after_s:g}s); giving up"
                )
                await om.apply(conn, row, state=om.FAILED, values={"failure_reason": reason})
                return "failed"
            n = row.requeues + 1
            job = (
                train_job(row, await usable_photo_keys(conn, row.order_id))
                if training
                else generate_job(row, row.round, row.round_count, row.round_final)
            )
            progress = om.progress_of(row)
            progress.detail = f"the {kind} job went missing; re-queued ({n})"
            await om.apply(
                conn,
                row,
                values={"requeues": n, "progress": progress.SerializeToString()},
                messages=[Outgoing(f"jobs.{kind.split(':')[0]}", job, f"{job.job_id}:requeue{n}")],
                heartbeat=True,
            )
            return "requeued"


__all__ = ["Reconciler", "Report", "pb"]
