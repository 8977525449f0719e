"""Statements: closing settlement periods, approving them, and marking them settled.

A statement is one organization's net position against the platform in one currency for one
period of one settlement cycle. Entries belong to the cycle of their campaign
(`campaign.settlement_cycle`; entries without a campaign: monthly), so an organization with
campaigns on different cycles gets one statement per currency and cycle, each netted on its
own. Only obligation entries are netted (`STATEMENT_ENTRY_KINDS`: redemptions, reversals,
fees, adjustments); transfers and collections settle statements and are not part of them.

Closing (`close_period`, `close_due`) is exactly once, in one transaction per series (one
organization, currency and cycle), under a transaction-scoped advisory lock for the series:

1. the statement row is inserted (`ON CONFLICT DO NOTHING` on its unique period) and locked;
   a statement that is no longer `open` is returned as it is (two concurrent closes make one);
2. every entry of the series that is pending (in no statement yet) and occurred before the
   period's end is taken from `statement_pending` and linked to the statement
   (`statement_entry`, whose primary key puts an entry's postings for an organization in
   exactly one statement). A trigger queues every entry in `statement_pending` in the
   entry's own transaction, with its series' cycle and its time, so what a close takes is
   one range of the series index (migration 0015). No watermark: an entry that commits
   after the close, whatever its time, is still pending and falls into the next statement
   closed — a late reversal of a redemption in a closed period lands in the next period. A
   close reads what it takes, not the organization's whole history nor its later periods;
3. the lines are computed in SQL from the linked postings, by campaign and store, plus one
   `carried_forward` line per earlier statement of the series that was carried forward;
4. the figures are summed from the lines and the status becomes `closed`. From then on the
   database refuses any change of the period or figures (migration 0008).

Approval (`approve`): finance users only, the carrier's or (by setting) the organization's
own; above `statement_second_approval_above` a second, different user approves too. An
approved net whose absolute value is below `statement_minimum_payout` is `carried_forward`
at once, into the next statement of the series. The payouts step settles approved statements
with `mark_paid` (net > 0: a transfer to the organization) and `mark_collected` (net < 0);
when Stripe reverses a transfer that paid one, `mark_reversed` sends it back to approved.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Campaign
from coalition.merchants.models import Organization, Store
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import new_id, utcnow
from coalition.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from coalition.platform.settings import Settings
from coalition.settlement.domain import (
    ApprovalPolicy,
    Period,
    SameApprover,
    SettlementCycle,
    approve_outcome,
    is_period_start,
    period_containing,
    period_of_day,
    settlement_direction,
)
from coalition.settlement.models import Statement, StatementLine
from coalition.settlement.schemas.statements import (
    FunderShareRead,
    StatementLineRead,
    StatementLinesRead,
    StatementRead,
)

# --- refusals (stable codes) ------------------------------------------------------------------


class StatementNotFound(NotFound):
    code, title = "statement_not_found", "Statement not found"


class NotAPeriodStart(ValidationFailed):
    code, title = "not_a_period_start", "This day does not start a period of this cycle"


class PeriodNotEnded(Conflict):
    code, title = "period_not_ended", "This period has not ended yet"


class PeriodSuperseded(Conflict):
    code, title = "period_superseded", "A later period of this series is already closed"


class StatementNotClosed(Conflict):
    code, title = "statement_not_closed", "Only a closed statement can be approved"


class SecondApproverRequired(Conflict):
    code, title = "second_approver_required", "A second, different finance user must approve"


class StatementNotSettleable(Conflict):
    code, title = "statement_not_settleable", "This statement cannot be settled this way"


class OwnApprovalDisabled(Forbidden):
    code, title = "own_approval_disabled", "Only the carrier's finance staff approve statements"


def approval_policy(settings: Settings) -> ApprovalPolicy:
    return ApprovalPolicy(
        minimum_payout=settings.statement_minimum_payout,
        second_approver_above=settings.statement_second_approval_above,
        own_finance_may_approve=settings.statement_own_finance_may_approve,
    )


@dataclass(frozen=True, slots=True)
class Series:
    org_id: uuid.UUID
    currency: str
    cycle: SettlementCycle


# --- closing ----------------------------------------------------------------------------------

# What the series has pending, before a time (parameters :org_id, :currency, :cycle): the
# rows of `statement_pending` (filled by a trigger in each entry's own transaction, with the
# entry's cycle, time, kind, campaign and redemption) in the series index range up to that
# time. One index probe finds the earliest; a close reads only the rows it takes.
_SERIES_BEFORE = """
    org_id = :org_id AND currency = :currency AND cycle = :cycle AND occurred_at < {before}
"""

EARLIEST_PENDING = text(f"""
    SELECT min(occurred_at) FROM statement_pending
    WHERE {_SERIES_BEFORE.format(before=":before")}
""")  # noqa: S608 - a constant

# Take what is pending before the period's end, link it to the statement and write its
# activity lines, in one statement: the series' pending rows before the period's end (one
# range of the series index, earlier periods' rows already gone) are deleted, their links
# inserted (the primary key refuses an entry already in a statement), and the lines
# aggregated from exactly the rows the insert returned, joined to the organization's
# postings of those entries and their redemptions. The cost follows what the close takes,
# not the size of the journal or of the series' later periods.
CLOSE_ACTIVITY = text(f"""
    WITH taken AS (
        DELETE FROM statement_pending
        WHERE {_SERIES_BEFORE.format(before=":period_end")}
        RETURNING entry_id, org_id, currency, kind, campaign_id, redemption_id
    ),
    linked AS (
        INSERT INTO statement_entry (entry_id, org_id, currency, statement_id)
        SELECT entry_id, org_id, currency, CAST(:statement_id AS uuid) FROM taken
        RETURNING entry_id
    ),
    accounts AS MATERIALIZED (
        SELECT id, purpose FROM ledger_account
        WHERE org_id = :org_id AND currency = :currency
    ),
    postings AS (
        SELECT p.entry_id,
            coalesce(sum(p.amount) FILTER (WHERE a.purpose = 'partner_receivable'), 0)
                AS receivable,
            coalesce(sum(p.amount) FILTER (WHERE a.purpose = 'partner_payable'), 0) AS payable,
            coalesce(sum(p.amount) FILTER (WHERE a.purpose = 'fee_payable'), 0) AS fee_payable,
            coalesce(sum(p.amount) FILTER (WHERE a.purpose = 'fee_revenue'), 0) AS fee_revenue,
            sum(p.amount) AS total
        FROM linked l
        JOIN ledger_posting p ON p.org_id = :org_id AND p.entry_id = l.entry_id
        JOIN accounts a ON a.id = p.account_id
        WHERE p.currency = :currency
        GROUP BY p.entry_id
    ),
    located AS (
        SELECT t.kind, t.campaign_id, r.store_id, p.receivable, p.payable, p.fee_payable,
            p.fee_revenue, p.total,
            CASE WHEN t.kind = 'redemption' THEN r.discount ELSE 0 END AS discount,
            CASE WHEN t.kind = 'redemption' THEN r.funding -> 'split' END AS split
        FROM postings p
        JOIN taken t ON t.entry_id = p.entry_id
        LEFT JOIN redemption r ON r.id = t.redemption_id
    ),
    -- Each funder's part of the discounts: redemptions of one campaign at one store share
    -- few distinct splits (one per discount amount), so each distinct split is expanded
    -- once and weighted by how many redemptions had it.
    shares AS (
        SELECT campaign_id, store_id,
            jsonb_agg(jsonb_build_object('org_id', org_id, 'amount', amount)
                      ORDER BY amount DESC, org_id) AS funder_shares
        FROM (
            SELECT d.campaign_id, d.store_id, s ->> 'org_id' AS org_id,
                sum((s ->> 'amount')::bigint * d.times) AS amount
            FROM (
                SELECT campaign_id, store_id, split, count(*) AS times
                FROM located WHERE split IS NOT NULL
                GROUP BY 1, 2, 3
            ) d
            CROSS JOIN LATERAL jsonb_array_elements(d.split) s
            GROUP BY 1, 2, 3
        ) per_funder
        GROUP BY campaign_id, store_id
    )
    INSERT INTO statement_line (
        id, statement_id, kind, campaign_id, store_id, source_statement_id,
        redemptions, reversals, discount, shares_receivable, shares_payable, fees_payable,
        fee_revenue, reversals_amount, adjustments, carried, net, funder_shares
    )
    SELECT gen_random_uuid(), :statement_id, 'activity', g.campaign_id, g.store_id, NULL,
        g.redemptions, g.reversals, g.discount, g.receivable, g.payable, g.fee_payable,
        g.fee_revenue, g.reversals_amount, g.adjustments, 0, g.net,
        coalesce(sh.funder_shares, '[]'::jsonb)
    FROM (
        SELECT campaign_id, store_id,
            count(*) FILTER (WHERE kind = 'redemption') AS redemptions,
            count(*) FILTER (WHERE kind = 'reversal') AS reversals,
            coalesce(sum(discount), 0) AS discount,
            coalesce(sum(receivable) FILTER (WHERE kind = 'redemption'), 0) AS receivable,
            coalesce(sum(payable) FILTER (WHERE kind = 'redemption'), 0) AS payable,
            coalesce(sum(fee_payable) FILTER (WHERE kind = 'redemption'), 0) AS fee_payable,
            coalesce(sum(fee_revenue) FILTER (WHERE kind = 'redemption'), 0) AS fee_revenue,
            coalesce(sum(total) FILTER (WHERE kind = 'reversal'), 0) AS reversals_amount,
            coalesce(sum(total) FILTER (WHERE kind NOT IN ('redemption', 'reversal')), 0)
              + coalesce(sum(total - receivable - payable - fee_payable - fee_revenue)
                         FILTER (WHERE kind = 'redemption'), 0) AS adjustments,
            sum(total) AS net
        FROM located
        GROUP BY campaign_id, store_id
    ) g
    LEFT JOIN shares sh
        ON sh.campaign_id IS NOT DISTINCT FROM g.campaign_id
        AND sh.store_id IS NOT DISTINCT FROM g.store_id
""")  # noqa: S608

CARRIED_LINES = text("""
    INSERT INTO statement_line (
        id, statement_id, kind, campaign_id, store_id, source_statement_id,
        redemptions, reversals, discount, shares_receivable, shares_payable, fees_payable,
        fee_revenue, reversals_amount, adjustments, carried, net, funder_shares
    )
    SELECT gen_random_uuid(), :statement_id, 'carried_forward', NULL, NULL, src.id,
        0, 0, 0, 0, 0, 0, 0, 0, 0, src.net, src.net, '[]'::jsonb
    FROM statement src
    WHERE src.org_id = :org_id AND src.currency = :currency AND src.cycle = :cycle
      AND src.status = 'carried_forward' AND src.net <> 0
      AND src.period_start < :period_start
      AND NOT EXISTS (SELECT 1 FROM statement_line l WHERE l.source_statement_id = src.id)
    ORDER BY src.period_start
    ON CONFLICT DO NOTHING
""")

FIGURES = text("""
    UPDATE statement s SET
        status = 'closed', closed_at = :now, closed_by = :closed_by,
        entries = (SELECT count(*) FROM statement_entry se WHERE se.statement_id = s.id),
        redemptions = t.redemptions, reversals = t.reversals, discount = t.discount,
        shares_receivable = t.shares_receivable, shares_payable = t.shares_payable,
        fees_payable = t.fees_payable, fee_revenue = t.fee_revenue,
        reversals_amount = t.reversals_amount, adjustments = t.adjustments,
        carried_in = t.carried, net = t.net
    FROM (
        SELECT coalesce(sum(redemptions), 0) AS redemptions,
            coalesce(sum(reversals), 0) AS reversals,
            coalesce(sum(discount), 0) AS discount,
            coalesce(sum(shares_receivable), 0) AS shares_receivable,
            coalesce(sum(shares_payable), 0) AS shares_payable,
            coalesce(sum(fees_payable), 0) AS fees_payable,
            coalesce(sum(fee_revenue), 0) AS fee_revenue,
            coalesce(sum(reversals_amount), 0) AS reversals_amount,
            coalesce(sum(adjustments), 0) AS adjustments,
            coalesce(sum(carried), 0) AS carried,
            coalesce(sum(net), 0) AS net
        FROM statement_line WHERE statement_id = :statement_id
    ) t
    WHERE s.id = :statement_id AND s.status = 'open'
""")

# The series with pending entries before :now: a skip scan of the series index (one probe per
# series, however many rows each has pending), then one probe each for a row before :now.
PENDING_SERIES = text("""
    WITH RECURSIVE series AS (
        (SELECT org_id, currency, cycle FROM statement_pending
         ORDER BY org_id, currency, cycle LIMIT 1)
        UNION ALL
        SELECT n.org_id, n.currency, n.cycle
        FROM series s
        CROSS JOIN LATERAL (
            SELECT org_id, currency, cycle FROM statement_pending p
            WHERE (p.org_id, p.currency, p.cycle) > (s.org_id, s.currency, s.cycle)
            ORDER BY org_id, currency, cycle LIMIT 1
        ) n
    )
    SELECT s.org_id, s.currency, s.cycle FROM series s
    WHERE EXISTS (
        SELECT 1 FROM statement_pending p
        WHERE p.org_id = s.org_id AND p.currency = s.currency AND p.cycle = s.cycle
          AND p.occurred_at < :now
    )
    ORDER BY 1, 2, 3
""")


def _params(series: Series) -> dict[str, Any]:
    return {"org_id": series.org_id, "currency": series.currency, "cycle": series.cycle}


async def _lock_series(session: AsyncSession, series: Series) -> None:
    """Serialize closes of one series (for this transaction)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"statement:{series.org_id}:{series.currency}:{series.cycle}"},
    )


async def _last_closed_end(session: AsyncSession, series: Series) -> datetime | None:
    row = await session.execute(
        select(func.max(col(Statement.period_end))).where(
            col(Statement.org_id) == series.org_id,
            col(Statement.currency) == series.currency,
            col(Statement.cycle) == series.cycle,
            col(Statement.status) != "open",
        )
    )
    last: datetime | None = row.scalar_one_or_none()
    return last


async def _earliest_unassigned(
    session: AsyncSession, series: Series, before: datetime
) -> datetime | None:
    row = await session.execute(
        EARLIEST_PENDING,
        {**_params(series), "before": before},
    )
    earliest: datetime | None = row.scalar_one_or_none()
    return earliest


def _next_period(
    earliest: datetime, last_end: datetime | None, cycle: SettlementCycle, timezone: str
) -> Period:
    """The period to close next for entries from `earliest` on: the one containing it, or
    the first after the last closed one. Starts no earlier than the last closed end, so
    periods never overlap even if the organization's time zone changed in between."""
    target = earliest if last_end is None else max(earliest, last_end)
    period = period_containing(target, cycle, timezone)
    if last_end is not None and period.start < last_end:
        return Period(last_end, period.end, period.first_day, period.last_day)
    return period


async def _close(
    session: AsyncSession,
    series: Series,
    period: Period,
    timezone: str,
    *,
    now: datetime,
    closed_by: uuid.UUID | None,
) -> Statement:
    """Close the series' statement for `period` in the caller's transaction (series locked)."""
    await session.execute(
        insert(Statement)
        .values(
            id=new_id(),
            org_id=series.org_id,
            currency=series.currency,
            cycle=series.cycle,
            timezone=timezone,
            period_start=period.start,
            period_end=period.end,
            first_day=period.first_day,
            last_day=period.last_day,
            status="open",
            created_at=now,
            **dict.fromkeys(
                (
                    "entries",
                    "redemptions",
                    "reversals",
                    "discount",
                    "shares_receivable",
                    "shares_payable",
                    "fees_payable",
                    "fee_revenue",
                    "reversals_amount",
                    "adjustments",
                    "carried_in",
                    "net",
                ),
                0,
            ),
        )
        .on_conflict_do_nothing(index_elements=["org_id", "currency", "cycle", "period_start"])
    )
    statement: Statement = (
        await session.execute(
            select(Statement)
            .where(
                col(Statement.org_id) == series.org_id,
                col(Statement.currency) == series.currency,
                col(Statement.cycle) == series.cycle,
                col(Statement.period_start) == period.start,
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if statement.status != "open":
        return statement
    ids = {"statement_id": statement.id}
    # The close's one big statement is planned at a cost that makes PostgreSQL compile it
    # (JIT): measured at 100,000 redemptions, compiling took 2.8 s of the carrier's 9.3 s
    # close, more than any step it sped up. Off for the rest of this transaction only.
    await session.execute(text("SET LOCAL jit = off"))
    await session.execute(
        CLOSE_ACTIVITY, {**_params(series), **ids, "period_end": statement.period_end}
    )
    await session.execute(
        CARRIED_LINES, {**_params(series), **ids, "period_start": statement.period_start}
    )
    await session.execute(FIGURES, {**ids, "now": now, "closed_by": closed_by})
    await session.refresh(statement)
    return statement


async def _catch_up(
    session: AsyncSession,
    series: Series,
    timezone: str,
    *,
    before: datetime,
    now: datetime,
    closed_by: uuid.UUID | None,
) -> list[Statement]:
    """Close, in order, every ended period of the series before `before` that has entries
    not yet in a statement (series locked)."""
    closed: list[Statement] = []
    while (earliest := await _earliest_unassigned(session, series, before)) is not None:
        period = _next_period(
            earliest, await _last_closed_end(session, series), series.cycle, timezone
        )
        if period.end > now or period.start >= before:
            break
        statement = await _close(session, series, period, timezone, now=now, closed_by=closed_by)
        if statement.closed_at != now:  # closed before: nothing left here (never expected)
            break
        closed.append(statement)
    return closed


async def close_period(
    session: AsyncSession,
    principal: Principal | None,
    *,
    org_id: uuid.UUID,
    currency: str,
    cycle: SettlementCycle,
    first_day: date,
    now: datetime | None = None,
) -> Statement:
    """Close (on demand) the period of `cycle` starting on the local day `first_day`, after
    closing any earlier ended period of the series that still has entries; commits. Closing a
    closed period returns it unchanged."""
    now = now or utcnow()
    org = (
        await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
        if principal is not None
        else await session.get_one(Organization, org_id)
    )
    timezone = org.timezone
    if not is_period_start(first_day, cycle):
        raise NotAPeriodStart(
            f"{first_day.isoformat()} does not start a {cycle} period "
            "(weekly periods start on Mondays, monthly ones on the 1st)",
            field="period_start",
        )
    period = period_of_day(first_day, cycle, timezone)
    if period.end > now:
        raise PeriodNotEnded(
            f"The period ends at {period.end.isoformat()}", period_end=period.end.isoformat()
        )
    series = Series(org_id, currency, cycle)
    closed_by = principal.user_id if principal is not None else None
    await _lock_series(session, series)
    existing: Statement | None = (
        await session.execute(
            select(Statement).where(
                col(Statement.org_id) == org_id,
                col(Statement.currency) == currency,
                col(Statement.cycle) == cycle,
                col(Statement.period_start) == period.start,
            )
        )
    ).scalar_one_or_none()
    if existing is not None and existing.status != "open":
        await session.commit()
        return existing
    await _catch_up(session, series, timezone, before=period.start, now=now, closed_by=closed_by)
    last_end = await _last_closed_end(session, series)
    if last_end is not None and period.start < last_end:
        raise PeriodSuperseded(
            f"Statements of this series are closed up to {last_end.isoformat()}; later "
            "entries go to the next open period"
        )
    statement = await _close(session, series, period, timezone, now=now, closed_by=closed_by)
    await session.commit()
    return statement


async def pending_series(session: AsyncSession, now: datetime) -> list[Series]:
    """Every series with entries that occurred before `now` and are in no statement yet."""
    rows = await session.execute(PENDING_SERIES, {"now": now})
    return [
        Series(org_id, currency, cast(SettlementCycle, cycle))
        for org_id, currency, cycle in rows.tuples()
    ]


async def close_due(session: AsyncSession, now: datetime | None = None) -> int:
    """Close every statement whose period has ended and which has entries (the schedule):
    one transaction per series, in period order. Idempotent and safe to run concurrently (the
    series lock and the status check make a second run find nothing to do)."""
    now = now or utcnow()
    series_list = await pending_series(session, now)
    await session.rollback()
    closed = 0
    for series in series_list:
        timezone = (await session.get_one(Organization, series.org_id)).timezone
        await _lock_series(session, series)
        made = await _catch_up(session, series, timezone, before=now, now=now, closed_by=None)
        await session.commit()
        closed += len(made)
    return closed


# --- approving and settling -------------------------------------------------------------------


async def _locked(
    session: AsyncSession, principal: Principal, statement_id: uuid.UUID
) -> Statement:
    statement = await session.get(
        Statement, statement_id, with_for_update=True, populate_existing=True
    )
    if statement is None or not principal.may_access(statement.org_id):
        raise StatementNotFound()
    return statement


async def approve(
    session: AsyncSession, principal: Principal, statement_id: uuid.UUID, settings: Settings
) -> Statement:
    """Approve a closed statement as a finance user; commits. Above the threshold the first
    approval waits for a second, different finance user. A repeated approval by the same user
    changes nothing (the statement is returned as it is)."""
    policy = approval_policy(settings)
    statement = await _locked(session, principal, statement_id)
    user_id = principal.user_id
    assert user_id is not None
    if not principal.is_carrier and not policy.own_finance_may_approve:
        raise OwnApprovalDisabled()
    approvers = {statement.first_approved_by, statement.second_approved_by}
    if statement.status != "closed":
        if user_id in approvers:
            await session.commit()
            return statement
        raise StatementNotClosed(f"This statement is {statement.status}", status=statement.status)
    try:
        outcome = approve_outcome(
            policy, statement.net, first_approver=statement.first_approved_by, approver=user_id
        )
    except SameApprover as exc:
        raise SecondApproverRequired(
            f"Statements with a net above {policy.second_approver_above} need two different "
            "approvers; you approved this one already"
        ) from exc
    now = utcnow()
    if statement.first_approved_by is None:
        statement.first_approved_by, statement.first_approved_at = user_id, now
    else:
        statement.second_approved_by, statement.second_approved_at = user_id, now
    if outcome != "awaiting_second_approver":
        statement.status, statement.approved_at = "approved", now
        await session.flush()
        if outcome == "carried_forward":
            statement.status = "carried_forward"
    await session.commit()
    return statement


async def _settle(
    session: AsyncSession,
    statement_id: uuid.UUID,
    *,
    to: str,
    direction: str,
    reference: str,
    at: datetime,
) -> Statement:
    statement = await session.get(
        Statement, statement_id, with_for_update=True, populate_existing=True
    )
    if statement is None:
        raise StatementNotFound()
    if statement.status == to and statement.settlement_reference == reference:
        return statement
    if statement.status != "approved" or settlement_direction(statement.net) != direction:
        raise StatementNotSettleable(
            f"A {statement.status} statement with a net of {statement.net} cannot become {to}",
            status=statement.status,
        )
    statement.status, statement.settled_at, statement.settlement_reference = to, at, reference
    await session.flush()
    return statement


async def mark_paid(
    session: AsyncSession, statement_id: uuid.UUID, *, reference: str, at: datetime
) -> Statement:
    """An approved statement with a positive net was paid to its organization (`reference`:
    the transfer's id). In the caller's transaction (no commit): the payouts step writes its
    ledger entry in the same one. Idempotent for the same reference."""
    return await _settle(
        session, statement_id, to="paid", direction="transfer", reference=reference, at=at
    )


async def mark_collected(
    session: AsyncSession, statement_id: uuid.UUID, *, reference: str, at: datetime
) -> Statement:
    """An approved statement with a negative net was collected from its organization
    (`reference`: the charge's id). Like `mark_paid`: no commit, idempotent."""
    return await _settle(
        session, statement_id, to="collected", direction="collection", reference=reference, at=at
    )


async def mark_reversed(session: AsyncSession, statement_id: uuid.UUID) -> Statement:
    """A transfer that paid the statement was reversed, in part or whole: a paid statement
    goes back to `approved`, its settlement cleared, and the payouts pay what was taken back
    (the next attempt). An approved one stays approved. In the caller's transaction (the one
    recording the reversal in the ledger), no commit."""
    statement = await session.get(
        Statement, statement_id, with_for_update=True, populate_existing=True
    )
    if statement is None:
        raise StatementNotFound()
    if statement.status == "paid":
        statement.status = "approved"
        statement.settled_at = statement.settlement_reference = None
        await session.flush()
    return statement


# --- reading ----------------------------------------------------------------------------------


def statement_read(statement: Statement, org_name: str, policy: ApprovalPolicy) -> StatementRead:
    return StatementRead(
        id=statement.id,
        org_id=statement.org_id,
        org_name=org_name,
        currency=statement.currency,
        cycle=statement.cycle,
        timezone=statement.timezone,
        period_start=statement.period_start,
        period_end=statement.period_end,
        first_day=statement.first_day,
        last_day=statement.last_day,
        status=statement.status,
        entries=statement.entries,
        redemptions=statement.redemptions,
        reversals=statement.reversals,
        discount=statement.discount,
        shares_receivable=statement.shares_receivable,
        shares_payable=statement.shares_payable,
        fees_payable=statement.fees_payable,
        fee_revenue=statement.fee_revenue,
        reversals_amount=statement.reversals_amount,
        adjustments=statement.adjustments,
        carried_in=statement.carried_in,
        net=statement.net,
        settlement=settlement_direction(statement.net),
        approvals_needed=policy.approvals_needed(statement.net),
        closed_at=statement.closed_at,
        closed_by=statement.closed_by,
        first_approved_by=statement.first_approved_by,
        first_approved_at=statement.first_approved_at,
        second_approved_by=statement.second_approved_by,
        second_approved_at=statement.second_approved_at,
        approved_at=statement.approved_at,
        settled_at=statement.settled_at,
        settlement_reference=statement.settlement_reference,
    )


async def _org_names(session: AsyncSession, org_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not org_ids:
        return {}
    rows = await session.execute(
        select(col(Organization.id), col(Organization.name)).where(
            col(Organization.id).in_(org_ids)
        )
    )
    return {org_id: name for org_id, name in rows.tuples()}


async def read_statement(
    session: AsyncSession, principal: Principal, statement_id: uuid.UUID, settings: Settings
) -> StatementRead:
    statement = await session.get(Statement, statement_id)
    if statement is None or not principal.may_access(statement.org_id):
        raise StatementNotFound()
    names = await _org_names(session, {statement.org_id})
    return statement_read(statement, names[statement.org_id], approval_policy(settings))


async def as_read(session: AsyncSession, statement: Statement, settings: Settings) -> StatementRead:
    names = await _org_names(session, {statement.org_id})
    return statement_read(statement, names[statement.org_id], approval_policy(settings))


@dataclass(frozen=True, slots=True)
class StatementFilter:
    org_id: uuid.UUID | None = None
    status: str | None = None
    currency: str | None = None
    cycle: str | None = None
    period_from: date | None = None  # periods starting on or after this local day
    period_to: date | None = None  # ... and ending on or before this local day


async def list_statements(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    where: StatementFilter,
    *,
    limit: int | None,
    offset: int = 0,
) -> tuple[list[StatementRead], int]:
    """Statements the principal may see, newest period first. Filtering by an organization
    the principal may not see answers 404."""
    org_id = where.org_id
    if org_id is not None:
        await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    elif not principal.sees_all_tenants:
        org_id = principal.org_id
    query = select(Statement)
    if org_id is not None:
        query = query.where(col(Statement.org_id) == org_id)
    if where.status is not None:
        query = query.where(col(Statement.status) == where.status)
    if where.currency is not None:
        query = query.where(col(Statement.currency) == where.currency)
    if where.cycle is not None:
        query = query.where(col(Statement.cycle) == where.cycle)
    if where.period_from is not None:
        query = query.where(col(Statement.first_day) >= where.period_from)
    if where.period_to is not None:
        query = query.where(col(Statement.last_day) <= where.period_to)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    query = query.order_by(
        col(Statement.period_start).desc(), col(Statement.org_id), col(Statement.cycle)
    ).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    statements = list((await session.execute(query)).scalars())
    names = await _org_names(session, {s.org_id for s in statements})
    policy = approval_policy(settings)
    return [statement_read(s, names[s.org_id], policy) for s in statements], int(total)


LINE_GROUPS = ("campaign_store", "campaign", "store")
_SUMMED = (
    "redemptions",
    "reversals",
    "discount",
    "shares_receivable",
    "shares_payable",
    "fees_payable",
    "fee_revenue",
    "reversals_amount",
    "adjustments",
    "carried",
    "net",
)


def _grouped(lines: Sequence[StatementLine], by: str) -> list[dict[str, Any]]:
    """Lines summed by campaign or by store (carried-forward lines stay as they are)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    shares: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in lines:
        if line.kind == "carried_forward":
            key: tuple[Any, ...] = ("carried_forward", line.source_statement_id)
        elif by == "campaign":
            key = ("activity", line.campaign_id)
        elif by == "store":
            key = ("activity", line.store_id)
        else:
            key = ("activity", line.campaign_id, line.store_id)
        group = groups.setdefault(
            key,
            {
                "kind": line.kind,
                "campaign_id": line.campaign_id if by != "store" else None,
                "store_id": line.store_id if by != "campaign" else None,
                "source_statement_id": line.source_statement_id,
                **dict.fromkeys(_SUMMED, 0),
            },
        )
        for name in _SUMMED:
            group[name] += getattr(line, name)
        for share in line.funder_shares:
            shares[key][str(share["org_id"])] += int(share["amount"])
    for key, group in groups.items():
        group["funder_shares"] = sorted(
            ({"org_id": org, "amount": amount} for org, amount in shares[key].items()),
            key=lambda s: (-s["amount"], s["org_id"]),
        )
    return list(groups.values())


async def read_lines(
    session: AsyncSession, principal: Principal, statement_id: uuid.UUID, *, by: str
) -> StatementLinesRead:
    """A statement's lines, by campaign and store (as stored), by campaign or by store;
    carried-forward lines last. Names of campaigns, stores and funders included."""
    statement = await session.get(Statement, statement_id)
    if statement is None or not principal.may_access(statement.org_id):
        raise StatementNotFound()
    rows = await session.execute(
        select(StatementLine).where(col(StatementLine.statement_id) == statement_id)
    )
    grouped = _grouped(list(rows.scalars()), by)
    campaign_ids = {g["campaign_id"] for g in grouped if g["campaign_id"] is not None}
    store_ids = {g["store_id"] for g in grouped if g["store_id"] is not None}
    funder_ids = {uuid.UUID(s["org_id"]) for g in grouped for s in g["funder_shares"]}
    campaigns: dict[uuid.UUID, str] = {}
    stores: dict[uuid.UUID, str] = {}
    if campaign_ids:
        found = await session.execute(
            select(col(Campaign.id), col(Campaign.name)).where(col(Campaign.id).in_(campaign_ids))
        )
        campaigns = {key: name for key, name in found.tuples()}
    if store_ids:
        found = await session.execute(
            select(col(Store.id), col(Store.name)).where(col(Store.id).in_(store_ids))
        )
        stores = {key: name for key, name in found.tuples()}
    orgs = await _org_names(session, funder_ids)
    items = [
        StatementLineRead(
            kind=g["kind"],
            campaign_id=g["campaign_id"],
            campaign_name=campaigns.get(g["campaign_id"]) if g["campaign_id"] else None,
            store_id=g["store_id"],
            store_name=stores.get(g["store_id"]) if g["store_id"] else None,
            source_statement_id=g["source_statement_id"],
            **{name: g[name] for name in _SUMMED},
            funder_shares=[
                FunderShareRead(
                    org_id=uuid.UUID(s["org_id"]),
                    org_name=orgs.get(uuid.UUID(s["org_id"])),
                    amount=s["amount"],
                )
                for s in g["funder_shares"]
            ],
        )
        for g in grouped
    ]
    items.sort(
        key=lambda item: (
            item.kind == "carried_forward",
            item.campaign_name or "",
            item.store_name or "",
            str(item.campaign_id),
            str(item.store_id),
            str(item.source_statement_id),
        )
    )
    return StatementLinesRead(
        statement_id=statement.id, currency=statement.currency, by=by, items=items
    )
