"""Stored responses and session affinity (agent traffic).

- stored_response: a Responses API response kept for `previous_response_id`, GET and DELETE, with the
  request's input items, its owner (key digest), the expert that answered and an expiry (retention);
- session_affinity: a continuation key (tool call id, response id, session key; digested) -> the expert
  that answered it, with an expiry, so that a tool loop stays on its expert across ingress replicas.

Both are runtime data, like the decision log: writing them does not bump the registry revision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_response",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=True),
        sa.Column("expert", sa.String(128), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_response_id", sa.String(128), nullable=True),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stored_response"),
    )
    op.create_index("ix_stored_response_expires_at", "stored_response", ["expires_at"])
    op.create_table(
        "session_affinity",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("expert", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_session_affinity"),
    )
    op.create_index("ix_session_affinity_expires_at", "session_affinity", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_session_affinity_expires_at", table_name="session_affinity")
    op.drop_table("session_affinity")
    op.drop_index("ix_stored_response_expires_at", table_name="stored_response")
    op.drop_table("stored_response")
