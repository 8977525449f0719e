"""The campaign builder of the portal: a plain form (offer, participants and funding shares,
budgets, fee, schedule, audience, redeemable stores) read as the API's `CampaignCreate` and
checked by the same rules (the schema, then `drafts.check_draft`), with each field's error
shown next to it and a preview of the coupon; and the owner's workflow buttons (propose,
activate, pause, resume).

The form works by posting it. With JavaScript (`static/campaign_builder.js`) it is checked as it
is typed: the page posts the form to `/campaigns/new/check`, which runs exactly the checks a
submit runs and answers the errors by field, the preview and the participants' stores."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.controllers import builder_form
from coalition.campaigns.controllers.builder_form import BuilderForm
from coalition.campaigns.services import drafts, issuance, workflow
from coalition.merchants.services import directory
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import DomainError, Forbidden, ValidationFailed
from coalition.platform.money import MAJOR_AMOUNT
from coalition.platform.web import FieldErrors, Visitor, page, redirect, render_html

DEFAULTS = FormMultiDict(
    {"offer_kind": "amount_off", "valid_days": "7", "per_customer_limit": "1", "owner_share": "100"}
)


def _read(visitor: Visitor, principal: Principal, form: FormMultiDict) -> BuilderForm:
    assert visitor.staff is not None
    return builder_form.read_form(form, principal.org_id, visitor.staff.org_timezone)


def _errors(visitor: Visitor, read: BuilderForm, error: DomainError) -> FieldErrors:
    """The refusal in the reader's language: what each field at fault needs."""
    t = visitor.t
    general = (
        t.gettext(builder_form.GENERAL)
        if isinstance(error, ValidationFailed)
        else t.error(error.code, error.title)
    )
    messages = read.messages(error)
    return FieldErrors(by_field={k: t.gettext(v) for k, v in messages.items()}, general=general)


async def _check(
    visitor: Visitor, session: AsyncSession, principal: Principal, read: BuilderForm
) -> FieldErrors:
    """Every check saving the draft makes, and the form's own, without saving anything."""
    try:
        await drafts.check_draft(session, principal.org_id, read.request(), utcnow())
        read.check_choices()
    except DomainError as error:
        return _errors(visitor, read, error)
    finally:
        await session.rollback()
    return FieldErrors()


async def _live_parts(
    visitor: Visitor, session: AsyncSession, principal: Principal, read: BuilderForm
) -> dict[str, Any]:
    """What changes with the form: the coupon preview and the participants' stores."""
    assert visitor.staff is not None
    return {
        "preview": read.preview(visitor.staff.org_timezone),
        "store_groups": await directory.participant_stores(
            session, principal, [principal.org_id, *read.partner_ids]
        ),
        "store_partners": ",".join(str(p) for p in read.partner_ids),
        "chosen_stores": read.chosen_stores,
    }


async def _builder(
    visitor: Visitor,
    session: AsyncSession,
    principal: Principal,
    *,
    values: FormMultiDict,
    read: BuilderForm,
    errors: FieldErrors,
    status: int = 200,
) -> Response[str]:
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
    t = visitor.t
    return page(
        visitor,
        "campaigns/builder.html",
        status=status,
        values=values,
        errors=errors,
        partner_options=[
            (str(p.organization.id), p.organization.name)
            for p in partners
            if p.organization.id != principal.org_id
        ],
        rows=range(builder_form.PARTNER_ROWS),
        tier_options=[("", "—"), *((str(n), str(n)) for n in builder_form.TIERS)],
        kinds_using=builder_form.KINDS_USING,
        amount_pattern=MAJOR_AMOUNT.pattern,
        script_messages={k: t.gettext(v) for k, v in builder_form.SCRIPT_MESSAGES.items()},
        **await _live_parts(visitor, session, principal, read),
    )


def campaign_manager(visitor: Visitor) -> Principal:
    """Admins and marketing run campaigns (as `MANAGERS` guards the API); finance only reads."""
    principal = visitor.enter("campaigns")
    if principal.role not in ("admin", "marketing"):
        raise Forbidden("Only admins and marketing run campaigns")
    return principal


async def uploaded_csv(form: FormMultiDict, field: str = "targets") -> bytes:
    """The CSV file a campaign page's form uploaded as `field`: `UnusableUpload` naming the
    field when none was chosen (or it is empty)."""
    upload = form.get(field)
    content = await upload.read() if isinstance(upload, UploadFile) else b""
    if not content:
        raise issuance.UnusableUpload("Choose a CSV file", field=field)
    return content


@get("/campaigns/new")
async def builder_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = campaign_manager(visitor)
    read = _read(visitor, principal, DEFAULTS)
    return await _builder(
        visitor, session, principal, values=DEFAULTS, read=read, errors=FieldErrors()
    )


@post("/campaigns/new")
async def builder_submit(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    """`action=preview` checks the form and shows the coupon; `action=create` saves a draft."""
    principal = campaign_manager(visitor)
    form = await request.form()
    read = _read(visitor, principal, form)
    errors = await _check(visitor, session, principal, read)
    if not errors and form.get("action") == "create":
        try:
            loaded = await drafts.create_campaign(session, principal, read.request())
        except DomainError as error:  # the rules, checked again in the saving transaction
            await session.rollback()
            errors = _errors(visitor, read, error)
        else:
            return redirect(visitor, f"/portal/campaigns/{loaded.campaign.id}")
    return await _builder(
        visitor,
        session,
        principal,
        values=form,
        read=read,
        errors=errors,
        status=422 if errors else 200,
    )


@post("/campaigns/new/check", status_code=200)
async def builder_check(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[dict[str, Any]]:
    """The form checked as a submit checks it, for the page's script: `errors` by form field
    (in the reader's language), and the coupon preview and the participants' stores as HTML."""
    principal = campaign_manager(visitor)
    read = _read(visitor, principal, await request.form())
    errors = await _check(visitor, session, principal, read)
    parts = await _live_parts(visitor, session, principal, read)

    def fragment(template: str) -> str:
        return render_html(template, translator=visitor.t, visitor=visitor, **parts)

    return Response(
        {
            "valid": not errors,
            "errors": errors.by_field,
            "general": errors.general,
            "preview": fragment("campaigns/builder_preview.html"),
            "stores": fragment("campaigns/builder_stores.html"),
        },
        headers={"Cache-Control": "no-store"},
        cookies=visitor.cookies(),
    )


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


PORTAL_PAGES = [builder_page, builder_submit, builder_check, propose, activate, pause, resume]
