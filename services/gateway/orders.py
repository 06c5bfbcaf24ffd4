"""The order state machine (ARCHITECTURE §4), kept in PostgreSQL.

Every change goes through `apply`: a compare-and-set on `orders.version` (a writer that read
an older version changes nothing and re-reads), a snapshot of the new version in
`order_changes` (WatchOrder replays them, so no change is lost between two reads), the
messages the change causes in the outbox (the job, and on a state change a LifecycleEvent
for retention) and a NOTIFY that wakes watchers on every replica, all in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common import metrics
from services.common.bus import ids
from services.common.bus.outbox import enqueue as outbox_enqueue
from services.common.db.engine import compare_and_set
from services.common.grpc.errors import ApiError
from services.gateway.tables import order_changes, orders, outbox
from services.policy import retention as retention_policies
from services.policy.names import order_name

S = pb.OrderState
CREATED, UPLOADING, QUEUED = S.ORDER_STATE_CREATED, S.ORDER_STATE_UPLOADING, S.ORDER_STATE_QUEUED
TRAINING, GENERATING = S.ORDER_STATE_TRAINING, S.ORDER_STATE_GENERATING
FILTERING, READY, EXPIRED = S.ORDER_STATE_FILTERING, S.ORDER_STATE_READY, S.ORDER_STATE_EXPIRED
FAILED, CANCELLED, DELETED = S.ORDER_STATE_FAILED, S.ORDER_STATE_CANCELLED, S.ORDER_STATE_DELETED

LIVE = frozenset({CREATED, UPLOADING, QUEUED, TRAINING, GENERATING, FILTERING})
# Between submission and delivery: counted against max_orders_in_flight, watched by the reconciler.
IN_FLIGHT = frozenset({QUEUED, TRAINING, GENERATING, FILTERING})
# WatchOrder ends at these (READY can still expire, but nothing more happens that a watcher
# waits for).
FINAL = frozenset({READY, EXPIRED, FAILED, CANCELLED, DELETED})
_ENDS = {FAILED, CANCELLED, DELETED}

TRANSITIONS: dict[int, frozenset[int]] = {
    CREATED: frozenset({UPLOADING, *_ENDS}),
    UPLOADING: frozenset({QUEUED, *_ENDS}),
    # training.completed may overtake training.started: QUEUED -> GENERATING is allowed.
    QUEUED: frozenset({TRAINING, GENERATING, *_ENDS}),
    TRAINING: frozenset({GENERATING, *_ENDS}),
    # A round can be selected straight from GENERATING when its last batch is scored
    # before generation.completed arrives; FILTERING -> GENERATING is a top-up round.
    GENERATING: frozenset({FILTERING, READY, *_ENDS}),
    FILTERING: frozenset({GENERATING, READY, *_ENDS}),
    READY: frozenset({EXPIRED, DELETED}),
    EXPIRED: frozenset({DELETED}),
    FAILED: frozenset({DELETED}),
    CANCELLED: frozenset({DELETED}),
    DELETED: frozenset(),
}

# Share of the whole order each stage covers, for the single progress bar.
STAGE_SPAN = {
    pb.STAGE_UPLOAD: (0.0, 0.05),
    pb.STAGE_TRAINING: (0.05, 0.5),
    pb.STAGE_GENERATION: (0.5, 0.85),
    pb.STAGE_FILTERING: (0.85, 1.0),
    pb.STAGE_DELIVERY: (1.0, 1.0),
}
NOTIFY_CHANNEL = "gateway_orders"


# Before submission: photos may still be added or removed.
EDITABLE = frozenset({CREATED, UPLOADING})


def state_name(state: int) -> str:
    return S.Name(state).removeprefix("ORDER_STATE_")


def state_value(name: str) -> int:
    return int(S.Value(f"ORDER_STATE_{name}"))


def state_of(row: Any) -> int:
    """The state of an order row as the enum value (rows keep the name, for people)."""
    return state_value(row.state)


def in_states(states: Iterable[int]) -> sa.ColumnElement[bool]:
    """SQL: the order's state is one of `states`."""
    return orders.c.state.in_([state_name(s) for s in states])


class InvalidTransition(Exception):
    pass


def can_move(old: int, new: int) -> bool:
    return new == old or new in TRANSITIONS.get(old, frozenset())


def seed_base(order_id: str, round_: int) -> int:
    """Deterministic per order and round, so any image can be re-rendered from its seed."""
    digest = hashlib.sha256(f"{order_id}:r{round_}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def progress_of(row: Any) -> pb.Progress:
    p = pb.Progress()
    if row.progress:
        p.ParseFromString(bytes(row.progress))
    return p


def make_progress(
    stage: int, done: int = 0, total: int = 0, eta_s: float = 0.0, detail: str = ""
) -> pb.Progress:
    lo, hi = STAGE_SPAN.get(stage, (0.0, 0.0))
    part = min(1.0, done / total) if total > 0 else 0.0
    p = pb.Progress(stage=stage, done=done, total=total, fraction=lo + (hi - lo) * part)
    if eta_s > 0:
        p.eta.FromTimedelta(timedelta(seconds=round(eta_s)))
    p.detail = detail
    return p


def to_proto(row: Any) -> pb.Order:
    o = pb.Order(
        name=order_name(row.tenant_id, row.order_id),
        display_name=row.display_name,
        state=state_value(row.state),
        style_ids=list(row.style_ids or []),
        custom_prompt=row.custom_prompt,
        subject_class=row.subject_class,
        candidate_count=row.candidate_count,
        result_count=row.result_count,
        photo_retention_days=row.photo_retention_days,
        keep_model=row.keep_model,
        photo_count=row.photo_count,
        failure_reason=row.failure_reason,
        version=row.version,
        delivered_count=row.delivered_count,
    )
    o.progress.CopyFrom(progress_of(row))
    o.create_time.FromDatetime(row.created_at)
    o.update_time.FromDatetime(row.updated_at)
    if o.state in FINAL and o.state != DELETED:
        # The published schedule (services/policy/retention.yaml), the same file the
        # retention service enforces: what the partner is told is what happens.
        ended: datetime = row.updated_at
        due = retention_policies.load().due_times(
            ended, row.photo_retention_days, bool(row.keep_model)
        )
        o.retention.photos_delete_time.FromDatetime(due["PHOTOS"])
        o.retention.model_delete_time.FromDatetime(due["ADAPTER"])
        o.retention.results_delete_time.FromDatetime(due["RESULTS"])
    return o


@dataclass(frozen=True)
class Outgoing:
    """A message the change causes; written to the outbox in the same transaction."""

    subject: str
    payload: Message
    msg_id: str


async def enqueue(conn: AsyncConnection, tenant_id: str, order_id: str, msg: Outgoing) -> None:
    await outbox_enqueue(
        conn,
        outbox,
        msg.subject,
        msg.payload,
        msg.msg_id,
        tenant_id=tenant_id,
        order_id=order_id,
    )


def lifecycle_message(row: Any, state: int) -> Outgoing:
    event = jobs_pb2.LifecycleEvent(
        event_id=ids.lifecycle_event_id(row.order_id, state_name(state)),
        tenant_id=row.tenant_id,
        order_id=row.order_id,
        state=state,
        photo_retention_days=row.photo_retention_days,
        keep_model=row.keep_model,
    )
    event.time.GetCurrentTime()
    return Outgoing(f"events.lifecycle.{state_name(state).lower()}", event, event.event_id)


async def load(
    conn: AsyncConnection, order_id: str, tenant_id: str | None = None, *, lock: bool = False
) -> Any | None:
    q = sa.select(orders).where(orders.c.order_id == order_id)
    if tenant_id is not None:
        q = q.where(orders.c.tenant_id == tenant_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).one_or_none()


async def create(
    conn: AsyncConnection, tenant_id: str, order_id: str, values: Mapping[str, Any]
) -> Any:
    """Insert a new order in CREATED, with its first snapshot and lifecycle event.

    Runs in the caller's transaction; an IntegrityError (e.g. a request id used twice) leaves
    nothing behind when the caller wraps it in a savepoint.
    """
    await conn.execute(
        sa.insert(orders).values(
            order_id=order_id,
            tenant_id=tenant_id,
            state=state_name(CREATED),
            progress=make_progress(pb.STAGE_UPLOAD).SerializeToString(),
            **values,
        )
    )
    row = await load(conn, order_id)
    assert row is not None
    await record_change(conn, row)
    await enqueue(conn, tenant_id, order_id, lifecycle_message(row, CREATED))
    return row


async def apply(
    conn: AsyncConnection,
    row: Any,
    *,
    state: int | None = None,
    values: Mapping[str, Any] | None = None,
    messages: Iterable[Outgoing] = (),
    heartbeat: bool = False,
) -> Any | None:
    """Change the order read as `row`; None when another writer changed it first.

    Raises InvalidTransition for a move the state machine does not allow. Runs in the
    caller's transaction.
    """
    old = state_value(row.state)
    new_values: dict[str, Any] = dict(values or {})
    if state is not None and state != old:
        if not can_move(old, state):
            raise InvalidTransition(f"{state_name(old)} -> {state_name(state)}")
        new_values["state"] = state_name(state)
    new_values["updated_at"] = sa.func.now()
    if heartbeat:
        new_values["heartbeat_at"] = sa.func.now()
    if not await compare_and_set(conn, orders, {"order_id": row.order_id}, row.version, new_values):
        return None
    fresh = await load(conn, row.order_id)
    assert fresh is not None
    await record_change(conn, fresh)
    if state is not None and state != old:
        # Observed before commit: a transaction that then rolls back is rare (CAS already
        # won) and would count one extra sample, which a histogram tolerates.
        spent = (fresh.updated_at - row.updated_at).total_seconds()
        metrics.ORDER_STAGE_SECONDS.labels(state_name(old).lower()).observe(max(spent, 0.0))
        if state in FINAL:
            metrics.ORDERS.labels(state_name(state).lower()).inc()
        await enqueue(conn, fresh.tenant_id, fresh.order_id, lifecycle_message(fresh, state))
    for msg in messages:
        await enqueue(conn, fresh.tenant_id, fresh.order_id, msg)
    return fresh


async def touch(conn: AsyncConnection, order_id: str) -> None:
    """Work on the order is alive (the reconciler's clock); not a change anyone sees."""
    await conn.execute(
        sa.update(orders).where(orders.c.order_id == order_id).values(heartbeat_at=sa.func.now())
    )


async def record_change(conn: AsyncConnection, row: Any) -> None:
    await conn.execute(
        sa.insert(order_changes).values(
            order_id=row.order_id,
            tenant_id=row.tenant_id,
            version=row.version,
            snapshot=to_proto(row).SerializeToString(),
        )
    )
    await conn.execute(
        sa.text("SELECT pg_notify(:ch, :payload)"),
        {"ch": NOTIFY_CHANNEL, "payload": row.order_id},
    )


async def changes_since(
    conn: AsyncConnection, order_id: str, after_version: int
) -> Sequence[tuple[int, pb.Order]]:
    rows = await conn.execute(
        sa.select(order_changes.c.version, order_changes.c.snapshot)
        .where(order_changes.c.order_id == order_id, order_changes.c.version > after_version)
        .order_by(order_changes.c.version)
    )
    return [(r.version, pb.Order.FromString(bytes(r.snapshot))) for r in rows]


def refuse_transition(row: Any, action: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"cannot {action} an order in state {row.state}",
        precondition_violations=[("STATE", order_name(row.tenant_id, row.order_id), row.state)],
        reason="ORDER_STATE",
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
