"""job leases, publish and progress times; tenants and hashed API keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 22:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from elis.storage.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # Every job belongs to its API key's tenant; jobs from before keys belong to "local".
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=False, server_default="local"))
        # A running job's lease (renewed by its worker's heartbeat); past it no live worker holds the job.
        batch_op.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        # When the current window's message was last published (lost messages are found by its age).
        batch_op.add_column(sa.Column("published_at", UTCDateTime(), nullable=True))
        # The last time the job moved (admitted or a window committed): stuck jobs are failed past a bound.
        batch_op.add_column(sa.Column("progress_at", UTCDateTime(), nullable=True))
        batch_op.create_index("ix_jobs_tenant_status", ["tenant", "status"], unique=False)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_tokens_in_flight", sa.Integer(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_status")
        batch_op.drop_column("progress_at")
        batch_op.drop_column("published_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("tenant")
