"""Request and response shapes of the statements API. Money is integer minor units, signed
from the statement organization's point of view (positive: in its favour)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from coalition.platform.api import Request, Response

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Cycle = Literal["daily", "weekly", "monthly"]


class CloseStatementRequest(Request):
    """Close the period of `cycle` that starts on the local day `period_start` (a Monday for
    weekly, the 1st for monthly) in the organization's time zone."""

    org_id: uuid.UUID
    currency: Currency
    cycle: Cycle
    period_start: date


class StatementRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    org_name: str
    currency: str
    cycle: str
    timezone: str
    period_start: datetime  # [period_start, period_end): local midnights in `timezone`
    period_end: datetime
    first_day: date
    last_day: date  # inclusive
    status: str
    entries: int
    redemptions: int
    reversals: int
    discount: int
    shares_receivable: int
    shares_payable: int
    fees_payable: int
    fee_revenue: int
    reversals_amount: int
    adjustments: int
    carried_in: int
    net: int  # > 0: the platform pays the organization; < 0: the organization owes
    settlement: str  # transfer | collection | none
    approvals_needed: int
    closed_at: datetime | None
    closed_by: uuid.UUID | None
    first_approved_by: uuid.UUID | None
    first_approved_at: datetime | None
    second_approved_by: uuid.UUID | None
    second_approved_at: datetime | None
    approved_at: datetime | None
    settled_at: datetime | None
    settlement_reference: str | None


class FunderShareRead(Response):
    org_id: uuid.UUID
    org_name: str | None
    amount: int


class StatementLineRead(Response):
    kind: str  # activity | carried_forward
    campaign_id: uuid.UUID | None
    campaign_name: str | None
    store_id: uuid.UUID | None
    store_name: str | None
    source_statement_id: uuid.UUID | None
    redemptions: int
    reversals: int
    discount: int
    shares_receivable: int
    shares_payable: int
    fees_payable: int
    fee_revenue: int
    reversals_amount: int
    adjustments: int
    carried: int
    net: int
    funder_shares: list[FunderShareRead]


class StatementLinesRead(Response):
    statement_id: uuid.UUID
    currency: str
    by: str  # campaign_store | campaign | store
    items: list[StatementLineRead]
