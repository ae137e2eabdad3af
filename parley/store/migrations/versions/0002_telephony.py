"""Telephony: call direction, called number, carrier call id, worker id; phone numbers mapped to agents.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("direction", sa.String(16), nullable=False, server_default="inbound"))
        batch.add_column(sa.Column("called", sa.String(200), nullable=True))
        batch.add_column(sa.Column("provider_call_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(200), nullable=True))
        batch.create_index("ix_calls_provider_call_id", ["provider_call_id"])
    op.create_table(
        "phone_numbers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.Uuid(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("number", name="uq_phone_numbers_number"),
    )
    op.create_index("ix_phone_numbers_tenant_id", "phone_numbers", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_phone_numbers_tenant_id", "phone_numbers")
    op.drop_table("phone_numbers")
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_provider_call_id")
        for column in ("worker_id", "provider_call_id", "called", "direction"):
            batch.drop_column(column)
