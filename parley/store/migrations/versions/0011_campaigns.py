"""Outbound campaigns: campaigns, their contacts (the durable dial queue), attempts, the do-not-call list,
and ``calls.variables`` (a campaign contact's variables on the call it placed).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(column: str, target: str) -> sa.Column:
    return sa.Column(column, sa.Uuid(), sa.ForeignKey(target, ondelete="CASCADE"), nullable=False)


def _when(column: str, nullable: bool = False) -> sa.Column:
    return sa.Column(column, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    _campaigns()
    _contacts()
    _attempts()
    op.create_table(
        "do_not_call",
        _fk("tenant_id", "tenants.id"),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(300), nullable=True),
        _when("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "phone"),
    )
    with op.batch_alter_table("calls") as batch:  # batch: SQLite cannot alter a table in place
        batch.add_column(sa.Column("variables", sa.JSON(), nullable=True))


def _campaigns() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _fk("tenant_id", "tenants.id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("caller_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(300), nullable=True),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("retry", sa.JSON(), nullable=False),
        sa.Column("voicemail", sa.JSON(), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        _when("started_at", nullable=True),
        _when("completed_at", nullable=True),
    )
    op.create_index("ix_campaigns_tenant_id", "campaigns", ["tenant_id"])


def _contacts() -> None:
    op.create_table(
        "campaign_contacts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _fk("campaign_id", "campaigns.id"),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("greeting", sa.String(1000), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("next_attempt_at", nullable=True),
        _when("updated_at"),
        sa.UniqueConstraint("campaign_id", "phone", name="uq_campaign_contacts_campaign_phone"),
    )
    op.create_index("ix_campaign_contacts_tenant_id", "campaign_contacts", ["tenant_id"])
    op.create_index("ix_campaign_contacts_due", "campaign_contacts", ["campaign_id", "state", "next_attempt_at"])


def _attempts() -> None:
    op.create_table(
        "campaign_attempts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _fk("campaign_id", "campaigns.id"),
        _fk("contact_id", "campaign_contacts.id"),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Uuid(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        _when("started_at"),
        _when("ended_at", nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.UniqueConstraint("contact_id", "number", name="uq_campaign_attempts_contact_number"),
    )
    op.create_index("ix_campaign_attempts_campaign_outcome", "campaign_attempts", ["campaign_id", "outcome"])
    op.create_index("ix_campaign_attempts_campaign_started", "campaign_attempts", ["campaign_id", "started_at"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("variables")
    op.drop_table("do_not_call")
    op.drop_table("campaign_attempts")
    op.drop_table("campaign_contacts")
    op.drop_table("campaigns")
