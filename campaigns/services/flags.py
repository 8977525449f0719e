"""Redemptions flagged for review (written by the redemption itself, see
`redemptions.record_redemption`): listed for carrier staff (all of them) and for the merchants
involved (their own part only), and marked reviewed by carrier staff. A flag never blocks."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import ColumnElement, func, literal
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Redemption, RedemptionFlag
from coalition.campaigns.schemas.redemptions import FlagRead
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Forbidden, NotFound
from coalition.platform.jobs import commit

FlagStatus = Literal["open", "reviewed"]


class FlagNotFound(NotFound):
    code, title = "flag_not_found", "Flag not found"


def _visible(principal: Principal) -> ColumnElement[bool]:
    """A merchant sees the flags naming its organization."""
    return literal(principal.org_id) == func.any(col(RedemptionFlag.org_ids))


async def _reads(
    session: AsyncSession, principal: Principal, flags: list[RedemptionFlag]
) -> list[FlagRead]:
    own: set[uuid.UUID] | None = None
    if not principal.sees_all_tenants:
        ids = {r for flag in flags for r in flag.redemption_ids}
        own = set(
            (
                await session.execute(
                    select(col(Redemption.id)).where(
                        col(Redemption.id).in_(ids), col(Redemption.org_id) == principal.org_id
                    )
                )
            ).scalars()
        )
    return [
        FlagRead(
            id=flag.id,
            rule=flag.rule,
            status=flag.status,
            redemption_id=flag.redemption_id,
            customer_id=flag.customer_id if own is None else None,
            org_ids=list(flag.org_ids) if own is None else [principal.org_id],
            redemption_ids=[r for r in flag.redemption_ids if own is None or r in own],
            detail=dict(flag.detail),
            created_at=flag.created_at,
            reviewed_at=flag.reviewed_at,
            reviewed_by=flag.reviewed_by,
            review_note=flag.review_note,
        )
        for flag in flags
    ]


async def list_flags(
    session: AsyncSession,
    principal: Principal,
    *,
    status: FlagStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[FlagRead], int]:
    """Flags newest first, optionally by status."""
    query = select(RedemptionFlag)
    if status is not None:
        query = query.where(col(RedemptionFlag.status) == status)
    if not principal.sees_all_tenants:
        query = query.where(_visible(principal))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(col(RedemptionFlag.created_at).desc(), col(RedemptionFlag.id))
        .limit(limit)
        .offset(offset)
    )
    return await _reads(session, principal, list(rows.scalars())), int(total)


async def _flag(
    session: AsyncSession, principal: Principal, flag_id: uuid.UUID, *, lock: bool = False
) -> RedemptionFlag:
    flag = await session.get(RedemptionFlag, flag_id, with_for_update=lock)
    if flag is None or not (principal.sees_all_tenants or principal.org_id in flag.org_ids):
        raise FlagNotFound()
    return flag


async def get_flag(session: AsyncSession, principal: Principal, flag_id: uuid.UUID) -> FlagRead:
    [read] = await _reads(session, principal, [await _flag(session, principal, flag_id)])
    return read


async def review_flag(
    session: AsyncSession, principal: Principal, flag_id: uuid.UUID, *, note: str | None
) -> FlagRead:
    """Mark a flag reviewed (carrier staff). Reviewing a reviewed flag changes nothing."""
    flag = await _flag(session, principal, flag_id, lock=True)
    if not principal.sees_all_tenants:
        raise Forbidden("Only the carrier's staff review flags")
    if flag.status == "open":
        flag.status, flag.reviewed_at = "reviewed", utcnow()
        flag.reviewed_by, flag.review_note = principal.user_id, note
        await commit(session)
    [read] = await _reads(session, principal, [flag])
    return read
