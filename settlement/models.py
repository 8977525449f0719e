"""Tables of the settlement domain: the double-entry ledger.

- `ledger_account`: one per organization, purpose and currency (created on first use).
- `journal_entry`: one balanced event (a redemption, a reversal, a fee ...) with a unique
  idempotency key, so an event is written exactly once whatever retries happen.
- `ledger_posting`: the entry's lines, signed (debit positive, credit negative). Every posting
  carries `org_id`, so the ledger can be distributed by organization.

The database enforces what the code also checks (see migration 0004): an entry's postings sum
to zero per currency and there are at least two of them (a deferred constraint trigger, checked
at commit), and entries and postings are append-only (UPDATE and DELETE are refused): a mistake
is corrected by a new entry. A posting's organization and currency are those of its account (a
composite foreign key). What the accounts mean and how they are signed: `settlement/domain.py`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    UniqueConstraint,
    Uuid,
)
from sqlmodel import Field, SQLModel

from coalition.merchants.models import fk, org_fk
from coalition.platform.db import id_field, timestamp_field

ACCOUNT_PURPOSES = (
    "partner_receivable",
    "partner_payable",
    "fee_payable",
    "fee_revenue",
    "payout_clearing",
    "cash",
)
ENTRY_KINDS = ("redemption", "reversal", "fee", "transfer", "collection", "adjustment")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class LedgerAccount(SQLModel, table=True):
    """An organization's account for one purpose in one currency."""

    __tablename__ = "ledger_account"
    __table_args__ = (
        UniqueConstraint("org_id", "purpose", "currency"),
        # The target of the postings' composite key: a posting's org and currency are its account's.
        UniqueConstraint("id", "org_id", "currency"),
        CheckConstraint(_in("purpose", ACCOUNT_PURPOSES), name="purpose"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    )

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk(index=False)  # the unique (org_id, purpose, currency) serves
    purpose: str = Field(max_length=32)
    currency: str = Field(max_length=3)
    created_at: datetime = timestamp_field(now=True)


class JournalEntry(SQLModel, table=True):
    """One balanced money event. Never changed: corrections are new entries."""

    __tablename__ = "journal_entry"
    __table_args__ = (
        CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
        CheckConstraint(
            "kind NOT IN ('redemption', 'reversal') OR redemption_id IS NOT NULL",
            name="redemption_id",
        ),
    )

    id: uuid.UUID = id_field()
    idempotency_key: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=16)
    occurred_at: datetime = timestamp_field(index=True)
    campaign_id: uuid.UUID | None = fk("campaign.id", nullable=True)
    # The redemption this entry belongs to (a plain id: the redemption table comes later).
    redemption_id: uuid.UUID | None = Field(default=None, index=True)
    memo: str | None = Field(default=None, max_length=500)
    created_at: datetime = timestamp_field(now=True)


class LedgerPosting(SQLModel, table=True):
    """One line of an entry: a signed amount (debit positive, credit negative) on an account."""

    __tablename__ = "ledger_posting"
    __table_args__ = (
        ForeignKeyConstraint(
            ["account_id", "org_id", "currency"],
            ["ledger_account.id", "ledger_account.org_id", "ledger_account.currency"],
            ondelete="RESTRICT",
        ),
        CheckConstraint("amount <> 0", name="amount"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        # Entries touching an organization (its statements, its entries by period).
        Index("ix_ledger_posting_org_id_entry_id", "org_id", "entry_id"),
    )

    id: uuid.UUID = id_field()
    entry_id: uuid.UUID = fk("journal_entry.id")
    account_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False, index=True))
    org_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
