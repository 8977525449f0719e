"""Redemption at the till: quote a coupon, redeem it exactly once, reverse it on a refund.

Exactly once:

- the coupon row is locked (`SELECT ... FOR UPDATE`) and its status re-checked under the lock,
  so of many terminals redeeming one coupon at once one wins and the rest see it redeemed;
- the unique partial index `uq_redemption_coupon_standing` (one redemption per coupon whose
  status is not `reversed`) is the final arbiter should anything bypass the lock; a fully
  reversed coupon can therefore be redeemed again;
- the `Idempotency-Key` (scope `terminal:<id>`) is stored with the redemption, in its
  transaction: a retry returns the first answer, and concurrent retries wait for the first
  (on the coupon's lock, or on the key's primary key), then replay it.

Everything a redemption changes is written in one transaction: the coupon (redeemed), the
redemption row with its funding split frozen, the ledger entry, the campaign figures and the
`coupon.redeemed` webhook (its delivery job is queued only after the commit). Redis is not
on this path.

The coupon's reservation (its largest possible discount, held against the budgets since the
claim) stays held after a redemption, also the part the discount did not use: it is released
only when the coupon is finished unused (expired or voided, e.g. after a full reversal past its
validity). Releasing the unused remainder of redeemed coupons is left for later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import msgspec
from sqlalchemy import and_, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from coalition.campaigns import codes, domain
from coalition.campaigns.models import (
    SLOTS,
    Campaign,
    Coupon,
    Redemption,
    RedemptionReversal,
)
from coalition.campaigns.schemas.redemptions import (
    FundingPart,
    QuoteRead,
    RedeemRequest,
    RedemptionRead,
    ReversalRead,
    ReverseRequest,
)
from coalition.campaigns.services import figures, redemption_sql, slots
from coalition.campaigns.services.coupons import (
    CampaignNotActive,
    CouponNotFound,
    Funding,
)
from coalition.merchants.services import webhooks
from coalition.platform import idempotency, jobs
from coalition.platform.auth import Principal
from coalition.platform.db import driver_connection, new_id, utcnow
from coalition.platform.errors import Conflict, DomainError, NotFound, ValidationFailed
from coalition.platform.jobs import commit
from coalition.platform.settings import Settings
from coalition.settlement.domain import (
    FeePayer,
    FundingShare,
    RedemptionFunding,
    discount_reversed_by_refund,
    reversal_slices,
)
from coalition.settlement.services.ledger import new_redemption_entry, post_reversal

# --- refusals (stable codes) ------------------------------------------------------------------


class InvalidCouponCode(ValidationFailed):
    code, title = "invalid_code", "This is not a valid coupon code"


class CouponAlreadyRedeemed(Conflict):
    code, title = "coupon_already_redeemed", "This coupon has already been redeemed"


class CouponHeld(Conflict):
    code, title = "coupon_held", "This coupon is held by an online checkout"


class CouponVoid(Conflict):
    code, title = "coupon_void", "This coupon has been voided"


class CouponExpired(Conflict):
    code, title = "coupon_expired", "This coupon has expired"


class CouponNotYetValid(Conflict):
    code, title = "coupon_not_yet_valid", "This coupon is not valid yet"


class BelowMinimumSpend(Conflict):
    code, title = "below_minimum_spend", "The basket is below this coupon's minimum spend"


class OutsideTimeWindow(Conflict):
    code, title = "outside_time_window", "This coupon cannot be used at this day or time"


class NotRedeemableHere(Conflict):
    code, title = "not_redeemable_here", "This coupon cannot be redeemed in this store"


class ChannelNotAllowed(Conflict):
    code, title = "channel_not_allowed", "This coupon cannot be redeemed through this channel"


class CurrencyMismatch(Conflict):
    code, title = "currency_mismatch", "The basket is not in this coupon's currency"


class RedemptionNotFound(NotFound):
    code, title = "redemption_not_found", "Redemption not found"


class RedemptionAlreadyReversed(Conflict):
    code, title = "redemption_already_reversed", "This redemption has been reversed in full"


class ReversalWindowClosed(Conflict):
    code, title = "reversal_window_closed", "This redemption can no longer be reversed"


class RefundExceedsBasket(ValidationFailed):
    code, title = "refund_exceeds_basket", "Refunds cannot exceed the redeemed basket"


REFUSALS: dict[domain.Refusal, type[DomainError]] = {
    domain.Refusal.NOT_YET_VALID: CouponNotYetValid,
    domain.Refusal.EXPIRED: CouponExpired,
    domain.Refusal.BELOW_MINIMUM_SPEND: BelowMinimumSpend,
    domain.Refusal.OUTSIDE_TIME_WINDOW: OutsideTimeWindow,
    domain.Refusal.NOT_REDEEMABLE_HERE: NotRedeemableHere,
    domain.Refusal.CHANNEL_NOT_ALLOWED: ChannelNotAllowed,
    domain.Refusal.CURRENCY_MISMATCH: CurrencyMismatch,
}


# --- shared steps -----------------------------------------------------------------------------


def parse_code(text: str) -> str:
    """The stored form of a typed or scanned code; malformed codes fail before any lookup."""
    try:
        return codes.parse(text)
    except codes.InvalidCode as exc:
        raise InvalidCouponCode(str(exc), field="code") from exc


@dataclass(frozen=True, slots=True)
class Where:
    """Where and how a coupon is being used: a terminal's store, or an organization's online
    checkout (no store)."""

    org_id: uuid.UUID
    channel: domain.Channel
    store_id: uuid.UUID | None = None


def where_of(principal: Principal) -> Where:
    if principal.kind == "terminal":
        return Where(principal.org_id, "pos", principal.store_id)
    return Where(principal.org_id, "online")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A coupon with everything deciding its redemption, read in one round trip."""

    coupon: Coupon
    campaign: Campaign
    funding: Funding
    store_ok: bool  # the store (if any) is active and the redeeming organization's
    carrier_id: uuid.UUID
    recent_partners: frozenset[uuid.UUID]  # where its holder redeemed within the velocity window
    # (id, organization) of the endpoints subscribed to `coupon.redeemed` (read when locked)
    endpoints: tuple[tuple[uuid.UUID, uuid.UUID], ...] | None = None


async def load_coupon(
    db: AsyncSession | asyncpg.Connection,
    where: Where,
    *,
    code: str | None = None,
    coupon_id: uuid.UUID | None = None,
    lock: bool,
    velocity_since: datetime | None = None,
) -> Loaded:
    """The coupon (locked `FOR UPDATE` when redeeming), its campaign, its funders in split
    order, whether the store may redeem, the carrier, and (with `velocity_since`) the partners
    its holder redeemed at since then (and, locked, the webhook endpoints a redemption
    notifies): one statement (`redemption_sql.LOAD`). The rows come
    back detached: changes to them are written by explicit statements. `db`: a session, or
    an asyncpg connection (its transaction open when locking)."""
    connection = db if isinstance(db, asyncpg.Connection) else await driver_connection(db)
    loaded = await redemption_sql.load(
        connection,
        code=code,
        coupon_id=coupon_id,
        lock=lock,
        store_id=where.store_id,
        org_id=where.org_id,
        velocity_since=velocity_since,
    )
    if loaded is None:
        raise CouponNotFound()
    return Loaded(
        coupon=loaded.coupon,
        campaign=loaded.campaign,
        funding=Funding(org_ids=loaded.funders, shares_bp=loaded.shares_bp, caps=[]),
        store_ok=loaded.store_ok,
        carrier_id=loaded.carrier_id,
        recent_partners=frozenset(loaded.recent),
        endpoints=None if loaded.endpoints is None else tuple(loaded.endpoints),
    )


def evaluate(
    loaded: Loaded,
    where: Where,
    *,
    basket_amount: int,
    currency: str,
    now: datetime,
    hold_allowed: bool = False,
) -> domain.Quote:
    """What this coupon gives here now, or the refusal (raised). `hold_allowed`: the caller
    confirms the hold that holds the coupon."""
    coupon, campaign = loaded.coupon, loaded.campaign
    if coupon.status == "redeemed":
        raise CouponAlreadyRedeemed()
    if coupon.status == "void":
        raise CouponVoid()
    if coupon.status == "expired":
        raise CouponExpired()
    if not hold_allowed and coupon.held_until is not None and coupon.held_until > now:
        raise CouponHeld(f"This coupon is held by an online checkout until {coupon.held_until}")
    if campaign.status != "active" or not campaign.starts_at <= now < campaign.ends_at:
        raise CampaignNotActive()
    if where.org_id not in loaded.funding.org_ids:
        raise NotRedeemableHere()
    # The offer names its stores, or any active store of a participant (this one, if so).
    participant_stores: frozenset[uuid.UUID] | None = None
    if where.store_id is not None:
        participant_stores = frozenset({where.store_id}) if loaded.store_ok else frozenset()
    result = domain.quote(
        domain.offer_from_json(campaign.offer),
        domain.Basket(basket_amount, currency, where.channel),
        now,
        where.store_id,
        validity=domain.Validity(coupon.valid_from, coupon.valid_until),
        timezone=campaign.timezone,
        participant_store_ids=participant_stores,
    )
    if isinstance(result, domain.Refusal):
        raise REFUSALS[result]()
    return result


async def quote_coupon(
    session: AsyncSession, principal: Principal, *, code: str, basket_amount: int, currency: str
) -> QuoteRead:
    """The discount and what is left to pay, here now. No side effects."""
    stored = parse_code(code)
    now = utcnow()
    where = where_of(principal)
    loaded = await load_coupon(session, where, code=stored, lock=False)
    quote = evaluate(loaded, where, basket_amount=basket_amount, currency=currency, now=now)
    return QuoteRead(
        coupon_code=loaded.coupon.code,
        campaign_id=loaded.campaign.id,
        campaign_name=loaded.campaign.name,
        currency=currency,
        basket_amount=basket_amount,
        discount=quote.discount,
        payable=quote.payable,
        store_id=where.store_id,
        quoted_at=now,
    )


# --- the frozen funding -----------------------------------------------------------------------


def funding_to_json(funding: RedemptionFunding) -> dict[str, Any]:
    return {
        "discount": funding.discount,
        "currency": funding.currency,
        "redeeming_org_id": str(funding.redeeming_org_id),
        "owner_org_id": str(funding.owner_org_id),
        "carrier_org_id": str(funding.carrier_org_id),
        "funders": [{"org_id": str(f.org_id), "share_bp": f.share_bp} for f in funding.funders],
        "fee_bp": funding.fee_bp,
        "fee_fixed": funding.fee_fixed,
        "fee_payer": funding.fee_payer,
        "split": [{"org_id": str(o), "amount": a} for o, a in funding.parts.items()],
        "fee": funding.fee,
    }


def funding_from_json(data: dict[str, Any]) -> RedemptionFunding:
    return RedemptionFunding(
        discount=int(data["discount"]),
        currency=str(data["currency"]),
        redeeming_org_id=uuid.UUID(data["redeeming_org_id"]),
        owner_org_id=uuid.UUID(data["owner_org_id"]),
        carrier_org_id=uuid.UUID(data["carrier_org_id"]),
        funders=tuple(
            FundingShare(uuid.UUID(f["org_id"]), int(f["share_bp"])) for f in data["funders"]
        ),
        fee_bp=int(data["fee_bp"]),
        fee_fixed=int(data["fee_fixed"]),
        fee_payer=cast(FeePayer, data["fee_payer"]),
    )


def redemption_read(redemption: Redemption, coupon_code: str) -> RedemptionRead:
    frozen = redemption.funding
    return RedemptionRead(
        id=redemption.id,
        coupon_id=redemption.coupon_id,
        coupon_code=coupon_code,
        campaign_id=redemption.campaign_id,
        org_id=redemption.org_id,
        store_id=redemption.store_id,
        terminal_id=redemption.terminal_id,
        channel=redemption.channel,
        order_ref=redemption.order_ref,
        currency=redemption.currency,
        basket_amount=redemption.basket_amount,
        discount=redemption.discount,
        payable=redemption.basket_amount - redemption.discount,
        funding=[
            FundingPart(org_id=uuid.UUID(p["org_id"]), amount=int(p["amount"]))
            for p in frozen.get("split", [])
        ],
        platform_fee=int(frozen.get("fee", 0)),
        status=redemption.status,
        refunded_amount=redemption.refunded_amount,
        discount_reversed=redemption.discount_reversed,
        redeemed_at=redemption.redeemed_at,
        reversed_at=redemption.reversed_at,
    )


def _event_data(redemption: Redemption, coupon_code: str) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(redemption_read(redemption, coupon_code))
    return data


# --- redeem -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PosResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def caller_scope(principal: Principal) -> str:
    """Whose Idempotency-Keys these are: a terminal's own, or an organization's online ones
    (shared by its API keys, so a rotated key replays what the old one did)."""
    if principal.kind == "terminal":
        assert principal.subject_id is not None
        return idempotency.new_scope("terminal", principal.subject_id)
    return idempotency.new_scope("online", principal.org_id)


async def claim_key(
    session: AsyncSession, scope: str, key: str, path: str, body: Any
) -> PosResult | None:
    """Claim the Idempotency-Key for this request in the caller's transaction; when it was
    used already, the first answer (and the transaction is rolled back)."""
    fingerprint = idempotency.request_fingerprint("POST", path, body)
    replay = await idempotency.begin(session, scope=scope, key=key, fingerprint=fingerprint)
    if replay is None:
        return None
    await session.rollback()
    return PosResult(replay.status_code, replay.response, replayed=True)


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """A customer redeeming at `partners` different partners within `window` is flagged."""

    window: timedelta
    partners: int

    @classmethod
    def of(cls, settings: Settings) -> VelocityRule:
        return cls(timedelta(minutes=settings.velocity_window_minutes), settings.velocity_partners)


def trips_velocity(
    rule: VelocityRule, recent_partners: frozenset[uuid.UUID], org_id: uuid.UUID
) -> bool:
    return len(recent_partners | {org_id}) >= rule.partners


@dataclass(frozen=True, slots=True)
class Recorded:
    redemption: Redemption
    body: dict[str, Any]  # the 201 answer: `RedemptionRead` as JSON-ready builtins


async def record_redemption(
    db: AsyncSession | asyncpg.Connection,
    loaded: Loaded,
    quote: domain.Quote,
    where: Where,
    *,
    basket_amount: int,
    order_ref: str | None,
    now: datetime,
    rule: VelocityRule,
    reply_to: tuple[str, str] | None = None,
    fingerprint: str | None = None,
    terminal_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    outbox: jobs.Outbox | None = None,
) -> Recorded:
    """Write a redemption of the locked coupon in the caller's transaction: the redemption
    with its funding frozen, the coupon redeemed, the ledger entry, the figures, the answer
    stored under the Idempotency-Key `reply_to` (scope, key: claimed earlier in the
    transaction, or with `fingerprint` claimed here, `IdempotencyKeyReused` if it was used
    already), a velocity flag if the rule trips, and the `coupon.redeemed` webhook. The same
    for every channel. `db`: a session, or an asyncpg connection in its transaction with
    `outbox` collecting the jobs to dispatch once it committed."""
    coupon, campaign = loaded.coupon, loaded.campaign
    funding = RedemptionFunding(
        discount=quote.discount,
        currency=campaign.currency,
        redeeming_org_id=where.org_id,
        owner_org_id=campaign.owner_org_id,
        carrier_org_id=loaded.carrier_id,
        funders=tuple(
            FundingShare(org_id, share)
            for org_id, share in zip(loaded.funding.org_ids, loaded.funding.shares_bp, strict=True)
        ),
        fee_bp=campaign.fee_bp,
        fee_fixed=campaign.fee_fixed,
        fee_payer=cast(FeePayer, campaign.fee_payer),
    )
    redemption = redemption_sql.new_redemption(
        id=new_id(),
        campaign_id=campaign.id,
        coupon_id=coupon.id,
        org_id=where.org_id,
        store_id=where.store_id,
        terminal_id=terminal_id,
        api_key_id=api_key_id,
        customer_id=coupon.customer_id,
        channel=where.channel,
        currency=campaign.currency,
        basket_amount=basket_amount,
        discount=quote.discount,
        order_ref=order_ref,
        funding=funding_to_json(funding),
        status="completed",
        refunded_amount=0,
        discount_reversed=0,
        redeemed_at=now,
        reversed_at=None,
    )
    body: dict[str, Any] = msgspec.to_builtins(redemption_read(redemption, coupon.code))
    # One statement on the transaction's connection (see `redemption_sql.RECORD`): the hot path.
    if isinstance(db, asyncpg.Connection):
        connection = db
        if outbox is None:
            raise TypeError("a redemption on a bare connection needs an outbox for its jobs")
    else:
        connection, outbox = await driver_connection(db), jobs.outbox_of(db)
    try:
        await redemption_sql.record(
            connection,
            redemption,
            day=figures.local_day(now, campaign.timezone),
            slot=(coupon.slot or 0) % SLOTS,
            funder_spent=list(funding.parts.values()),
            entry=new_redemption_entry(
                redemption_id=redemption.id, funding=funding, occurred_at=now
            ),
            reply=None
            if reply_to is None
            else redemption_sql.Reply(*reply_to, 201, body, fingerprint),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "pk_idempotency_record":
            raise idempotency.IdempotencyKeyReused(field="Idempotency-Key") from exc
        if exc.constraint_name != "uq_redemption_coupon_standing":
            raise
        # Only reachable if something redeemed this coupon without its lock: the unique
        # standing-redemption index keeps it at one.
        raise CouponAlreadyRedeemed() from exc
    coupon.status, coupon.redeemed_at, coupon.held_until = "redeemed", now, None
    if coupon.customer_id is not None and trips_velocity(
        rule, loaded.recent_partners, where.org_id
    ):
        await _flag_velocity(connection, redemption, rule, now)
    await webhooks.emit_event_on(
        connection,
        outbox,
        event_type=redemption_sql.REDEEMED_EVENT,
        org_ids=loaded.funding.org_ids,
        data=body,
        endpoints=loaded.endpoints,
    )
    return Recorded(redemption, body)


def _columns(row: SQLModel) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}  # type: ignore[attr-defined]


async def _flag_velocity(
    connection: asyncpg.Connection, redemption: Redemption, rule: VelocityRule, now: datetime
) -> None:
    """Flag the redemption for review: its holder redeemed at `rule.partners` or more
    partners within the window (this one included). Plain SQL on the transaction's
    connection, which sees the redemption just written."""
    found = await connection.fetch(
        redemption_sql.VELOCITY_REDEMPTIONS, redemption.customer_id, now - rule.window
    )
    org_ids = [
        redemption.org_id,
        *dict.fromkeys(row["org_id"] for row in found if row["org_id"] != redemption.org_id),
    ]
    await connection.execute(
        redemption_sql.FLAG,
        new_id(),
        redemption.id,
        "velocity",
        redemption.customer_id,
        org_ids,
        [row["id"] for row in found],
        redemption_sql.jsonb(
            {
                "window_minutes": int(rule.window.total_seconds() // 60),
                "partners": len(org_ids),
                "threshold": rule.partners,
            }
        ),
        now,
    )


async def redeem(
    db: asyncpg.Connection,
    dispatcher: jobs.JobDispatcher | None,
    principal: Principal,
    data: RedeemRequest,
    *,
    idempotency_key: str,
    rule: VelocityRule,
) -> PosResult:
    """Redeem a coupon at this terminal, exactly once per coupon and per Idempotency-Key.

    On a bare pooled asyncpg connection (no transaction open; see `provide_db`), in one
    transaction of two statements: the locked read (`load_coupon`) and the writing statement,
    which stores the answer with the key (a velocity flag and webhook deliveries, when due,
    add theirs); their jobs go to the queue after the commit. The key is claimed there, at the
    end, not first: a retry while the first request runs waits on the coupon's lock, then is
    refused (the coupon is redeemed) and answered from the key; any refusal, and a key met by
    the writing statement, is answered from the key when it was used already (the first
    answer, or `idempotency_key_reused` for another request), as if it had been claimed
    first."""
    if db.is_in_transaction():
        raise RuntimeError("a redemption must start on a connection without an open transaction")
    stored = parse_code(data.code)
    scope = caller_scope(principal)
    fingerprint = idempotency.request_fingerprint(
        "POST", "/pos/redemptions", msgspec.to_builtins(data)
    )
    now = utcnow()
    where = where_of(principal)
    outbox: jobs.Outbox = []
    try:
        async with db.transaction():
            loaded = await load_coupon(
                db, where, code=stored, lock=True, velocity_since=now - rule.window
            )
            quote = evaluate(
                loaded, where, basket_amount=data.basket_amount, currency=data.currency, now=now
            )
            recorded = await record_redemption(
                db,
                loaded,
                quote,
                where,
                basket_amount=data.basket_amount,
                order_ref=data.order_ref,
                now=now,
                rule=rule,
                reply_to=(scope, idempotency_key),
                fingerprint=fingerprint,
                terminal_id=principal.subject_id,
                outbox=outbox,
            )
    except DomainError:
        replay = await idempotency.stored_answer(
            db, scope=scope, key=idempotency_key, fingerprint=fingerprint
        )
        if replay is None:
            raise
        return PosResult(replay.status_code, replay.response, replayed=True)
    jobs.dispatch_committed(dispatcher, outbox)
    return PosResult(201, recorded.body, replayed=False)


# --- reverse ----------------------------------------------------------------------------------


async def reverse(
    session: AsyncSession,
    principal: Principal,
    redemption_id: uuid.UUID,
    data: ReverseRequest,
    *,
    idempotency_key: str,
) -> PosResult:
    """Reverse a redemption in full or in part (a refund of part of the basket reverses the
    discount pro rata). Cumulative refunds never exceed the basket; a full reversal gives the
    coupon back (or lets it expire, releasing its reservation, when its validity is over)."""
    scope = caller_scope(principal)
    replayed = await claim_key(
        session,
        scope,
        idempotency_key,
        f"/pos/redemptions/{redemption_id}/reversals",
        msgspec.to_builtins(data),
    )
    if replayed is not None:
        return replayed

    now = utcnow()
    redemption = (
        await session.execute(
            select(Redemption)
            .where(col(Redemption.id) == redemption_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if redemption is None or redemption.org_id != principal.org_id:
        raise RedemptionNotFound()
    if redemption.status == "reversed":
        raise RedemptionAlreadyReversed()
    campaign = await session.get_one(Campaign, redemption.campaign_id)
    if now >= redemption.redeemed_at + timedelta(days=campaign.reversal_window_days):
        raise ReversalWindowClosed(
            f"Redemptions of this campaign can be reversed for {campaign.reversal_window_days} days"
        )
    remaining = redemption.basket_amount - redemption.refunded_amount
    refund = data.refund_amount if data.refund_amount is not None else remaining
    if refund > remaining:
        raise RefundExceedsBasket(
            f"At most {remaining} of this basket is left to refund", field="refund_amount"
        )
    refunded_after = redemption.refunded_amount + refund
    full = refunded_after == redemption.basket_amount
    reversed_after = discount_reversed_by_refund(
        redemption.discount, redemption.basket_amount, refunded_after
    )
    reversed_before = redemption.discount_reversed
    reversing_now = reversed_after - reversed_before
    reversal = RedemptionReversal(
        redemption_id=redemption.id,
        org_id=principal.org_id,
        terminal_id=principal.subject_id if principal.kind == "terminal" else None,
        refund_amount=refund,
        discount_reversed=reversing_now,
        full=full,
        reason=data.reason,
        created_at=now,
    )
    session.add(reversal)
    await session.flush()
    if reversing_now > 0:
        await post_reversal(
            session,
            redemption_id=redemption.id,
            reversal_id=reversal.id,
            funding=funding_from_json(redemption.funding),
            reversed_before=reversed_before,
            reversing_now=reversing_now,
            occurred_at=now,
            campaign_id=campaign.id,
        )
    redemption.refunded_amount = refunded_after
    redemption.discount_reversed = reversed_after
    redemption.status = "reversed" if full else "partially_reversed"
    if full:
        redemption.reversed_at = now
    coupon = (
        await session.execute(
            select(Coupon)
            .where(col(Coupon.id) == redemption.coupon_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    day = figures.local_day(now, campaign.timezone)
    slot = coupon.slot or 0
    if full:
        await _give_coupon_back(session, coupon, campaign, now)
    counts = {"discount": -reversing_now, "redeemed": -1 if full else 0}
    if changed := {name: value for name, value in counts.items() if value}:
        await figures.bump(
            session,
            campaign.id,
            day,
            slot,
            funder_spent=[
                -amount
                for amount in reversal_slices(
                    funding_from_json(redemption.funding), reversed_before, reversed_after
                ).values()
            ],
            **changed,
        )
    await webhooks.emit_event(
        session,
        event_type="redemption.reversed",
        org_ids=[uuid.UUID(f["org_id"]) for f in redemption.funding["funders"]],
        data={
            "reversal": {
                "id": str(reversal.id),
                "refund_amount": refund,
                "discount_reversed": reversing_now,
                "full": full,
                "reason": data.reason,
            },
            "redemption": _event_data(redemption, coupon.code),
        },
    )
    body: dict[str, Any] = msgspec.to_builtins(
        ReversalRead(
            id=reversal.id,
            redemption_id=redemption.id,
            refund_amount=refund,
            discount_reversed=reversing_now,
            full=full,
            reason=data.reason,
            created_at=now,
            coupon_status=coupon.status,
            redemption=redemption_read(redemption, coupon.code),
        )
    )
    await idempotency.finish(
        session, scope=scope, key=idempotency_key, status_code=201, response=body
    )
    await commit(session)
    return PosResult(201, body, replayed=False)


async def _give_coupon_back(
    session: AsyncSession, coupon: Coupon, campaign: Campaign, now: datetime
) -> None:
    """After a full reversal: redeemable again while valid, else expired with its
    reservation handed back."""
    coupon.redeemed_at = None
    if coupon.valid_until > now:
        coupon.status = "claimed" if coupon.customer_id is not None else "issued"
        return
    coupon.status, coupon.released_at = "expired", now
    if coupon.slot is not None:
        await slots.give_back(
            session,
            coupon.campaign_id,
            coupon.slot,
            coupon.reserved_amount,
            coupon.funder_reserved,
            quantity=0,
        )
    await figures.bump(
        session,
        campaign.id,
        figures.local_day(now, campaign.timezone),
        coupon.slot or 0,
        expired=1,
    )


# --- reading ----------------------------------------------------------------------------------


async def get_redemption(
    session: AsyncSession, principal: Principal, redemption_id: uuid.UUID
) -> RedemptionRead:
    """One redemption of the terminal's organization (another organization's: 404)."""
    row = (
        await session.execute(
            select(Redemption, col(Coupon.code))
            .join(Coupon, col(Coupon.id) == col(Redemption.coupon_id))
            .where(col(Redemption.id) == redemption_id)
        )
    ).one_or_none()
    if row is None or row[0].org_id != principal.org_id:
        raise RedemptionNotFound()
    return redemption_read(row[0], row[1])


async def list_redemptions(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> tuple[list[RedemptionRead], int]:
    """This terminal's redemptions (an API key: its organization's online ones), newest
    first."""
    where = (
        col(Redemption.terminal_id) == principal.subject_id
        if principal.kind == "terminal"
        else and_(col(Redemption.org_id) == principal.org_id, col(Redemption.channel) == "online")
    )
    total = (
        await session.execute(select(func.count()).select_from(Redemption).where(where))
    ).scalar_one()
    rows = await session.execute(
        select(Redemption, col(Coupon.code))
        .join(Coupon, col(Coupon.id) == col(Redemption.coupon_id))
        .where(where)
        .order_by(col(Redemption.redeemed_at).desc(), col(Redemption.id))
        .limit(limit)
        .offset(offset)
    )
    return [redemption_read(r, code) for r, code in rows.tuples()], int(total)


async def org_redemptions_since(
    session: AsyncSession, principal: Principal, since: datetime, *, limit: int = 20
) -> tuple[list[RedemptionRead], int, int]:
    """The caller organization's redemptions since `since` (newest first, at most `limit`), how
    many there were and the discount they gave (net of reversals)."""
    where = (col(Redemption.org_id) == principal.org_id, col(Redemption.redeemed_at) >= since)
    count, discount = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(col(Redemption.discount) - col(Redemption.discount_reversed)), 0
                ),
            )
            .select_from(Redemption)
            .where(*where)
        )
    ).one()
    rows = await session.execute(
        select(Redemption, col(Coupon.code))
        .join(Coupon, col(Coupon.id) == col(Redemption.coupon_id))
        .where(*where)
        .order_by(col(Redemption.redeemed_at).desc(), col(Redemption.id))
        .limit(limit)
    )
    return [redemption_read(r, code) for r, code in rows.tuples()], int(count), int(discount)
