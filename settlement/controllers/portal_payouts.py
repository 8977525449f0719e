"""Portal pages of payouts, for finance: the payout and collection attempts with their filters,
one attempt with its statement and the statement's other attempts, and the retry. Handlers call
the payouts and statements services the API calls, so the rules are the API's: the carrier's
finance staff and admins see every organization's attempts, a partner's only its own (another's
answers the 404 page), and only finance users retry."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.services import organizations as org_service
from coalition.platform.auth import Principal
from coalition.platform.errors import DomainError
from coalition.platform.settings import Settings
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
from coalition.settlement.controllers.payouts import StripeNotConfigured, provide_gateway
from coalition.settlement.gateway import GatewayNotConfigured
from coalition.settlement.models import PAYOUT_STATUSES
from coalition.settlement.services import payouts, statements

PAGE = 50
# An attempt whose outcome is not final yet, or that failed: the API retries it (a succeeded
# one is returned as it is, a reversed one belongs to a settled statement).
RETRYABLE = ("in_flight", "processing", "failed")


class PayoutFilters(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The list's filters as typed in its form (empty fields are left out)."""

    org_id: uuid.UUID | None = None
    statement_id: uuid.UUID | None = None
    status: Literal["in_flight", "processing", "succeeded", "failed", "reversed"] | None = None
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


@get("/payouts")
async def payouts_page(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("payouts")
    errors, status = FieldErrors(), 200
    rows: list[Any] = []
    total = 0
    query: dict[str, str] = {}
    offset = 0
    try:
        query = filter_query(request, PayoutFilters)
        where = parse_filters(request, query, PayoutFilters)
    except (msgspec.ValidationError, DomainError) as error:
        errors, status = form_errors(visitor.t, error), 400
        query = {k: str(v) for k, v in request.query_params.items()}
    else:
        offset = where.offset
        rows, total = await payouts.list_payouts(
            session,
            principal,
            org_id=where.org_id,
            status=where.status,
            statement_id=where.statement_id,
            limit=PAGE,
            offset=offset,
        )
    names = await org_service.organization_names(session, principal)
    pages = pager_links(query, offset, total, PAGE)
    return page(
        visitor,
        "settlement/payouts.html",
        status=status,
        payouts=rows,
        total=total,
        offset=offset,
        pages=pages,
        query=query,
        errors=errors,
        status_options=[(s, visitor.t.gettext(f"payout.{s}")) for s in PAYOUT_STATUSES],
        org_names=names,
        org_options=sorted(((str(k), v) for k, v in names.items()), key=lambda o: o[1]),
        sees_all=principal.sees_all_tenants,
    )


async def _payout_page(
    visitor: Visitor,
    session: AsyncSession,
    principal: Principal,
    payout_id: uuid.UUID,
    *,
    errors: FieldErrors | None = None,
    status: int = 200,
) -> Response[str]:
    payout = await payouts.get_payout(session, principal, payout_id)
    statement = await statements.read_statement(
        session, principal, payout.statement_id, visitor.settings
    )
    attempts, _ = await payouts.list_payouts(
        session,
        principal,
        org_id=None,
        status=None,
        statement_id=payout.statement_id,
        limit=PAGE,
        offset=0,
    )
    return page(
        visitor,
        "settlement/payout.html",
        status=status,
        payout=payout,
        statement=statement,
        attempts=attempts,
        may_retry=principal.role == "finance" and payout.status in RETRYABLE,
        errors=errors or FieldErrors(),
    )


@get("/payouts/{payout_id:uuid}")
async def payout_page(
    payout_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    return await _payout_page(visitor, session, visitor.enter("payouts"), payout_id)


@post("/payouts/{payout_id:uuid}/retry")
async def retry_payout(
    payout_id: uuid.UUID,
    visitor: Visitor,
    session: AsyncSession,
    state: State,
    settings: Settings,
) -> Response[Any]:
    """Try the payout again (`payouts.retry_payout`: the same key while the outcome is
    unknown, the next generation after a refusal) and show the attempt that answered."""
    principal = visitor.enter("payout_retry")
    try:
        gateway = provide_gateway(state, settings)
        attempt = await payouts.retry_payout(session, principal, gateway, payout_id)
    except (DomainError, GatewayNotConfigured) as refused:
        # Told on the attempt's page rather than the error page.
        error = refused if isinstance(refused, DomainError) else StripeNotConfigured(str(refused))
        if error.status_code == 404:
            raise
        await session.rollback()
        return await _payout_page(
            visitor,
            session,
            principal,
            payout_id,
            errors=form_errors(visitor.t, error),
            status=error.status_code,
        )
    return redirect(visitor, f"/portal/payouts/{attempt.id}")


PORTAL_PAGES = [payouts_page, payout_page, retry_payout]
