"""Reconciliation runs, their control totals and items, as the finance API shows them."""

from __future__ import annotations

import uuid
from datetime import datetime

from coalition.platform.api import Request, Response


class ReconciliationRequest(Request, kw_only=True):
    """A window `[window_start, window_end)` to reconcile (whole seconds, with a time zone);
    both or neither: the current UTC day."""

    window_start: datetime | None = None
    window_end: datetime | None = None


class ReconciliationTotalRead(Response):
    currency: str
    ledger_count: int
    ledger_amount: int  # signed, the platform's balance: transfers out, collections in
    stripe_count: int
    stripe_amount: int
    matched_ledger: int
    matched_stripe: int
    discrepancies: int


class ReconciliationRunRead(Response):
    id: uuid.UUID
    window_start: datetime
    window_end: datetime
    status: str  # queued | running | completed | failed
    requested_by: uuid.UUID | None
    requests: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    discrepancies: int  # those the reader may see
    # The whole platform's figures: the carrier's staff only (None for a partner).
    matched: int | None
    totals: list[ReconciliationTotalRead] | None


class ReconciliationItemRead(Response):
    id: uuid.UUID
    run_id: uuid.UUID
    category: str
    kind: str  # transfer | collection | transfer_reversal
    side: str  # ledger | stripe | both: whose movement it stands for
    suggested_action: str
    org_id: uuid.UUID | None
    statement_id: uuid.UUID | None
    ledger_id: uuid.UUID | None  # the payout attempt, or the recorded transfer reversal
    ledger_amount: int | None
    ledger_currency: str | None
    ledger_status: str | None  # settled | pending
    stripe_id: str | None
    stripe_amount: int | None
    stripe_balance_amount: int | None  # what its balance transaction moved
    stripe_currency: str | None
    stripe_status: str | None
    created_at: datetime
    updated_at: datetime
