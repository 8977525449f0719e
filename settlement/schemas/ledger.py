"""Response shapes of the ledger API (read-only: entries are written by the money paths)."""

from __future__ import annotations

import uuid
from datetime import datetime

from coalition.platform.api import Response


class PostingRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    account_id: uuid.UUID
    purpose: str
    amount: int  # minor units: debit positive, credit negative
    currency: str


class EntryRead(Response):
    id: uuid.UUID
    idempotency_key: str
    kind: str
    occurred_at: datetime
    campaign_id: uuid.UUID | None
    redemption_id: uuid.UUID | None
    memo: str | None
    created_at: datetime
    postings: list[PostingRead]


class AccountBalance(Response):
    account_id: uuid.UUID
    org_id: uuid.UUID
    purpose: str
    currency: str
    balance: int  # the sum of the account's postings: debit positive, credit negative
    debits: int  # the sum of its positive postings
    credits: int  # the sum of its negative postings (as a positive number)
    postings: int  # how many


class NetPosition(Response):
    currency: str
    amount: int  # the organization's net position: positive = it is owed, negative = it owes


class BalancesRead(Response):
    org_id: uuid.UUID
    as_of: datetime | None  # postings of entries that occurred before this time (None: all)
    accounts: list[AccountBalance]
    net: list[NetPosition]


class RedemptionLedgerRead(Response):
    """A redemption's entries (the redemption and its reversals, oldest first)."""

    redemption_id: uuid.UUID
    entries: list[EntryRead]
