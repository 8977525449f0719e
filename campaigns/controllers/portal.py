"""Portal pages of the campaigns domain: the dashboard, proposals to accept or decline, the web
POS for cashiers, and the customers' pages (sign-in by one-time code, offers, claim, wallet with
QR codes) with the public coupon page `/c/<code>` that a coupon's QR opens.

Handlers call the same services as the API; amounts typed by people are parsed once
(`parse_major_amount`) and everything else is decided by the services."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from litestar import Request, Response, get, post
from litestar.response import Redirect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns import charts, qr
from coalition.campaigns.controllers.portal_builder import campaign_manager, uploaded_csv
from coalition.campaigns.schemas.campaigns import CampaignRead
from coalition.campaigns.schemas.coupons import CampaignStatsRead
from coalition.campaigns.schemas.redemptions import RedeemRequest, ReverseRequest
from coalition.campaigns.services import (
    campaigns,
    coupons,
    customers,
    figures,
    issuance,
    redemptions,
    targets,
    workflow,
)
from coalition.merchants.controllers.identity import client_ip
from coalition.merchants.services import directory, terminals
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import DomainError, ValidationFailed
from coalition.platform.money import parse_major_amount
from coalition.platform.settings import Settings
from coalition.platform.sms import sms_gateway
from coalition.platform.web import (
    FieldErrors,
    Visitor,
    form_errors,
    new_idempotency_key,
    new_session,
    page,
    redirect,
    safe_next,
)
from coalition.settlement.services import statement_pages

POS_CURRENCY = "CNY"


class InvalidAmount(ValidationFailed):
    code, title = "invalid_amount", "Enter an amount such as 25 or 25.50"


class TerminalNotChosen(ValidationFailed):
    code, title = "terminal_required", "Choose the terminal you are working at"


def _start_of_local_day(now: datetime, zone: str) -> datetime:
    local = now.astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- dashboard and proposals ------------------------------------------------------------------


@get("/")
async def dashboard(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = visitor.enter("dashboard")
    assert visitor.staff is not None
    since = _start_of_local_day(utcnow(), visitor.staff.org_timezone)
    today, count, discount = await redemptions.org_redemptions_since(session, principal, since)
    active, _ = await campaigns.list_campaigns(
        session, principal, status="active", limit=50, offset=0
    )
    proposed, _ = await campaigns.list_campaigns(
        session, principal, status="proposed", limit=50, offset=0
    )
    upcoming = None
    if not principal.is_carrier and principal.role in ("admin", "finance"):
        upcoming = await statement_pages.next_statement(
            session, principal, visitor.settings, timezone=visitor.staff.org_timezone
        )
    return page(
        visitor,
        "campaigns/dashboard.html",
        next_statement=upcoming,
        today=today,
        today_count=count,
        today_discount=discount,
        active=active,
        proposed=proposed,
    )


@get("/campaigns")
async def campaigns_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = visitor.enter("campaigns")
    rows, total = await campaigns.list_campaigns(
        session, principal, status=None, limit=100, offset=0
    )
    return page(visitor, "campaigns/campaigns.html", campaigns=rows, total=total)


@get("/campaigns/{campaign_id:uuid}")
async def campaign_page(
    campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("campaigns")
    loaded = campaigns.campaign_read(await campaigns.get_loaded(session, principal, campaign_id))
    stats = await coupons.campaign_stats(session, principal, campaign_id)
    places = await figures.redemptions_by_place(session, campaign_id)  # after the access check
    batches: list[Any] = []
    if loaded.owner_org_id == principal.org_id and principal.role in ("admin", "marketing"):
        rows, _ = await issuance.list_issuances(session, principal, campaign_id, limit=10, offset=0)
        batches = [issuance.issuance_summary(b) for b in rows]
    listed = None
    if loaded.audience.kind == "targeted" and (
        loaded.owner_org_id == principal.org_id or principal.sees_all_tenants
    ):
        listed = await targets.target_count(session, principal, campaign_id)
    return page(
        visitor,
        "campaigns/campaign.html",
        campaign=loaded,
        stats=stats,
        charts=_charts(visitor, loaded, stats, places),
        batches=batches,
        target_count=listed,
        errors=FieldErrors(),
        upload_key=new_idempotency_key(),
        store_names=await directory.store_names(session, loaded.store_ids),
    )


def _svg_image(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _charts(
    visitor: Visitor,
    campaign: CampaignRead,
    stats: CampaignStatsRead,
    places: tuple[list[figures.PlaceFigures], list[figures.PlaceFigures]],
) -> dict[str, str]:
    """The campaign page's charts as images: claims and redemptions by day, budget held per
    funder (against its cap, or its share of the total budget), the redemption rate, and
    redemptions by partner and by store."""
    t = visitor.t
    days = [d.day.isoformat() for d in stats.by_day]
    by_day = charts.bars_by_day(
        days,
        [
            charts.Series(t.gettext("Claimed"), [d.claimed for d in stats.by_day]),
            charts.Series(t.gettext("Redeemed"), [d.redeemed for d in stats.by_day]),
        ],
        title=t.gettext("Claims and redemptions by day"),
    )
    names = {p.org_id: p.org_name for p in campaign.participants}
    rows = []
    for funder in stats.funders:
        cap = funder.budget_cap or campaign.total_budget * funder.share_bp // 10_000
        text = t.gettext(
            "{held} held of {cap}",
            held=t.money(funder.reserved, stats.currency),
            cap=t.money(cap, stats.currency),
        )
        rows.append((names.get(funder.org_id, ""), funder.reserved, cap, text))
    burn = charts.horizontal_bars(rows, title=t.gettext("Budget held per funder"))
    given_out = stats.issued + stats.claimed
    rate = charts.horizontal_bars(
        [
            (
                t.gettext("Redeemed"),
                stats.redeemed,
                given_out or None,
                t.gettext(
                    "{rate}: {redeemed} of {given} given out",
                    rate=t.percent(stats.redemption_rate),
                    redeemed=t.number(stats.redeemed),
                    given=t.number(given_out),
                ),
            )
        ],
        title=t.gettext("Redemption rate"),
    )
    by_partner, by_store = places

    def place_rows(items: list[figures.PlaceFigures], *, stores: bool) -> list[Any]:
        return [
            (
                (p.store_name or t.gettext("Online")) if stores else p.org_name,
                p.redemptions,
                None,
                t.gettext(
                    "{n} redemptions, {discount} discount",
                    n=t.number(p.redemptions),
                    discount=t.money(p.discount, stats.currency),
                ),
            )
            for p in items
        ]

    partner_chart = charts.horizontal_bars(
        place_rows(by_partner, stores=False), title=t.gettext("Redemptions by partner")
    )
    store_chart = charts.horizontal_bars(
        place_rows(by_store[:12], stores=True), title=t.gettext("Redemptions by store")
    )
    return {
        "by_day": _svg_image(by_day),
        "burn": _svg_image(burn),
        "rate": _svg_image(rate),
        "by_partner": _svg_image(partner_chart),
        "by_store": _svg_image(store_chart),
    }


@post("/campaigns/{campaign_id:uuid}/issuances", request_max_body_size=issuance.MAX_UPLOAD_BYTES)
async def upload_issuance(
    campaign_id: uuid.UUID,
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    settings: Settings,
) -> Response[Any]:
    """Bulk issuance from an uploaded CSV (a `customer_id` or `phone` column)."""
    principal = campaign_manager(visitor)
    form = await request.form()
    try:
        content = await uploaded_csv(form)
        created = await issuance.create_csv_issuance(
            session,
            settings,
            principal,
            campaign_id,
            content,
            notify=False,
            idempotency_key=str(form.get("idempotency_key", "")) or None,
        )
    except DomainError as error:
        await session.rollback()
        loaded = campaigns.campaign_read(
            await campaigns.get_loaded(session, principal, campaign_id)
        )
        stats = await coupons.campaign_stats(session, principal, campaign_id)
        places = await figures.redemptions_by_place(session, campaign_id)
        return page(
            visitor,
            "campaigns/campaign.html",
            status=error.status_code,
            campaign=loaded,
            stats=stats,
            charts=_charts(visitor, loaded, stats, places),
            batches=[],
            errors=form_errors(visitor.t, error),
            upload_key=new_idempotency_key(),
            store_names=await directory.store_names(session, loaded.store_ids),
        )
    return redirect(visitor, f"/portal/issuances/{created.read.id}")


@get("/issuances/{batch_id:uuid}")
async def issuance_page(
    batch_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    """Progress of a bulk issuance; the page refreshes itself while the batch runs."""
    principal = visitor.enter("campaigns")
    batch = issuance.issuance_read(
        await issuance.get_issuance(session, principal, batch_id), errors_offset=0, errors_limit=100
    )
    return page(visitor, "campaigns/issuance.html", batch=batch)


@get("/proposals")
async def proposals_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = visitor.enter("proposals")
    rows, _ = await campaigns.list_campaigns(
        session, principal, status="proposed", limit=100, offset=0
    )
    loaded = [
        campaigns.campaign_read(await campaigns.get_loaded(session, principal, c.id)) for c in rows
    ]
    return page(
        visitor,
        "campaigns/proposals.html",
        proposals=loaded,
        errors=FieldErrors(),
        org=principal,
        store_names=await directory.store_names(session, [s for c in loaded for s in c.store_ids]),
    )


async def _answer_proposal(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    campaign_id: uuid.UUID,
    accept: bool,
) -> Response[Any]:
    principal = visitor.enter("proposals")
    form = await request.form()
    try:
        if accept:
            version = int(str(form.get("terms_version", "0")) or "0")
            await workflow.accept(session, principal, campaign_id, terms_version=version)
        else:
            reason = str(form.get("reason", "")).strip()
            if not reason:
                raise ValidationFailed("A reason is required", field="reason")
            await workflow.decline(session, principal, campaign_id, reason=reason)
    except (DomainError, ValueError) as error:
        await session.rollback()
        failure = error if isinstance(error, DomainError) else ValidationFailed()
        rows, _ = await campaigns.list_campaigns(
            session, principal, status="proposed", limit=100, offset=0
        )
        loaded = [
            campaigns.campaign_read(await campaigns.get_loaded(session, principal, c.id))
            for c in rows
        ]
        return page(
            visitor,
            "campaigns/proposals.html",
            status=failure.status_code,
            proposals=loaded,
            errors=form_errors(visitor.t, failure),
            failed=campaign_id,
            org=principal,
        )
    return redirect(visitor, "/portal/proposals")


@post("/proposals/{campaign_id:uuid}/accept")
async def accept_proposal(
    campaign_id: uuid.UUID, request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    return await _answer_proposal(request, visitor, session, campaign_id, accept=True)


@post("/proposals/{campaign_id:uuid}/decline")
async def decline_proposal(
    campaign_id: uuid.UUID, request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    return await _answer_proposal(request, visitor, session, campaign_id, accept=False)


# --- web POS ----------------------------------------------------------------------------------


async def _till(visitor: Visitor, session: AsyncSession) -> Principal | None:
    """The terminal principal the cashier works as, or None until they choose a terminal."""
    principal = visitor.enter("pos")
    if not visitor.session.terminal_id:
        return None
    try:
        return await terminals.operate_terminal(
            session, principal, uuid.UUID(visitor.session.terminal_id)
        )
    except (DomainError, ValueError):
        visitor.session.terminal_id = None
        visitor.session_changed = True
        return None


async def _pos_page(
    visitor: Visitor,
    session: AsyncSession,
    till: Principal | None,
    *,
    status: int = 200,
    errors: FieldErrors | None = None,
    **context: Any,
) -> Response[str]:
    principal = visitor.principal
    if till is None:
        rows, _ = await terminals.list_org_terminals(
            session,
            principal,
            principal.org_id,
            status="active",
            store_id=None,
            limit=100,
            offset=0,
        )
        return page(
            visitor,
            "campaigns/pos_choose.html",
            status=status,
            terminals=rows,
            errors=errors or FieldErrors(),
        )
    recent, _ = await redemptions.list_redemptions(session, till, limit=10, offset=0)
    identity = await terminals.pos_identity(session, till)
    return page(
        visitor,
        "campaigns/pos.html",
        status=status,
        till=identity,
        recent=recent,
        errors=errors or FieldErrors(),
        currency=POS_CURRENCY,
        **context,
    )


@get("/pos")
async def pos_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _pos_page(visitor, session, await _till(visitor, session), values={})


@post("/pos/terminal")
async def choose_terminal(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    principal = visitor.enter("pos")
    form = await request.form()
    try:
        terminal_id = uuid.UUID(str(form.get("terminal_id", "")))
        await terminals.operate_terminal(session, principal, terminal_id)
    except (DomainError, ValueError) as error:
        failure = (
            error if isinstance(error, DomainError) else TerminalNotChosen(field="terminal_id")
        )
        return await _pos_page(
            visitor, session, None, status=422, errors=form_errors(visitor.t, failure)
        )
    visitor.session.terminal_id = str(terminal_id)
    visitor.session_changed = True
    return redirect(visitor, "/portal/pos")


@post("/pos/terminal/leave")
async def leave_terminal(visitor: Visitor) -> Redirect:
    visitor.enter("pos")
    visitor.session.terminal_id = None
    visitor.session_changed = True
    return redirect(visitor, "/portal/pos")


def _basket(form: Any) -> int:
    amount = parse_major_amount(str(form.get("basket", "")), POS_CURRENCY)
    if amount is None or amount < 1:
        raise InvalidAmount(field="basket")
    return amount


@post("/pos/quote")
async def pos_quote(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    """Scan or type a code, enter the basket: the quote, and a redeem button."""
    till = await _till(visitor, session)
    if till is None:
        return redirect(visitor, "/portal/pos")
    form = await request.form()
    values = {"code": str(form.get("code", "")), "basket": str(form.get("basket", ""))}
    try:
        quote = await redemptions.quote_coupon(
            session, till, code=values["code"], basket_amount=_basket(form), currency=POS_CURRENCY
        )
    except DomainError as error:
        return await _pos_page(
            visitor,
            session,
            till,
            status=error.status_code,
            errors=form_errors(visitor.t, error),
            values=values,
        )
    return await _pos_page(
        visitor,
        session,
        till,
        quote=quote,
        values=values,
        idempotency_key=new_idempotency_key(),
    )


@post("/pos/redeem")
async def pos_redeem(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    db: asyncpg.Connection,
    settings: Settings,
) -> Response[Any]:
    till = await _till(visitor, session)
    if till is None:
        return redirect(visitor, "/portal/pos")
    form = await request.form()
    values = {"code": str(form.get("code", "")), "basket": str(form.get("basket", ""))}
    key = str(form.get("idempotency_key", "")) or new_idempotency_key()
    try:
        data = RedeemRequest(
            code=values["code"],
            basket_amount=_basket(form),
            currency=POS_CURRENCY,
            order_ref=str(form.get("order_ref", "")).strip() or key[-12:],
        )
        # The form's key makes a double click or a resubmitted form redeem only once.
        # Redemptions run on a bare connection outside any transaction, as for the API.
        await session.commit()
        result = await redemptions.redeem(
            db,
            request.app.state.get("dispatcher"),
            till,
            data,
            idempotency_key=key,
            rule=redemptions.VelocityRule.of(settings),
        )
    except DomainError as error:
        await session.rollback()
        return await _pos_page(
            visitor,
            session,
            till,
            status=error.status_code,
            errors=form_errors(visitor.t, error),
            values=values,
        )
    return redirect(visitor, f"/portal/pos/redemptions/{result.body['id']}")


@get("/pos/redemptions/{redemption_id:uuid}")
async def pos_receipt(
    redemption_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    till = await _till(visitor, session)
    if till is None:
        return redirect(visitor, "/portal/pos")
    redemption = await redemptions.get_redemption(session, till, redemption_id)
    identity = await terminals.pos_identity(session, till)
    return page(
        visitor,
        "campaigns/receipt.html",
        redemption=redemption,
        till=identity,
        errors=FieldErrors(),
        idempotency_key=new_idempotency_key(),
    )


@post("/pos/redemptions/{redemption_id:uuid}/reverse")
async def pos_reverse(
    redemption_id: uuid.UUID,
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
) -> Response[Any]:
    till = await _till(visitor, session)
    if till is None:
        return redirect(visitor, "/portal/pos")
    form = await request.form()
    key = str(form.get("idempotency_key", "")) or new_idempotency_key()
    try:
        refund_text = str(form.get("refund", "")).strip()
        refund = parse_major_amount(refund_text, POS_CURRENCY) if refund_text else None
        if refund_text and (refund is None or refund < 1):
            raise InvalidAmount(field="refund")
        reason = str(form.get("reason", "")).strip()
        if not reason:
            raise ValidationFailed("A reason is required", field="reason")
        await redemptions.reverse(
            session,
            till,
            redemption_id,
            ReverseRequest(reason=reason, refund_amount=refund),
            idempotency_key=key,
        )
    except DomainError as error:
        await session.rollback()
        redemption = await redemptions.get_redemption(session, till, redemption_id)
        return page(
            visitor,
            "campaigns/receipt.html",
            status=error.status_code,
            redemption=redemption,
            till=await terminals.pos_identity(session, till),
            errors=form_errors(visitor.t, error),
            idempotency_key=new_idempotency_key(),
        )
    return redirect(visitor, f"/portal/pos/redemptions/{redemption_id}")


# --- customers --------------------------------------------------------------------------------


@get("/customer/login")
async def customer_login(visitor: Visitor, next: str | None = None) -> Response[str]:
    return page(
        visitor, "campaigns/customer_login.html", step="phone", errors=FieldErrors(), next=next
    )


@post("/customer/login")
async def customer_send_code(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
) -> Response[str]:
    form = await request.form()
    phone = str(form.get("phone", ""))
    try:
        await customers.request_otp(
            session,
            redis,
            settings,
            sms_gateway(settings),
            phone=phone,
            client_ip=client_ip(request),
        )
    except DomainError as error:
        return page(
            visitor,
            "campaigns/customer_login.html",
            status=error.status_code,
            step="phone",
            phone=phone,
            errors=form_errors(visitor.t, error),
            next=form.get("next"),
        )
    return page(
        visitor,
        "campaigns/customer_login.html",
        step="code",
        phone=phone,
        errors=FieldErrors(),
        next=form.get("next"),
    )


@post("/customer/verify")
async def customer_verify(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
) -> Response[Any]:
    form = await request.form()
    phone, code = str(form.get("phone", "")), str(form.get("code", ""))
    try:
        token = await customers.exchange_otp(
            session, redis, settings, phone=phone, code=code, client_ip=client_ip(request)
        )
    except DomainError as error:
        return page(
            visitor,
            "campaigns/customer_login.html",
            status=error.status_code,
            step="code",
            phone=phone,
            errors=form_errors(visitor.t, error),
            next=form.get("next"),
        )
    visitor.replace_session(new_session(kind="customer", customer_token=token.access_token))
    return redirect(visitor, safe_next(form.get("next"), "/portal/customer"))


@get("/customer")
async def customer_offers(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = visitor.customer_principal()
    offers = await coupons.open_offers(session, principal)
    loaded = [campaigns.campaign_read(await campaigns.load(session, c)) for c in offers]
    return page(
        visitor,
        "campaigns/offers.html",
        offers=loaded,
        errors=FieldErrors(),
        claim_key=new_idempotency_key(),
    )


@post("/customer/offers/{campaign_id:uuid}/claim")
async def customer_claim(
    campaign_id: uuid.UUID,
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    db: asyncpg.Connection,
    settings: Settings,
) -> Response[Any]:
    principal = visitor.customer_principal()
    form = await request.form()
    key = str(form.get("idempotency_key", "")) or new_idempotency_key()
    try:
        # Claims run on a bare connection outside any transaction, as for the API.
        result = await coupons.claim_coupon(
            db, settings, principal, campaign_id, idempotency_key=key
        )
    except DomainError as error:
        offers = await coupons.open_offers(session, principal)
        loaded = [campaigns.campaign_read(await campaigns.load(session, c)) for c in offers]
        return page(
            visitor,
            "campaigns/offers.html",
            status=error.status_code,
            offers=loaded,
            errors=form_errors(visitor.t, error),
            failed=campaign_id,
            claim_key=new_idempotency_key(),
        )
    return redirect(visitor, f"/portal/customer/wallet/{result.body['id']}")


@get("/customer/wallet")
async def customer_wallet(
    visitor: Visitor, session: AsyncSession, settings: Settings
) -> Response[str]:
    principal = visitor.customer_principal()
    rows, _ = await coupons.wallet(session, principal, state=None, limit=100, offset=0)
    items = [coupons.coupon_read(c, campaign, settings) for c, campaign in rows]
    return page(visitor, "campaigns/wallet.html", coupons=items)


@get("/customer/wallet/{coupon_id:uuid}")
async def customer_coupon(
    coupon_id: uuid.UUID, visitor: Visitor, session: AsyncSession, settings: Settings
) -> Response[str]:
    principal = visitor.customer_principal()
    coupon, campaign = await coupons.wallet_coupon(session, principal, coupon_id)
    read = coupons.coupon_read(coupon, campaign, settings)
    return page(
        visitor,
        "campaigns/coupon.html",
        coupon=read,
        offer=campaigns.campaign_read(await campaigns.load(session, campaign)),
        qr_png=base64.b64encode(qr.png(read.coupon_url)).decode(),
        mine=True,
    )


@get("/{code:str}")
async def public_coupon(
    code: str, visitor: Visitor, session: AsyncSession, settings: Settings
) -> Response[str]:
    """What a coupon's QR opens on a phone: the code (large, with its QR) and the offer."""
    coupon, campaign = await coupons.coupon_by_code(session, code)
    read = coupons.coupon_read(coupon, campaign, settings)
    mine = visitor.customer is not None and visitor.customer.subject_id == coupon.customer_id
    return page(
        visitor,
        "campaigns/coupon.html",
        coupon=read,
        offer=campaigns.campaign_read(await campaigns.load(session, campaign)),
        qr_png=base64.b64encode(qr.png(read.coupon_url)).decode(),
        mine=mine,
    )


PORTAL_PAGES = [
    dashboard,
    campaigns_page,
    campaign_page,
    upload_issuance,
    issuance_page,
    proposals_page,
    accept_proposal,
    decline_proposal,
    pos_page,
    choose_terminal,
    leave_terminal,
    pos_quote,
    pos_redeem,
    pos_receipt,
    pos_reverse,
    customer_login,
    customer_send_code,
    customer_verify,
    customer_offers,
    customer_claim,
    customer_wallet,
    customer_coupon,
]
COUPON_PAGES = [public_coupon]
