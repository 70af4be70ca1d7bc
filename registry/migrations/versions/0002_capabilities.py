"""Expert capabilities: what an expert serves beyond plain text chat (tools, json, vision, audio).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing experts keep serving what they served before: plain text chat only
    with op.batch_alter_table("expert") as batch:
        batch.add_column(sa.Column("capabilities", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("expert") as batch:
        batch.drop_column("capabilities")
