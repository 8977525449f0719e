"""Payout attempts and Stripe accounts as the finance API shows them."""

from __future__ import annotations

import uuid
from datetime import datetime

from coalition.platform.api import Request, Response


class PayoutRead(Response):
    id: uuid.UUID
    statement_id: uuid.UUID
    org_id: uuid.UUID
    generation: int
    direction: str  # transfer | collection
    idempotency_key: str
    amount: int
    currency: str
    destination: str
    status: str  # in_flight | processing | succeeded | failed | reversed
    stripe_id: str | None
    hold_entry_id: uuid.UUID
    settle_entry_id: uuid.UUID | None
    tries: int
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime


class ConnectedAccountRequest(Request, kw_only=True):
    country: str = "CN"
    email: str | None = None
    refresh_url: str
    return_url: str


class ConnectedAccountRead(Response):
    org_id: uuid.UUID
    connected_account_id: str | None
    onboarding_status: str
    onboarding_url: str | None = None
    onboarding_expires_at: datetime | None = None


class WebhookReceipt(Response):
    event_id: str
    duplicate: bool
