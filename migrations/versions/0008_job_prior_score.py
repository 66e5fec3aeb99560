"""the prompt prior's score at admission and the prior's fingerprint, so workers with that prior reuse it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prior_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("prior_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("prior_fingerprint")
        batch_op.drop_column("prior_score")
