"""Organizations, their users, and the refresh tokens those users hold."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Uuid, text
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
USER_STATUSES = ("invited", "active", "deactivated")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def org_fk(*, index: bool = True) -> uuid.UUID:
    """The tenant column every tenant-owned row carries."""
    return Field(  # type: ignore[no-any-return]
        sa_column=Column(
            Uuid, ForeignKey("organization.id", ondelete="RESTRICT"), nullable=False, index=index
        )
    )


class Organization(SQLModel, table=True):
    __tablename__ = "organization"
    __table_args__ = (
        CheckConstraint(_in("kind", ORG_KINDS), name="kind"),
        CheckConstraint(_in("status", ORG_STATUSES), name="status"),
        CheckConstraint(_in("industry", INDUSTRIES), name="industry"),
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
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    stripe_account_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(now=True)


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
