"""The audit log: who changed what, in which organization, with the before and after state.

Services call `record(...)` in the same transaction as the change, so an entry exists exactly
when the change does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Column, Index
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from coalition.platform.auth import Principal
from coalition.platform.db import id_field, timestamp_field


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_org_at", "org_id", "at"),)

    id: uuid.UUID = id_field()
    at: datetime = timestamp_field(now=True)
    org_id: uuid.UUID  # the organization the subject belongs to
    actor_kind: str = Field(max_length=16)  # user | terminal | api_key | customer | system
    actor_id: uuid.UUID | None = None
    actor_org_id: uuid.UUID | None = None
    action: str = Field(max_length=64)
    subject_type: str = Field(max_length=32)
    subject_id: uuid.UUID
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    request_id: str | None = Field(default=None, max_length=128)


def record(
    session: AsyncSession,
    actor: Principal | None,
    *,
    org_id: uuid.UUID,
    action: str,
    subject_type: str,
    subject_id: uuid.UUID,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry to the current transaction (committed with the change itself)."""
    entry = AuditEntry(
        org_id=org_id,
        actor_kind=actor.kind if actor else "system",
        actor_id=(actor.user_id or actor.subject_id) if actor else None,
        actor_org_id=actor.org_id if actor else None,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        before=before,
        after=after,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
    )
    session.add(entry)
    return entry


def snapshot(obj: object, fields: Iterable[str]) -> dict[str, Any]:
    """The `before` / `after` view of a row: the named attributes, with ids and times as
    strings and lists copied (so a later change of the row cannot alter the entry)."""
    return {name: _jsonable(getattr(obj, name)) for name in fields}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | uuid.UUID):
        return str(value)
    if isinstance(value, list):
        return list(value)
    return value
