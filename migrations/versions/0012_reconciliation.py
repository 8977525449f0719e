"""reconciliation: runs, control totals and items; transfer reversals; a reversed transfer
sends its statement back to approved

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

- `reconciliation_run` (one per window), `reconciliation_total` (per run and currency) and
  `reconciliation_item` (a discrepancy, unique per run by its key).
- `payout_reversal`: a transfer reversal Stripe reported, once per reversal id, with the
  ledger's mirror entry.
- `uq_payout_attempt_one_open` covers attempts in progress only (`in_flight`, `processing`):
  after a reversal a statement is paid again while an earlier generation succeeded.
- `statement_guard` (migration 0008) learns one more transition: `paid -> approved`, with the
  settlement (`settled_at`, `settlement_reference`) cleared and nothing else changed, when a
  transfer of the statement is reversed; it is then paid again (the next attempt). Every other
  rule is as before.
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_statements = importlib.import_module("coalition.migrations.versions.0008_statements")
_row = _statements._row
_APPROVALS = (
    "first_approved_by",
    "first_approved_at",
    "second_approved_by",
    "second_approved_at",
    "approved_at",
)
STATEMENT_GUARD_0008 = _statements.TRIGGERS[0].replace(
    "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
)
# A transfer of a paid statement was reversed: back to approved, its settlement cleared and
# its approvals kept (its period and figures were checked just before), so that the payouts
# pay it again. Checked before the set-once rules, which it relaxes for this move only.
_REOPEN = f"""
        IF OLD.status = 'paid' AND NEW.status = 'approved' THEN
            IF {_row("NEW", _APPROVALS)} IS DISTINCT FROM {_row("OLD", _APPROVALS)}
                OR NEW.settled_at IS NOT NULL OR NEW.settlement_reference IS NOT NULL THEN
                RAISE EXCEPTION 'statement %: paid -> approved only clears its settlement', OLD.id
                    USING ERRCODE = 'restrict_violation';
            END IF;
            RETURN NEW;
        END IF;
"""
_BEFORE = "        IF (OLD.first_approved_by IS NOT NULL"
assert STATEMENT_GUARD_0008.count(_BEFORE) == 1
STATEMENT_GUARD_0012 = STATEMENT_GUARD_0008.replace(_BEFORE, _REOPEN.lstrip("\n") + _BEFORE, 1)


OPEN = "status IN ('in_flight', 'processing')"
OPEN_OR_SUCCEEDED = "status IN ('in_flight', 'processing', 'succeeded')"


def _one_open_attempt(where: str) -> None:
    """At most one attempt of a statement in progress; 0009 also counted succeeded ones, but
    a reversed transfer is paid again by a later generation while an earlier one succeeded."""
    op.drop_index("uq_payout_attempt_one_open", table_name="payout_attempt")
    op.create_index(
        "uq_payout_attempt_one_open",
        "payout_attempt",
        ["statement_id"],
        unique=True,
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.create_table(
        "reconciliation_run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("discrepancies", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')",
            name=op.f("ck_reconciliation_run_status"),
        ),
        sa.CheckConstraint("window_end > window_start", name=op.f("ck_reconciliation_run_window")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_run")),
        sa.UniqueConstraint(
            "window_start", "window_end", name=op.f("uq_reconciliation_run_window_start_window_end")
        ),
    )
    op.create_index(
        "ix_reconciliation_run_window_end", "reconciliation_run", ["window_end"], unique=False
    )
    op.create_table(
        "reconciliation_item",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("side", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("suggested_action", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("statement_id", sa.Uuid(), nullable=True),
        sa.Column("ledger_id", sa.Uuid(), nullable=True),
        sa.Column("ledger_amount", sa.BigInteger(), nullable=True),
        sa.Column("ledger_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("ledger_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("stripe_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("stripe_amount", sa.BigInteger(), nullable=True),
        sa.Column("stripe_balance_amount", sa.BigInteger(), nullable=True),
        sa.Column("stripe_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("stripe_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "category IN ('missing_in_stripe', 'missing_in_ledger', 'amount_mismatch', 'currency_mismatch', 'status_mismatch', 'duplicate')",
            name=op.f("ck_reconciliation_item_category"),
        ),
        sa.CheckConstraint(
            "kind IN ('transfer', 'collection', 'transfer_reversal')",
            name=op.f("ck_reconciliation_item_kind"),
        ),
        sa.CheckConstraint(
            "side IN ('ledger', 'stripe', 'both')", name=op.f("ck_reconciliation_item_side")
        ),
        sa.CheckConstraint(
            "suggested_action IN ('retry_payout', 'ingest_stripe_events', 'reverse_duplicate', 'refund_duplicate', 'wait_for_stripe', 'investigate')",
            name=op.f("ck_reconciliation_item_suggested_action"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_run.id"],
            name=op.f("fk_reconciliation_item_run_id_reconciliation_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_item")),
        sa.UniqueConstraint("run_id", "key", name=op.f("uq_reconciliation_item_run_id_key")),
    )
    op.create_index(
        "ix_reconciliation_item_run_id_org_id",
        "reconciliation_item",
        ["run_id", "org_id"],
        unique=False,
    )
    op.create_table(
        "reconciliation_total",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("ledger_count", sa.Integer(), nullable=False),
        sa.Column("ledger_amount", sa.BigInteger(), nullable=False),
        sa.Column("stripe_count", sa.Integer(), nullable=False),
        sa.Column("stripe_amount", sa.BigInteger(), nullable=False),
        sa.Column("matched_ledger", sa.Integer(), nullable=False),
        sa.Column("matched_stripe", sa.Integer(), nullable=False),
        sa.Column("discrepancies", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_run.id"],
            name=op.f("fk_reconciliation_total_run_id_reconciliation_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "currency", name=op.f("pk_reconciliation_total")),
    )
    op.create_table(
        "payout_reversal",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("attempt_id", sa.Uuid(), nullable=False),
        sa.Column("statement_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("stripe_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("transfer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("stripe_created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payout_reversal_amount_positive")),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["payout_attempt.id"],
            name=op.f("fk_payout_reversal_attempt_id_payout_attempt"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entry.id"],
            name=op.f("fk_payout_reversal_entry_id_journal_entry"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_payout_reversal_org_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statement.id"],
            name=op.f("fk_payout_reversal_statement_id_statement"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_reversal")),
        sa.UniqueConstraint("stripe_id", name=op.f("uq_payout_reversal_stripe_id")),
    )
    op.create_index(
        op.f("ix_payout_reversal_attempt_id"), "payout_reversal", ["attempt_id"], unique=False
    )
    op.create_index(
        op.f("ix_payout_reversal_statement_id"), "payout_reversal", ["statement_id"], unique=False
    )
    op.execute(STATEMENT_GUARD_0012)
    _one_open_attempt(OPEN)


def downgrade() -> None:
    _one_open_attempt(OPEN_OR_SUCCEEDED)
    op.execute(STATEMENT_GUARD_0008)
    op.drop_index(op.f("ix_payout_reversal_statement_id"), table_name="payout_reversal")
    op.drop_index(op.f("ix_payout_reversal_attempt_id"), table_name="payout_reversal")
    op.drop_table("payout_reversal")
    op.drop_table("reconciliation_total")
    op.drop_index("ix_reconciliation_item_run_id_org_id", table_name="reconciliation_item")
    op.drop_table("reconciliation_item")
    op.drop_index("ix_reconciliation_run_window_end", table_name="reconciliation_run")
    op.drop_table("reconciliation_run")
