"""Security: tenants' provider credentials (encrypted), operator-assigned number owners.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_credentials",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_provider_credentials_tenant_name"),
    )
    op.create_index("ix_provider_credentials_tenant_id", "provider_credentials", ["tenant_id"])
    op.create_table(
        "number_owners",
        sa.Column("number", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_number_owners_tenant_id", "number_owners", ["tenant_id"])
    # Numbers mapped before owners existed keep working: their mapping tenant becomes their owner.
    op.execute(
        "INSERT INTO number_owners (number, tenant_id, assigned_at)"
        " SELECT number, tenant_id, created_at FROM phone_numbers"
    )


def downgrade() -> None:
    op.drop_index("ix_number_owners_tenant_id", "number_owners")
    op.drop_table("number_owners")
    op.drop_index("ix_provider_credentials_tenant_id", "provider_credentials")
    op.drop_table("provider_credentials")
