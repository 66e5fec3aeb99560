"""what each worker measured of its engine at start-up (prefill per token, decode step, prefill weight)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from elis.storage.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_profiles",
        sa.Column("worker", sa.String(length=128), primary_key=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("prefill_s_per_token", sa.Float(), nullable=False),
        sa.Column("cached_prefill_s_per_token", sa.Float(), nullable=False),
        sa.Column("decode_step_s", sa.Float(), nullable=False),
        sa.Column("prefill_weight", sa.Float(), nullable=False),
        sa.Column("measured_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_worker_profiles_seen_at", "worker_profiles", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_profiles_seen_at", table_name="worker_profiles")
    op.drop_table("worker_profiles")
