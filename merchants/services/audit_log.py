"""Reading the audit log: an org's admins see their org's entries, carrier admins all of them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.platform.audit import AuditEntry
from coalition.platform.auth import Principal


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None,
    action: str | None,
    subject_id: uuid.UUID | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[AuditEntry], int]:
    query = select(AuditEntry)
    if not (principal.is_carrier and principal.role == "admin"):
        query = query.where(col(AuditEntry.org_id) == principal.org_id)
    if org_id:
        query = query.where(col(AuditEntry.org_id) == org_id)
    if action:
        query = query.where(col(AuditEntry.action) == action)
    if subject_id:
        query = query.where(col(AuditEntry.subject_id) == subject_id)
    if since:
        query = query.where(col(AuditEntry.at) >= since)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)
