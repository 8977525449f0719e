"""Portal pages of finance: the statements list with its filters, a statement with its lines by
campaign and by store, approval (with the second approver where required), closing an ended
period on demand, CSV exports and the printable statement. Each handler is one service call;
the services enforce tenancy (another organization's statement answers 404) exactly as for the
API, and the `statements` area admits finance staff and admins only (403 for anyone else)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.services import organizations as org_service
from coalition.platform.errors import DomainError, ValidationFailed
from coalition.platform.web import FieldErrors, Visitor, form_errors, page, parse_form, redirect
from coalition.settlement.controllers.statements import _csv
from coalition.settlement.schemas.statements import CloseStatementRequest
from coalition.settlement.services import statement_exports, statement_pages, statements

STATUSES = ("open", "closed", "approved", "paid", "collected", "carried_forward")
CYCLES = ("daily", "weekly", "monthly")
PAGE = 50


class StatementFilters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The list's filters as typed in its form (empty fields are left out)."""

    org_id: uuid.UUID | None = None
    status: Literal["open", "closed", "approved", "paid", "collected", "carried_forward"] | None = (
        None
    )
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    cycle: Literal["daily", "weekly", "monthly"] | None = None
    period_from: date | None = None
    period_to: date | None = None


def _filters(query: dict[str, Any]) -> statements.StatementFilter:
    values = {k: v for k, v in query.items() if v not in ("", None)}
    parsed = msgspec.convert(values, StatementFilters, strict=False)
    if parsed.period_from and parsed.period_to and parsed.period_from > parsed.period_to:
        raise ValidationFailed("`period_from` must not be after `period_to`", field="period_to")
    return statements.StatementFilter(
        org_id=parsed.org_id,
        status=parsed.status,
        currency=parsed.currency,
        cycle=parsed.cycle,
        period_from=parsed.period_from,
        period_to=parsed.period_to,
    )


def _query(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in request.query_params.items()
        if k in StatementFilters.__struct_fields__
    }


async def _list_page(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    *,
    status: int = 200,
    close_errors: FieldErrors | None = None,
    close_form: dict[str, Any] | None = None,
) -> Response[str]:
    principal = visitor.enter("statements")
    query = _query(request)
    errors = FieldErrors()
    rows: list[Any] = []
    total = 0
    try:
        where = _filters(query)
    except (msgspec.ValidationError, DomainError) as error:
        errors = form_errors(visitor.t, error)
        status = 400
    else:
        rows, total = await statements.list_statements(
            session, principal, visitor.settings, where, limit=PAGE, offset=0
        )
    organizations: list[Any] = []
    if principal.sees_all_tenants:
        organizations, _ = await org_service.list_organizations(
            session, principal, limit=500, offset=0, status=None
        )
    export = "/portal/statements/export.csv"
    if query:
        from urllib.parse import urlencode

        export += "?" + urlencode(query)
    return page(
        visitor,
        "settlement/statements.html",
        status=status,
        statements=rows,
        total=total,
        query=query,
        errors=errors,
        statuses=STATUSES,
        cycles=CYCLES,
        export_url=export,
        close_errors=close_errors or FieldErrors(),
        close_form=close_form or {"currency": "CNY", "cycle": "weekly"},
        sees_all=principal.sees_all_tenants,
        organizations=organizations,
    )


@get("/statements")
async def statements_page(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    return await _list_page(request, visitor, session)


@get("/statements/export.csv", media_type="text/csv")
async def export_statements(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[bytes]:
    principal = visitor.enter("statements")
    where = _filters(_query(request))
    content = await statement_exports.statements_csv(session, principal, visitor.settings, where)
    return _csv(content, "statements.csv")


@post("/statements/close")
async def close_statement(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    principal = visitor.enter("statements")
    form = await request.form()
    overrides = {} if principal.sees_all_tenants else {"org_id": str(principal.org_id)}
    try:
        data = parse_form(form, CloseStatementRequest, **overrides)
        statement = await statements.close_period(
            session,
            principal,
            org_id=data.org_id,
            currency=data.currency,
            cycle=data.cycle,
            first_day=data.period_start,
        )
    except (msgspec.ValidationError, DomainError) as error:
        return await _list_page(
            request,
            visitor,
            session,
            status=getattr(error, "status_code", 400),
            close_errors=form_errors(visitor.t, error),
            close_form={k: v for k, v in form.items() if k != "_csrf"},
        )
    return redirect(visitor, f"/portal/statements/{statement.id}")


LinesBy = Annotated[Literal["campaign", "store", "campaign_store"], Parameter(query="by")]


@get("/statements/{statement_id:uuid}")
async def statement_page(
    statement_id: uuid.UUID, visitor: Visitor, session: AsyncSession, by: LinesBy = "campaign"
) -> Response[str]:
    principal = visitor.enter("statements")
    found = await statement_pages.statement_page(
        session, principal, visitor.settings, statement_id, by=by
    )
    return page(visitor, "settlement/statement_page.html", found=found, by=by, errors=FieldErrors())


@post("/statements/{statement_id:uuid}/approve")
async def approve_statement(
    statement_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    principal = visitor.enter("statement_approval")
    try:
        await statements.approve(session, principal, statement_id, visitor.settings)
    except DomainError as error:
        found = await statement_pages.statement_page(
            session, principal, visitor.settings, statement_id, by="campaign"
        )
        return page(
            visitor,
            "settlement/statement_page.html",
            status=error.status_code,
            found=found,
            by="campaign",
            errors=form_errors(visitor.t, error),
        )
    return redirect(visitor, f"/portal/statements/{statement_id}")


@get("/statements/{statement_id:uuid}/lines.csv", media_type="text/csv")
async def export_lines(
    statement_id: uuid.UUID, visitor: Visitor, session: AsyncSession, by: LinesBy = "campaign_store"
) -> Response[bytes]:
    principal = visitor.enter("statements")
    content = await statement_exports.lines_csv(
        session, principal, visitor.settings, statement_id, by=by
    )
    return _csv(content, f"statement-{statement_id}-lines.csv")


@get("/statements/{statement_id:uuid}/print", media_type="text/html")
async def printable(
    statement_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("statements")
    html = await statement_exports.printable(session, principal, visitor.settings, statement_id)
    return Response(
        html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


PORTAL_PAGES = [
    statements_page,
    export_statements,
    close_statement,
    statement_page,
    approve_statement,
    export_lines,
    printable,
]
