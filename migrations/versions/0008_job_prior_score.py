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
    op.add_column("jobs", sa.Column("prior_score", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("prior_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "prior_fingerprint")
    op.drop_column("jobs", "prior_score")
