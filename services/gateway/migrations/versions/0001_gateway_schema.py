"""gateway: tenants, api keys, rate windows, orders, photos, results, order changes,
processed events, outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.common.bus.outbox import create_outbox

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("requests_per_minute", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_orders_in_flight", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "api_keys",
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
        schema=SCHEMA,
    )
    op.create_table(
        "rate_windows",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "orders",
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
        schema=SCHEMA,
    )
    op.create_table(
        "photos",
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
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "results",
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
        schema=SCHEMA,
    )
    op.create_table(
        "order_changes",
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
        schema=SCHEMA,
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)
    op.create_index("orders_tenant_created", "orders", ["tenant_id", "created_at"], schema=SCHEMA)
    op.create_index("orders_live_state", "orders", ["state", "heartbeat_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("processed_events", schema=SCHEMA)
    op.drop_table("order_changes", schema=SCHEMA)
    op.drop_table("results", schema=SCHEMA)
    op.drop_table("photos", schema=SCHEMA)
    op.drop_table("orders", schema=SCHEMA)
    op.drop_table("rate_windows", schema=SCHEMA)
    op.drop_table("api_keys", schema=SCHEMA)
    op.drop_table("tenants", schema=SCHEMA)
