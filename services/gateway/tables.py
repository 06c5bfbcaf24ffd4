"""The gateway's tables (schema `gateway`): the one declaration; the baseline migration
creates them from here.

Every order-scoped table carries `tenant_id` and `order_id` (retention's erasure finds them
by that convention), the outbox included, so erasing an order also drops its unsent jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.common.bus.outbox import outbox_table

SCHEMA = "gateway"
metadata = sa.MetaData(schema=SCHEMA)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("requests_per_minute", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_orders_in_flight", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # Public part of the key (`hs_<key_id>_<secret>`), so a lookup needs no scan.
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("gateway.tenants.tenant_id"), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("salt", sa.LargeBinary, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("gateway.tenants.tenant_id"), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("style_ids", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("custom_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("subject_class", sa.Integer, nullable=False, server_default="0"),
    sa.Column("candidate_count", sa.Integer, nullable=False),
    sa.Column("result_count", sa.Integer, nullable=False),
    sa.Column("photo_retention_days", sa.Integer, nullable=False),
    sa.Column("keep_model", sa.Boolean, nullable=False, server_default=sa.false()),
    # headshots.v1.Progress, serialized: one opaque column keeps progress changes cheap.
    sa.Column("progress", sa.LargeBinary, nullable=False, server_default=sa.text("''::bytea")),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("request_id", sa.Text, nullable=True),
    # sha256 of the CreateOrderRequest without its request_id: a reused id must ask the same.
    sa.Column("request_hash", sa.Text, nullable=True),
    sa.Column("reference_embedding", sa.LargeBinary, nullable=True),
    # headshots.v1.SetCheck of the latest AnalyzeSelfies, serialized.
    sa.Column("set_check", sa.LargeBinary, nullable=False, server_default=sa.text("''::bytea")),
    sa.Column("adapter_key", sa.Text, nullable=False, server_default=""),
    sa.Column("instance_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("round", sa.Integer, nullable=False, server_default="0"),
    # Candidates asked for so far, over every round (the budget counts these).
    sa.Column("candidates_requested", sa.Integer, nullable=False, server_default="0"),
    # Size of the current round and whether it is the last the budget allows.
    sa.Column("round_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("round_final", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("requeues", sa.Integer, nullable=False, server_default="0"),
    sa.Column("delivered_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("photo_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
    # Last time a job's event (or a re-queue) touched the order: the reconciler's clock.
    sa.Column(
        "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.UniqueConstraint("tenant_id", "request_id", name="orders_request_once"),
)

photos = sa.Table(
    "photos",
    metadata,
    sa.Column(
        "order_id",
        sa.Text,
        sa.ForeignKey("gateway.orders.order_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("photo_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("blob_key", sa.Text, nullable=False),
    sa.Column("usable", sa.Boolean, nullable=False),
    sa.Column("findings", JSONB, nullable=False, server_default="[]"),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("sharpness", sa.Float, nullable=False, server_default="0"),
    sa.Column("face_size_px", sa.Float, nullable=False, server_default="0"),
    sa.Column("identity_distance", sa.Float, nullable=False, server_default="0"),
    # headshots.v1.SelfieFacts, serialized: what the filter measured of this photo (its face
    # descriptor and near-copy signature: biometric, erased with the row), sent instead of
    # the image when the set is judged again. NULL for photos stored before facts existed.
    sa.Column("selfie_facts", sa.LargeBinary, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column(
        "order_id",
        sa.Text,
        sa.ForeignKey("gateway.orders.order_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("result_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("style_id", sa.Text, nullable=False, server_default=""),
    sa.Column("seed", sa.Numeric(20, 0), nullable=False),
    sa.Column("model_id", sa.Text, nullable=False, server_default=""),
    sa.Column("blob_key", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False, server_default="image/png"),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("width", sa.Integer, nullable=False, server_default="0"),
    sa.Column("height", sa.Integer, nullable=False, server_default="0"),
    sa.Column("scores", JSONB, nullable=False, server_default="{}"),
    sa.Column("rejection_reasons", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("rank", sa.Integer, nullable=False, server_default="0"),
    sa.Column("delivered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

order_changes = sa.Table(
    "order_changes",
    metadata,
    sa.Column(
        "order_id",
        sa.Text,
        sa.ForeignKey("gateway.orders.order_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("snapshot", sa.LargeBinary, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column(
        "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Receipts of erased orders. No `order_id` column and no text naming the order (its name is
# kept as a hash, the receipt as bytes), so erasure leaves them, by design: the tenant's proof
# of the erasure, like retention's ledger.
deletion_receipts = sa.Table(
    "deletion_receipts",
    metadata,
    sa.Column("receipt_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=True),
    # sha256 of the order's name: DeleteOrder on an erased order finds its receipt.
    sa.Column("order_key", sa.Text, nullable=False),
    # headshots.v1.DeletionReceipt, serialized.
    sa.Column("receipt", sa.LargeBinary, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.UniqueConstraint("tenant_id", "request_id", name="deletion_receipts_request_once"),
)

# CreatePreview request ids: a retry with the same id and body renders with the same seed
# (the same images) instead of a new draw, and the same id with another body is refused.
# The images themselves are not kept: they show a person who has not ordered anything. Rows
# older than the replay window (services.policy.limits) are dropped as new ones arrive.
preview_requests = sa.Table(
    "preview_requests",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    # sha256 of the CreatePreviewRequest without its request_id (photo bytes included).
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

outbox = outbox_table(metadata, SCHEMA)

sa.Index("orders_tenant_created", orders.c.tenant_id, orders.c.created_at)

sa.Index("orders_live_state", orders.c.state, orders.c.heartbeat_at)

sa.Index("preview_requests_created", preview_requests.c.created_at)

sa.Index("deletion_receipts_order", deletion_receipts.c.tenant_id, deletion_receipts.c.order_key)
