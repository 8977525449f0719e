"""Request and response shapes of organizations: onboarding, profile, directory."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from coalition.platform.api import Request, Response

Industry = Literal["cafe", "bank", "education", "retail", "dining", "travel", "other"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
City = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Cities = Annotated[list[City], msgspec.Meta(max_length=50)]
EmailAddress = Annotated[
    str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^\+?[0-9 ()-]{3,32}$")]
Url = Annotated[str, msgspec.Meta(max_length=500, pattern=r"^https?://\S+$")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=256)]


class OrganizationRead(Response):
    id: uuid.UUID
    kind: str
    name: str
    industry: str
    status: str
    status_reason: str | None
    legal_name: str | None
    cities: list[str]
    logo_url: str | None
    description: str | None
    contact_name: str | None
    contact_email: str | None
    contact_phone: str | None
    timezone: str
    settlement_currency: str
    payout_details: dict[str, Any]
    stripe_account_id: str | None
    stripe_onboarding_status: str
    created_at: datetime
    activated_at: datetime | None


class InviteMerchantRequest(Request):
    """The carrier invites a partner; the contact becomes its first admin."""

    name: Name
    industry: Industry
    cities: Cities
    contact_name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    contact_email: EmailAddress
    contact_phone: Phone | None = None
    legal_name: Name | None = None


class MerchantInvitationRead(Response):
    organization: OrganizationRead
    invite_url: str
    invite_token: str
    expires_at: datetime


class ApplyRequest(Request):
    """A merchant applies to join; carrier admins approve or reject."""

    name: Name
    industry: Industry
    cities: Cities
    contact_name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    contact_email: EmailAddress
    password: Password
    contact_phone: Phone | None = None
    legal_name: Name | None = None
    description: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class ReasonRequest(Request):
    reason: Reason


class ProfileUpdate(Request):
    """Fields to change; omitted fields stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    legal_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    cities: Cities | msgspec.UnsetType = msgspec.UNSET
    logo_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=2000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    contact_name: Annotated[str, msgspec.Meta(max_length=120)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    contact_email: EmailAddress | msgspec.UnsetType | None = msgspec.UNSET
    contact_phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    settlement_currency: Currency | msgspec.UnsetType = msgspec.UNSET
    payout_details: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    # Set by the carrier (later by the Stripe Connect onboarding flow itself).
    stripe_account_id: (
        Annotated[str, msgspec.Meta(pattern=r"^acct_[A-Za-z0-9]{6,60}$")] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    stripe_onboarding_status: (
        Literal["not_started", "pending", "complete", "restricted"] | msgspec.UnsetType
    ) = msgspec.UNSET


class RunningCampaign(Response):
    id: uuid.UUID
    name: str
    owner_org_id: uuid.UUID
    ends_at: datetime


class PartnerRead(Response):
    """The public face of a partner in the directory."""

    id: uuid.UUID
    name: str
    industry: str
    status: str
    cities: list[str]
    logo_url: str | None
    description: str | None
    contact_name: str | None
    contact_email: str | None
    store_count: int
    running_campaigns: list[RunningCampaign]  # joint campaigns it takes part in, active now
