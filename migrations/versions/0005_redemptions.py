"""redemptions: POS redemptions with their frozen funding split, and their reversals

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

`uq_redemption_coupon_standing` (unique `coupon_id` where `status <> 'reversed'`) is the
arbiter of exactly-once redemption: one standing redemption per coupon, while a fully
reversed coupon may be redeemed again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "redemption",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("coupon_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("store_id", sa.Uuid(), nullable=False),
        sa.Column("terminal_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("basket_amount", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("order_ref", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("funding", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("discount_reversed", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("channel IN ('pos', 'online')", name=op.f("ck_redemption_channel")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_redemption_currency")),
        sa.CheckConstraint(
            "status IN ('completed', 'partially_reversed', 'reversed')",
            name=op.f("ck_redemption_status"),
        ),
        sa.CheckConstraint("basket_amount > 0", name=op.f("ck_redemption_basket_amount")),
        sa.CheckConstraint(
            "discount BETWEEN 0 AND basket_amount", name=op.f("ck_redemption_discount")
        ),
        sa.CheckConstraint(
            "discount_reversed BETWEEN 0 AND discount", name=op.f("ck_redemption_discount_reversed")
        ),
        sa.CheckConstraint(
            "refunded_amount BETWEEN 0 AND basket_amount",
            name=op.f("ck_redemption_refunded_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_redemption_campaign_id_campaign"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"],
            ["coupon.id"],
            name=op.f("fk_redemption_coupon_id_coupon"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_redemption_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
            name=op.f("fk_redemption_store_id_store"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminal.id"],
            name=op.f("fk_redemption_terminal_id_terminal"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption")),
    )
    op.create_index(
        "ix_redemption_campaign_recent", "redemption", ["campaign_id", "redeemed_at"], unique=False
    )
    op.create_index(op.f("ix_redemption_org_id"), "redemption", ["org_id"], unique=False)
    op.create_index(op.f("ix_redemption_store_id"), "redemption", ["store_id"], unique=False)
    op.create_index(
        "ix_redemption_terminal_recent", "redemption", ["terminal_id", "redeemed_at"], unique=False
    )
    op.create_index(
        "uq_redemption_coupon_standing",
        "redemption",
        ["coupon_id"],
        unique=True,
        postgresql_where=sa.text("status <> 'reversed'"),
    )
    op.create_table(
        "redemption_reversal",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("terminal_id", sa.Uuid(), nullable=True),
        sa.Column("refund_amount", sa.BigInteger(), nullable=False),
        sa.Column("discount_reversed", sa.BigInteger(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "discount_reversed >= 0", name=op.f("ck_redemption_reversal_discount_reversed")
        ),
        sa.CheckConstraint("refund_amount > 0", name=op.f("ck_redemption_reversal_refund_amount")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_redemption_reversal_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemption.id"],
            name=op.f("fk_redemption_reversal_redemption_id_redemption"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminal.id"],
            name=op.f("fk_redemption_reversal_terminal_id_terminal"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption_reversal")),
    )
    op.create_index(
        op.f("ix_redemption_reversal_redemption_id"),
        "redemption_reversal",
        ["redemption_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_redemption_reversal_redemption_id"), table_name="redemption_reversal")
    op.drop_table("redemption_reversal")
    op.drop_index(
        "uq_redemption_coupon_standing",
        table_name="redemption",
        postgresql_where=sa.text("status <> 'reversed'"),
    )
    op.drop_index("ix_redemption_terminal_recent", table_name="redemption")
    op.drop_index(op.f("ix_redemption_store_id"), table_name="redemption")
    op.drop_index(op.f("ix_redemption_org_id"), table_name="redemption")
    op.drop_index("ix_redemption_campaign_recent", table_name="redemption")
    op.drop_table("redemption")
