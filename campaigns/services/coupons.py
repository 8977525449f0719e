"""Coupons: claiming (exactly once per key, never oversold, within every limit), the wallet,
voiding, the expiry sweep that hands reservations back, and the campaign figures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes, domain, qr
from coalition.campaigns.models import (
    Campaign,
    CampaignParticipant,
    CampaignTarget,
    Coupon,
    Customer,
)
from coalition.campaigns.schemas.coupons import (
    CampaignStatsRead,
    CouponRead,
    DailyFigures,
    FunderFigures,
)
from coalition.campaigns.services import figures, slots
from coalition.platform import audit, idempotency
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden, NotFound
from coalition.platform.jobs import commit
from coalition.platform.settings import Settings

REDEEMABLE = ("issued", "claimed")
EXPIRY_BATCH = 1000


class CampaignNotActive(Conflict):
    code, title = "campaign_not_active", "This campaign is not running"


class SoldOut(Conflict):
    code, title = "sold_out", "Every coupon of this campaign has been given out"


class BudgetExhausted(Conflict):
    code, title = "budget_exhausted", "This campaign's budget is used up"


class ClaimLimitReached(Conflict):
    code, title = "claim_limit_reached", "You already hold as many coupons as this campaign allows"


class DailyClaimLimitReached(Conflict):
    code, title = "daily_claim_limit_reached", "You reached today's limit for this campaign"


class NotEligible(Forbidden):
    code, title = "not_eligible", "This offer is not open to you"


class CouponNotFound(NotFound):
    code, title = "coupon_not_found", "Coupon not found"


@dataclass(frozen=True, slots=True)
class Funding:
    """A campaign's funders in split order, with their shares and caps."""

    org_ids: list[uuid.UUID]
    shares_bp: list[int]
    caps: list[int | None]


async def funding_of(session: AsyncSession, campaign_id: uuid.UUID) -> Funding:
    rows = (
        (
            await session.execute(
                select(CampaignParticipant)
                .where(col(CampaignParticipant.campaign_id) == campaign_id)
                .order_by(col(CampaignParticipant.position))
            )
        )
        .scalars()
        .all()
    )
    return Funding(
        org_ids=[p.org_id for p in rows],
        shares_bp=[p.share_bp for p in rows],
        caps=[p.budget_cap for p in rows],
    )


def coupon_read(coupon: Coupon, campaign: Campaign, settings: Settings) -> CouponRead:
    return CouponRead(
        id=coupon.id,
        campaign_id=coupon.campaign_id,
        campaign_name=campaign.name,
        code=coupon.code,
        display_code=codes.display(coupon.code, campaign.code_prefix),
        status=coupon.status,
        currency=campaign.currency,
        max_discount=coupon.reserved_amount,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        claimed_at=coupon.claimed_at,
        redeemed_at=coupon.redeemed_at,
        coupon_url=qr.coupon_url(settings.public_url, coupon.code),
        qr_png=f"/api/v1/wallet/coupons/{coupon.id}/qr.png",
        qr_svg=f"/api/v1/wallet/coupons/{coupon.id}/qr.svg",
    )


def is_eligible(campaign: Campaign, customer: Customer, *, targeted: bool) -> bool:
    if campaign.audience == "targeted":
        return targeted
    if campaign.audience == "segment":
        if campaign.audience_min_tier is not None and customer.tier < campaign.audience_min_tier:
            return False
        if campaign.audience_max_tier is not None and customer.tier > campaign.audience_max_tier:
            return False
        if campaign.audience_tags and not set(campaign.audience_tags) & set(customer.tags):
            return False
        if campaign.audience_on_network_only and not customer.on_network:
            return False
    return True


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


async def claim_coupon(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    idempotency_key: str,
) -> ClaimResult:
    """Give the customer one coupon of a running campaign, exactly once per Idempotency-Key."""
    assert principal.subject_id is not None
    customer_id = principal.subject_id
    scope = idempotency.new_scope("claim", customer_id)
    fingerprint = idempotency.request_fingerprint("POST", f"/campaigns/{campaign_id}/claims", {})
    replay = await idempotency.begin(
        session, scope=scope, key=idempotency_key, fingerprint=fingerprint
    )
    if replay is not None:
        await session.rollback()
        return ClaimResult(replay.status_code, replay.response, replayed=True)

    now = utcnow()
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or campaign.status in ("draft", "proposed", "cancelled"):
        raise NotFound("Campaign not found")
    if campaign.status != "active" or not campaign.starts_at <= now < campaign.ends_at:
        raise CampaignNotActive()
    customer = await session.get_one(Customer, customer_id)
    targeted = (
        campaign.audience == "targeted"
        and (await session.get(CampaignTarget, (campaign_id, customer_id))) is not None
    )
    if not is_eligible(campaign, customer, targeted=targeted):
        raise NotEligible()

    # One claim at a time per customer and campaign; the unique (campaign, customer, seq)
    # index below stays the arbiter should anything bypass this lock.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"claim:{campaign_id}:{customer_id}"},
    )
    day = figures.local_day(now, campaign.timezone)
    held, last_seq, today = (
        await session.execute(
            select(
                func.count().filter(col(Coupon.status) != "void"),
                func.coalesce(func.max(col(Coupon.holder_seq)), 0),
                func.count().filter(col(Coupon.claim_day) == day),
            ).where(col(Coupon.campaign_id) == campaign_id, col(Coupon.customer_id) == customer_id)
        )
    ).one()
    if held >= campaign.per_customer_limit:
        raise ClaimLimitReached()
    if campaign.per_customer_daily_limit is not None and today >= campaign.per_customer_daily_limit:
        raise DailyClaimLimitReached()

    offer = domain.offer_from_json(campaign.offer)
    reservation = domain.max_discount(offer)
    funding = await funding_of(session, campaign_id)
    parts = slots.funder_reservations(reservation, funding.shares_bp)
    taken = await slots.take(session, campaign_id, reservation, parts)
    if isinstance(taken, slots.SoldOut):
        raise SoldOut() if taken.reason == "quantity" else BudgetExhausted()

    validity = domain.coupon_validity(
        offer, claimed_at=now, campaign_ends_at=campaign.ends_at, timezone=campaign.timezone
    )
    coupon = Coupon(
        campaign_id=campaign_id,
        code=codes.new_code(),
        customer_id=customer_id,
        holder_seq=last_seq + 1,
        claim_day=day,
        status="claimed",
        slot=taken,
        reserved_amount=reservation,
        funder_reserved=parts,
        valid_from=validity.starts_at,
        valid_until=validity.ends_at,
        issued_at=now,
        claimed_at=now,
    )
    session.add(coupon)
    try:
        await session.flush()
    except IntegrityError as exc:
        # A bulk issuance gave this customer their n-th coupon at the same moment: the
        # unique (campaign, customer, n) index kept it at one; this claim is over the limit.
        raise ClaimLimitReached() from exc
    await figures.bump(session, campaign_id, day, taken, claimed=1)
    body = msgspec_to_dict(coupon_read(coupon, campaign, settings))
    await idempotency.finish(
        session, scope=scope, key=idempotency_key, status_code=201, response=body
    )
    await commit(session)
    return ClaimResult(201, body, replayed=False)


def msgspec_to_dict(value: Any) -> dict[str, Any]:
    import msgspec

    result: dict[str, Any] = msgspec.to_builtins(value)
    return result


# --- the wallet -------------------------------------------------------------------------------

WALLET_FILTERS = {
    "valid": ("issued", "claimed"),
    "used": ("redeemed",),
    "expired": ("expired", "void"),
}


async def wallet(
    session: AsyncSession, principal: Principal, *, state: str | None, limit: int, offset: int
) -> tuple[list[tuple[Coupon, Campaign]], int]:
    query = (
        select(Coupon, Campaign)
        .join(Campaign, col(Campaign.id) == col(Coupon.campaign_id))
        .where(col(Coupon.customer_id) == principal.subject_id)
    )
    if state:
        query = query.where(col(Coupon.status).in_(WALLET_FILTERS[state]))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(col(Coupon.issued_at).desc(), col(Coupon.id)).limit(limit).offset(offset)
    )
    return [(c, k) for c, k in rows.all()], int(total)


async def wallet_coupon(
    session: AsyncSession, principal: Principal, coupon_id: uuid.UUID
) -> tuple[Coupon, Campaign]:
    row = (
        await session.execute(
            select(Coupon, Campaign)
            .join(Campaign, col(Campaign.id) == col(Coupon.campaign_id))
            .where(col(Coupon.id) == coupon_id, col(Coupon.customer_id) == principal.subject_id)
        )
    ).one_or_none()
    if row is None:
        raise CouponNotFound()
    return row[0], row[1]


# --- void and expiry --------------------------------------------------------------------------


async def _campaign_for_owner(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> Campaign:
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or not principal.may_access(campaign.owner_org_id):
        raise NotFound("Campaign not found")
    return campaign


async def void_coupon(
    session: AsyncSession, principal: Principal, coupon_id: uuid.UUID, *, reason: str
) -> tuple[Coupon, Campaign]:
    """The campaign owner voids an unredeemed coupon; its reservation and unit go back."""
    coupon = await session.get(Coupon, coupon_id, with_for_update=True)
    if coupon is None:
        raise CouponNotFound()
    campaign = await _campaign_for_owner(session, principal, coupon.campaign_id)
    if coupon.status not in REDEEMABLE:
        raise Conflict(f"A {coupon.status} coupon cannot be voided")
    before = {"status": coupon.status}
    now = utcnow()
    coupon.status, coupon.void_reason, coupon.released_at = "void", reason, now
    if coupon.slot is not None:
        await slots.give_back(
            session,
            coupon.campaign_id,
            coupon.slot,
            coupon.reserved_amount,
            coupon.funder_reserved,
            quantity=1,
        )
    await figures.bump(
        session, campaign.id, figures.local_day(now, campaign.timezone), coupon.slot or 0, voided=1
    )
    audit.record(
        session,
        principal,
        org_id=campaign.owner_org_id,
        action="coupon.voided",
        subject_type="coupon",
        subject_id=coupon.id,
        before=before,
        after={"status": "void", "reason": reason},
    )
    await commit(session)
    return coupon, campaign


async def expire_due(
    session: AsyncSession, now: datetime, *, ended_campaign: uuid.UUID | None = None
) -> int:
    """Expire a batch of coupons past their validity (or every unused coupon of a campaign
    that ended) and hand their reservations back.

    Safe to run twice or concurrently: rows are taken with SKIP LOCKED and only while still
    redeemable, so each coupon is released once. Returns how many expired in this batch.
    """
    query = select(Coupon).where(col(Coupon.status).in_(REDEEMABLE))
    if ended_campaign is None:
        query = query.where(col(Coupon.valid_until) <= now).order_by(col(Coupon.valid_until))
    else:
        query = query.where(col(Coupon.campaign_id) == ended_campaign)
    due = (
        (await session.execute(query.limit(EXPIRY_BATCH).with_for_update(skip_locked=True)))
        .scalars()
        .all()
    )
    if not due:
        return 0
    groups: dict[tuple[uuid.UUID, int], tuple[int, list[int], int]] = {}
    for coupon in due:
        coupon.status, coupon.released_at = "expired", now
        if coupon.slot is None:
            continue
        amount, parts, count = groups.get((coupon.campaign_id, coupon.slot), (0, [], 0))
        merged = (
            [a + b for a, b in zip(parts, coupon.funder_reserved, strict=True)]
            if parts
            else list(coupon.funder_reserved)
        )
        groups[(coupon.campaign_id, coupon.slot)] = (
            amount + coupon.reserved_amount,
            merged,
            count + 1,
        )
    zone_rows = await session.execute(
        select(col(Campaign.id), col(Campaign.timezone)).where(
            col(Campaign.id).in_({c.campaign_id for c in due})
        )
    )
    zones: dict[uuid.UUID, str] = {row[0]: row[1] for row in zone_rows}
    for (campaign_id, slot), (amount, parts, count) in sorted(groups.items()):
        await slots.give_back(session, campaign_id, slot, amount, parts, quantity=0, coupons=count)
        await figures.bump(
            session, campaign_id, figures.local_day(now, zones[campaign_id]), slot, expired=count
        )
    await commit(session)
    return len(due)


# --- figures ----------------------------------------------------------------------------------


async def campaign_stats(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> CampaignStatsRead:
    campaign = await session.get(Campaign, campaign_id)
    funding = await funding_of(session, campaign_id)
    if campaign is None or not (
        principal.sees_all_tenants or principal.org_id in {campaign.owner_org_id, *funding.org_ids}
    ):
        raise NotFound("Campaign not found")
    days = await figures.daily(session, campaign_id)
    totals = {name: sum(d[name] for _, d in days) for name in figures.COUNTERS}
    remaining_quantity, remaining_budget, held = await figures.slot_totals(session, campaign_id)
    given_out = totals["issued"] + totals["claimed"]
    return CampaignStatsRead(
        campaign_id=campaign.id,
        currency=campaign.currency,
        total_quantity=campaign.total_quantity,
        total_budget=campaign.total_budget,
        issued=totals["issued"],
        claimed=totals["claimed"],
        redeemed=totals["redeemed"],
        expired=totals["expired"],
        voided=totals["voided"],
        redemption_rate=round(totals["redeemed"] / given_out, 4) if given_out else 0.0,
        remaining_quantity=remaining_quantity,
        budget_reserved=campaign.total_budget - remaining_budget if held else 0,
        funders=[
            FunderFigures(
                org_id=org_id,
                share_bp=share,
                budget_cap=cap,
                reserved=held[i] if held else 0,
            )
            for i, (org_id, share, cap) in enumerate(
                zip(funding.org_ids, funding.shares_bp, funding.caps, strict=True)
            )
        ],
        by_day=[DailyFigures(day=day, **values) for day, values in days],
    )


async def ended_with_open_coupons(session: AsyncSession) -> list[uuid.UUID]:
    """Ended or cancelled campaigns that still have unused coupons holding budget."""
    rows = await session.execute(
        select(col(Campaign.id)).where(
            col(Campaign.status).in_(("ended", "cancelled")),
            select(col(Coupon.id))
            .where(col(Coupon.campaign_id) == col(Campaign.id), col(Coupon.status).in_(REDEEMABLE))
            .exists(),
        )
    )
    return list(rows.scalars())


async def open_offers(
    session: AsyncSession, principal: Principal, *, limit: int = 50
) -> list[Campaign]:
    """Running campaigns this customer may claim from (their audience admits them), soonest
    ending first."""
    assert principal.subject_id is not None
    customer = await session.get_one(Customer, principal.subject_id)
    now = utcnow()
    rows = await session.execute(
        select(Campaign)
        .where(
            col(Campaign.status) == "active",
            col(Campaign.starts_at) <= now,
            col(Campaign.ends_at) > now,
        )
        .order_by(col(Campaign.ends_at), col(Campaign.id))
        .limit(limit)
    )
    offers = []
    for campaign in rows.scalars():
        targeted = (
            campaign.audience == "targeted"
            and (await session.get(CampaignTarget, (campaign.id, customer.id))) is not None
        )
        if is_eligible(campaign, customer, targeted=targeted):
            offers.append(campaign)
    return offers


async def coupon_by_code(session: AsyncSession, code: str) -> tuple[Coupon, Campaign]:
    """The coupon a QR or typed code names, with its campaign (the public coupon page shows only
    its code, offer and validity, never its holder)."""
    try:
        stored = codes.parse(code)
    except codes.InvalidCode as exc:
        raise CouponNotFound() from exc
    coupon = (
        await session.execute(select(Coupon).where(col(Coupon.code) == stored))
    ).scalar_one_or_none()
    if coupon is None:
        raise CouponNotFound()
    return coupon, await session.get_one(Campaign, coupon.campaign_id)
