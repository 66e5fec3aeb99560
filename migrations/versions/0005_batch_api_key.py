"""each batch's creating API key, whose limits its requests are admitted with

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: batches created without a key (ELIS_AUTH=none) and batches from before this revision are
    # admitted with the service's default tenant limits. The foreign key keeps a key row that batches name.
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.String(length=16), nullable=True))
        batch_op.create_foreign_key("fk_batches_api_key_id", "api_keys", ["api_key_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_constraint("fk_batches_api_key_id", type_="foreignkey")
        batch_op.drop_column("api_key_id")
