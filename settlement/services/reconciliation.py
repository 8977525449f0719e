"""Reconciliation runs: what the ledger says moved through Stripe, against what Stripe says.

One run per window `[window_start, window_end)` (a UTC day for the schedule). Executing it:

1. **Stripe's side**, through the gateway: every transfer (with the reversals it lists),
   PaymentIntent and balance transaction created in the window, all pages
   (`settlement.matching.stripe_movements`).
2. **Our side**, from PostgreSQL: the payout attempts that moved or may have moved money
   (refused ones moved none) recorded in the window, and the transfer reversals recorded in
   it; plus those Stripe's side names (by id, by statement), wherever they fall.
3. For what we recorded in the window and Stripe's lists lack, Stripe is asked directly: the
   object by its id, or the statement's transfers by group and metadata. So a movement near
   the window's edge is found on the other side of it, and counted by the window holding its
   anchor (`settlement.matching.reconcile`).
4. In one transaction under the run's row lock: the items replace the run's previous ones by
   key (a second run, even a concurrent one, of the window updates, never duplicates; items
   no longer found go), the control totals per currency, the run `completed`; and for each
   new item a `reconciliation.discrepancy` webhook event to the carrier and to the merchant
   concerned, recorded with the items and sent after the commit (the outbox).

Reading Stripe happens outside any database transaction and holds no lock.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
from sqlalchemy import ColumnElement, delete, func, or_, text
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization
from coalition.merchants.services import webhooks
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import NotFound, ValidationFailed
from coalition.platform.jobs import commit, enqueue
from coalition.settlement import matching
from coalition.settlement.gateway import (
    Collection,
    GatewayError,
    GatewayNotFound,
    SettlementGateway,
    Transfer,
    statement_transfer_group,
)
from coalition.settlement.matching import Discrepancy, LedgerMovement, Outcome, StripeMovement
from coalition.settlement.models import (
    ReconciliationItem,
    ReconciliationRun,
    ReconciliationTotal,
    Statement,
    StripeAccount,
)
from coalition.settlement.schemas.reconciliation import (
    ReconciliationItemRead,
    ReconciliationRequest,
    ReconciliationRunRead,
    ReconciliationTotalRead,
)
from coalition.settlement.services.payouts import carrier_id

JOB_NAME = "reconcile"
EVENT_TYPE = "reconciliation.discrepancy"
MAX_WINDOW = timedelta(days=31)


class ReconciliationRunNotFound(NotFound):
    code, title = "reconciliation_run_not_found", "No such reconciliation run"


class ReconciliationItemNotFound(NotFound):
    code, title = "reconciliation_item_not_found", "No such reconciliation item"


class ReconciliationWindowInvalid(ValidationFailed):
    code, title = "reconciliation_window_invalid", "This window cannot be reconciled"


# --- our side ----------------------------------------------------------------------------------

# Payout attempts that moved or may have moved money, recorded in the window (the posting
# after the call, or the hold while the outcome is unknown), or named by Stripe's side.
ATTEMPTS = text("""
    SELECT a.id, a.statement_id, a.org_id, a.generation, a.direction, a.amount, a.currency,
        a.status, a.stripe_id, a.destination, coalesce(settle.occurred_at, hold.occurred_at) AS at
    FROM payout_attempt a
    JOIN journal_entry hold ON hold.id = a.hold_entry_id
    LEFT JOIN journal_entry settle ON settle.id = a.settle_entry_id
    WHERE a.status <> 'failed' AND (
        coalesce(settle.occurred_at, hold.occurred_at) >= :start
            AND coalesce(settle.occurred_at, hold.occurred_at) < :end
        OR a.stripe_id = ANY(CAST(:stripe_ids AS text[]))
        OR a.statement_id = ANY(CAST(:statement_ids AS uuid[]))
    )
""")

REVERSALS = text("""
    SELECT id, statement_id, org_id, stripe_id, transfer_id, amount, currency, created_at
    FROM payout_reversal
    WHERE created_at >= :start AND created_at < :end
        OR stripe_id = ANY(CAST(:stripe_ids AS text[]))
        OR transfer_id = ANY(CAST(:stripe_ids AS text[]))
""")


@dataclass(frozen=True, slots=True)
class Ours:
    """One movement of ours, with what a lookup in Stripe needs."""

    movement: LedgerMovement
    destination: str | None = None  # the connected account or customer of an attempt
    transfer_id: str | None = None  # the transfer a reversal took back


def _statement_ids(stripe: Iterable[StripeMovement]) -> list[uuid.UUID]:
    named: set[uuid.UUID] = set()
    for movement in stripe:
        for text_id in (movement.statement, (movement.group or "").removeprefix("statement_")):
            try:
                named.add(uuid.UUID(text_id or ""))
            except ValueError:
                continue
    return sorted(named)


async def read_ledger(
    session: AsyncSession, start: datetime, end: datetime, stripe: Sequence[StripeMovement]
) -> list[Ours]:
    """Our movements recorded in the window, and those Stripe's movements name."""
    named = {
        "start": start,
        "end": end,
        "stripe_ids": sorted({m.id for m in stripe}),
        "statement_ids": _statement_ids(stripe),
    }
    ours: list[Ours] = []
    for row in (await session.execute(ATTEMPTS, named)).mappings():
        kind = row["direction"]
        movement = LedgerMovement(
            ref=str(row["id"]),
            kind=kind,
            amount=row["amount"],
            currency=row["currency"],
            status="pending" if row["status"] in ("in_flight", "processing") else "settled",
            at=row["at"],
            stripe_id=row["stripe_id"],
            recovery_key=matching.recovery_key(kind, row["statement_id"], row["generation"]),
            group=statement_transfer_group(row["statement_id"]),
            org_id=row["org_id"],
            statement_id=row["statement_id"],
        )
        ours.append(Ours(movement, destination=row["destination"]))
    named.pop("statement_ids")
    for row in (await session.execute(REVERSALS, named)).mappings():
        movement = LedgerMovement(
            ref=str(row["id"]),
            kind="transfer_reversal",
            amount=row["amount"],
            currency=row["currency"],
            status="settled",
            at=row["created_at"],
            stripe_id=row["stripe_id"],
            group=matching.reversal_group(row["transfer_id"]),
            org_id=row["org_id"],
            statement_id=row["statement_id"],
        )
        ours.append(Ours(movement, transfer_id=row["transfer_id"]))
    return ours


# --- Stripe's side -----------------------------------------------------------------------------


async def read_stripe(
    gateway: SettlementGateway, start: datetime, end: datetime
) -> list[StripeMovement]:
    """Every movement Stripe lists as created in the window (every page of each list)."""
    transfers = await gateway.list_transfers(created_from=start, created_to=end)
    collections = await gateway.list_collections(created_from=start, created_to=end)
    balance = await gateway.list_balance_transactions(created_from=start, created_to=end)
    return matching.stripe_movements(transfers, collections, balance)


async def look_up(
    gateway: SettlementGateway,
    ours: Iterable[Ours],
    stripe: Sequence[StripeMovement],
    start: datetime,
    end: datetime,
) -> list[StripeMovement]:
    """Stripe's side of what we recorded in the window and its lists lack (created outside
    the window, or not at all): by the id we recorded, else by the statement's group and
    metadata."""
    ids = {m.id for m in stripe}
    keys = {m.recovery_key for m in stripe if m.recovery_key}
    transfers: list[Transfer] = []
    collections: list[Collection] = []
    for one in ours:
        movement = one.movement
        if not start <= movement.at < end:
            continue  # read because Stripe's lists name it: its counterpart is there
        statement = {"statement_id": str(movement.statement_id)}
        try:
            if movement.stripe_id is not None and movement.stripe_id not in ids:
                if movement.kind == "collection":
                    collections.append(await gateway.get_collection(movement.stripe_id))
                else:  # a transfer, or the transfer that lists a reversal
                    transfers.append(
                        await gateway.get_transfer(one.transfer_id or movement.stripe_id)
                    )
            elif movement.stripe_id is None and movement.recovery_key not in keys:
                if movement.kind == "transfer" and movement.group:
                    transfers += await gateway.find_transfers(
                        transfer_group=movement.group, metadata=statement
                    )
                elif movement.kind == "collection" and one.destination:
                    collections += await gateway.find_collections(
                        customer_id=one.destination, metadata=statement
                    )
        except GatewayNotFound:
            continue  # Stripe has no such object: it is missing there
    return matching.stripe_movements(transfers, collections)


# --- runs --------------------------------------------------------------------------------------


async def _run_for(
    session: AsyncSession, start: datetime, end: datetime, requested_by: uuid.UUID | None
) -> ReconciliationRun:
    """The window's run, created if new, locked for this transaction."""
    now = utcnow()
    await session.execute(
        insert(ReconciliationRun)
        .values(
            id=uuid.uuid4(),
            window_start=start,
            window_end=end,
            status="queued",
            requested_by=requested_by,
            requests=0,
            matched=0,
            discrepancies=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["window_start", "window_end"])
    )
    run: ReconciliationRun = (
        await session.execute(
            select(ReconciliationRun)
            .where(
                col(ReconciliationRun.window_start) == start,
                col(ReconciliationRun.window_end) == end,
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return run


async def _locked(session: AsyncSession, run_id: uuid.UUID) -> ReconciliationRun:
    run = await session.get(ReconciliationRun, run_id, with_for_update=True, populate_existing=True)
    if run is None:
        raise ReconciliationRunNotFound()
    return run


@dataclass(frozen=True, slots=True)
class Owners:
    """Whose Stripe-side movements are: by the connected account paid or the customer
    charged, and by the statement the metadata names (ids as written there)."""

    by_counterparty: dict[str, uuid.UUID]
    by_statement: dict[str, uuid.UUID]

    def of(self, movement: StripeMovement) -> uuid.UUID | None:
        return self.by_counterparty.get(movement.counterparty or "") or self.by_statement.get(
            movement.statement or ""
        )


async def _owners(session: AsyncSession, discrepancies: Sequence[Discrepancy]) -> Owners:
    theirs = [d.stripe for d in discrepancies if d.stripe is not None]
    counterparties = sorted({m.counterparty for m in theirs if m.counterparty})
    rows = await session.execute(
        sa_select(
            col(StripeAccount.org_id),
            col(StripeAccount.connected_account_id),
            col(StripeAccount.customer_id),
        ).where(
            or_(
                col(StripeAccount.connected_account_id).in_(counterparties),
                col(StripeAccount.customer_id).in_(counterparties),
            )
        )
    )
    by_counterparty = {
        key: org_id
        for org_id, account, customer in rows.tuples()
        for key in (account, customer)
        if key
    }
    statements = await session.execute(
        sa_select(col(Statement.id), col(Statement.org_id)).where(
            col(Statement.id).in_(_statement_ids(theirs))
        )
    )
    return Owners(by_counterparty, {str(s): org_id for s, org_id in statements.tuples()})


def _item_values(run_id: uuid.UUID, discrepancy: Discrepancy, owners: Owners) -> dict[str, Any]:
    ours, theirs = discrepancy.ledger, discrepancy.stripe
    org, statement = (ours.org_id, ours.statement_id) if ours else (None, None)
    if theirs is not None and org is None:
        org = owners.of(theirs)
        if theirs.statement in owners.by_statement:
            statement = uuid.UUID(str(theirs.statement))
    return {
        "run_id": run_id,
        "key": discrepancy.key,
        "category": discrepancy.category,
        "kind": discrepancy.own.kind,
        "side": discrepancy.side,
        "suggested_action": discrepancy.action,
        "org_id": org,
        "statement_id": statement,
        "ledger_id": uuid.UUID(ours.ref) if ours else None,
        "ledger_amount": ours.amount if ours else None,
        "ledger_currency": ours.currency if ours else None,
        "ledger_status": ours.status if ours else None,
        "stripe_id": theirs.id if theirs else None,
        "stripe_amount": theirs.amount if theirs else None,
        "stripe_balance_amount": theirs.balance_amount if theirs else None,
        "stripe_currency": theirs.currency if theirs else None,
        "stripe_status": theirs.status if theirs else None,
    }


async def _store(
    session: AsyncSession,
    run_id: uuid.UUID,
    requests: int,
    outcome: Outcome,
    owners: Owners,
    now: datetime,
) -> ReconciliationRun:
    """Replace the run's items and totals with `outcome`'s, under the run's lock; announce
    the new items. Commits."""
    run = await _locked(session, run_id)
    wanted = {d.key: _item_values(run_id, d, owners) for d in outcome.discrepancies}
    existing = {
        item.key: item
        for item in (
            await session.execute(
                select(ReconciliationItem).where(col(ReconciliationItem.run_id) == run_id)
            )
        ).scalars()
    }
    gone = [item.id for key, item in existing.items() if key not in wanted]
    if gone:
        await session.execute(
            delete(ReconciliationItem).where(col(ReconciliationItem.id).in_(gone))
        )
    new: list[ReconciliationItem] = []
    for key, values in wanted.items():
        item = existing.get(key)
        if item is None:
            item = ReconciliationItem(**values, created_at=now, updated_at=now)
            session.add(item)
            new.append(item)
        elif any(getattr(item, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(item, name, value)
            item.updated_at = now
    await session.execute(
        delete(ReconciliationTotal).where(col(ReconciliationTotal.run_id) == run_id)
    )
    for currency, totals in outcome.totals.items():
        session.add(ReconciliationTotal(run_id=run_id, currency=currency, **vars(totals)))
    run.matched = sum(len(m.ledger) + len(m.stripe) for m in outcome.matches)
    run.discrepancies = len(outcome.discrepancies)
    run.status = "completed" if run.requests == requests else "queued"
    run.finished_at, run.error, run.updated_at = now, None, now
    await session.flush()
    if new:
        carrier = await carrier_id(session)
        about = {
            "id": str(run.id),
            "window_start": run.window_start.isoformat(),
            "window_end": run.window_end.isoformat(),
        }
        for item in new:
            await webhooks.emit_event(
                session,
                event_type=EVENT_TYPE,
                org_ids=[carrier, *([item.org_id] if item.org_id else [])],
                data={"run": about, "item": msgspec.to_builtins(item_read(item))},
            )
    await commit(session)
    return run


async def execute(
    session: AsyncSession, gateway: SettlementGateway, run_id: uuid.UUID
) -> ReconciliationRun:
    """Reconcile the run's window now (idempotent; safe to run twice or concurrently: the
    items are written under the run's lock and keyed). A gateway error fails the run and is
    raised (`retryable` ones are worth another try)."""
    run = await _locked(session, run_id)
    run.status, run.started_at, run.updated_at = "running", utcnow(), utcnow()
    start, end, requests = run.window_start, run.window_end, run.requests
    await session.commit()
    try:
        stripe = await read_stripe(gateway, start, end)
        ours = await read_ledger(session, start, end, stripe)
        await session.rollback()  # a read: no transaction open during the lookups
        stripe += await look_up(gateway, ours, stripe, start, end)
    except GatewayError as exc:
        await fail(session, run_id, exc)
        raise
    outcome = matching.reconcile([o.movement for o in ours], stripe, (start, end))
    owners = await _owners(session, outcome.discrepancies)
    return await _store(session, run_id, requests, outcome, owners, utcnow())


async def fail(session: AsyncSession, run_id: uuid.UUID, error: GatewayError) -> None:
    """The run could not read Stripe: `failed`, with the gateway's message. Commits."""
    run = await _locked(session, run_id)
    run.status, run.error, run.updated_at = "failed", error.message[:500], utcnow()
    await session.commit()


async def reconcile_previous_day(
    session: AsyncSession, gateway: SettlementGateway, now: datetime | None = None
) -> ReconciliationRun:
    """The schedule's run: the UTC day before `now`."""
    start, end = matching.utc_day((now or utcnow()) - timedelta(days=1))
    run = await _run_for(session, start, end, None)
    run.requests += 1
    run_id = run.id
    await session.commit()
    return await execute(session, gateway, run_id)


# --- the finance API ---------------------------------------------------------------------------


def _window(data: ReconciliationRequest, now: datetime) -> tuple[datetime, datetime]:
    if (data.window_start is None) != (data.window_end is None):
        missing = "window_end" if data.window_end is None else "window_start"
        raise ReconciliationWindowInvalid("Give both ends of the window, or neither", field=missing)
    if data.window_start is None or data.window_end is None:
        return matching.utc_day(now)
    for name, moment in (("window_start", data.window_start), ("window_end", data.window_end)):
        if moment.tzinfo is None:
            raise ReconciliationWindowInvalid("Give the time with its time zone", field=name)
    start = data.window_start.replace(microsecond=0)
    end = data.window_end.replace(microsecond=0)
    if end <= start:
        raise ReconciliationWindowInvalid("The window ends after it starts", field="window_end")
    if end - start > MAX_WINDOW:
        raise ReconciliationWindowInvalid(
            f"A window is at most {MAX_WINDOW.days} days", field="window_end"
        )
    if start > now:
        raise ReconciliationWindowInvalid("The window starts in the future", field="window_start")
    return start, end


ReadT = TypeVar("ReadT", bound=msgspec.Struct)


def _as(read: type[ReadT], row: object) -> ReadT:
    """A response struct from a row's attributes of the same names."""
    return read(**{name: getattr(row, name) for name in read.__struct_fields__})


def item_read(item: ReconciliationItem) -> ReconciliationItemRead:
    return _as(ReconciliationItemRead, item)


async def request_run(
    session: AsyncSession,
    principal: Principal,
    data: ReconciliationRequest,
    now: datetime | None = None,
) -> ReconciliationRunRead:
    """Ask for the window's run (default: the current UTC day): queued once; asking again
    while it is queued joins it. Commits; the job runs after the commit."""
    start, end = _window(data, now or utcnow())
    run = await _run_for(session, start, end, principal.user_id)
    if run.status != "queued" or run.requests == 0:
        run.status, run.requested_by, run.updated_at = "queued", principal.user_id, utcnow()
        run.requests += 1
        await enqueue(session, JOB_NAME, str(run.id), key=f"{JOB_NAME}:{run.id}:{run.requests}")
    [read] = await _read_runs(session, principal, [run])
    await commit(session)
    return read


def _visible_items(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.sees_all_tenants:
        return []
    return [col(ReconciliationItem.org_id) == principal.org_id]


async def _read_runs(
    session: AsyncSession, principal: Principal, runs: Sequence[ReconciliationRun]
) -> list[ReconciliationRunRead]:
    """The runs as the principal may see them: with the platform's totals and figures for
    the carrier's staff, with only their own items' count for a partner."""
    ids = [run.id for run in runs]
    totals: dict[uuid.UUID, list[ReconciliationTotalRead]] = defaultdict(list)
    for total in (
        await session.execute(
            select(ReconciliationTotal)
            .where(col(ReconciliationTotal.run_id).in_(ids))
            .order_by(col(ReconciliationTotal.currency))
        )
    ).scalars():
        totals[total.run_id].append(_as(ReconciliationTotalRead, total))
    visible = await session.execute(
        sa_select(col(ReconciliationItem.run_id), func.count())
        .where(col(ReconciliationItem.run_id).in_(ids), *_visible_items(principal))
        .group_by(col(ReconciliationItem.run_id))
    )
    counts: dict[uuid.UUID, int] = dict(visible.tuples().all())
    everything = principal.sees_all_tenants
    return [
        ReconciliationRunRead(
            id=run.id,
            window_start=run.window_start,
            window_end=run.window_end,
            status=run.status,
            requested_by=run.requested_by,
            requests=run.requests,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            created_at=run.created_at,
            updated_at=run.updated_at,
            discrepancies=counts.get(run.id, 0),
            matched=run.matched if everything else None,
            totals=totals[run.id] if everything else None,
        )
        for run in runs
    ]


async def list_runs(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[ReconciliationRunRead], int]:
    """Runs, the latest window first."""
    conditions = [col(ReconciliationRun.status) == status] if status else []
    total = await session.execute(
        sa_select(func.count()).select_from(ReconciliationRun).where(*conditions)
    )
    runs = (
        await session.execute(
            select(ReconciliationRun)
            .where(*conditions)
            .order_by(col(ReconciliationRun.window_end).desc(), col(ReconciliationRun.window_start))
            .limit(limit)
            .offset(offset)
        )
    ).scalars()
    return await _read_runs(session, principal, list(runs)), int(total.scalar_one())


async def get_run(
    session: AsyncSession, principal: Principal, run_id: uuid.UUID
) -> ReconciliationRunRead:
    run = await session.get(ReconciliationRun, run_id, populate_existing=True)
    if run is None:
        raise ReconciliationRunNotFound()
    [read] = await _read_runs(session, principal, [run])
    return read


async def list_items(
    session: AsyncSession,
    principal: Principal,
    run_id: uuid.UUID,
    *,
    category: str | None,
    org_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[ReconciliationItemRead], int]:
    """The run's items the principal may see (its own organization's; the carrier's staff:
    all), by category. Filtering by an organization the principal may not see answers 404."""
    if await session.get(ReconciliationRun, run_id) is None:
        raise ReconciliationRunNotFound()
    conditions = [col(ReconciliationItem.run_id) == run_id, *_visible_items(principal)]
    if org_id is not None:
        await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
        conditions.append(col(ReconciliationItem.org_id) == org_id)
    if category is not None:
        conditions.append(col(ReconciliationItem.category) == category)
    total = await session.execute(
        sa_select(func.count()).select_from(ReconciliationItem).where(*conditions)
    )
    items = (
        await session.execute(
            select(ReconciliationItem)
            .where(*conditions)
            .order_by(col(ReconciliationItem.category), col(ReconciliationItem.key))
            .limit(limit)
            .offset(offset)
        )
    ).scalars()
    return [item_read(item) for item in items], int(total.scalar_one())


async def get_item(
    session: AsyncSession, principal: Principal, run_id: uuid.UUID, item_id: uuid.UUID
) -> ReconciliationItemRead:
    item = await session.get(ReconciliationItem, item_id)
    if item is None or item.run_id != run_id:
        raise ReconciliationItemNotFound()
    if not principal.sees_all_tenants and item.org_id != principal.org_id:
        raise ReconciliationItemNotFound()
    return item_read(item)
