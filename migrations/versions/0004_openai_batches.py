"""OpenAI-style batches: files, batches, and each job's batch and custom_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
# NOTE: re-pointed to the tenants migration ("0003") when the branches merge.
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="local"),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("num_bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="local"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("output_file_id", sa.String(40)),
        sa.Column("error_file_id", sa.String(40)),
        sa.Column("errors", sa.JSON()),
        sa.Column("line_errors", sa.JSON(), nullable=False),
        sa.Column("num_requests", sa.Integer(), nullable=False),
        sa.Column("batch_metadata", sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("in_progress_at", sa.DateTime(timezone=True)),
        sa.Column("finalizing_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("failed_at", sa.DateTime(timezone=True)),
        sa.Column("cancelling_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_index("ix_batches_tenant", "batches", ["tenant"])
    op.create_index("ix_files_tenant", "files", ["tenant"])
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(40)))
        batch_op.add_column(sa.Column("custom_id", sa.String(256)))
        batch_op.create_index("ix_jobs_batch_id", ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_batch_id")
        batch_op.drop_column("custom_id")
        batch_op.drop_column("batch_id")
    op.drop_index("ix_batches_created_at", table_name="batches")
    op.drop_index("ix_batches_status", table_name="batches")
    op.drop_index("ix_batches_tenant", table_name="batches")
    op.drop_index("ix_files_tenant", table_name="files")
    op.drop_table("batches")
    op.drop_table("files")
