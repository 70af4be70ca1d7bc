"""Initial registry schema: experts, categories, rankings, skill scores, API keys, settings, revision.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "expert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("api_key_env", sa.String(256), nullable=True),
        sa.Column("cost_input_per_m", sa.Float(), nullable=False),
        sa.Column("cost_output_per_m", sa.Float(), nullable=False),
        sa.Column("max_context", sa.Integer(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("cost_input_per_m >= 0", name=op.f("ck_expert_cost_input_nonneg")),
        sa.CheckConstraint("cost_output_per_m >= 0", name=op.f("ck_expert_cost_output_nonneg")),
        sa.CheckConstraint("max_context > 0", name=op.f("ck_expert_max_context_pos")),
        sa.CheckConstraint("max_concurrency > 0", name=op.f("ck_expert_max_concurrency_pos")),
        sa.CheckConstraint("timeout_s > 0", name=op.f("ck_expert_timeout_pos")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expert")),
        sa.UniqueConstraint("name", name=op.f("uq_expert_name")),
    )
    op.create_table(
        "category",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_category")),
        sa.UniqueConstraint("name", name=op.f("uq_category_name")),
    )
    op.create_table(
        "category_expert",
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("expert_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.CheckConstraint("rank > 0", name=op.f("ck_category_expert_rank_pos")),
        sa.ForeignKeyConstraint(
            ["category_id"], ["category.id"], name=op.f("fk_category_expert_category_id_category"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["expert_id"], ["expert.id"], name=op.f("fk_category_expert_expert_id_expert"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("category_id", "expert_id", name=op.f("pk_category_expert")),
    )
    op.create_table(
        "skill_score",
        sa.Column("expert_id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_skill_score_score_unit")),
        sa.CheckConstraint("n >= 0", name=op.f("ck_skill_score_n_nonneg")),
        sa.ForeignKeyConstraint(
            ["category_id"], ["category.id"], name=op.f("fk_skill_score_category_id_category"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["expert_id"], ["expert.id"], name=op.f("fk_skill_score_expert_id_expert"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("expert_id", "category_id", name=op.f("pk_skill_score")),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(256), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
    )
    op.create_table(
        "setting",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_setting")),
    )
    op.create_table(
        "registry_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_revision_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_revision")),
    )
    op.execute(sa.text("INSERT INTO registry_revision (id, revision, updated_at) VALUES (1, 0, CURRENT_TIMESTAMP)"))


def downgrade() -> None:
    for table in ("registry_revision", "setting", "api_key", "skill_score", "category_expert", "category",
                  "expert"):
        op.drop_table(table)
