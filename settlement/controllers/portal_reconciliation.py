"""Portal pages of reconciliation, for finance: the runs (window, status, matched,
discrepancies, control totals per currency), one run with its discrepancy items filtered by
category, one item, and a form that asks for a run of a window on demand. Handlers call the
reconciliation service the API calls, so the rules are the API's: the carrier's finance staff
and admins see every run's totals and every item and ask for runs; a partner's finance staff
and admin see the runs without the platform's figures and only their own organization's items
(another's answers the 404 page)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.services import organizations as org_service
from coalition.platform.errors import DomainError
from coalition.platform.web import (
    FieldErrors,
    Visitor,
    filter_query,
    form_errors,
    page,
    pager_links,
    parse_filters,
    redirect,
)
from coalition.settlement.matching import CATEGORIES, Category
from coalition.settlement.schemas.reconciliation import ReconciliationRequest
from coalition.settlement.services import reconciliation
from coalition.settlement.services.reconciliation import ReconciliationWindowInvalid

PAGE = 50
RUN_STATUSES = ("queued", "running", "completed", "failed")
WINDOW_FIELDS = ("window_start", "window_end")


class RunFilters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    status: Literal["queued", "running", "completed", "failed"] | None = None
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class ItemFilters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    category: Category | None = None
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


def window_request(form: dict[str, str], timezone: str) -> ReconciliationRequest:
    """The form's window as the API's request: each end a local date and time in the reader's
    organization's time zone (what a `datetime-local` field sends), or one with its own offset;
    both empty is the current UTC day, as for the API."""
    ends: dict[str, datetime | None] = {}
    for name in WINDOW_FIELDS:
        typed = (form.get(name) or "").strip()
        if not typed:
            ends[name] = None
            continue
        try:
            moment = datetime.fromisoformat(typed)
        except ValueError as error:
            raise ReconciliationWindowInvalid("Not a date and time", field=name) from error
        ends[name] = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))
    return ReconciliationRequest(window_start=ends["window_start"], window_end=ends["window_end"])


async def _runs_page(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    *,
    status: int = 200,
    run_errors: FieldErrors | None = None,
    run_form: dict[str, str] | None = None,
) -> Response[str]:
    principal = visitor.enter("reconciliation")
    errors = FieldErrors()
    query = filter_query(request, RunFilters)
    runs: list[Any] = []
    total = offset = 0
    try:
        where = parse_filters(request, query, RunFilters)
    except msgspec.ValidationError as error:
        errors, status = form_errors(visitor.t, error), 400
    else:
        offset = where.offset
        runs, total = await reconciliation.list_runs(
            session, principal, status=where.status, limit=PAGE, offset=offset
        )
    return page(
        visitor,
        "settlement/reconciliation_runs.html",
        status=status,
        runs=runs,
        total=total,
        offset=offset,
        pages=pager_links(query, offset, total, PAGE),
        query=query,
        errors=errors,
        status_options=[(s, visitor.t.gettext(f"reconciliation.{s}")) for s in RUN_STATUSES],
        sees_all=principal.sees_all_tenants,
        may_request=principal.sees_all_tenants,
        run_errors=run_errors or FieldErrors(),
        run_form=run_form or {},
        timezone=visitor.t.timezone,
    )


@get("/reconciliation")
async def runs_page(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    return await _runs_page(request, visitor, session)


@post("/reconciliation/runs")
async def request_run(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    """Ask for the window's run (`reconciliation.request_run`, as `POST
    /api/v1/reconciliation/runs`): it is queued for the worker; the run's page follows it."""
    principal = visitor.enter("reconciliation_request")
    form = {k: str(v) for k, v in (await request.form()).items() if k in WINDOW_FIELDS}
    try:
        run = await reconciliation.request_run(
            session, principal, window_request(form, visitor.t.timezone)
        )
    except DomainError as error:
        await session.rollback()
        return await _runs_page(
            request,
            visitor,
            session,
            status=error.status_code,
            run_errors=form_errors(visitor.t, error),
            run_form=form,
        )
    return redirect(visitor, f"/portal/reconciliation/{run.id}")


@get("/reconciliation/{run_id:uuid}")
async def run_page(
    run_id: uuid.UUID, request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("reconciliation")
    run = await reconciliation.get_run(session, principal, run_id)
    errors, status = FieldErrors(), 200
    query = filter_query(request, ItemFilters)
    items: list[Any] = []
    total = offset = 0
    try:
        where = parse_filters(request, query, ItemFilters)
    except msgspec.ValidationError as error:
        errors, status = form_errors(visitor.t, error), 400
    else:
        offset = where.offset
        items, total = await reconciliation.list_items(
            session,
            principal,
            run_id,
            category=where.category,
            org_id=None,
            limit=PAGE,
            offset=offset,
        )
    return page(
        visitor,
        "settlement/reconciliation_run.html",
        status=status,
        run=run,
        items=items,
        total=total,
        offset=offset,
        pages=pager_links(query, offset, total, PAGE),
        query=query,
        errors=errors,
        category_options=[(c, visitor.t.gettext(f"category.{c}")) for c in CATEGORIES],
        org_names=await org_service.organization_names(session, principal),
        sees_all=principal.sees_all_tenants,
    )


@get("/reconciliation/{run_id:uuid}/items/{item_id:uuid}")
async def item_page(
    run_id: uuid.UUID, item_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("reconciliation")
    item = await reconciliation.get_item(session, principal, run_id, item_id)
    run = await reconciliation.get_run(session, principal, run_id)
    return page(
        visitor,
        "settlement/reconciliation_item.html",
        run=run,
        item=item,
        org_names=await org_service.organization_names(session, principal),
    )


PORTAL_PAGES = [runs_page, request_run, run_page, item_page]
