"""The campaign builder of the portal: a plain form (offer, participants and funding shares,
budgets, fee, schedule, audience) turned into the API's `CampaignCreate`, checked by the same
rules (schema, then `drafts.create_campaign`), with errors shown next to their field and a
preview of the coupon; and the owner's workflow buttons (propose, activate, pause, resume)."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.campaigns import CampaignCreate
from coalition.campaigns.services import drafts, workflow
from coalition.merchants.services import directory
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import DomainError, Forbidden, ValidationFailed
from coalition.platform.money import parse_major_amount
from coalition.platform.web import FieldErrors, Visitor, form_errors, page, redirect

PARTNER_ROWS = 3
CURRENCY = "CNY"
# Where the API's field names appear on the form.
FORM_FIELDS = {
    "name": "name",
    "description": "description",
    "code_prefix": "code_prefix",
    "starts_at": "starts",
    "ends_at": "ends",
    "total_quantity": "total_quantity",
    "total_budget": "total_budget",
    "per_customer_limit": "per_customer_limit",
    "offer": "offer_value",
    "offer.kind": "offer_kind",
    "offer.value": "offer_value",
    "offer.percent_bp": "offer_percent",
    "offer.cap": "offer_cap",
    "offer.threshold": "offer_threshold",
    "offer.min_spend": "offer_min_spend",
    "offer.valid_days_after_claim": "valid_days",
    "participants": "owner_share",
    "fee.bp": "fee_percent",
    "fee.fixed": "fee_fixed",
    "audience.min_tier": "min_tier",
}


class FormFieldInvalid(ValidationFailed):
    code, title = "validation_error", "The request is not valid"


def _money(form: Any, name: str, *, required: bool = False) -> int | None:
    text = str(form.get(name, "")).strip()
    if not text:
        if required:
            raise FormFieldInvalid(field=name)
        return None
    amount = parse_major_amount(text, CURRENCY)
    if amount is None:
        raise FormFieldInvalid(field=name)
    return amount


def _basis_points(form: Any, name: str) -> int | None:
    """A percentage with up to two decimals (`12.5` %) in basis points (1250)."""
    return _money(form, name)  # the same two-decimal parsing: 12.50 -> 1250


def _integer(form: Any, name: str) -> int | None:
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    if not text.isdigit():
        raise FormFieldInvalid(field=name)
    return int(text)


def _local_day(form: Any, name: str, zone: str, *, end: bool) -> str:
    text = str(form.get(name, "")).strip()
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise FormFieldInvalid(field=name) from exc
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=ZoneInfo(zone))
    return moment.replace(microsecond=0).isoformat()


def campaign_from_form(form: Any, owner_org_id: uuid.UUID, zone: str) -> CampaignCreate:
    """The API request a filled-in builder form stands for (`FormFieldInvalid` naming the form
    field, or `msgspec.ValidationError` from the API's own schema)."""
    participants: list[dict[str, Any]] = [
        {
            "org_id": str(owner_org_id),
            "share_bp": _basis_points(form, "owner_share") or 0,
            "budget_cap": _money(form, "owner_cap"),
        }
    ]
    for row in range(PARTNER_ROWS):
        partner = str(form.get(f"partner_{row}", "")).strip()
        if not partner:
            continue
        try:
            partner_id = uuid.UUID(partner)
        except ValueError as exc:
            raise FormFieldInvalid(field=f"partner_{row}") from exc
        participants.append(
            {
                "org_id": str(partner_id),
                "share_bp": _basis_points(form, f"partner_share_{row}") or 0,
                "budget_cap": _money(form, f"partner_cap_{row}"),
            }
        )
    offer: dict[str, Any] = {
        "kind": str(form.get("offer_kind", "amount_off")),
        "value": _money(form, "offer_value") or 0,
        "percent_bp": _basis_points(form, "offer_percent") or 0,
        "cap": _money(form, "offer_cap"),
        "threshold": _money(form, "offer_threshold") or 0,
        "min_spend": _money(form, "offer_min_spend") or 0,
        "valid_days_after_claim": _integer(form, "valid_days"),
    }
    audience: dict[str, Any] = {"kind": str(form.get("audience_kind", "open"))}
    if audience["kind"] == "segment":
        audience["min_tier"] = _integer(form, "min_tier")
    body: dict[str, Any] = {
        "name": str(form.get("name", "")),
        "description": str(form.get("description", "")) or None,
        "code_prefix": str(form.get("code_prefix", "")).strip().upper() or None,
        "currency": CURRENCY,
        "timezone": zone,
        "starts_at": _local_day(form, "starts", zone, end=False),
        "ends_at": _local_day(form, "ends", zone, end=True),
        "offer": offer,
        "total_quantity": _integer(form, "total_quantity") or 0,
        "per_customer_limit": _integer(form, "per_customer_limit") or 1,
        "participants": [{k: v for k, v in p.items() if v is not None} for p in participants],
        "total_budget": _money(form, "total_budget", required=True),
        "fee": {
            "bp": _basis_points(form, "fee_percent") or 0,
            "fixed": _money(form, "fee_fixed") or 0,
            "payer": str(form.get("fee_payer", "redeeming_merchant")),
        },
        "audience": audience,
        "settlement_cycle": str(form.get("settlement_cycle", "weekly")),
    }
    return msgspec.convert(body, CampaignCreate)


def _on_form(errors: FieldErrors) -> FieldErrors:
    """The errors keyed by form field names."""
    return FieldErrors(
        by_field={FORM_FIELDS.get(name, name): text for name, text in errors.by_field.items()},
        general=errors.general,
    )


async def _builder(
    visitor: Visitor,
    session: AsyncSession,
    *,
    values: Any,
    errors: FieldErrors,
    preview: CampaignCreate | None = None,
    status: int = 200,
) -> Response[str]:
    principal = visitor.enter("campaigns")
    partners, _ = await directory.search_partners(
        session,
        principal,
        industry=None,
        city=None,
        name=None,
        status=None,
        limit=200,
        offset=0,
    )
    return page(
        visitor,
        "campaigns/builder.html",
        status=status,
        values=values,
        errors=errors,
        preview=preview,
        partners=[p.organization for p in partners if p.organization.id != principal.org_id],
        rows=range(PARTNER_ROWS),
    )


def campaign_manager(visitor: Visitor) -> Principal:
    """Admins and marketing run campaigns (as `MANAGERS` guards the API); finance only reads."""
    principal = visitor.enter("campaigns")
    if principal.role not in ("admin", "marketing"):
        raise Forbidden("Only admins and marketing run campaigns")
    return principal


@get("/campaigns/new")
async def builder_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    campaign_manager(visitor)
    defaults = {"offer_kind": "amount_off", "per_customer_limit": "1", "owner_share": "100"}
    return await _builder(visitor, session, values=defaults, errors=FieldErrors())


@post("/campaigns/new")
async def builder_submit(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    """`action=preview` checks the form and shows the coupon; `action=create` saves a draft."""
    principal = campaign_manager(visitor)
    assert visitor.staff is not None
    form = await request.form()
    try:
        data = campaign_from_form(form, principal.org_id, visitor.staff.org_timezone)
        if form.get("action") == "preview":
            # Every rule a draft must keep, checked without saving anything.
            await drafts.check_draft(session, principal.org_id, data, utcnow())
            await session.rollback()
            return await _builder(visitor, session, values=form, errors=FieldErrors(), preview=data)
        loaded = await drafts.create_campaign(session, principal, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _builder(
            visitor,
            session,
            values=form,
            errors=_on_form(form_errors(visitor.t, error)),
            status=422,
        )
    return redirect(visitor, f"/portal/campaigns/{loaded.campaign.id}")


async def _transition(
    visitor: Visitor, session: AsyncSession, campaign_id: uuid.UUID, action: str
) -> Redirect:
    principal = campaign_manager(visitor)
    if action == "propose":
        await workflow.propose(session, principal, campaign_id)
    elif action == "activate":
        await workflow.activate(session, principal, campaign_id)
    elif action == "pause":
        await workflow.pause(session, principal, campaign_id, reason=None)
    else:
        await workflow.resume(session, principal, campaign_id)
    return redirect(visitor, f"/portal/campaigns/{campaign_id}")


@post("/campaigns/{campaign_id:uuid}/propose")
async def propose(campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    return await _transition(visitor, session, campaign_id, "propose")


@post("/campaigns/{campaign_id:uuid}/activate")
async def activate(campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    return await _transition(visitor, session, campaign_id, "activate")


@post("/campaigns/{campaign_id:uuid}/pause")
async def pause(campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    return await _transition(visitor, session, campaign_id, "pause")


@post("/campaigns/{campaign_id:uuid}/resume")
async def resume(campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    return await _transition(visitor, session, campaign_id, "resume")


PORTAL_PAGES = [builder_page, builder_submit, propose, activate, pause, resume]
