"""What the finance pages of the portal show about statements, read through the same services
as the statements API (tenancy and roles enforced there): one statement with its lines and the
names of whoever closed and approved it, and the next statement of an organization."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import User
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.settings import Settings
from coalition.settlement.domain import SettlementCycle, period_containing, period_of_day
from coalition.settlement.schemas.statements import StatementLinesRead, StatementRead
from coalition.settlement.services import statements


@dataclass(frozen=True, slots=True)
class StatementPage:
    statement: StatementRead
    lines: StatementLinesRead
    people: dict[uuid.UUID, str]  # closed_by / approvers -> display name
    approvals_given: int
    waiting_for_second: bool  # one approval given, a second (different) finance user needed
    may_approve: bool  # the reader is a finance user and the statement awaits an approval
    approved_by_reader: bool


async def _display_names(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(col(User.id), col(User.display_name)).where(col(User.id).in_(ids))
    )
    return {key: name for key, name in rows.tuples()}


async def statement_page(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    statement_id: uuid.UUID,
    *,
    by: str,
) -> StatementPage:
    """The statement (404 outside the reader's tenancy), its lines grouped `by`, and who did
    what to it."""
    statement = await statements.read_statement(session, principal, statement_id, settings)
    lines = await statements.read_lines(session, principal, statement_id, by=by)
    approvers = [a for a in (statement.first_approved_by, statement.second_approved_by) if a]
    ids = {a for a in (statement.closed_by, *approvers) if a is not None}
    given = len(approvers)
    return StatementPage(
        statement=statement,
        lines=lines,
        people=await _display_names(session, ids),
        approvals_given=given,
        waiting_for_second=statement.status == "closed" and given == 1,
        may_approve=principal.role == "finance"
        and statement.status == "closed"
        and principal.user_id not in approvers,
        approved_by_reader=principal.user_id in approvers,
    )


@dataclass(frozen=True, slots=True)
class NextStatement:
    """The organization's next statement: the period now running in the cycle of its latest
    statement, when that period closes, and the latest statement itself."""

    latest: StatementRead | None
    cycle: str | None
    first_day: date | None
    last_day: date | None
    closes_at: datetime | None
    awaiting_approval: int


async def next_statement(
    session: AsyncSession, principal: Principal, settings: Settings, *, timezone: str
) -> NextStatement:
    where = statements.StatementFilter(org_id=principal.org_id)
    latest, _ = await statements.list_statements(
        session, principal, settings, where, limit=1, offset=0
    )
    _, waiting = await statements.list_statements(
        session,
        principal,
        settings,
        statements.StatementFilter(org_id=principal.org_id, status="closed"),
        limit=0,
        offset=0,
    )
    if not latest:
        return NextStatement(None, None, None, None, None, waiting)
    last = latest[0]
    cycle: SettlementCycle = last.cycle  # type: ignore[assignment]
    following = period_of_day(last.last_day + timedelta(days=1), cycle, last.timezone)
    running = period_containing(utcnow(), cycle, last.timezone)
    period = max(following, running, key=lambda p: p.start)
    return NextStatement(last, cycle, period.first_day, period.last_day, period.end, waiting)
