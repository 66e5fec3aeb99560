"""jobs and windows

Revision ID: 0001
Revises:
Create Date: 2026-11-21 11:46:27.129374
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('workload', sa.String(length=64), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('prompt_ids', sa.JSON(), nullable=False),
    sa.Column('generated_ids', sa.JSON(), nullable=False),
    sa.Column('output_text', sa.Text(), nullable=False),
    sa.Column('max_tokens', sa.Integer(), nullable=False),
    sa.Column('temperature', sa.Float(), nullable=False),
    sa.Column('top_p', sa.Float(), nullable=False),
    sa.Column('stop', sa.JSON(), nullable=False),
    sa.Column('stop_token_ids', sa.JSON(), nullable=False),
    sa.Column('true_output_tokens', sa.Integer(), nullable=True),
    sa.Column('force_length', sa.Boolean(), nullable=False),
    sa.Column('num_prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('num_output_tokens', sa.Integer(), nullable=False),
    sa.Column('num_windows', sa.Integer(), nullable=False),
    sa.Column('next_window', sa.Integer(), nullable=False),
    sa.Column('published_window', sa.Integer(), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=False),
    sa.Column('initial_prediction', sa.Float(), nullable=True),
    sa.Column('latest_prediction', sa.Float(), nullable=True),
    sa.Column('num_prediction_failures', sa.Integer(), nullable=False),
    sa.Column('arrival_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('first_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('jct_s', sa.Float(), nullable=True),
    sa.Column('queuing_delay_s', sa.Float(), nullable=False),
    sa.Column('service_s', sa.Float(), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('finish_reason', sa.String(length=16), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)
        batch_op.create_index('ix_jobs_status_enqueued', ['status', 'enqueued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_workload'), ['workload'], unique=False)

    op.create_table('windows',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('num_tokens', sa.Integer(), nullable=False),
    sa.Column('compute_s', sa.Float(), nullable=False),
    sa.Column('overhead_s', sa.Float(), nullable=True),
    sa.Column('predict_s', sa.Float(), nullable=True),
    sa.Column('prediction_before', sa.Float(), nullable=True),
    sa.Column('prediction_after', sa.Float(), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'index', name='uq_windows_job_index')
    )
    with op.batch_alter_table('windows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_windows_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('windows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_windows_job_id'))

    op.drop_table('windows')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_workload'))
        batch_op.drop_index('ix_jobs_status_enqueued')
        batch_op.drop_index(batch_op.f('ix_jobs_status'))

    op.drop_table('jobs')
