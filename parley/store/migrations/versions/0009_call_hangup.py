"""Operator hang-up: ``calls.hangup_requested_at``, set by ``POST /v1/calls/{id}/hangup``.

The worker that runs the call may be another process: each worker polls this column for its own live calls
and ends the ones an operator asked to end.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:  # batch: SQLite cannot alter a table in place
        batch.add_column(sa.Column("hangup_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("hangup_requested_at")
