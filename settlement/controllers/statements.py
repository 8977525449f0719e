"""HTTP API of statements, for finance: list, detail, lines, on-demand close, approval, CSV
exports and the printable statement.

Finance staff and admins read and close; only finance users approve (403 otherwise).
Merchant users see their own organization's statements (another organization's answer
404); the carrier's finance staff and admins see every organization's.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from litestar import Controller, Response, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard
from coalition.platform.errors import ValidationFailed
from coalition.platform.settings import Settings
from coalition.settlement.schemas.statements import (
    CloseStatementRequest,
    StatementLinesRead,
    StatementRead,
)
from coalition.settlement.services import statement_exports, statements

OrgFilter = Annotated[uuid.UUID | None, Parameter(query="org_id", description="Organization")]
StatusFilter = Annotated[
    Literal["open", "closed", "approved", "paid", "collected", "carried_forward"] | None,
    Parameter(query="status"),
]
CurrencyFilter = Annotated[
    str | None, Parameter(query="currency", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
]
CycleFilter = Annotated[Literal["daily", "weekly", "monthly"] | None, Parameter(query="cycle")]
PeriodFrom = Annotated[
    date | None,
    Parameter(query="period_from", description="Periods starting on or after this local day"),
]
PeriodTo = Annotated[
    date | None,
    Parameter(query="period_to", description="Periods ending on or before this local day"),
]
LinesBy = Annotated[
    Literal["campaign_store", "campaign", "store"],
    Parameter(query="by", description="How lines are grouped"),
]


def _filter(
    org_id: uuid.UUID | None,
    status: str | None,
    currency: str | None,
    cycle: str | None,
    period_from: date | None,
    period_to: date | None,
) -> statements.StatementFilter:
    if period_from is not None and period_to is not None and period_from > period_to:
        raise ValidationFailed("`period_from` must not be after `period_to`", field="period_to")
    return statements.StatementFilter(
        org_id=org_id,
        status=status,
        currency=currency,
        cycle=cycle,
        period_from=period_from,
        period_to=period_to,
    )


def _csv(content: bytes, filename: str) -> Response[bytes]:
    return Response(
        content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class StatementController(Controller):
    path = "/api/v1/statements"
    tags = ["statements"]
    guards = [role_guard("finance", "admin")]

    @get("/")
    async def list_statements(
        self,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
        limit: Limit,
        offset: Offset,
        org_id: OrgFilter = None,
        status: StatusFilter = None,
        currency: CurrencyFilter = None,
        cycle: CycleFilter = None,
        period_from: PeriodFrom = None,
        period_to: PeriodTo = None,
    ) -> Page[StatementRead]:
        """Statements, newest period first."""
        where = _filter(org_id, status, currency, cycle, period_from, period_to)
        items, total = await statements.list_statements(
            session, principal, settings, where, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/export.csv", media_type="text/csv")
    async def export_statements(
        self,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
        org_id: OrgFilter = None,
        status: StatusFilter = None,
        currency: CurrencyFilter = None,
        cycle: CycleFilter = None,
        period_from: PeriodFrom = None,
        period_to: PeriodTo = None,
    ) -> Response[bytes]:
        """The statements the filters select as CSV (UTF-8 with BOM; minor units)."""
        where = _filter(org_id, status, currency, cycle, period_from, period_to)
        content = await statement_exports.statements_csv(session, principal, settings, where)
        return _csv(content, "statements.csv")

    @post("/close", status_code=200)
    async def close(
        self,
        data: CloseStatementRequest,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> StatementRead:
        """Close the statement of a period that has ended (and any earlier ended period of
        the series with entries). Closing a closed period returns it unchanged."""
        statement = await statements.close_period(
            session,
            principal,
            org_id=data.org_id,
            currency=data.currency,
            cycle=data.cycle,
            first_day=data.period_start,
        )
        return await statements.as_read(session, statement, settings)

    @get("/{statement_id:uuid}")
    async def get_statement(
        self,
        statement_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> StatementRead:
        return await statements.read_statement(session, principal, statement_id, settings)

    @get("/{statement_id:uuid}/lines")
    async def lines(
        self,
        statement_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        by: LinesBy = "campaign_store",
    ) -> StatementLinesRead:
        """The statement's lines by campaign and store, by campaign, or by store."""
        return await statements.read_lines(session, principal, statement_id, by=by)

    @get("/{statement_id:uuid}/lines.csv", media_type="text/csv")
    async def export_lines(
        self,
        statement_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
        by: LinesBy = "campaign_store",
    ) -> Response[bytes]:
        content = await statement_exports.lines_csv(
            session, principal, settings, statement_id, by=by
        )
        return _csv(content, f"statement-{statement_id}-lines.csv")

    @get("/{statement_id:uuid}/print", media_type="text/html")
    async def printable(
        self,
        statement_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> Response[str]:
        """The statement as a printable HTML page."""
        page = await statement_exports.printable(session, principal, settings, statement_id)
        return Response(page, media_type="text/html; charset=utf-8")

    @post("/{statement_id:uuid}/approve", status_code=200, guards=[role_guard("finance")])
    async def approve(
        self,
        statement_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> StatementRead:
        """Approve a closed statement (finance users only)."""
        statement = await statements.approve(session, principal, statement_id, settings)
        return await statements.as_read(session, statement, settings)


ROUTES = [StatementController]
