"""statement_pending keyed by series and time: a close takes one index range

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

A close took the organization's whole pending set (every period, every cycle) and looked
each entry up in the journal to learn its time, kind and cycle, once per period closed: the
carrier, in every campaign, re-read about a million pending rows and a million journal rows
per week it closed. Now each pending row carries what the close needs of its entry:

- `cycle` (its campaign's settlement cycle when the entry was written; `monthly` for entries
  without a campaign), `occurred_at`, `kind`, `campaign_id` and `redemption_id`, copied by
  `statement_queue_postings` (the trigger on `ledger_posting`) in the entry's own
  transaction. Journal entries never change, so the copies never go stale;
- the index `(org_id, currency, cycle, occurred_at)` replaces `(org_id, currency)`: the rows
  a close takes (its series, before its period's end) are one index range, and the earliest
  pending time of a series is one index probe.

The upgrade fills the new columns of the rows already queued from the journal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENT_KINDS = "('redemption', 'reversal', 'fee', 'adjustment')"
DEFAULT_CYCLE = "'monthly'"


def queue_postings(source: str) -> str:
    """The statement that queues the (entry, organization, currency) of the postings in
    `source` (a table of `ledger_posting` rows) for statements, with what a close needs of
    the entry; the trigger runs it over each insert's new rows."""
    return f"""
        INSERT INTO statement_pending (
            entry_id, org_id, currency, cycle, occurred_at, kind, campaign_id, redemption_id
        )
            SELECT DISTINCT a.entry_id, a.org_id, a.currency,
                coalesce(c.settlement_cycle, {DEFAULT_CYCLE}), e.occurred_at, e.kind,
                e.campaign_id, e.redemption_id
            FROM {source} a
            JOIN journal_entry e ON e.id = a.entry_id
            LEFT JOIN campaign c ON c.id = e.campaign_id
            WHERE e.kind IN {STATEMENT_KINDS}
            ON CONFLICT DO NOTHING
    """  # noqa: S608 - constants


# The queue only ever looks entries and campaigns up by their primary keys: planned with
# sequential scans off (as migration 0014 set it), a plan cached while the tables were small
# stays an index lookup.
QUEUE_0015 = f"""
    CREATE OR REPLACE FUNCTION statement_queue_postings() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_seqscan = off
    AS $$
    BEGIN
        {queue_postings("added")};
        RETURN NULL;
    END
    $$
"""

QUEUE_0014 = f"""
    CREATE OR REPLACE FUNCTION statement_queue_postings() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_seqscan = off
    AS $$
    BEGIN
        INSERT INTO statement_pending (entry_id, org_id, currency)
            SELECT DISTINCT a.entry_id, a.org_id, a.currency
            FROM added a JOIN journal_entry e ON e.id = a.entry_id
            WHERE e.kind IN {STATEMENT_KINDS}
            ON CONFLICT DO NOTHING;
        RETURN NULL;
    END
    $$
"""  # noqa: S608 - constants

FILL = f"""
    UPDATE statement_pending sp SET
        cycle = coalesce(c.settlement_cycle, {DEFAULT_CYCLE}),
        occurred_at = e.occurred_at,
        kind = e.kind,
        campaign_id = e.campaign_id,
        redemption_id = e.redemption_id
    FROM journal_entry e
    LEFT JOIN campaign c ON c.id = e.campaign_id
    WHERE e.id = sp.entry_id
"""  # noqa: S608 - constants

NEW_COLUMNS = ("cycle", "occurred_at", "kind", "campaign_id", "redemption_id")


def upgrade() -> None:
    op.add_column(
        "statement_pending",
        sa.Column("cycle", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    )
    op.add_column(
        "statement_pending",
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "statement_pending",
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    )
    op.add_column("statement_pending", sa.Column("campaign_id", sa.Uuid(), nullable=True))
    op.add_column("statement_pending", sa.Column("redemption_id", sa.Uuid(), nullable=True))
    op.execute(FILL)
    for column in ("cycle", "occurred_at", "kind"):
        op.alter_column("statement_pending", column, nullable=False)
    op.drop_index("ix_statement_pending_org_id_currency", table_name="statement_pending")
    op.create_index(
        "ix_statement_pending_series",
        "statement_pending",
        ["org_id", "currency", "cycle", "occurred_at"],
        unique=False,
    )
    op.execute(QUEUE_0015)


def downgrade() -> None:
    op.execute(QUEUE_0014)
    op.drop_index("ix_statement_pending_series", table_name="statement_pending")
    op.create_index(
        "ix_statement_pending_org_id_currency",
        "statement_pending",
        ["org_id", "currency"],
        unique=False,
    )
    for column in NEW_COLUMNS:
        op.drop_column("statement_pending", column)
