"""Post-call analysis: the result on the call, and its success verdict indexed for the calls list's filter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:  # SQLite alters a table by copying it; PostgreSQL in place
        batch.add_column(sa.Column("analysis", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("analysis_success", sa.Boolean(), nullable=True))
    op.create_index("ix_calls_tenant_analysis_success", "calls", ["tenant_id", "analysis_success"])


def downgrade() -> None:
    op.drop_index("ix_calls_tenant_analysis_success", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("analysis_success")
        batch.drop_column("analysis")
