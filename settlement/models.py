"""Tables of the settlement domain: the double-entry ledger.

- `ledger_account`: one per organization, purpose and currency (created on first use).
- `journal_entry`: one balanced event (a redemption, a reversal, a fee ...) with a unique
  idempotency key, so an event is written exactly once whatever retries happen.
- `ledger_posting`: the entry's lines, signed (debit positive, credit negative). Every posting
  carries `org_id`, so the ledger can be distributed by organization.
- `statement`, `statement_entry`, `statement_line`: per organization, currency and settlement
  period, the entries assigned to it at close (each exactly once) and its lines;
  `statement_pending`: what no statement holds yet (migration 0008).
- `payout_attempt`, `payout_reversal`, `stripe_account`, `stripe_event`: settling statements
  through Stripe (migrations 0009, 0012); `reconciliation_run`, `reconciliation_total`,
  `reconciliation_item`: what reconciliation found (migration 0012).

The database enforces what the code also checks (see migration 0004): an entry's postings sum
to zero per currency and there are at least two of them (a deferred constraint trigger, checked
at commit), and entries and postings are append-only (UPDATE and DELETE are refused): a mistake
is corrected by a new entry. A posting's organization and currency are those of its account (a
composite foreign key). What the accounts mean and how they are signed: `settlement/domain.py`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from coalition.merchants.models import fk, org_fk
from coalition.platform.db import id_field, timestamp_field
from coalition.settlement.matching import ACTIONS, CATEGORIES

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


# --- statements ---------------------------------------------------------------------------------

STATEMENT_STATUSES = ("open", "closed", "approved", "paid", "collected", "carried_forward")
SETTLEMENT_CYCLES = ("daily", "weekly", "monthly")
STATEMENT_LINE_KINDS = ("activity", "carried_forward")
# The signed figures of statements and lines (see `settlement.domain.StatementFigures`).
FIGURE_COLUMNS = (
    "shares_receivable",
    "shares_payable",
    "fees_payable",
    "fee_revenue",
    "reversals_amount",
    "adjustments",
)


def _money() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False))


def _net_check(carried: str) -> CheckConstraint:
    return CheckConstraint(f"net = {' + '.join((*FIGURE_COLUMNS, carried))}", name="net")


class Statement(SQLModel, table=True):
    """What one organization and the platform owe each other in one currency for one
    settlement period `[period_start, period_end)` of one cycle (local midnights in
    `timezone`, the organization's at close). Frozen once closed (migration 0008's trigger):
    afterwards only its status moves, along `closed -> approved -> paid | collected |
    carried_forward`, with the approvals and the settlement reference set once; a reversed
    transfer moves it back `paid -> approved`, its settlement cleared, to be paid again
    (migration 0012)."""

    __tablename__ = "statement"
    __table_args__ = (
        UniqueConstraint("org_id", "currency", "cycle", "period_start"),
        # The target of the links' composite key: a link's org and currency are its statement's.
        UniqueConstraint("id", "org_id", "currency"),
        CheckConstraint(_in("status", STATEMENT_STATUSES), name="status"),
        CheckConstraint(_in("cycle", SETTLEMENT_CYCLES), name="cycle"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("period_end > period_start", name="period"),
        _net_check("carried_in"),
        Index("ix_statement_status_period", "status", "period_end"),
    )

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk(index=False)  # the unique (org_id, currency, cycle, ...) serves
    currency: str = Field(max_length=3)
    cycle: str = Field(max_length=16)
    timezone: str = Field(max_length=64)
    period_start: datetime = timestamp_field()
    period_end: datetime = timestamp_field()
    first_day: date = Field(sa_column=Column(Date, nullable=False))
    last_day: date = Field(sa_column=Column(Date, nullable=False))
    status: str = Field(default="open", max_length=16)
    entries: int = 0
    redemptions: int = 0
    reversals: int = 0
    discount: int = _money()
    shares_receivable: int = _money()
    shares_payable: int = _money()
    fees_payable: int = _money()
    fee_revenue: int = _money()
    reversals_amount: int = _money()
    adjustments: int = _money()
    carried_in: int = _money()
    net: int = _money()
    created_at: datetime = timestamp_field(now=True)
    closed_at: datetime | None = timestamp_field(nullable=True)
    closed_by: uuid.UUID | None = None  # the user; None: the schedule
    first_approved_by: uuid.UUID | None = None
    first_approved_at: datetime | None = timestamp_field(nullable=True)
    second_approved_by: uuid.UUID | None = None
    second_approved_at: datetime | None = timestamp_field(nullable=True)
    approved_at: datetime | None = timestamp_field(nullable=True)
    settled_at: datetime | None = timestamp_field(nullable=True)
    settlement_reference: str | None = Field(default=None, max_length=200)


class StatementEntry(SQLModel, table=True):
    """Which statement an entry's postings for one organization and currency belong to: the
    primary key puts each in exactly one statement, assigned explicitly at close (never by a
    watermark), so an entry that commits after a close lands in a later statement. No foreign
    keys (a close links millions of rows): a statement-level trigger checks, once per insert,
    that every link names an existing entry and an open statement of its organization and
    currency, and a statement holding links cannot be deleted (migration 0010)."""

    __tablename__ = "statement_entry"
    __table_args__ = (PrimaryKeyConstraint("entry_id", "org_id", "currency"),)

    entry_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    org_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    currency: str = Field(max_length=3)
    statement_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False, index=True))


class StatementPending(SQLModel, table=True):
    """An entry's postings for one organization and currency that no statement holds yet.
    Written by a trigger on `ledger_posting` in the entry's own transaction (so it exists if
    and only if the entry committed) and consumed by the close that links them: a close reads
    what is pending, never the whole history, and never relies on a watermark.

    The row also carries what the close needs of its entry (the entry is never changed, so
    these copies never go stale): the series' settlement cycle (its campaign's, at the time
    the entry was written, or the default for entries without a campaign), when it occurred,
    its kind, campaign and redemption. The series index `(org_id, currency, cycle,
    occurred_at)` lets a close take exactly the rows before its period's end as one index
    range, without reading the journal or the rows of later periods (migration 0015)."""

    __tablename__ = "statement_pending"
    __table_args__ = (
        PrimaryKeyConstraint("entry_id", "org_id", "currency"),
        Index("ix_statement_pending_series", "org_id", "currency", "cycle", "occurred_at"),
    )

    entry_id: uuid.UUID = fk("journal_entry.id", index=False)
    org_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    currency: str = Field(max_length=3)
    cycle: str = Field(max_length=16)
    occurred_at: datetime = timestamp_field()
    kind: str = Field(max_length=16)
    campaign_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    redemption_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))


class StatementLine(SQLModel, table=True):
    """One line of a statement: its organization's activity in one campaign at one store
    (`activity`), or the net of an earlier statement carried into it (`carried_forward`,
    each earlier statement carried exactly once). Written at close, never changed."""

    __tablename__ = "statement_line"
    __table_args__ = (
        CheckConstraint(_in("kind", STATEMENT_LINE_KINDS), name="kind"),
        CheckConstraint(
            "(kind = 'carried_forward') = (source_statement_id IS NOT NULL)", name="source"
        ),
        _net_check("carried"),
        Index(
            "uq_statement_line_source",
            "source_statement_id",
            unique=True,
            postgresql_where=text("source_statement_id IS NOT NULL"),
        ),
    )

    id: uuid.UUID = id_field()
    statement_id: uuid.UUID = fk("statement.id")
    kind: str = Field(max_length=16)
    campaign_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    store_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    source_statement_id: uuid.UUID | None = fk("statement.id", index=False, nullable=True)
    redemptions: int = 0
    reversals: int = 0
    discount: int = _money()  # discounts given in the line's redemptions (all funders' parts)
    shares_receivable: int = _money()
    shares_payable: int = _money()
    fees_payable: int = _money()
    fee_revenue: int = _money()
    reversals_amount: int = _money()
    adjustments: int = _money()
    carried: int = _money()
    net: int = _money()
    # Each funder's part of `discount`: [{"org_id": ..., "amount": ...}], largest first.
    funder_shares: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )


# --- payouts and collections (migration 0009) -------------------------------------------------

ONBOARDING_STATUSES = ("pending", "complete", "restricted")
PAYOUT_DIRECTIONS = ("transfer", "collection")
PAYOUT_STATUSES = ("in_flight", "processing", "succeeded", "failed", "reversed")


class StripeAccount(SQLModel, table=True):
    """An organization's Stripe identities: the Connect account transfers go to, and the
    customer and saved payment method collections charge."""

    __tablename__ = "stripe_account"
    __table_args__ = (
        CheckConstraint(_in("onboarding_status", ONBOARDING_STATUSES), name="onboarding_status"),
    )

    org_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("organization.id", ondelete="RESTRICT"), primary_key=True)
    )
    connected_account_id: str | None = Field(default=None, max_length=64, unique=True)
    onboarding_status: str = Field(default="pending", max_length=16)
    customer_id: str | None = Field(default=None, max_length=64)
    payment_method_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(now=True)
    updated_at: datetime = timestamp_field(now=True)


class PayoutAttempt(SQLModel, table=True):
    """One attempt (generation) at settling an approved statement through Stripe: a transfer
    to the organization's connected account or a collection from its saved payment method.
    Retries of an attempt reuse its idempotency key; only a definite failure opens the next
    generation. `hold_entry_id`: the ledger hold written before the call; `settle_entry_id`:
    the posting after it (or the release of the hold after a definite failure)."""

    __tablename__ = "payout_attempt"
    __table_args__ = (
        UniqueConstraint("statement_id", "generation"),
        CheckConstraint(_in("direction", PAYOUT_DIRECTIONS), name="direction"),
        CheckConstraint(_in("status", PAYOUT_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("generation >= 1", name="generation"),
        # At most one attempt of a statement in progress. (Several may succeed: a transfer
        # Stripe reverses is paid again by a later generation.)
        Index(
            "uq_payout_attempt_one_open",
            "statement_id",
            unique=True,
            postgresql_where=text("status IN ('in_flight', 'processing')"),
        ),
    )

    id: uuid.UUID = id_field()
    statement_id: uuid.UUID = fk("statement.id", index=False)  # the unique constraint serves
    org_id: uuid.UUID = org_fk()
    generation: int
    direction: str = Field(max_length=16)
    idempotency_key: str = Field(max_length=200, unique=True)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    destination: str = Field(max_length=64)  # connected account (transfer) or customer
    status: str = Field(default="in_flight", max_length=16)
    stripe_id: str | None = Field(default=None, max_length=64, index=True)
    hold_entry_id: uuid.UUID = fk("journal_entry.id", index=False)
    settle_entry_id: uuid.UUID | None = fk("journal_entry.id", index=False, nullable=True)
    tries: int = 0
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    created_at: datetime = timestamp_field(now=True)
    updated_at: datetime = timestamp_field(now=True)


class StripeEvent(SQLModel, table=True):
    """A Stripe event handled once: its id is the key, so a webhook delivered twice, or seen
    both as a webhook and by the polling backstop, is processed once."""

    __tablename__ = "stripe_event"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    source: str = Field(max_length=16)  # webhook | poll
    outcome: str = Field(max_length=200)
    created: datetime = timestamp_field()
    received_at: datetime = timestamp_field(now=True)


class StripeEventCursor(SQLModel, table=True):
    """Where the polling backstop stopped: the newest event id it has listed."""

    __tablename__ = "stripe_event_cursor"

    name: str = Field(primary_key=True, max_length=32)
    event_id: str = Field(max_length=255)
    updated_at: datetime = timestamp_field(now=True)


class PayoutReversal(SQLModel, table=True):
    """Money of a paid transfer that Stripe reports taken back (a transfer reversal), recorded
    once per reversal (its Stripe id is unique) with the ledger's mirror entry
    (`payout:<statement>:<generation>:reversal:<id>`), in the transaction that handles the
    event."""

    __tablename__ = "payout_reversal"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: uuid.UUID = id_field()
    attempt_id: uuid.UUID = fk("payout_attempt.id")
    statement_id: uuid.UUID = fk("statement.id")
    org_id: uuid.UUID = org_fk(index=False)
    stripe_id: str = Field(max_length=64, unique=True)
    transfer_id: str = Field(max_length=64)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    entry_id: uuid.UUID = fk("journal_entry.id", index=False)
    stripe_created: datetime = timestamp_field()
    created_at: datetime = timestamp_field(now=True)


# --- reconciliation (migration 0012) -----------------------------------------------------------

RUN_STATUSES = ("queued", "running", "completed", "failed")
MOVEMENT_KINDS = ("transfer", "collection", "transfer_reversal")
MOVEMENT_STATUSES = ("settled", "pending")
DISCREPANCY_SIDES = ("ledger", "stripe", "both")


class ReconciliationRun(SQLModel, table=True):
    """Reconciliation of one window `[window_start, window_end)`: one row per window (a
    second run of the window, even a concurrent one, works on the same row under its lock).
    `requests` counts the executions asked for (the job of each is enqueued once)."""

    __tablename__ = "reconciliation_run"
    __table_args__ = (
        UniqueConstraint("window_start", "window_end"),
        CheckConstraint("window_end > window_start", name="window"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("ix_reconciliation_run_window_end", "window_end"),
    )

    id: uuid.UUID = id_field()
    window_start: datetime = timestamp_field()
    window_end: datetime = timestamp_field()
    status: str = Field(default="queued", max_length=16)
    requested_by: uuid.UUID | None = None  # the user; None: the schedule
    requests: int = 0
    matched: int = 0
    discrepancies: int = 0
    started_at: datetime | None = timestamp_field(nullable=True)
    finished_at: datetime | None = timestamp_field(nullable=True)
    error: str | None = Field(default=None, max_length=500)
    created_at: datetime = timestamp_field(now=True)
    updated_at: datetime = timestamp_field(now=True)


class ReconciliationTotal(SQLModel, table=True):
    """A run's control totals in one currency (`settlement.matching.Totals`): movements and
    their signed sum on each side (seen from the platform's balance: transfers out, collections
    and reversals in), how many matched on each side, how many discrepancies."""

    __tablename__ = "reconciliation_total"
    __table_args__ = (PrimaryKeyConstraint("run_id", "currency"),)

    run_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("reconciliation_run.id", ondelete="CASCADE"), nullable=False
        )
    )
    currency: str = Field(max_length=3)
    ledger_count: int = 0
    ledger_amount: int = _money()
    stripe_count: int = 0
    stripe_amount: int = _money()
    matched_ledger: int = 0
    matched_stripe: int = 0
    discrepancies: int = 0


class ReconciliationItem(SQLModel, table=True):
    """One discrepancy of a run: its category, both sides' ids, amounts, currencies and
    statuses (what each side has), and a suggested action. `key` (category and both ids) is
    unique in the run, so running a window again updates its items instead of adding any;
    items no longer found are removed."""

    __tablename__ = "reconciliation_item"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        CheckConstraint(_in("category", CATEGORIES), name="category"),
        CheckConstraint(_in("kind", MOVEMENT_KINDS), name="kind"),
        CheckConstraint(_in("side", DISCREPANCY_SIDES), name="side"),
        CheckConstraint(_in("suggested_action", ACTIONS), name="suggested_action"),
        Index("ix_reconciliation_item_run_id_org_id", "run_id", "org_id"),
    )

    id: uuid.UUID = id_field()
    run_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("reconciliation_run.id", ondelete="CASCADE"), nullable=False
        )
    )
    key: str = Field(max_length=300)
    category: str = Field(max_length=32)
    kind: str = Field(max_length=32)
    side: str = Field(max_length=8)
    suggested_action: str = Field(max_length=32)
    org_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    statement_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    ledger_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    ledger_amount: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ledger_currency: str | None = Field(default=None, max_length=3)
    ledger_status: str | None = Field(default=None, max_length=16)
    stripe_id: str | None = Field(default=None, max_length=64)
    stripe_amount: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    stripe_balance_amount: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    stripe_currency: str | None = Field(default=None, max_length=3)
    stripe_status: str | None = Field(default=None, max_length=16)
    created_at: datetime = timestamp_field(now=True)
    updated_at: datetime = timestamp_field(now=True)
