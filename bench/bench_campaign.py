"""Shared by the benchmarks: a carrier and a café with an active joint campaign (60/40),
written straight to the database with its claim slots open. The workflow itself is tested in
the suite; the benchmarks only need a campaign that is running."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.domain import Offer, offer_to_json
from coalition.campaigns.models import Campaign, CampaignParticipant
from coalition.campaigns.services import slots
from coalition.merchants.services import organizations
from coalition.platform.db import utcnow


async def running_campaign(
    session: AsyncSession,
    *,
    name: str,
    quantity: int,
    budget: int,
    offer: Offer,
    days: int,
    per_customer_limit: int = 1,
) -> uuid.UUID:
    carrier = await organizations.create_organization(
        session, kind="carrier", name="Bench Mobile", industry="telecom"
    )
    cafe = await organizations.create_organization(
        session, kind="merchant", name="Bench Café", industry="cafe"
    )
    now = utcnow()
    campaign = Campaign(
        owner_org_id=carrier.id,
        name=name,
        status="active",
        currency=offer.currency,
        timezone="Asia/Shanghai",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=days),
        offer=offer_to_json(offer),
        total_quantity=quantity,
        total_budget=budget,
        per_customer_limit=per_customer_limit,
        terms_version=1,
        activated_at=now,
    )
    session.add(campaign)
    await session.flush()
    for position, (org_id, share) in enumerate(((carrier.id, 6000), (cafe.id, 4000))):
        session.add(
            CampaignParticipant(
                campaign_id=campaign.id,
                org_id=org_id,
                position=position,
                share_bp=share,
                accepted_version=1,
            )
        )
    await session.flush()
    await slots.open_slots(
        session, campaign.id, quantity=quantity, budget=budget, funder_caps=[None, None]
    )
    return campaign.id
