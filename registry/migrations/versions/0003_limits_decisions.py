"""Per-key limits and usage, the decision log, feedback.

- api_key gains rpm, tpm, budget_usd, budget_period (all nullable: no limit);
- key_usage: spend per key and budget period (written in batches by the service, off the request path);
- decision_log: one row per completion (the routing decision and what it cost);
- feedback: a score 0..1 (and a comment) per completion; `applied_at` marks what
  `coe experts profile --from-feedback` already folded into the skill scores.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(16), nullable=False, server_default="month"))
    op.create_table(
        "key_usage",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("period_start", sa.String(10), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "period_start", name="pk_key_usage"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_key.id"], name="fk_key_usage_key_id_api_key", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "decision_log",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("experts", sa.JSON(), nullable=False),
        sa.Column("answered_by", sa.String(128), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Float(), nullable=False, server_default="0"),
        sa.Column("cache", sa.String(8), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_decision_log"),
    )
    op.create_index("ix_decision_log_created_at", "decision_log", ["created_at"])
    op.create_table(
        "feedback",
        sa.Column("decision_id", sa.String(128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False, server_default=""),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("score >= 0 AND score <= 1", name="ck_feedback_score_unit"),
        sa.PrimaryKeyConstraint("decision_id", name="pk_feedback"),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decision_log.id"], name="fk_feedback_decision_id_decision_log", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_decision_log_created_at", table_name="decision_log")
    op.drop_table("decision_log")
    op.drop_table("key_usage")
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("budget_usd")
        batch.drop_column("tpm")
        batch.drop_column("rpm")
