"""coupon bulk shape: only the indexes coupon queries need, no per-row foreign keys; issuance
progress as a row cursor

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Bulk issuance writes a million coupons at a time, and every index and per-row check on
`coupon` is paid a million times (measured: a COPY of 1,000,000 coupons took 20 s with the
six indexes of 0003 and 37 s with its two foreign keys as well).

- The unique index becomes (customer_id, campaign_id, holder_seq): the per-customer limit
  (the n-th coupon of a customer in a campaign) as before, and by its first column the
  wallet, so `ix_coupon_customer` (customer_id, campaign_id) goes.
- The foreign keys coupon.campaign_id -> campaign and coupon.customer_id -> customer go. A
  foreign key is a trigger and a lookup per inserted row; coupons are to be partitioned by
  campaign. The references are kept by the only code paths that write coupons: a claim's
  customer comes from a verified customer token (customers are never deleted) and its campaign
  is read in the claim's transaction; a bulk issuance's targets are checked against `customer`
  at upload and the campaign row is held FOR SHARE while each chunk is written. No code path
  deletes a campaign or a customer.
- Indexes kept: the primary key, the code (the till's lookup), ix_coupon_expiry (the sweep),
  ix_coupon_campaign_status (an ended campaign's release, ended campaigns with open coupons).
- issue_batch.done_through_row replaces issue_batch_target.coupon_id: each chunk moves the
  cursor in its own transaction instead of updating every target row (a second write of every
  row); the coupons of a batch carry its `batch_id`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_coupon_campaign_id_campaign", "coupon", type_="foreignkey")
    op.drop_constraint("fk_coupon_customer_id_customer", "coupon", type_="foreignkey")
    op.create_unique_constraint(
        "uq_coupon_customer_id_campaign_id_holder_seq",
        "coupon",
        ["customer_id", "campaign_id", "holder_seq"],
    )
    op.drop_constraint("uq_coupon_campaign_id_customer_id_holder_seq", "coupon", type_="unique")
    op.drop_index("ix_coupon_customer", table_name="coupon")
    op.add_column(
        "issue_batch",
        sa.Column("done_through_row", sa.Integer(), nullable=False, server_default="0"),
    )
    # Batches that ran before: settled through the last row that has its coupon.
    op.execute(
        "UPDATE issue_batch b SET done_through_row = coalesce(("
        "SELECT max(t.row_number) FROM issue_batch_target t "
        "WHERE t.batch_id = b.id AND t.coupon_id IS NOT NULL), 0)"
    )
    op.alter_column("issue_batch", "done_through_row", server_default=None)
    op.drop_column("issue_batch_target", "coupon_id")


def downgrade() -> None:
    op.add_column("issue_batch_target", sa.Column("coupon_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE issue_batch_target t SET coupon_id = c.id FROM coupon c "
        "WHERE c.batch_id = t.batch_id AND c.customer_id = t.customer_id"
    )
    op.drop_column("issue_batch", "done_through_row")
    op.create_index("ix_coupon_customer", "coupon", ["customer_id", "campaign_id"], unique=False)
    op.create_unique_constraint(
        "uq_coupon_campaign_id_customer_id_holder_seq",
        "coupon",
        ["campaign_id", "customer_id", "holder_seq"],
    )
    op.drop_constraint("uq_coupon_customer_id_campaign_id_holder_seq", "coupon", type_="unique")
    op.create_foreign_key(
        "fk_coupon_customer_id_customer",
        "coupon",
        "customer",
        ["customer_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_foreign_key(
        "fk_coupon_campaign_id_campaign",
        "coupon",
        "campaign",
        ["campaign_id"],
        ["id"],
        ondelete="RESTRICT",
    )
