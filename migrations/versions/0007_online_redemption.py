"""online redemption: checkout holds, redemption flags for review, the coupon's holder on
redemptions (for the velocity rule), online redemptions without a store

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

`uq_redemption_hold_live` (unique `coupon_id` where `status = 'held'`) allows one live hold per
coupon. `coupon.held_until` is what the POS path checks under the coupon's row lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "redemption_flag",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("org_ids", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.Column("redemption_ids", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.Uuid(), nullable=True),
        sa.Column("review_note", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'reviewed')", name=op.f("ck_redemption_flag_status")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_redemption_flag_customer_id_customer"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemption.id"],
            name=op.f("fk_redemption_flag_redemption_id_redemption"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"],
            ["app_user.id"],
            name=op.f("fk_redemption_flag_reviewed_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption_flag")),
    )
    op.create_index(
        "ix_redemption_flag_open", "redemption_flag", ["status", "created_at"], unique=False
    )
    op.create_index(
        op.f("ix_redemption_flag_redemption_id"), "redemption_flag", ["redemption_id"], unique=False
    )
    op.create_table(
        "redemption_hold",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("coupon_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("basket_amount", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("order_ref", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redemption_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('held', 'confirmed', 'released', 'expired')",
            name=op.f("ck_redemption_hold_status"),
        ),
        sa.CheckConstraint("basket_amount > 0", name=op.f("ck_redemption_hold_basket_amount")),
        sa.CheckConstraint(
            "discount BETWEEN 0 AND basket_amount", name=op.f("ck_redemption_hold_discount")
        ),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_redemption_hold_expiry")),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_key.id"],
            name=op.f("fk_redemption_hold_api_key_id_api_key"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_redemption_hold_campaign_id_campaign"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"],
            ["coupon.id"],
            name=op.f("fk_redemption_hold_coupon_id_coupon"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_redemption_hold_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemption.id"],
            name=op.f("fk_redemption_hold_redemption_id_redemption"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption_hold")),
    )
    op.create_index(
        "ix_redemption_hold_expiry",
        "redemption_hold",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'held'"),
    )
    op.create_index(op.f("ix_redemption_hold_org_id"), "redemption_hold", ["org_id"], unique=False)
    op.create_index(
        "uq_redemption_hold_live",
        "redemption_hold",
        ["coupon_id"],
        unique=True,
        postgresql_where=sa.text("status = 'held'"),
    )
    op.add_column("coupon", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("redemption", sa.Column("api_key_id", sa.Uuid(), nullable=True))
    op.add_column("redemption", sa.Column("customer_id", sa.Uuid(), nullable=True))
    op.alter_column("redemption", "store_id", existing_type=sa.UUID(), nullable=True)
    op.create_check_constraint(
        op.f("ck_redemption_pos_store"), "redemption", "channel = 'online' OR store_id IS NOT NULL"
    )
    op.create_index(
        "ix_redemption_customer_recent", "redemption", ["customer_id", "redeemed_at"], unique=False
    )
    op.create_foreign_key(
        op.f("fk_redemption_customer_id_customer"),
        "redemption",
        "customer",
        ["customer_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_foreign_key(
        op.f("fk_redemption_api_key_id_api_key"),
        "redemption",
        "api_key",
        ["api_key_id"],
        ["id"],
        ondelete="RESTRICT",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_redemption_api_key_id_api_key"), "redemption", type_="foreignkey")
    op.drop_constraint(op.f("fk_redemption_customer_id_customer"), "redemption", type_="foreignkey")
    op.drop_index("ix_redemption_customer_recent", table_name="redemption")
    op.drop_constraint(op.f("ck_redemption_pos_store"), "redemption", type_="check")
    op.alter_column("redemption", "store_id", existing_type=sa.UUID(), nullable=False)
    op.drop_column("redemption", "customer_id")
    op.drop_column("redemption", "api_key_id")
    op.drop_column("coupon", "held_until")
    op.drop_index(
        "uq_redemption_hold_live",
        table_name="redemption_hold",
        postgresql_where=sa.text("status = 'held'"),
    )
    op.drop_index(op.f("ix_redemption_hold_org_id"), table_name="redemption_hold")
    op.drop_index(
        "ix_redemption_hold_expiry",
        table_name="redemption_hold",
        postgresql_where=sa.text("status = 'held'"),
    )
    op.drop_table("redemption_hold")
    op.drop_index(op.f("ix_redemption_flag_redemption_id"), table_name="redemption_flag")
    op.drop_index("ix_redemption_flag_open", table_name="redemption_flag")
    op.drop_table("redemption_flag")
