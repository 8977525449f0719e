"""Campaign figures kept as they happen (per local day and slot), read as sums: the stats
endpoint never scans coupons."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal_column
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import SLOTS, CampaignDailyStat, ClaimSlot, Redemption
from coalition.merchants.models import Organization, Store

COUNTERS = ("issued", "claimed", "redeemed", "expired", "voided", "discount")


def local_day(moment: datetime, timezone: str) -> date:
    return moment.astimezone(ZoneInfo(timezone)).date()


# Element-wise sum of the stored and the added per-funder amounts (either may be shorter).
ADD_FUNDER_SPENT = (
    "ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest("
    "campaign_daily_stat.funder_spent, EXCLUDED.funder_spent) WITH ORDINALITY AS t(a, b, i) "
    "ORDER BY i)"
)


async def bump(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    day: date,
    slot: int,
    *,
    funder_spent: Sequence[int] = (),
    **counts: int,
) -> None:
    """Add to a day's figures (in the caller's transaction); `funder_spent` adds to each
    funder's spending, in participant order."""
    unknown = set(counts) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown counters {unknown}")
    values = {name: counts.get(name, 0) for name in COUNTERS}
    statement = insert(CampaignDailyStat).values(
        campaign_id=campaign_id,
        day=day,
        slot=slot % SLOTS,
        funder_spent=list(funder_spent),
        **values,
    )
    changes: dict[str, Any] = {
        name: getattr(CampaignDailyStat, name) + getattr(statement.excluded, name)
        for name in counts
    }
    if funder_spent:
        changes["funder_spent"] = literal_column(ADD_FUNDER_SPENT)
    await session.execute(
        statement.on_conflict_do_update(index_elements=["campaign_id", "day", "slot"], set_=changes)
    )


async def funder_spent(session: AsyncSession, campaign_id: uuid.UUID, funders: int) -> list[int]:
    """Each funder's spending so far (participant order): a sum over the campaign's daily
    figure rows (days x slots), never over coupons or redemptions."""
    rows = await session.execute(
        select(col(CampaignDailyStat.funder_spent)).where(
            col(CampaignDailyStat.campaign_id) == campaign_id
        )
    )
    totals = [0] * funders
    for (spent,) in rows:
        for i, amount in enumerate(spent[:funders]):
            totals[i] += amount
    return totals


async def daily(session: AsyncSession, campaign_id: uuid.UUID) -> list[tuple[date, dict[str, int]]]:
    columns = [func.sum(getattr(CampaignDailyStat, name)) for name in COUNTERS]
    rows = await session.execute(
        select(col(CampaignDailyStat.day), *columns)  # type: ignore[call-overload]
        .where(col(CampaignDailyStat.campaign_id) == campaign_id)
        .group_by(col(CampaignDailyStat.day))
        .order_by(col(CampaignDailyStat.day))
    )
    return [
        (row[0], {n: int(v or 0) for n, v in zip(COUNTERS, row[1:], strict=True)}) for row in rows
    ]


async def slot_totals(session: AsyncSession, campaign_id: uuid.UUID) -> tuple[int, int, list[int]]:
    """Remaining quantity, remaining budget, and what each funder's coupons hold now."""
    slots = (
        (await session.execute(select(ClaimSlot).where(col(ClaimSlot.campaign_id) == campaign_id)))
        .scalars()
        .all()
    )
    if not slots:
        return 0, 0, []
    held = [sum(values) for values in zip(*(s.funder_held for s in slots), strict=True)]
    return (
        sum(s.remaining_quantity for s in slots),
        sum(s.remaining_budget for s in slots),
        held,
    )


@dataclass(frozen=True, slots=True)
class PlaceFigures:
    """Standing redemptions (not fully reversed) of a campaign at one partner or store."""

    org_id: uuid.UUID
    org_name: str
    store_id: uuid.UUID | None  # None: online redemptions, or the partner's total
    store_name: str | None
    redemptions: int
    discount: int  # net of reversed discount


async def redemptions_by_place(
    session: AsyncSession, campaign_id: uuid.UUID
) -> tuple[list[PlaceFigures], list[PlaceFigures]]:
    """The campaign's redemptions by partner and by store, most first: one aggregate over the
    campaign's redemptions (index `ix_redemption_campaign_recent`), never a scan of coupons."""
    count = func.count().label("redemptions")
    discount = func.sum(col(Redemption.discount) - col(Redemption.discount_reversed))
    columns: list[Any] = [
        col(Redemption.org_id),
        col(Organization.name),
        col(Redemption.store_id),
        col(Store.name),
        count,
        discount,
    ]
    rows = await session.execute(
        select(*columns)
        .join(Organization, col(Organization.id) == col(Redemption.org_id))
        .outerjoin(Store, col(Store.id) == col(Redemption.store_id))
        .where(col(Redemption.campaign_id) == campaign_id, col(Redemption.status) != "reversed")
        .group_by(
            col(Redemption.org_id),
            col(Organization.name),
            col(Redemption.store_id),
            col(Store.name),
        )
    )
    stores = [
        PlaceFigures(org_id, org_name, store_id, store_name, int(n), int(d or 0))
        for org_id, org_name, store_id, store_name, n, d in rows.tuples()
    ]
    partners: dict[uuid.UUID, PlaceFigures] = {}
    for place in stores:
        seen = partners.get(place.org_id)
        partners[place.org_id] = PlaceFigures(
            place.org_id,
            place.org_name,
            None,
            None,
            place.redemptions + (seen.redemptions if seen else 0),
            place.discount + (seen.discount if seen else 0),
        )

    def most_first(items: list[PlaceFigures]) -> list[PlaceFigures]:
        return sorted(items, key=lambda p: (-p.redemptions, p.org_name, p.store_name or ""))

    return most_first(list(partners.values())), most_first(stores)
