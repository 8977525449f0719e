"""Coupons: claiming (exactly once per key, never oversold, within every limit), the wallet,
voiding, the expiry sweep that hands reservations back, and the campaign figures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes, domain, qr
from coalition.campaigns.models import (
    SLOTS,
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


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


# Everything a claim needs to decide, in one unlocked read (one snapshot): the campaign and its
# funders' shares, the customer, whether they are on a targeted list, what they hold in the
# campaign, how much stock and budget is left over all slots, and a stored reply to this key.
# $1 campaign, $2 customer, $3 the claim's time, $4 idempotency scope, $5 key.
_CLAIM_CONTEXT = """
SELECT c.status, c.starts_at, c.ends_at, c.name, c.currency, c.timezone, c.code_prefix,
       c.offer, c.audience, c.audience_min_tier, c.audience_max_tier, c.audience_tags,
       c.audience_on_network_only, c.per_customer_limit, c.per_customer_daily_limit,
       (SELECT array_agg(p.share_bp ORDER BY p.position) FROM campaign_participant p
        WHERE p.campaign_id = c.id) AS shares,
       cu.tier, cu.tags, cu.on_network,
       c.audience = 'targeted' AND EXISTS (
           SELECT 1 FROM campaign_target t WHERE t.campaign_id = c.id AND t.customer_id = $2
       ) AS targeted,
       h.held, h.last_seq, h.today,
       (SELECT coalesce(sum(s.remaining_quantity), 0) FROM claim_slot s
        WHERE s.campaign_id = c.id) AS quantity_left,
       (SELECT coalesce(sum(s.remaining_budget), 0) FROM claim_slot s
        WHERE s.campaign_id = c.id) AS budget_left,
       i.request_hash, i.status_code, i.response
FROM (SELECT 1) AS one
LEFT JOIN campaign c ON c.id = $1
LEFT JOIN customer cu ON cu.id = $2
LEFT JOIN idempotency_record i ON i.scope = $4 AND i.key = $5
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE k.status <> 'void') AS held,
           coalesce(max(k.holder_seq), 0) AS last_seq,
           count(*) FILTER (
               WHERE k.claim_day = ($3::timestamptz AT TIME ZONE c.timezone)::date
           ) AS today
    FROM coupon k WHERE k.customer_id = $2 AND k.campaign_id = $1
) AS h ON true
"""
# Under the customer's lock: what they hold now, and a reply another request with this key
# committed meanwhile. $1 campaign, $2 customer, $3 local day, $4 scope, $5 key.
_CLAIM_RECHECK = """
SELECT h.held, h.last_seq, h.today, i.request_hash, i.status_code, i.response
FROM (
    SELECT count(*) FILTER (WHERE k.status <> 'void') AS held,
           coalesce(max(k.holder_seq), 0) AS last_seq,
           count(*) FILTER (WHERE k.claim_day = $3) AS today
    FROM coupon k WHERE k.customer_id = $2 AND k.campaign_id = $1
) AS h
LEFT JOIN idempotency_record i ON i.scope = $4 AND i.key = $5
"""
# The coupon, the day's figure and the stored reply, in one statement (one round trip).
_CLAIM_WRITE = f"""
WITH coupon_row AS (
    INSERT INTO coupon (id, campaign_id, code, customer_id, holder_seq, claim_day, status, slot,
                        reserved_amount, funder_reserved, valid_from, valid_until, issued_at,
                        claimed_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'claimed', $7, $8, $9::bigint[], $10, $11, $12, $12)
    RETURNING id
), figure AS (
    INSERT INTO campaign_daily_stat (campaign_id, day, slot, issued, claimed, redeemed,
                                     expired, voided, discount)
    VALUES ($2, $6, $7 % {SLOTS}, 0, 1, 0, 0, 0, 0)
    ON CONFLICT (campaign_id, day, slot)
    DO UPDATE SET claimed = campaign_daily_stat.claimed + 1
    RETURNING 1
), reply AS (
    INSERT INTO idempotency_record (scope, key, request_hash, status_code, response, created_at)
    VALUES ($13, $14, $15, 201, $16::jsonb, $12)
    RETURNING 1
)
SELECT (SELECT id FROM coupon_row), (SELECT count(*) FROM figure), (SELECT count(*) FROM reply)
"""  # noqa: S608 - SLOTS is a constant
_CLAIM_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_REPLY = (
    "SELECT request_hash, status_code, response FROM idempotency_record "
    "WHERE scope = $1 AND key = $2"
)


def _replay(record: Any, fingerprint: str) -> ClaimResult | None:
    """The stored reply to this key, if any (another request's use of the key is a 422)."""
    if record["request_hash"] is None:
        return None
    if record["request_hash"] != fingerprint:
        raise idempotency.IdempotencyKeyReused(field="Idempotency-Key")
    if record["status_code"] is None or record["response"] is None:
        raise idempotency.IdempotencyKeyReused("The first request with this key has not finished")
    return ClaimResult(int(record["status_code"]), record["response"], replayed=True)


def _check_limits(row: Any, held: int, today: int) -> None:
    if held >= row["per_customer_limit"]:
        raise ClaimLimitReached()
    daily = row["per_customer_daily_limit"]
    if daily is not None and today >= daily:
        raise DailyClaimLimitReached()


def _eligible(row: Any) -> bool:
    audience = domain.Audience(
        kind=row["audience"],
        min_tier=row["audience_min_tier"],
        max_tier=row["audience_max_tier"],
        tags=row["audience_tags"] or (),
        on_network_only=bool(row["audience_on_network_only"]),
    )
    return domain.admits(
        audience,
        tier=row["tier"],
        tags=row["tags"] or (),
        on_network=bool(row["on_network"]),
        targeted=bool(row["targeted"]),
    )


async def claim_coupon(
    driver: asyncpg.Connection,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    idempotency_key: str,
) -> ClaimResult:
    """Give the customer one coupon of a running campaign, exactly once per Idempotency-Key.

    The hot path of a flash sale, in few round trips on a bare asyncpg connection (outside any
    transaction; see `provide_db`):

    1. One unlocked read (no transaction) of everything the decision needs. A replay of the
       key, a campaign that is not running, an ineligible customer, a customer at their limit
       and a sold-out campaign are answered from it, so losers write nothing and wait for no
       lock (their answers are not stored: a retry is answered afresh).
    2. The winner's transaction: the customer's advisory lock for the campaign (one claim at a
       time per customer and campaign); the holdings and the key read again under it; a slot
       (`slots.take`, whose CHECK constraints are the arbiter against overselling); then the
       coupon, the day's figure and the stored reply in one statement; commit.

    Exactly once: the reply is stored with the coupon, in its transaction. A concurrent request
    with the same key waits on the customer's lock and then finds the reply (same campaign), or
    meets the reply's primary key (another campaign) and is answered from the stored reply
    (a 422, as the key was used for another request). The unique (customer, campaign, n) index
    stays the arbiter of the per-customer limit should anything bypass the lock.
    """
    customer_id = principal.subject_id
    assert customer_id is not None
    scope = idempotency.new_scope("claim", customer_id)
    fingerprint = idempotency.request_fingerprint("POST", f"/campaigns/{campaign_id}/claims", {})
    if driver.is_in_transaction():
        raise RuntimeError("a claim must start on a connection without an open transaction")
    now = utcnow()

    row = await driver.fetchrow(
        _CLAIM_CONTEXT, campaign_id, customer_id, now, scope, idempotency_key
    )
    assert row is not None
    replay = _replay(row, fingerprint)
    if replay is not None:
        return replay
    status = row["status"]
    if status is None or status in ("draft", "proposed", "cancelled"):
        raise NotFound("Campaign not found")
    if status != "active" or not row["starts_at"] <= now < row["ends_at"]:
        raise CampaignNotActive()
    if row["tier"] is None:
        raise NotFound("Customer not found")
    if not _eligible(row):
        raise NotEligible()
    _check_limits(row, row["held"], row["today"])
    offer = domain.offer_from_json(row["offer"])
    reservation = domain.max_discount(offer)
    if row["quantity_left"] == 0:
        raise SoldOut()
    if row["budget_left"] < reservation:
        raise BudgetExhausted()
    parts = slots.funder_reservations(reservation, row["shares"] or [])
    day = figures.local_day(now, row["timezone"])
    validity = domain.coupon_validity(
        offer, claimed_at=now, campaign_ends_at=row["ends_at"], timezone=row["timezone"]
    )
    coupon_id = uuid.uuid4()
    code = codes.new_code()
    body: dict[str, Any] = msgspec.to_builtins(
        {
            "id": coupon_id,
            "campaign_id": campaign_id,
            "campaign_name": row["name"],
            "code": code,
            "display_code": codes.display(code, row["code_prefix"]),
            "status": "claimed",
            "currency": row["currency"],
            "max_discount": reservation,
            "valid_from": validity.starts_at,
            "valid_until": validity.ends_at,
            "claimed_at": now,
            "redeemed_at": None,
            "coupon_url": qr.coupon_url(settings.public_url, code),
            "qr_png": f"/api/v1/wallet/coupons/{coupon_id}/qr.png",
            "qr_svg": f"/api/v1/wallet/coupons/{coupon_id}/qr.svg",
        }
    )  # the shape of CouponRead, as the wallet shows the coupon
    try:
        async with driver.transaction():
            await driver.execute(_CLAIM_LOCK, f"claim:{campaign_id}:{customer_id}")
            again = await driver.fetchrow(
                _CLAIM_RECHECK, campaign_id, customer_id, day, scope, idempotency_key
            )
            assert again is not None
            replay = _replay(again, fingerprint)
            if replay is not None:
                return replay
            _check_limits(row, again["held"], again["today"])
            taken = await slots.take(driver, campaign_id, reservation, parts)
            if isinstance(taken, slots.SoldOut):
                raise SoldOut() if taken.reason == "quantity" else BudgetExhausted()
            await driver.execute(
                _CLAIM_WRITE,
                coupon_id,
                campaign_id,
                code,
                customer_id,
                again["last_seq"] + 1,
                day,
                taken,
                reservation,
                parts,
                validity.starts_at,
                validity.ends_at,
                now,
                scope,
                idempotency_key,
                fingerprint,
                msgspec.json.encode(body).decode(),
            )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "pk_idempotency_record":
            # The same key, used meanwhile by a request on another campaign: its stored reply
            # (or, as here, its fingerprint) decides.
            stored = await driver.fetchrow(_REPLY, scope, idempotency_key)
            if stored is not None and (replay := _replay(stored, fingerprint)) is not None:
                return replay
            raise idempotency.IdempotencyKeyReused(field="Idempotency-Key") from exc
        if exc.constraint_name == "uq_coupon_code":  # 65 random bits: next to never
            raise slots.SlotsBusy("Please try again") from exc
        # A bulk issuance gave this customer their n-th coupon at the same moment: the unique
        # (customer, campaign, n) index kept it at one; this claim is over the limit.
        raise ClaimLimitReached() from exc
    return ClaimResult(201, body, replayed=False)


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
    spent = await figures.funder_spent(session, campaign_id, len(funding.org_ids))
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
        budget_spent=sum(spent),
        funders=[
            FunderFigures(
                org_id=org_id,
                share_bp=share,
                budget_cap=cap,
                reserved=held[i] if held else 0,
                spent=spent[i],
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
        audience = domain.Audience(
            kind=campaign.audience,
            min_tier=campaign.audience_min_tier,
            max_tier=campaign.audience_max_tier,
            tags=campaign.audience_tags or (),
            on_network_only=campaign.audience_on_network_only,
        )
        if domain.admits(
            audience,
            tier=customer.tier,
            tags=customer.tags or (),
            on_network=customer.on_network,
            targeted=targeted,
        ):
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
