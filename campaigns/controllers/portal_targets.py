"""Portal page of a targeted campaign's customer list: how many customers it holds and a page of
them, an upload form (a CSV, replacing the list or adding to it) whose result and per-row
errors are shown on the page it answers, and a button per customer to take them off the list.
Plain forms: it works without JavaScript."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns import domain
from coalition.campaigns.controllers.portal_builder import campaign_manager, uploaded_csv
from coalition.campaigns.schemas.targets import LoadMode, TargetListResult
from coalition.campaigns.services import campaigns, issuance, targets
from coalition.platform.auth import Principal
from coalition.platform.errors import DomainError
from coalition.platform.settings import Settings
from coalition.platform.web import FieldErrors, Visitor, form_errors, page, redirect

PAGE_SIZE = 50
PageOffset = Annotated[int, Parameter(query="offset", ge=0, le=10_000_000)]


async def _render(
    visitor: Visitor,
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    offset: int = 0,
    result: TargetListResult | None = None,
    errors: FieldErrors | None = None,
    status: int = 200,
    mode: LoadMode = "replace",
) -> Response[str]:
    items, total = await targets.list_targets(
        session, principal, campaign_id, limit=PAGE_SIZE, offset=offset
    )
    campaign = await campaigns.get_campaign(session, principal, campaign_id)
    targeted = campaign.audience == "targeted"
    may_change = (
        targeted
        and campaign.owner_org_id == principal.org_id
        and principal.role in ("admin", "marketing")
        and domain.target_list_open(domain.CampaignStatus(campaign.status))
    )
    return page(
        visitor,
        "campaigns/targets.html",
        status=status,
        campaign=campaign,
        targeted=targeted,
        may_change=may_change,
        items=items,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        result=result,
        errors=errors or FieldErrors(),
        mode=mode,
    )


@get("/campaigns/{campaign_id:uuid}/targets")
async def targets_page(
    campaign_id: uuid.UUID, visitor: Visitor, session: AsyncSession, offset: PageOffset = 0
) -> Response[str]:
    principal = visitor.enter("campaigns")
    return await _render(visitor, session, principal, campaign_id, offset=offset)


@post("/campaigns/{campaign_id:uuid}/targets", request_max_body_size=issuance.MAX_UPLOAD_BYTES)
async def upload_targets(
    campaign_id: uuid.UUID,
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    settings: Settings,
) -> Response[str]:
    """Load the list from an uploaded CSV; the page answers with the counts and the report."""
    principal = campaign_manager(visitor)
    form = await request.form()
    mode: LoadMode = "add" if form.get("mode") == "add" else "replace"
    try:
        content = await uploaded_csv(form)
        result = await targets.load_csv(
            session, settings, principal, campaign_id, content, mode=mode
        )
    except DomainError as error:
        await session.rollback()
        errors = form_errors(visitor.t, error)
        if error.field == "file":  # the file field of the API is this form's `targets`
            errors = FieldErrors(by_field={"targets": errors.general or ""}, general=errors.general)
        return await _render(
            visitor,
            session,
            principal,
            campaign_id,
            errors=errors,
            status=error.status_code,
            mode=mode,
        )
    return await _render(visitor, session, principal, campaign_id, result=result, mode=mode)


@post("/campaigns/{campaign_id:uuid}/targets/{customer_id:uuid}/remove")
async def remove_target(
    campaign_id: uuid.UUID, customer_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Redirect:
    principal = campaign_manager(visitor)
    await targets.remove_target(session, principal, campaign_id, customer_id)
    return redirect(visitor, f"/portal/campaigns/{campaign_id}/targets")


PORTAL_PAGES = [targets_page, upload_targets, remove_target]
