"""ledger triggers by key: each check one index lookup, whatever the tables' statistics said

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

Every redemption fires the ledger's triggers (migrations 0004 and 0008) once per entry and
posting. Measured per redemption on a fresh database, they made most of PostgreSQL's work,
growing with the journal:

- `statement_queue_postings` joined the inserted postings to `journal_entry` by scanning the
  whole journal: the plan a function caches at its first call is kept by that connection,
  and a first call while the journal is small (a new deployment, or any table the last
  ANALYZE saw nearly empty) picks the scan;
- `ledger_check_entry_balanced` read the entry's postings twice (a count, then the sums per
  currency).

Now the queue function plans with sequential scans disabled (it only ever looks entries up by
their primary key, so an index lookup is the right plan at any size), and the balance check
reads the postings once, also by the entry's index. Same guarantees, same messages and error
codes: every entry written in a transaction has at least two postings and balances per
currency at commit, and only entries of statement kinds are queued for statements.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


STATEMENT_KINDS = "('redemption', 'reversal', 'fee', 'adjustment')"

BALANCE_CHECK = """
    CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_seqscan = off
    AS $$
    DECLARE
        target uuid;
        postings integer;
        bad_currency text;
        bad_total numeric;
    BEGIN
        IF TG_TABLE_NAME = 'journal_entry' THEN
            target := NEW.id;
        ELSE
            target := NEW.entry_id;
        END IF;
        SELECT coalesce(sum(t.n), 0)::integer,
               (array_agg(t.currency ORDER BY t.currency) FILTER (WHERE t.total <> 0))[1],
               (array_agg(t.total ORDER BY t.currency) FILTER (WHERE t.total <> 0))[1]
            INTO postings, bad_currency, bad_total
            FROM (
                SELECT p.currency, sum(p.amount) AS total, count(*) AS n
                FROM ledger_posting p WHERE p.entry_id = target GROUP BY p.currency
            ) t;
        IF postings < 2 THEN
            RAISE EXCEPTION 'journal entry % has % posting(s): an entry needs at least two',
                target, postings
                USING ERRCODE = 'check_violation';
        END IF;
        IF bad_currency IS NOT NULL THEN
            RAISE EXCEPTION 'journal entry % does not balance: its % postings sum to %',
                target, bad_currency, bad_total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END
    $$
"""

QUEUE = f"""
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
"""  # noqa: S608 - a constant

# What migrations 0004 and 0008 created.
BALANCE_CHECK_BEFORE = """
    CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        target uuid;
        postings integer;
        unbalanced record;
    BEGIN
        IF TG_TABLE_NAME = 'journal_entry' THEN
            target := NEW.id;
        ELSE
            target := NEW.entry_id;
        END IF;
        SELECT count(*) INTO postings FROM ledger_posting WHERE entry_id = target;
        IF postings < 2 THEN
            RAISE EXCEPTION 'journal entry % has % posting(s): an entry needs at least two',
                target, postings
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT currency, sum(amount) AS total INTO unbalanced
            FROM ledger_posting WHERE entry_id = target
            GROUP BY currency HAVING sum(amount) <> 0
            ORDER BY currency LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'journal entry % does not balance: its % postings sum to %',
                target, unbalanced.currency, unbalanced.total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END
    $$
"""

QUEUE_BEFORE = f"""
    CREATE OR REPLACE FUNCTION statement_queue_postings() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO statement_pending (entry_id, org_id, currency)
            SELECT DISTINCT a.entry_id, a.org_id, a.currency
            FROM added a JOIN journal_entry e ON e.id = a.entry_id
            WHERE e.kind IN {STATEMENT_KINDS}
            ON CONFLICT DO NOTHING;
        RETURN NULL;
    END
    $$
"""  # noqa: S608 - a constant


def upgrade() -> None:
    # CREATE OR REPLACE keeps the functions' identity: the triggers calling them stay as
    # they are. A replaced function's SET clause is replaced too (so the downgrade's plain
    # definitions drop it again).
    op.execute(BALANCE_CHECK)
    op.execute(QUEUE)


def downgrade() -> None:
    op.execute("ALTER FUNCTION ledger_check_entry_balanced() RESET ALL")
    op.execute("ALTER FUNCTION statement_queue_postings() RESET ALL")
    op.execute(BALANCE_CHECK_BEFORE)
    op.execute(QUEUE_BEFORE)
