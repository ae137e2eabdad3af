"""Talk drafts: an unsaved agent document a talk token opens its one session with (console "talk to this draft").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "talk_drafts",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("agent_id", sa.Uuid(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("based_on_version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_talk_drafts_tenant_id", "talk_drafts", ["tenant_id"])
    op.create_index("ix_talk_drafts_agent_id", "talk_drafts", ["agent_id"])
    op.create_index("ix_talk_drafts_expires_at", "talk_drafts", ["expires_at"])


def downgrade() -> None:
    op.drop_table("talk_drafts")
