"""issuance targets as one row of arrays per chunk

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

An upload of 1,000,000 customer ids wrote 1,000,000 `issue_batch_target` rows (a heap tuple
and a primary-key entry each: 6.8 s of a 35 s bulk issuance) and then deleted the unknown
customers' rows with an anti-join over all of them (4.6 s).

- `issue_batch_chunk` holds a batch's accepted targets in upload order, up to 25,000 per row:
  the line numbers (`row_numbers`, ascending) and the customers (`customer_ids`) as two
  arrays of the same length, and the chunk's first and last line number (`first_row`,
  `last_row`), so the job finds the chunk after its cursor by the primary key.
- Existing targets are moved into chunks (numbered in line order); `issue_batch_target` goes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 25_000


def upgrade() -> None:
    op.create_table(
        "issue_batch_chunk",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=False),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("last_row", sa.Integer(), nullable=False),
        sa.Column("row_numbers", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("customer_ids", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.CheckConstraint(
            "cardinality(row_numbers) = cardinality(customer_ids)",
            name=op.f("ck_issue_batch_chunk_aligned"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["issue_batch.id"],
            name=op.f("fk_issue_batch_chunk_batch_id_issue_batch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "chunk_no", name=op.f("pk_issue_batch_chunk")),
    )
    op.execute(
        "INSERT INTO issue_batch_chunk "
        "(batch_id, chunk_no, first_row, last_row, row_numbers, customer_ids) "
        "SELECT batch_id, n / " + str(CHUNK) + ", min(row_number), max(row_number), "
        "array_agg(row_number ORDER BY row_number), array_agg(customer_id ORDER BY row_number) "
        "FROM (SELECT batch_id, row_number, customer_id, "
        "row_number() OVER (PARTITION BY batch_id ORDER BY row_number) - 1 AS n "
        "FROM issue_batch_target) t GROUP BY batch_id, n / " + str(CHUNK)
    )
    op.drop_table("issue_batch_target")


def downgrade() -> None:
    op.create_table(
        "issue_batch_target",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["issue_batch.id"],
            name=op.f("fk_issue_batch_target_batch_id_issue_batch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "row_number", name=op.f("pk_issue_batch_target")),
    )
    op.execute(
        "INSERT INTO issue_batch_target (batch_id, row_number, customer_id) "
        "SELECT k.batch_id, u.row_number, u.customer_id FROM issue_batch_chunk k, "
        "unnest(k.row_numbers, k.customer_ids) AS u(row_number, customer_id)"
    )
    op.drop_table("issue_batch_chunk")
