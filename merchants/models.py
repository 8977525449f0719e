"""Tables of the merchants domain: organizations, staff and identity, stores, POS terminals,
API keys, invitations, and outgoing webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from coalition.platform.db import id_field, timestamp_field

ORG_KINDS = ("carrier", "merchant")
ORG_STATUSES = ("invited", "pending", "active", "suspended", "rejected")
INDUSTRIES = (
    "telecom",
    "cafe",
    "bank",
    "education",
    "retail",
    "dining",
    "travel",
    "other",
)
ROLES = ("admin", "marketing", "finance", "cashier")
# Higher rank = more power; nobody can give themselves a higher rank than they hold.
ROLE_RANK = {"cashier": 1, "finance": 2, "marketing": 2, "admin": 3}
USER_STATUSES = ("invited", "active", "deactivated")
STRIPE_ONBOARDING = ("not_started", "pending", "complete", "restricted")
STORE_STATUSES = ("active", "archived")
TERMINAL_STATUSES = ("active", "revoked")
INVITATION_KINDS = ("org_admin", "staff")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def org_fk(*, index: bool = True) -> Any:
    """The tenant column every tenant-owned row carries."""
    return fk("organization.id", index=index)


def fk(target: str, *, index: bool = True, nullable: bool = False, cascade: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=Column(
            Uuid,
            ForeignKey(target, ondelete="CASCADE" if cascade else "RESTRICT"),
            nullable=nullable,
            index=index,
        ),
    )


def text_array() -> Any:
    return Field(default_factory=list, sa_column=Column(ARRAY(Text), nullable=False))


def jsonb(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(JSONB, nullable=True))
    return Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))


class Organization(SQLModel, table=True):
    __tablename__ = "organization"
    __table_args__ = (
        CheckConstraint(_in("kind", ORG_KINDS), name="kind"),
        CheckConstraint(_in("status", ORG_STATUSES), name="status"),
        CheckConstraint(_in("industry", INDUSTRIES), name="industry"),
        CheckConstraint(
            _in("stripe_onboarding_status", STRIPE_ONBOARDING), name="stripe_onboarding"
        ),
        CheckConstraint("settlement_currency ~ '^[A-Z]{3}$'", name="settlement_currency"),
        # One carrier operates the platform.
        Index(
            "uq_organization_one_carrier",
            "kind",
            unique=True,
            postgresql_where=text("kind = 'carrier'"),
        ),
    )

    id: uuid.UUID = id_field()
    kind: str = Field(max_length=16)
    name: str = Field(max_length=200)
    industry: str = Field(max_length=32)
    status: str = Field(max_length=16, index=True)
    status_reason: str | None = Field(default=None, max_length=500)
    legal_name: str | None = Field(default=None, max_length=200)
    cities: list[str] = text_array()
    logo_url: str | None = Field(default=None, max_length=500)
    description: str | None = Field(default=None, max_length=2000)
    contact_name: str | None = Field(default=None, max_length=120)
    contact_email: str | None = Field(default=None, max_length=254)
    contact_phone: str | None = Field(default=None, max_length=32)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    settlement_currency: str = Field(default="CNY", min_length=3, max_length=3)
    payout_details: dict[str, Any] = jsonb()
    stripe_account_id: str | None = Field(default=None, max_length=64)
    stripe_onboarding_status: str = Field(default="not_started", max_length=16)
    created_at: datetime = timestamp_field(now=True)
    activated_at: datetime | None = timestamp_field(nullable=True)


class User(SQLModel, table=True):
    __tablename__ = "app_user"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint(_in("status", USER_STATUSES), name="status"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    email: str = Field(max_length=254, unique=True)
    display_name: str = Field(max_length=120)
    role: str = Field(max_length=16)
    status: str = Field(default="active", max_length=16)
    password_hash: str | None = Field(default=None, sa_type=String(200))  # type: ignore[call-overload]
    created_at: datetime = timestamp_field(now=True)
    last_login_at: datetime | None = timestamp_field(nullable=True)


class RefreshToken(SQLModel, table=True):
    """One link of a rotating refresh-token family. Only the SHA-256 of the secret is stored."""

    __tablename__ = "refresh_token"
    __table_args__ = (Index("ix_refresh_token_expires_at", "expires_at"),)

    id: uuid.UUID = id_field()
    family_id: uuid.UUID = Field(index=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(max_length=64, unique=True)
    issued_at: datetime = timestamp_field(now=True)
    expires_at: datetime = timestamp_field()
    used_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)


class Invitation(SQLModel, table=True):
    """A one-time, expiring link for an invited user to set a password (and, for the first
    admin of an invited organization, to activate it). Only the SHA-256 of the token is kept."""

    __tablename__ = "invitation"
    __table_args__ = (CheckConstraint(_in("kind", INVITATION_KINDS), name="kind"),)

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    user_id: uuid.UUID = fk("app_user.id", cascade=True)
    kind: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True)
    created_by: uuid.UUID | None = fk("app_user.id", index=False, nullable=True)
    created_at: datetime = timestamp_field(now=True)
    expires_at: datetime = timestamp_field()
    used_at: datetime | None = timestamp_field(nullable=True)


class Store(SQLModel, table=True):
    __tablename__ = "store"
    __table_args__ = (CheckConstraint(_in("status", STORE_STATUSES), name="status"),)

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    name: str = Field(max_length=200)
    address: str = Field(max_length=500)
    city: str = Field(max_length=100, index=True)
    latitude: float | None = None
    longitude: float | None = None
    opening_hours: dict[str, Any] = jsonb()
    status: str = Field(default="active", max_length=16)
    created_at: datetime = timestamp_field(now=True)
    archived_at: datetime | None = timestamp_field(nullable=True)


class Terminal(SQLModel, table=True):
    """A POS device bound to one store."""

    __tablename__ = "terminal"
    __table_args__ = (CheckConstraint(_in("status", TERMINAL_STATUSES), name="status"),)

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    store_id: uuid.UUID = fk("store.id")
    name: str = Field(max_length=120)
    status: str = Field(default="active", max_length=16)
    created_at: datetime = timestamp_field(now=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)
    last_seen_at: datetime | None = timestamp_field(nullable=True)


class TerminalKey(SQLModel, table=True):
    """One key of a terminal, `ctk_<key_id>_<secret>`. A rotation adds a key and gives the old
    one an expiry (the grace period); revoking the terminal revokes all its keys."""

    __tablename__ = "terminal_key"

    id: uuid.UUID = id_field()
    terminal_id: uuid.UUID = fk("terminal.id", cascade=True)
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = timestamp_field(now=True)
    expires_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)


class ApiKey(SQLModel, table=True):
    """A server-to-server key of an organization, `cak_<key_id>_<secret>`, limited to scopes."""

    __tablename__ = "api_key"

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    name: str = Field(max_length=120)
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=64)
    scopes: list[str] = text_array()
    created_by: uuid.UUID | None = fk("app_user.id", index=False, nullable=True)
    created_at: datetime = timestamp_field(now=True)
    last_used_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoint"

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    url: str = Field(max_length=2000)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] = text_array()
    secret: str = Field(max_length=100)  # needed in clear to sign deliveries
    enabled: bool = True
    created_at: datetime = timestamp_field(now=True)
    disabled_at: datetime | None = timestamp_field(nullable=True)


class WebhookDelivery(SQLModel, table=True):
    """One event sent to one endpoint, with its retry state. Attempts are logged below."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        Index("ix_webhook_delivery_endpoint_created", "endpoint_id", "created_at"),
    )

    id: uuid.UUID = id_field()
    org_id: uuid.UUID = org_fk()
    endpoint_id: uuid.UUID = fk("webhook_endpoint.id", index=False, cascade=True)
    event_id: uuid.UUID = Field(index=True)
    event_type: str = Field(max_length=64)
    payload: dict[str, Any] = jsonb()
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = timestamp_field(nullable=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    replay_of: uuid.UUID | None = None
    created_at: datetime = timestamp_field(now=True)
    delivered_at: datetime | None = timestamp_field(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempt"

    id: uuid.UUID = id_field()
    delivery_id: uuid.UUID = fk("webhook_delivery.id", cascade=True)
    attempted_at: datetime = timestamp_field(now=True)
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int = 0
