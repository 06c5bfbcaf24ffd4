"""Re-queues orders whose job went missing, fails orders past their budget.

JetStream can lose an acknowledged write under faults, and an operator can purge a stream;
PostgreSQL holds the truth. Every `interval` the reconciler looks at in-flight orders with
no event for `stuck_after_s`:

- it looks for the order's job in the JOBS stream (work-queue retention: a job is there
  until a worker acks it, so a job being worked on is found too);
- the job is there: the order is only waiting in the queue; nothing to do;
- it is not: the job is re-queued through the outbox as attempt `n` (`ids.train_job_id(o,
  n)`, `ids.generate_job_id(o, r, n)`): a new message id, so JetStream's duplicate window
  cannot drop it, and the same base job id, so the worker's idempotent handling applies;
  after `max_requeues` the order fails with the reason.

Orders not READY within `order_budget_s` of submission fail ("past its budget"). Each
decision is a compare-and-set; several reconcilers may run (one per replica).

Each pass also:
- logs and counts every stuck order it sees and every order it acts on
  (`hs_reconciler_orders_total{action}`, `hs_stuck_orders`);
- reconciles dead letters with their orders: one whose order ended READY (a retry or
  re-queue did the work), expired or no longer exists is removed and counted
  (`hs_dead_letters_cleared_total`); one of a FAILED order stays as the record of why,
  for an operator to replay or purge (`python -m services.common.bus.deadletters`);
  what remains is exported by cause (`hs_dead_letters_waiting{cause}`);
- looks at every durable consumer for work with no live worker (`hs_consumer_stalled`).
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
from services.common import metrics
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.deadletter import (
    CAUSES,
    cause_of,
    iter_dead_letters,
    order_of,
    remove_dead_letter,
)
from services.common.bus.ids import DEADLETTER_STREAM, EVENTS_STREAM, JOBS_STREAM
from services.common.bus.liveness import ConsumerWatch
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


# Terminal states whose dead letters are obsolete: the work was done, or the data is gone.
_CLEARS_DEAD = ("READY", "EXPIRED", "DELETED")


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
        self.consumers = ConsumerWatch(bus, (JOBS_STREAM, EVENTS_STREAM))
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.consumers.check()
            except Exception:
                log.exception("consumer check failed; trying again next interval")
            try:
                await self.once()
                await self.reconcile_dead_letters()
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
                self._acted(r.order_id, "failed_over_budget", reason)
        stuck_ids = [r.order_id for r in stuck if r.order_id not in set(report.failed)]
        metrics.STUCK_ORDERS.set(len(stuck_ids))
        if not stuck_ids:
            return report
        queued = await self.queued_jobs()
        if queued is None:
            report.waiting.extend(stuck_ids)
            for order_id in stuck_ids:
                self._acted(order_id, "stuck_backlog", f"over {MAX_SCAN} jobs queued; not scanned")
            return report
        for order_id in stuck_ids:
            outcome = await self._recover(order_id, queued.get(order_id, set()))
            getattr(report, outcome).append(order_id)
            if outcome == "waiting":
                self._acted(order_id, "stuck_queued", "its job is queued or being worked on")
        return report

    def _acted(self, order_id: str, action: str, detail: str) -> None:
        """Log and count one order the reconciler saw stuck or acted on."""
        metrics.RECONCILED.labels(action).inc()
        fields = {"order": order_id, "action": action, "detail": detail}
        if action.startswith("stuck"):
            log.info("stuck order", extra={"fields": fields})
        else:
            log.warning("reconciled order", extra={"fields": fields})

    async def reconcile_dead_letters(self) -> dict[str, int]:
        """Clear dead letters of orders that ended READY, expired or are gone; export the
        rest by cause. Returns the counts left, by cause."""
        try:
            info = await self.bus.js.stream_info(DEADLETTER_STREAM)
        except nats.js.errors.NotFoundError:
            return {}
        left = dict.fromkeys((*CAUSES, "unknown"), 0)
        found = []
        if info.state.messages:
            found = [(seq, d, order_of(d)) async for seq, d in iter_dead_letters(self.bus)]
        states = await self._order_states({o[1] for _, _, o in found if o})
        for seq, dead, owner in found:
            cause = cause_of(dead.reason)
            state = states.get(owner[1]) if owner else None
            if owner and (state is None or state in _CLEARS_DEAD):
                if await remove_dead_letter(self.bus, seq):
                    metrics.DEAD_LETTERS_CLEARED.labels(cause).inc()
                    fields = {
                        "order": owner[1],
                        "order_state": state or "gone",
                        "subject": dead.subject,
                        "cause": cause,
                    }
                    log.info("dead letter cleared", extra={"fields": fields})
                continue
            left[cause] += 1
        for cause, n in left.items():
            metrics.DEAD_LETTERS_WAITING.labels(cause).set(n)
        return left

    async def _order_states(self, order_ids: set[str]) -> dict[str, str]:
        if not order_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(orders.c.order_id, orders.c.state).where(
                    orders.c.order_id.in_(sorted(order_ids))
                )
            )
            return {r.order_id: str(r.state) for r in rows}

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
                self._acted(order_id, "failed_lost_job", reason)
                return "failed"
            n = row.requeues + 1
            if training:
                job: jobs_pb2.TrainJob | jobs_pb2.GenerateJob = train_job(
                    row, await usable_photo_keys(conn, row.order_id)
                )
                job.job_id = ids.train_job_id(row.order_id, n)
            else:
                job = generate_job(row, row.round, row.round_count, row.round_final)
                job.job_id = ids.generate_job_id(row.order_id, row.round, n)
            progress = om.progress_of(row)
            progress.detail = f"the {kind} job went missing; re-queued ({n})"
            await om.apply(
                conn,
                row,
                values={"requeues": n, "progress": progress.SerializeToString()},
                # The attempt is in the job id, so the message id is new (never dropped as
                # a duplicate of the lost one) and the same for every replica's reconciler.
                messages=[Outgoing(f"jobs.{kind.split(':')[0]}", job, job.job_id)],
                heartbeat=True,
            )
            self._acted(order_id, "requeued", f"{kind} job went missing; attempt {n}")
            return "requeued"


__all__ = ["Reconciler", "Report", "pb"]
