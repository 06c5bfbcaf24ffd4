"""The skeleton every job worker shares: parse, skip erased orders, refuse, dead-letter, events.

A worker subclasses `JobHandler`, names its `Stage`, and writes `run(job, ctx)`. The base
gives every worker the same answers to the same situations:

1. The order was erased (DeleteOrder) before the job ran: the job is dropped, acked.
2. `run` raises `JobRefused`: the job can never succeed as asked; a FAILED event with the
   reason fails the order at once and the job is not retried.
3. The order's data key was destroyed while the job ran (erasure mid-job): the work is
   abandoned and nothing more is written.
4. The job used up its deliveries (dead letter): a FAILED event with the dead letter's reason,
   so the order reaches a terminal state that says what happened.
5. A redelivery after a crash is logged as a WARNING, so a killed worker is visible; a retry
   this process handed back during a dependency outage is logged at INFO (the consumer
   already warned about the outage).
6. A re-queued job (the reconciler's attempt `n`, id `<job>:a<n>`) is the same job: logs and
   events carry the base job id, and the work itself is idempotent by order and round, so
   an original and its re-queue both arriving produce one set of outputs and events.

Events are built by `event(...)` with ids from `services.common.bus.ids`, the one home of the
id scheme.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from google.protobuf.message import Message

from headshots.v1 import jobs_pb2
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, PermanentError, Worker
from services.common.bus.erasure import ErasedOrders
from services.common.keys.keyring import KeyDestroyed
from services.common.outages import RetryPolicy
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

J = TypeVar("J", bound=Message)


class JobRefused(Exception):
    """The job cannot be done as asked (bad prompt, unknown style, budget spent, ...)."""


@dataclass(frozen=True)
class Stage:
    """Where a worker sits in the order's life: its job subject and its events' names."""

    name: str  # "training": event subjects events.<name>.*, event ids <order>:<name>:...
    stage: int  # headshots.v1.Stage value carried by its events
    subject: str  # the job subject it consumes (ids.TRAIN, ...)
    durable: str  # the durable consumer's name


class JobHandler(Generic[J]):
    """Base of the trainer's, generator's and filter's job workers."""

    STAGE: ClassVar[Stage]
    JOB: ClassVar[type[Message]]

    def __init__(self, bus: Bus, erased: ErasedOrders | None = None) -> None:
        self.bus = bus
        self.erased = erased

    # ---- to write in a subclass

    async def run(self, job: J, ctx: JobContext) -> None:
        raise NotImplementedError

    def event_parts(self, job: J) -> tuple[str | int, ...]:
        """Extra parts of this worker's event ids (e.g. the round), after the event name."""
        return ()

    def event_fields(self, job: J) -> dict[str, Any]:
        """Fields every event of this worker carries (e.g. the round)."""
        return {}

    def failure_reason(self, reason: str) -> str:
        return reason

    # ---- the consumer

    def consumer(self, *, ack_wait: float, max_deliver: int, **options: Any) -> Worker:
        # Outage retries follow the worker's own settings (HS_RETRY_*) when it has them.
        settings = getattr(self, "settings", None)
        if "retry" not in options and isinstance(settings, ServiceSettings):
            options["retry"] = RetryPolicy.from_settings(settings)
        return Worker(
            self.bus,
            self.STAGE.subject,
            self.STAGE.durable,
            self.handle,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            on_dead=self.on_dead,
            **options,
        )

    async def handle(self, ctx: JobContext) -> None:
        job: J = ctx.parse(self.JOB)  # type: ignore[assignment]
        job_id = str(getattr(job, "job_id", ""))
        fields = {
            "job": ids.base_job_id(job_id),
            "attempt": ids.attempt_of(job_id),
            "delivery": ctx.num_delivered,
        }
        if self.is_erased(job):
            log.info("order erased; dropping %s job", self.STAGE.name, extra={"fields": fields})
            return
        if ctx.num_delivered > 1 and ctx.outage_retries == 0:
            # Not a retry this process handed back: another worker died, hung or failed it.
            log.warning(
                "job redelivered (a worker died, timed out or failed it)", extra={"fields": fields}
            )
        elif ctx.num_delivered > 1:
            log.info("job retried after a dependency outage", extra={"fields": fields})
        try:
            await self.run(job, ctx)
        except JobRefused as err:
            await self.publish_failed(job, str(err))
            raise PermanentError(str(err)) from err
        except KeyDestroyed:
            log.info("order's key destroyed; abandoning the job", extra={"fields": fields})

    async def on_dead(self, dead: jobs_pb2.DeadLetter) -> None:
        job = self.JOB()
        try:
            job.ParseFromString(dead.payload)
        except Exception:
            log.exception("a dead %s job is unreadable; the reconciler will see its order", self)
            return
        await self.publish_failed(job, dead.reason or f"{self.STAGE.name} failed")  # type: ignore[arg-type]

    def is_erased(self, job: J) -> bool:
        tenant, order = getattr(job, "tenant_id", ""), getattr(job, "order_id", "")
        return self.erased is not None and self.erased.is_erased(tenant, order)

    # ---- events

    def event(self, job: J, name: str, kind: int, *parts: str | int, **fields: Any) -> Any:
        """An OrderEvent of this stage for `job`, id `<order>:<stage>:<name>:<parts...>`."""
        order_id = getattr(job, "order_id")  # noqa: B009 - every job message has it
        event = jobs_pb2.OrderEvent(
            event_id=ids.event_id(order_id, self.STAGE.name, name, *self.event_parts(job), *parts),
            tenant_id=getattr(job, "tenant_id"),  # noqa: B009
            order_id=order_id,
            stage=self.STAGE.stage,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            # The base id: a re-queued attempt reports on the same job as the original.
            job_id=ids.base_job_id(getattr(job, "job_id", "")),
            **{**self.event_fields(job), **fields},
        )
        event.time.GetCurrentTime()
        return event

    async def publish(self, event: Any, name: str) -> None:
        subject = ids.event_subject(self.STAGE.name, name)
        await self.bus.publish(subject, event, msg_id=event.event_id)

    async def publish_failed(self, job: J, reason: str) -> None:
        fields = {"job": getattr(job, "job_id", ""), "reason": reason}
        log.warning("%s failed", self.STAGE.name, extra={"fields": fields})
        try:
            await self.publish(
                self.event(
                    job,
                    "failed",
                    jobs_pb2.EVENT_KIND_FAILED,
                    failure_reason=self.failure_reason(reason),
                ),
                "failed",
            )
        except Exception:
            log.exception("could not publish the failure event", extra={"fields": fields})
