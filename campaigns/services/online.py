"""Online checkout (an organization's API key): reserve a coupon, then confirm or release.

- **Reserve** locks the coupon row, checks it exactly as the till would (channel `online`, no
  store), and writes a hold with the quoted discount and an expiry. The coupon's `held_until`
  is set in the same transaction: while it lies ahead, the POS path (which re-reads the coupon
  under the same row lock) refuses `coupon_held`, and so does a second reservation. The unique
  partial index `uq_redemption_hold_live` (one `held` hold per coupon) is the final arbiter.
- **Confirm** locks the coupon, then the hold; a hold past its expiry is refused
  `hold_expired` even if the worker has not released it yet. It then writes the redemption
  exactly as the till does (`redemptions.record_redemption`: same funding split, same ledger
  entry, figures, velocity rule and `coupon.redeemed` webhook).
- **Release** gives the coupon back at once. Expired holds are released by the worker: a job
  enqueued for the hold's expiry and a sweep every minute; both are idempotent.

Reserve and confirm take an `Idempotency-Key` (scope: the organization); release is
idempotent by itself. Redis is not on any of these paths.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Coupon, RedemptionHold
from coalition.campaigns.schemas.redemptions import HoldRead, ReserveRequest
from coalition.campaigns.services.redemptions import (
    CouponHeld,
    PosResult,
    VelocityRule,
    Where,
    caller_scope,
    claim_key,
    evaluate,
    load_coupon,
    parse_code,
    record_redemption,
)
from coalition.platform import idempotency
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, NotFound, ValidationFailed
from coalition.platform.jobs import commit, enqueue
from coalition.platform.settings import Settings

RELEASE_JOB = "release_expired_hold"
SWEEP_BATCH = 500


class HoldNotFound(NotFound):
    code, title = "hold_not_found", "Hold not found"


class HoldExpired(Conflict):
    code, title = "hold_expired", "This hold has expired; reserve the coupon again"


class HoldReleased(Conflict):
    code, title = "hold_released", "This hold has been released"


class HoldConfirmed(Conflict):
    code, title = "hold_confirmed", "This hold has been confirmed already"


class HoldTooLong(ValidationFailed):
    code, title = "hold_too_long", "The hold is longer than allowed"


def hold_read(hold: RedemptionHold, coupon_code: str) -> HoldRead:
    return HoldRead(
        id=hold.id,
        status=hold.status,
        coupon_code=coupon_code,
        campaign_id=hold.campaign_id,
        org_id=hold.org_id,
        currency=hold.currency,
        basket_amount=hold.basket_amount,
        discount=hold.discount,
        payable=hold.basket_amount - hold.discount,
        order_ref=hold.order_ref,
        created_at=hold.created_at,
        expires_at=hold.expires_at,
        finished_at=hold.finished_at,
        redemption_id=hold.redemption_id,
    )


def _online(principal: Principal) -> Where:
    return Where(principal.org_id, "online")


async def _lapse_holds(session: AsyncSession, coupon_id: uuid.UUID, now: datetime) -> None:
    """Mark the coupon's lapsed hold (if any) expired; the caller holds the coupon's lock."""
    await session.execute(
        update(RedemptionHold)
        .where(
            col(RedemptionHold.coupon_id) == coupon_id,
            col(RedemptionHold.status) == "held",
            col(RedemptionHold.expires_at) <= now,
        )
        .values(status="expired", finished_at=now)
    )


async def reserve(
    session: AsyncSession,
    principal: Principal,
    data: ReserveRequest,
    *,
    idempotency_key: str,
    settings: Settings,
) -> PosResult:
    """Hold a coupon for this organization's checkout: 201 with the hold and its discount."""
    stored = parse_code(data.code)
    seconds = data.hold_seconds or settings.online_hold_ttl_seconds
    if seconds > settings.online_hold_max_ttl_seconds:
        raise HoldTooLong(
            f"Hold a coupon for at most {settings.online_hold_max_ttl_seconds} seconds",
            field="hold_seconds",
        )
    scope = caller_scope(principal)
    replayed = await claim_key(
        session, scope, idempotency_key, "/online/holds", msgspec.to_builtins(data)
    )
    if replayed is not None:
        return replayed

    now = utcnow()
    where = _online(principal)
    loaded = await load_coupon(session, where, code=stored, lock=True)
    quote = evaluate(
        loaded, where, basket_amount=data.basket_amount, currency=data.currency, now=now
    )
    coupon = loaded.coupon
    if coupon.held_until is not None:
        await _lapse_holds(session, coupon.id, now)
    hold = RedemptionHold(
        coupon_id=coupon.id,
        campaign_id=coupon.campaign_id,
        org_id=principal.org_id,
        api_key_id=principal.subject_id if principal.kind == "api_key" else None,
        currency=data.currency,
        basket_amount=data.basket_amount,
        discount=quote.discount,
        order_ref=data.order_ref,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
    )
    session.add(hold)
    try:
        await session.flush()
    except IntegrityError as exc:  # another live hold got past the lock: the index refuses
        raise CouponHeld() from exc
    await session.execute(
        update(Coupon).where(col(Coupon.id) == coupon.id).values(held_until=hold.expires_at)
    )
    await enqueue(
        session,
        RELEASE_JOB,
        str(hold.id),
        key=f"hold-expiry:{hold.id}",
        defer_until=hold.expires_at,
    )
    body: dict[str, Any] = msgspec.to_builtins(hold_read(hold, coupon.code))
    await idempotency.finish(
        session, scope=scope, key=idempotency_key, status_code=201, response=body
    )
    await commit(session)
    return PosResult(201, body, replayed=False)


async def _hold_of(
    session: AsyncSession, principal: Principal, hold_id: uuid.UUID
) -> RedemptionHold:
    hold = await session.get(RedemptionHold, hold_id)
    if hold is None or hold.org_id != principal.org_id:
        raise HoldNotFound()
    return hold


async def _lock_hold(session: AsyncSession, hold_id: uuid.UUID) -> RedemptionHold:
    hold: RedemptionHold = (
        await session.execute(
            select(RedemptionHold)
            .where(col(RedemptionHold.id) == hold_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return hold


async def confirm(
    session: AsyncSession,
    principal: Principal,
    hold_id: uuid.UUID,
    *,
    idempotency_key: str,
    rule: VelocityRule,
) -> PosResult:
    """Turn a live hold into a redemption (201, exactly as at the till), or refuse with
    `hold_expired`, `hold_released`, `hold_confirmed`."""
    scope = caller_scope(principal)
    replayed = await claim_key(
        session, scope, idempotency_key, f"/online/holds/{hold_id}/confirm", {}
    )
    if replayed is not None:
        return replayed

    now = utcnow()
    where = _online(principal)
    found = await _hold_of(session, principal, hold_id)
    # The coupon first, then the hold: the order every path that takes both uses.
    loaded = await load_coupon(
        session, where, coupon_id=found.coupon_id, lock=True, velocity_since=now - rule.window
    )
    hold = await _lock_hold(session, hold_id)
    if hold.status == "confirmed":
        raise HoldConfirmed(redemption_id=str(hold.redemption_id))
    if hold.status == "released":
        raise HoldReleased()
    if hold.status == "expired" or hold.expires_at <= now:
        raise HoldExpired(f"This hold expired at {hold.expires_at.isoformat()}")
    quote = evaluate(
        loaded,
        where,
        basket_amount=hold.basket_amount,
        currency=hold.currency,
        now=now,
        hold_allowed=True,
    )
    recorded = await record_redemption(
        session,
        loaded,
        quote,
        where,
        basket_amount=hold.basket_amount,
        order_ref=hold.order_ref,
        now=now,
        rule=rule,
        reply_to=(scope, idempotency_key),
        api_key_id=principal.subject_id if principal.kind == "api_key" else None,
    )
    hold.status, hold.finished_at = "confirmed", now
    hold.redemption_id = recorded.redemption.id
    await commit(session)
    return PosResult(201, recorded.body, replayed=False)


async def release(session: AsyncSession, principal: Principal, hold_id: uuid.UUID) -> HoldRead:
    """Give the coupon back now. Releasing a released or expired hold changes nothing; a
    confirmed one is `409 hold_confirmed` (reverse the redemption instead)."""
    found = await _hold_of(session, principal, hold_id)
    coupon = await _lock_coupon(session, found.coupon_id)
    hold = await _lock_hold(session, hold_id)
    if hold.status == "confirmed":
        raise HoldConfirmed(redemption_id=str(hold.redemption_id))
    if hold.status == "held":
        now = utcnow()
        hold.status, hold.finished_at = "released", now
        coupon.held_until = None
        await commit(session)
    return hold_read(hold, coupon.code)


async def _lock_coupon(session: AsyncSession, coupon_id: uuid.UUID) -> Coupon:
    coupon: Coupon = (
        await session.execute(
            select(Coupon)
            .where(col(Coupon.id) == coupon_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return coupon


async def get_hold(session: AsyncSession, principal: Principal, hold_id: uuid.UUID) -> HoldRead:
    hold = await _hold_of(session, principal, hold_id)
    coupon = await session.get_one(Coupon, hold.coupon_id)
    return hold_read(hold, coupon.code)


# --- the worker ----------------------------------------------------------------------------------


async def expire_hold(session: AsyncSession, hold_id: uuid.UUID, now: datetime) -> bool:
    """Release one hold if it is still held and past its expiry (idempotent: True if this
    call expired it)."""
    hold = await session.get(RedemptionHold, hold_id)
    if hold is None or hold.status != "held" or hold.expires_at > now:
        await session.rollback()
        return False
    coupon = await _lock_coupon(session, hold.coupon_id)
    hold = await _lock_hold(session, hold_id)
    if hold.status != "held" or hold.expires_at > now:
        await session.rollback()
        return False
    hold.status, hold.finished_at = "expired", now
    # Under the coupon's lock the live hold is this one, so `held_until` is its own.
    if coupon.held_until is not None and coupon.held_until <= now:
        coupon.held_until = None
    await commit(session)
    return True


async def expire_due(session: AsyncSession, now: datetime) -> int:
    """Release every hold past its expiry (the sweep behind the per-hold jobs)."""
    ids = list(
        (
            await session.execute(
                select(col(RedemptionHold.id))
                .where(col(RedemptionHold.status) == "held", col(RedemptionHold.expires_at) <= now)
                .order_by(col(RedemptionHold.expires_at))
                .limit(SWEEP_BATCH)
            )
        ).scalars()
    )
    await session.rollback()
    expired = 0
    for hold_id in ids:
        expired += await expire_hold(session, hold_id, now)
    return expired
