"""campaigns: campaigns, terms, participants, customers, coupons, claim slots, issuance, idempotency

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("phone_hint", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("on_network", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("tier BETWEEN 1 AND 7", name=op.f("ck_customer_tier")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
        sa.UniqueConstraint("external_id_hash", name=op.f("uq_customer_external_id_hash")),
    )
    op.create_table(
        "customer_otp",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_otp")),
    )
    op.create_index(
        op.f("ix_customer_otp_external_id_hash"), "customer_otp", ["external_id_hash"], unique=False
    )
    op.create_table(
        "idempotency_record",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_record")),
    )
    op.create_table(
        "campaign",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code_prefix", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("offer", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("audience", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("audience_min_tier", sa.Integer(), nullable=True),
        sa.Column("audience_max_tier", sa.Integer(), nullable=True),
        sa.Column("audience_tags", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("audience_on_network_only", sa.Boolean(), nullable=False),
        sa.Column("total_quantity", sa.Integer(), nullable=False),
        sa.Column("per_customer_limit", sa.Integer(), nullable=False),
        sa.Column("per_customer_daily_limit", sa.Integer(), nullable=True),
        sa.Column("reversal_window_days", sa.Integer(), nullable=False),
        sa.Column("total_budget", sa.BigInteger(), nullable=False),
        sa.Column("fee_bp", sa.Integer(), nullable=False),
        sa.Column("fee_fixed", sa.BigInteger(), nullable=False),
        sa.Column("fee_payer", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("settlement_cycle", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("terms_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "audience IN ('open', 'segment', 'targeted')", name=op.f("ck_campaign_audience")
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_campaign_currency")),
        sa.CheckConstraint(
            "status IN ('draft', 'proposed', 'approved', 'active', 'paused', 'ended', 'cancelled')",
            name=op.f("ck_campaign_status"),
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_campaign_schedule")),
        sa.CheckConstraint(
            "per_customer_daily_limit IS NULL OR per_customer_daily_limit >= 1",
            name=op.f("ck_campaign_per_customer_daily_limit"),
        ),
        sa.CheckConstraint("per_customer_limit >= 1", name=op.f("ck_campaign_per_customer_limit")),
        sa.CheckConstraint("total_quantity > 0", name=op.f("ck_campaign_quantity")),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["app_user.id"],
            name=op.f("fk_campaign_created_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["owner_org_id"],
            ["organization.id"],
            name=op.f("fk_campaign_owner_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
    )
    op.create_index(op.f("ix_campaign_owner_org_id"), "campaign", ["owner_org_id"], unique=False)
    op.create_index(op.f("ix_campaign_status"), "campaign", ["status"], unique=False)
    op.create_table(
        "campaign_daily_stat",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("redeemed", sa.Integer(), nullable=False),
        sa.Column("expired", sa.Integer(), nullable=False),
        sa.Column("voided", sa.Integer(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_daily_stat_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "day", "slot", name=op.f("pk_campaign_daily_stat")),
    )
    op.create_table(
        "campaign_participant",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("share_bp", sa.Integer(), nullable=False),
        sa.Column("budget_cap", sa.BigInteger(), nullable=True),
        sa.Column("accepted_version", sa.Integer(), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.Uuid(), nullable=True),
        sa.Column("declined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decline_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.CheckConstraint(
            "budget_cap IS NULL OR budget_cap > 0", name=op.f("ck_campaign_participant_budget_cap")
        ),
        sa.CheckConstraint(
            "share_bp BETWEEN 0 AND 10000", name=op.f("ck_campaign_participant_share_bp")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_participant_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_campaign_participant_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "org_id", name=op.f("pk_campaign_participant")),
    )
    op.create_index(
        op.f("ix_campaign_participant_org_id"), "campaign_participant", ["org_id"], unique=False
    )
    op.create_table(
        "campaign_store",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("store_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_store_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
            name=op.f("fk_campaign_store_store_id_store"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "store_id", name=op.f("pk_campaign_store")),
    )
    op.create_index(
        op.f("ix_campaign_store_store_id"), "campaign_store", ["store_id"], unique=False
    )
    op.create_table(
        "campaign_target",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_target_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_campaign_target_customer_id_customer"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "customer_id", name=op.f("pk_campaign_target")),
    )
    op.create_table(
        "campaign_terms_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("terms", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("proposed_by", sa.Uuid(), nullable=True),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_terms_version_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_terms_version")),
        sa.UniqueConstraint(
            "campaign_id", "version", name=op.f("uq_campaign_terms_version_campaign_id_version")
        ),
    )
    op.create_table(
        "claim_slot",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("remaining_quantity", sa.Integer(), nullable=False),
        sa.Column("remaining_budget", sa.BigInteger(), nullable=False),
        sa.Column("funder_remaining", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("funder_held", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("released", sa.Integer(), nullable=False),
        sa.CheckConstraint("0 <= ALL(funder_remaining)", name=op.f("ck_claim_slot_funders")),
        sa.CheckConstraint("remaining_budget >= 0", name=op.f("ck_claim_slot_budget")),
        sa.CheckConstraint("remaining_quantity >= 0", name=op.f("ck_claim_slot_quantity")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_claim_slot_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "slot", name=op.f("pk_claim_slot")),
    )
    op.create_table(
        "coupon",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("holder_seq", sa.Integer(), nullable=True),
        sa.Column("claim_day", sa.Date(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("reserved_amount", sa.BigInteger(), nullable=False),
        sa.Column("funder_reserved", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('issued', 'claimed', 'redeemed', 'expired', 'void')",
            name=op.f("ck_coupon_status"),
        ),
        sa.CheckConstraint("reserved_amount >= 0", name=op.f("ck_coupon_reserved_amount")),
        sa.CheckConstraint("valid_until > valid_from", name=op.f("ck_coupon_validity")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_coupon_campaign_id_campaign"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_coupon_customer_id_customer"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon")),
        sa.UniqueConstraint(
            "campaign_id",
            "customer_id",
            "holder_seq",
            name=op.f("uq_coupon_campaign_id_customer_id_holder_seq"),
        ),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_code")),
    )
    op.create_index("ix_coupon_campaign_status", "coupon", ["campaign_id", "status"], unique=False)
    op.create_index("ix_coupon_customer", "coupon", ["customer_id", "campaign_id"], unique=False)
    op.create_index(
        "ix_coupon_expiry",
        "coupon",
        ["valid_until"],
        unique=False,
        postgresql_where=sa.text("status IN ('issued', 'claimed')"),
    )
    op.create_table(
        "issue_batch",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_issue_batch_status"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_issue_batch_campaign_id_campaign"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_issue_batch_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issue_batch")),
    )
    op.create_index(
        op.f("ix_issue_batch_campaign_id"), "issue_batch", ["campaign_id"], unique=False
    )
    op.create_table(
        "issue_batch_target",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("coupon_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["issue_batch.id"],
            name=op.f("fk_issue_batch_target_batch_id_issue_batch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "row_number", name=op.f("pk_issue_batch_target")),
    )


def downgrade() -> None:
    op.drop_table("issue_batch_target")
    op.drop_index(op.f("ix_issue_batch_campaign_id"), table_name="issue_batch")
    op.drop_table("issue_batch")
    op.drop_index(
        "ix_coupon_expiry",
        table_name="coupon",
        postgresql_where=sa.text("status IN ('issued', 'claimed')"),
    )
    op.drop_index("ix_coupon_customer", table_name="coupon")
    op.drop_index("ix_coupon_campaign_status", table_name="coupon")
    op.drop_table("coupon")
    op.drop_table("claim_slot")
    op.drop_table("campaign_terms_version")
    op.drop_table("campaign_target")
    op.drop_index(op.f("ix_campaign_store_store_id"), table_name="campaign_store")
    op.drop_table("campaign_store")
    op.drop_index(op.f("ix_campaign_participant_org_id"), table_name="campaign_participant")
    op.drop_table("campaign_participant")
    op.drop_table("campaign_daily_stat")
    op.drop_index(op.f("ix_campaign_status"), table_name="campaign")
    op.drop_index(op.f("ix_campaign_owner_org_id"), table_name="campaign")
    op.drop_table("campaign")
    op.drop_table("idempotency_record")
    op.drop_index(op.f("ix_customer_otp_external_id_hash"), table_name="customer_otp")
    op.drop_table("customer_otp")
    op.drop_table("customer")
