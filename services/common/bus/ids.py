"""Streams, subjects, job ids and event ids: the one home of the JetStream naming scheme.

Job ids and event ids double as `Nats-Msg-Id`, JetStream's de-duplication key, so every
publisher of the same fact must build the same id: the gateway's servicer, orchestrator and
reconciler, and each worker, all call these functions instead of formatting ids by hand.
"""

from __future__ import annotations

JOBS_STREAM = "JOBS"
EVENTS_STREAM = "EVENTS"
DEADLETTER_STREAM = "DEADLETTER"

TRAIN = "jobs.train"
GENERATE = "jobs.generate"
FILTER = "jobs.filter"
JOB_SUBJECTS = (TRAIN, GENERATE, FILTER)

# Events: `events.<stage>.<name>`; lifecycle facts (state changes) for retention.
LIFECYCLE_SUBJECT = "events.lifecycle"


def event_subject(stage: str, name: str) -> str:
    return f"events.{stage}.{name}"


def lifecycle_subject(state: str) -> str:
    return f"{LIFECYCLE_SUBJECT}.{state.lower()}"


# ---- job ids: one per unit of work; a redelivery keeps it, a re-queue adds an attempt ----


def _attempt(job_id: str, attempt: int) -> str:
    # A re-queued job must not share its message id with the lost one, or JetStream's
    # duplicate window silently drops it; handlers stay idempotent by the base job id.
    return job_id if attempt <= 0 else f"{job_id}:a{attempt}"


def train_job_id(order_id: str, attempt: int = 0) -> str:
    return _attempt(f"{order_id}:train", attempt)


def generate_job_id(order_id: str, round_: int, attempt: int = 0) -> str:
    return _attempt(f"{order_id}:generate:r{round_}", attempt)


def filter_job_id(order_id: str, round_: int, batch: int) -> str:
    return f"{order_id}:filter:r{round_}:b{batch}"


def base_job_id(msg_id: str) -> str:
    """The job id without a re-queue attempt suffix."""
    head, sep, tail = msg_id.rpartition(":a")
    return head if sep and tail.isdigit() else msg_id


def attempt_of(msg_id: str) -> int:
    """The re-queue attempt in a job id (0 for the original)."""
    _head, sep, tail = msg_id.rpartition(":a")
    return int(tail) if sep and tail.isdigit() else 0


# ---- event ids: one per fact, so a fact published twice is stored once ----


def event_id(order_id: str, stage: str, name: str, *parts: str | int) -> str:
    """`<order>:<stage>:<name>[:<part>...]`, e.g. `o1:generation:progress:r0:3`."""
    return ":".join([order_id, stage, name, *(str(p) for p in parts)])


def lifecycle_event_id(order_id: str, state: str) -> str:
    return event_id(order_id, "lifecycle", state.lower())


def retention_event_id(order_id: str, what: str) -> str:
    return event_id(order_id, "retention", what.lower())
