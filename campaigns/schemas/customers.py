"""Request and response shapes of customers: one-time codes, customer tokens, the carrier's
subscriber records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from coalition.platform.api import Request, Response

MAX_UPSERT = 1000

# Checked and normalized to E.164 by the service, so that errors name the exact row.
Phone = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=32,
        description="A mobile number: E.164 (`+8613812345678`) or an 11-digit Chinese mobile",
        examples=["+8613812345678"],
    ),
]
OtpCode = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$", description="The 6-digit code")]
Tier = Annotated[int, msgspec.Meta(ge=1, le=7, description="1 to 7 stars")]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s,]+$")]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=50)]


class OtpRequest(Request):
    phone: Phone


class OtpSent(Response):
    """Always the same answer, whether or not the number belongs to a known customer."""

    expires_in: int


class CustomerTokenRequest(Request):
    phone: Phone
    code: OtpCode


class CustomerToken(Response):
    access_token: str
    token_type: str
    expires_in: int
    customer_id: uuid.UUID


class CustomerUpsert(Request):
    phone: Phone
    tier: Tier
    tags: Tags = msgspec.field(default_factory=list)
    on_network: bool = True


class CustomerBulkUpsert(Request):
    """Subscribers as the carrier knows them; each replaces the stored tier, tags and flag."""

    customers: Annotated[list[CustomerUpsert], msgspec.Meta(min_length=1, max_length=MAX_UPSERT)]


class CustomerUpserted(Response):
    id: uuid.UUID
    phone_hint: str | None
    created: bool


class CustomerBulkUpsertResult(Response):
    created: int
    updated: int
    items: list[CustomerUpserted]  # in request order


class CustomerRead(Response):
    id: uuid.UUID
    phone_hint: str | None
    tier: int
    tags: list[str]
    on_network: bool
    created_at: datetime
    updated_at: datetime


class CustomerMe(Response):
    id: uuid.UUID
    phone_hint: str | None
    tier: int
    tags: list[str]
    on_network: bool
