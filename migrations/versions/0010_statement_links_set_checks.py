"""statement links: checked once per close, not once per row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

A close links every pending (entry, organization, currency) to its statement in one INSERT:
millions of rows at scale. Each row paid two foreign-key checks (row-level constraint
triggers, one index probe each into `journal_entry` and `statement`), which made most of the
close's cost. Their guarantees now come from set-based checks:

- `statement_entry_check` (statement-level AFTER INSERT on `statement_entry`, over the
  inserted rows): every link names an existing `open` statement of the same organization
  and currency (one join with the statement table, which has few rows) and an existing
  journal entry (one anti-join); it replaces `statement_entry_open_only` and both foreign
  keys. The journal is append-only (`journal_entry_append_only`), so an entry that existed
  at link time exists forever;
- `statement_keep_linked` (BEFORE DELETE on `statement`): a statement holding links cannot
  be deleted (what the RESTRICT foreign key said; closed ones already cannot be).

The primary key (entry, organization, currency) still puts each entry in exactly one
statement.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UPGRADE = (
    "DROP TRIGGER statement_entry_open_only ON statement_entry",
    """
    CREATE FUNCTION statement_entry_check() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        bad uuid;
    BEGIN
        SELECT a.statement_id INTO bad FROM added a
            LEFT JOIN statement s
                ON s.id = a.statement_id AND s.org_id = a.org_id AND s.currency = a.currency
            WHERE s.id IS NULL OR s.status <> 'open' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'statement %: not an open statement of the linked organization and currency', bad
                USING ERRCODE = 'restrict_violation';
        END IF;
        SELECT a.entry_id INTO bad FROM added a
            WHERE NOT EXISTS (SELECT 1 FROM journal_entry e WHERE e.id = a.entry_id) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'journal entry % does not exist', bad
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER statement_entry_check
        AFTER INSERT ON statement_entry REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION statement_entry_check()
    """,
    """
    CREATE FUNCTION statement_keep_linked() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM statement_entry se WHERE se.statement_id = OLD.id) THEN
            RAISE EXCEPTION 'statement % holds entries: it cannot be deleted', OLD.id
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END
    $$
    """,
    """
    CREATE TRIGGER statement_keep_linked
        BEFORE DELETE ON statement
        FOR EACH ROW EXECUTE FUNCTION statement_keep_linked()
    """,
)

DOWNGRADE = (
    "DROP TRIGGER statement_keep_linked ON statement",
    "DROP FUNCTION statement_keep_linked()",
    "DROP TRIGGER statement_entry_check ON statement_entry",
    "DROP FUNCTION statement_entry_check()",
    """
    CREATE TRIGGER statement_entry_open_only
        AFTER INSERT ON statement_entry REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION statement_refuse_closed_insert()
    """,
)


def upgrade() -> None:
    op.drop_constraint(
        "fk_statement_entry_entry_id_journal_entry", "statement_entry", type_="foreignkey"
    )
    op.drop_constraint(
        "fk_statement_entry_statement_id_statement", "statement_entry", type_="foreignkey"
    )
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
    op.create_foreign_key(
        "fk_statement_entry_statement_id_statement",
        "statement_entry",
        "statement",
        ["statement_id", "org_id", "currency"],
        ["id", "org_id", "currency"],
        ondelete="RESTRICT",
    )
    op.create_foreign_key(
        "fk_statement_entry_entry_id_journal_entry",
        "statement_entry",
        "journal_entry",
        ["entry_id"],
        ["id"],
        ondelete="RESTRICT",
    )
