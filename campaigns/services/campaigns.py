"""Joint campaigns: loading and reading what the caller owns or takes part in, and the read
shapes. Writing is elsewhere: the draft and its checks in `drafts`, the status workflow
(proposal, acceptances, activation, pause and resume, the end, cancellation, the scheduler) in
`workflow`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import cast

from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.domain import CampaignStatus, Funder, Offer, Terms, offer_from_json
from coalition.campaigns.models import (
    Campaign,
    CampaignParticipant,
    CampaignStore,
    CampaignTermsVersion,
)
from coalition.campaigns.schemas.campaigns import (
    Acceptance,
    AudienceRead,
    CampaignRead,
    CampaignSummary,
    FeePayer,
    FeeRead,
    OfferRead,
    ParticipantRead,
    SettlementCycle,
    TermsVersionRead,
    TimeWindowRead,
)
from coalition.merchants.models import Organization
from coalition.platform.auth import Principal
from coalition.platform.errors import Forbidden, NotFound

DRAFT, PROPOSED, APPROVED = CampaignStatus.DRAFT, CampaignStatus.PROPOSED, CampaignStatus.APPROVED
ACTIVE, PAUSED = CampaignStatus.ACTIVE, CampaignStatus.PAUSED
ENDED, CANCELLED = CampaignStatus.ENDED, CampaignStatus.CANCELLED


class NotCampaignOwner(Forbidden):
    code, title = "not_campaign_owner", "Only the campaign's owner may do this"


@dataclass(frozen=True, slots=True)
class LoadedCampaign:
    """A campaign with its participants (in funding `position` order) and redeemable stores
    (empty: every participant's store)."""

    campaign: Campaign
    participants: list[CampaignParticipant]
    store_ids: list[uuid.UUID]
    org_names: dict[uuid.UUID, str]


# --- pure helpers ---------------------------------------------------------------------------


def campaign_offer(campaign: Campaign) -> Offer:
    """The campaign's offer rule (in its currency, with its store list if it names one)."""
    return offer_from_json(campaign.offer)


def campaign_terms(campaign: Campaign, participants: Sequence[CampaignParticipant]) -> Terms:
    """The money terms; `participants` in position order (see `participants_in_order`)."""
    return Terms(
        funders=tuple(Funder(p.org_id, p.share_bp, p.budget_cap) for p in participants),
        total_budget=campaign.total_budget,
        currency=campaign.currency,
        fee_bp=campaign.fee_bp,
        fee_fixed=campaign.fee_fixed,
        fee_payer=cast(FeePayer, campaign.fee_payer),
        settlement_cycle=cast(SettlementCycle, campaign.settlement_cycle),
    )


def iso_utc(moment: datetime) -> str:
    """A moment in ISO 8601, in UTC (as terms versions, events and problems show it)."""
    return moment.astimezone(UTC).isoformat()


def acceptance_of(campaign: Campaign, participant: CampaignParticipant) -> Acceptance:
    """A participant's answer to the campaign's current terms version."""
    if participant.declined_at is not None:
        return "declined"
    if campaign.terms_version and participant.accepted_version == campaign.terms_version:
        return "accepted"
    return "pending"


def clock_text(moment: time) -> str:
    """A time of day as `HH:MM`."""
    return moment.strftime("%H:%M")


def _offer_read(offer: Offer) -> OfferRead:
    return OfferRead(
        kind=offer.kind,
        currency=offer.currency,
        value=offer.value,
        percent_bp=offer.percent_bp,
        cap=offer.cap,
        threshold=offer.threshold,
        min_spend=offer.min_spend,
        valid_from=offer.valid_from,
        valid_until=offer.valid_until,
        valid_days_after_claim=offer.valid_days_after_claim,
        weekdays=sorted(offer.weekdays),
        time_windows=[
            TimeWindowRead(start=clock_text(w.start), end=clock_text(w.end))
            for w in offer.time_windows
        ],
        channels=sorted(offer.channels),
        store_ids=sorted(offer.store_ids, key=str) if offer.store_ids is not None else None,
    )


def campaign_summary(campaign: Campaign) -> CampaignSummary:
    return CampaignSummary(
        id=campaign.id,
        owner_org_id=campaign.owner_org_id,
        name=campaign.name,
        status=campaign.status,
        status_reason=campaign.status_reason,
        currency=campaign.currency,
        timezone=campaign.timezone,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        terms_version=campaign.terms_version,
        total_quantity=campaign.total_quantity,
        total_budget=campaign.total_budget,
        created_at=campaign.created_at,
    )


def campaign_read(loaded: LoadedCampaign) -> CampaignRead:
    campaign = loaded.campaign
    return CampaignRead(
        id=campaign.id,
        owner_org_id=campaign.owner_org_id,
        name=campaign.name,
        description=campaign.description,
        status=campaign.status,
        status_reason=campaign.status_reason,
        terms_version=campaign.terms_version,
        currency=campaign.currency,
        timezone=campaign.timezone,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        code_prefix=campaign.code_prefix,
        offer=_offer_read(campaign_offer(campaign)),
        audience=AudienceRead(
            kind=campaign.audience,
            min_tier=campaign.audience_min_tier,
            max_tier=campaign.audience_max_tier,
            tags=list(campaign.audience_tags),
            on_network_only=campaign.audience_on_network_only,
        ),
        total_quantity=campaign.total_quantity,
        per_customer_limit=campaign.per_customer_limit,
        per_customer_daily_limit=campaign.per_customer_daily_limit,
        reversal_window_days=campaign.reversal_window_days,
        total_budget=campaign.total_budget,
        fee=FeeRead(bp=campaign.fee_bp, fixed=campaign.fee_fixed, payer=campaign.fee_payer),
        settlement_cycle=campaign.settlement_cycle,
        participants=[
            ParticipantRead(
                org_id=p.org_id,
                org_name=loaded.org_names.get(p.org_id, ""),
                position=p.position,
                is_owner=p.org_id == campaign.owner_org_id,
                share_bp=p.share_bp,
                budget_cap=p.budget_cap,
                acceptance=acceptance_of(campaign, p),
                accepted_version=p.accepted_version,
                accepted_at=p.accepted_at,
                declined_at=p.declined_at,
                decline_reason=p.decline_reason,
            )
            for p in loaded.participants
        ],
        store_ids=list(loaded.store_ids),
        created_by=campaign.created_by,
        created_at=campaign.created_at,
        proposed_at=campaign.proposed_at,
        approved_at=campaign.approved_at,
        activated_at=campaign.activated_at,
        ended_at=campaign.ended_at,
    )


def terms_version_read(campaign: Campaign, row: CampaignTermsVersion) -> TermsVersionRead:
    return TermsVersionRead(
        campaign_id=row.campaign_id,
        version=row.version,
        current=row.version == campaign.terms_version,
        terms=dict(row.terms),
        proposed_by=row.proposed_by,
        proposed_at=row.proposed_at,
    )


# --- loading --------------------------------------------------------------------------------


async def participants_in_order(
    session: AsyncSession, campaign_id: uuid.UUID
) -> list[CampaignParticipant]:
    """The campaign's funders in `position` order (the order of `ClaimSlot.funder_remaining`
    and of the split's tie-breaks)."""
    rows = await session.execute(
        select(CampaignParticipant)
        .where(col(CampaignParticipant.campaign_id) == campaign_id)
        .order_by(col(CampaignParticipant.position))
    )
    return list(rows.scalars())


async def campaign_store_ids(session: AsyncSession, campaign_id: uuid.UUID) -> list[uuid.UUID]:
    """The stores the campaign names (empty: every participant's store is redeemable)."""
    rows = await session.execute(
        select(col(CampaignStore.store_id))
        .where(col(CampaignStore.campaign_id) == campaign_id)
        .order_by(col(CampaignStore.store_id))
    )
    return list(rows.scalars())


async def _org_names(session: AsyncSession, org_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await session.execute(
        select(col(Organization.id), col(Organization.name)).where(
            col(Organization.id).in_(set(org_ids))
        )
    )
    return {row[0]: row[1] for row in rows}


async def load(session: AsyncSession, campaign: Campaign) -> LoadedCampaign:
    """A campaign with its participants and stores (no tenancy check: see `get_loaded`)."""
    participants = await participants_in_order(session, campaign.id)
    return LoadedCampaign(
        campaign=campaign,
        participants=participants,
        store_ids=await campaign_store_ids(session, campaign.id),
        org_names=await _org_names(session, [p.org_id for p in participants]),
    )


async def _may_see(session: AsyncSession, principal: Principal, campaign: Campaign) -> bool:
    if principal.sees_all_tenants or principal.org_id == campaign.owner_org_id:
        return True
    found = await session.execute(
        select(col(CampaignParticipant.org_id)).where(
            col(CampaignParticipant.campaign_id) == campaign.id,
            col(CampaignParticipant.org_id) == principal.org_id,
        )
    )
    return found.first() is not None


async def get_campaign(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Campaign:
    """A campaign the caller's organization owns or takes part in (carrier staff who see every
    tenant: any campaign). Any other campaign answers 404, like one that does not exist."""
    campaign = await session.get(Campaign, campaign_id, with_for_update=for_update)
    if campaign is None or not await _may_see(session, principal, campaign):
        raise NotFound("Campaign not found")
    return campaign


async def get_owned(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> Campaign:
    """The campaign, locked, when the caller's organization owns it."""
    campaign = await get_campaign(session, principal, campaign_id, for_update=True)
    if campaign.owner_org_id != principal.org_id:
        raise NotCampaignOwner()
    return campaign


async def get_loaded(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> LoadedCampaign:
    return await load(session, await get_campaign(session, principal, campaign_id))


async def list_campaigns(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Campaign], int]:
    """Campaigns the caller's organization owns or takes part in, newest first."""
    base = select(Campaign)
    if not principal.sees_all_tenants:
        base = base.where(
            or_(
                col(Campaign.owner_org_id) == principal.org_id,
                col(Campaign.id).in_(
                    select(col(CampaignParticipant.campaign_id)).where(
                        col(CampaignParticipant.org_id) == principal.org_id
                    )
                ),
            )
        )
    if status:
        base = base.where(col(Campaign.status) == status)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(Campaign.created_at).desc(), col(Campaign.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_terms_version(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, version: int
) -> tuple[Campaign, CampaignTermsVersion]:
    campaign = await get_campaign(session, principal, campaign_id)
    row = (
        await session.execute(
            select(CampaignTermsVersion).where(
                col(CampaignTermsVersion.campaign_id) == campaign.id,
                col(CampaignTermsVersion.version) == version,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"The campaign has no terms version {version}")
    return campaign, row
