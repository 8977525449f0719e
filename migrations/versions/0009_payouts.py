"""payouts: Stripe identities of organizations, payout / collection attempts, Stripe events

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

- `stripe_account`: per organization its Connect account (transfers), customer and saved
  payment method (collections) and onboarding status.
- `payout_attempt`: one row per statement and attempt generation, with its deterministic
  idempotency key, amount, destination, status, Stripe id and ledger hold / settle entries;
  at most one attempt per statement that is open or succeeded (a partial unique index).
- `stripe_event`: every Stripe event handled, keyed by its id (handled once);
  `stripe_event_cursor`: where the polling backstop stopped.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stripe_event",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_event")),
    )
    op.create_table(
        "stripe_event_cursor",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stripe_event_cursor")),
    )
    op.create_table(
        "stripe_account",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column(
            "connected_account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
        ),
        sa.Column("onboarding_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("payment_method_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "onboarding_status IN ('pending', 'complete', 'restricted')",
            name=op.f("ck_stripe_account_onboarding_status"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_stripe_account_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_stripe_account")),
        sa.UniqueConstraint(
            "connected_account_id", name=op.f("uq_stripe_account_connected_account_id")
        ),
    )
    op.create_table(
        "payout_attempt",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("statement_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("destination", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stripe_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("hold_entry_id", sa.Uuid(), nullable=False),
        sa.Column("settle_entry_id", sa.Uuid(), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("failure_code", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("failure_message", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "direction IN ('transfer', 'collection')", name=op.f("ck_payout_attempt_direction")
        ),
        sa.CheckConstraint(
            "status IN ('in_flight', 'processing', 'succeeded', 'failed', 'reversed')",
            name=op.f("ck_payout_attempt_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payout_attempt_amount_positive")),
        sa.CheckConstraint("generation >= 1", name=op.f("ck_payout_attempt_generation")),
        sa.ForeignKeyConstraint(
            ["hold_entry_id"],
            ["journal_entry.id"],
            name=op.f("fk_payout_attempt_hold_entry_id_journal_entry"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_payout_attempt_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["settle_entry_id"],
            ["journal_entry.id"],
            name=op.f("fk_payout_attempt_settle_entry_id_journal_entry"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statement.id"],
            name=op.f("fk_payout_attempt_statement_id_statement"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_attempt")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payout_attempt_idempotency_key")),
        sa.UniqueConstraint(
            "statement_id", "generation", name=op.f("uq_payout_attempt_statement_id_generation")
        ),
    )
    op.create_index(op.f("ix_payout_attempt_org_id"), "payout_attempt", ["org_id"], unique=False)
    op.create_index(
        op.f("ix_payout_attempt_stripe_id"), "payout_attempt", ["stripe_id"], unique=False
    )
    op.create_index(
        "uq_payout_attempt_one_open",
        "payout_attempt",
        ["statement_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('in_flight', 'processing', 'succeeded')"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_payout_attempt_one_open",
        table_name="payout_attempt",
        postgresql_where=sa.text("status IN ('in_flight', 'processing', 'succeeded')"),
    )
    op.drop_index(op.f("ix_payout_attempt_stripe_id"), table_name="payout_attempt")
    op.drop_index(op.f("ix_payout_attempt_org_id"), table_name="payout_attempt")
    op.drop_table("payout_attempt")
    op.drop_table("stripe_account")
    op.drop_table("stripe_event_cursor")
    op.drop_table("stripe_event")
