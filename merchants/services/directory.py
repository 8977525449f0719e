"""The partner directory: where a campaign owner finds partners to invite."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import any_, func, literal
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Campaign, CampaignParticipant
from coalition.merchants.models import Organization, Store
from coalition.platform.auth import Principal


@dataclass(frozen=True, slots=True)
class Partner:
    organization: Organization
    store_count: int
    running_campaigns: list[Campaign]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_partners(
    session: AsyncSession,
    principal: Principal,
    *,
    industry: str | None,
    city: str | None,
    name: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Partner], int]:
    """Active partner merchants (carrier staff may also look at other statuses)."""
    stores = (
        select(col(Store.org_id), func.count().label("store_count"))
        .where(col(Store.status) == "active")
        .group_by(col(Store.org_id))
        .subquery()
    )
    query = select(Organization).where(col(Organization.kind) == "merchant")
    if principal.sees_all_tenants and status:
        query = query.where(col(Organization.status) == status)
    elif not principal.sees_all_tenants or status is None:
        query = query.where(col(Organization.status) == "active")
    if industry:
        query = query.where(col(Organization.industry) == industry)
    if city:
        query = query.where(literal(city) == any_(col(Organization.cities)))
    if name:
        pattern = f"%{_escape_like(name)}%"
        query = query.where(
            col(Organization.name).ilike(pattern, escape="\\")
            | col(Organization.legal_name).ilike(pattern, escape="\\")
        )
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.add_columns(func.coalesce(stores.c.store_count, 0))
        .outerjoin(stores, stores.c.org_id == col(Organization.id))
        .order_by(col(Organization.name), col(Organization.id))
        .limit(limit)
        .offset(offset)
    )
    found = rows.all()
    running = await _running_campaigns(session, [org.id for org, _ in found])
    return [Partner(org, int(count), running.get(org.id, [])) for org, count in found], int(total)


async def _running_campaigns(
    session: AsyncSession, org_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Campaign]]:
    """The active joint campaigns each of these organizations funds (one query for the page)."""
    rows = await session.execute(
        select(col(CampaignParticipant.org_id), Campaign)
        .join(Campaign, col(Campaign.id) == col(CampaignParticipant.campaign_id))
        .where(col(CampaignParticipant.org_id).in_(org_ids), col(Campaign.status) == "active")
        .order_by(col(Campaign.ends_at), col(Campaign.id))
    )
    running: dict[uuid.UUID, list[Campaign]] = {}
    for org_id, campaign in rows.all():
        running.setdefault(org_id, []).append(campaign)
    return running


@dataclass(frozen=True, slots=True)
class StoreGroup:
    """One organization's active stores, as a campaign's builder lists them."""

    org_id: uuid.UUID
    org_name: str
    stores: list[Store]


async def participant_stores(
    session: AsyncSession, principal: Principal, org_ids: Sequence[uuid.UUID]
) -> list[StoreGroup]:
    """The active stores of these organizations, one group each in the order given: the
    caller's own organization and active partners of the directory, the organizations a
    campaign of the caller can be redeemed at. Any other organization is left out."""
    wanted = list(dict.fromkeys(org_ids))
    if not wanted:
        return []
    orgs = await session.execute(
        select(col(Organization.id), col(Organization.name)).where(
            col(Organization.id).in_(wanted),
            (col(Organization.id) == principal.org_id)
            | ((col(Organization.kind) == "merchant") & (col(Organization.status) == "active")),
        )
    )
    names = dict(orgs.tuples().all())
    stores = await session.execute(
        select(Store)
        .where(col(Store.org_id).in_(list(names)), col(Store.status) == "active")
        .order_by(col(Store.name), col(Store.id))
    )
    by_org: dict[uuid.UUID, list[Store]] = {}
    for store in stores.scalars():
        by_org.setdefault(store.org_id, []).append(store)
    return [StoreGroup(o, names[o], by_org.get(o, [])) for o in wanted if o in names]


async def store_names(
    session: AsyncSession, store_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Stores by id, named (a campaign's redeemable stores, for those who may read it)."""
    if not store_ids:
        return {}
    rows = await session.execute(
        select(col(Store.id), col(Store.name)).where(col(Store.id).in_(set(store_ids)))
    )
    return dict(rows.tuples().all())
