"""Paying and collecting approved statements through the settlement gateway.

One attempt (`PayoutAttempt`, generation 1, 2, ...) per try at settling a statement:

1. In a first transaction, under the statement's row lock: the attempt row with its
   deterministic idempotency key (`payout_idempotency_key` / `collection_idempotency_key`)
   and a **ledger hold** (`payout:<statement>:<generation>:hold`): the amount moves into the
   organization's and the carrier's `payout_clearing` accounts (money in transit). Committed
   before Stripe is called, so a crash after the call finds the hold and the attempt.
2. In a second transaction, under the attempt's row lock (held across the call, so concurrent
   jobs for one statement wait and then see the outcome): first look for what an earlier try
   may have done (`find_transfers` by the statement's transfer group and metadata, or
   `find_collections`) and adopt it; only if nothing is found, call Stripe with the same key.
   On success the posting after (`...:settle`) moves the amount out of clearing into `cash`
   and the statement is marked paid / collected. An unknown outcome (no answer, 5xx) leaves
   the attempt `in_flight` for a later retry with the same key; a definite refusal releases
   the hold (`...:release`) and fails the attempt, and the next run opens generation + 1.

Signs (debit positive, from each organization's point of view), `s` = the statement's net
(positive for a transfer, negative for a collection), `O` the organization, `C` the carrier:

    hold     O payout_clearing -s   C payout_clearing +s
    settle   O payout_clearing +s   O cash -s   C payout_clearing -s   C cash +s
    release  O payout_clearing +s   C payout_clearing -s

So after a payout `O`'s position has dropped by `s` (it was paid) and `C`'s risen by `s` (it
paid), and every `payout_clearing` balance is zero unless a hold is still in transit.

The carrier's own statements are settled without Stripe (no transfer to itself): marked paid
or collected with the reference `carrier:<statement>`. A negative net of an organization with
no saved payment method is carried forward into its next statement.

A transfer Stripe reverses (`transfer.reversed`, from a webhook or the polling backstop) is
recorded once per reversal (`record_reversal`), in the event's transaction: a
`payout_reversal` row, the ledger's mirror of what the payout moved for the amount taken back
(`payout:<statement>:<generation>:reversal:<reversal id>`: `O cash +r`, `C cash -r`), the
attempt `reversed`, and the statement back from `paid` to `approved`. The next run opens a
new generation for what is outstanding (the net less what earlier transfers still pay), so a
partial reversal is paid again in part and a full one in full. A reversal recorded while a
later generation is in flight leaves something outstanding when that one is paid: the
statement goes straight back to approved. Only a transfer of the attempt's own generation,
with no reversal, is ever adopted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import ColumnElement, func
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, NotFound, ValidationFailed
from coalition.settlement.domain import Line, settlement_direction
from coalition.settlement.gateway import (
    Collection,
    CollectionRequest,
    GatewayError,
    GatewayRejected,
    GatewayUnavailable,
    SettlementGateway,
    Transfer,
    TransferRequest,
    TransferReversal,
    collection_idempotency_key,
    payout_idempotency_key,
    statement_transfer_group,
)
from coalition.settlement.models import PayoutAttempt, PayoutReversal, Statement, StripeAccount
from coalition.settlement.schemas.payouts import (
    ConnectedAccountRead,
    ConnectedAccountRequest,
    PayoutRead,
)
from coalition.settlement.services import ledger, statements

log = structlog.get_logger(__name__)


class PayoutNotFound(NotFound):
    code, title = "payout_not_found", "No such payout"


class ConnectedAccountMissing(Conflict):
    code, title = (
        "connected_account_missing",
        "The organization has no onboarded Stripe account to pay into",
    )


def hold_key(statement_id: uuid.UUID, generation: int) -> str:
    return f"payout:{statement_id}:{generation}:hold"


def settle_key(statement_id: uuid.UUID, generation: int) -> str:
    return f"payout:{statement_id}:{generation}:settle"


def release_key(statement_id: uuid.UUID, generation: int) -> str:
    return f"payout:{statement_id}:{generation}:release"


def reversal_key(statement_id: uuid.UUID, generation: int, reversal_id: str) -> str:
    return f"payout:{statement_id}:{generation}:reversal:{reversal_id}"


def statement_metadata(statement: Statement) -> dict[str, str]:
    return {"statement_id": str(statement.id), "org_id": str(statement.org_id)}


async def carrier_id(session: AsyncSession) -> uuid.UUID:
    row = await session.execute(
        sa_select(col(Organization.id)).where(col(Organization.kind) == "carrier")
    )
    found = row.scalar_one_or_none()
    if found is None:
        raise ConnectedAccountMissing("This installation has no carrier organization")
    return found


async def _latest_attempt(session: AsyncSession, statement_id: uuid.UUID) -> PayoutAttempt | None:
    row = await session.execute(
        select(PayoutAttempt)
        .where(col(PayoutAttempt.statement_id) == statement_id)
        .order_by(col(PayoutAttempt.generation).desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return row.scalars().first()


def _signed(attempt: PayoutAttempt) -> int:
    return attempt.amount if attempt.direction == "transfer" else -attempt.amount


async def _outstanding(session: AsyncSession, statement: Statement) -> int:
    """What is left to settle of an approved statement: its net, less what earlier attempts
    paid and Stripe has not taken back (reversals)."""
    paid = await session.execute(
        sa_select(func.coalesce(func.sum(col(PayoutAttempt.amount)), 0)).where(
            col(PayoutAttempt.statement_id) == statement.id,
            col(PayoutAttempt.status).in_(("succeeded", "reversed")),
        )
    )
    taken_back = await session.execute(
        sa_select(func.coalesce(func.sum(col(PayoutReversal.amount)), 0)).where(
            col(PayoutReversal.statement_id) == statement.id
        )
    )
    return abs(statement.net) - int(paid.scalar_one()) + int(taken_back.scalar_one())


async def _post(
    session: AsyncSession,
    attempt: PayoutAttempt,
    carrier: uuid.UUID,
    key: str,
    lines: Sequence[Line],
    at: datetime,
) -> uuid.UUID:
    entry = await ledger.post_entry(
        session,
        idempotency_key=key,
        kind="transfer" if attempt.direction == "transfer" else "collection",
        currency=attempt.currency,
        lines=lines,
        occurred_at=at,
        memo=f"statement {attempt.statement_id} generation {attempt.generation}",
    )
    return entry.id


async def _open_attempt(
    session: AsyncSession, statement_id: uuid.UUID, now: datetime
) -> PayoutAttempt | None:
    """Transaction 1: the open attempt of an approved statement, creating it (with its hold)
    for what is outstanding when none is open (the first, or after one failed or Stripe took
    money back). None when there is nothing to pay (not approved, already settled, the
    carrier's own, or carried forward). Commits."""
    statement = await session.get(
        Statement, statement_id, with_for_update=True, populate_existing=True
    )
    if statement is None:
        raise statements.StatementNotFound()
    latest = await _latest_attempt(session, statement_id)
    if statement.status != "approved":
        await session.commit()
        return latest if latest is not None and latest.status != "failed" else None
    if latest is not None and latest.status in ("in_flight", "processing"):
        await session.commit()
        return latest
    direction = settlement_direction(statement.net)
    carrier = await carrier_id(session)
    if direction == "none" or statement.org_id == carrier:
        reference = f"carrier:{statement.id}"
        if direction == "collection":
            await statements.mark_collected(session, statement.id, reference=reference, at=now)
        else:
            await statements.mark_paid(session, statement.id, reference=reference, at=now)
        await session.commit()
        return None
    account = await session.get(StripeAccount, statement.org_id, populate_existing=True)
    if direction == "transfer":
        if account is None or account.connected_account_id is None:
            raise ConnectedAccountMissing(
                "The organization has not created its Stripe account yet",
                org_id=str(statement.org_id),
            )
        destination = account.connected_account_id
    else:
        if account is None or account.customer_id is None or account.payment_method_id is None:
            statement.status = "carried_forward"  # no saved payment method: per policy
            await session.commit()
            return None
        destination = account.customer_id
    generation = 1 if latest is None else latest.generation + 1
    key = (payout_idempotency_key if direction == "transfer" else collection_idempotency_key)(
        statement.id, generation
    )
    attempt = PayoutAttempt(
        statement_id=statement.id,
        org_id=statement.org_id,
        generation=generation,
        direction=direction,
        idempotency_key=key,
        amount=await _outstanding(session, statement),
        currency=statement.currency,
        destination=destination,
        hold_entry_id=uuid.uuid4(),  # replaced below, before the flush
    )
    s = _signed(attempt)
    attempt.hold_entry_id = await _post(
        session,
        attempt,
        carrier,
        hold_key(statement.id, generation),
        [
            Line(statement.org_id, "payout_clearing", -s),
            Line(carrier, "payout_clearing", s),
        ],
        now,
    )
    session.add(attempt)
    await session.commit()
    return attempt


async def _adopt_or_transfer(
    gateway: SettlementGateway, attempt: PayoutAttempt, statement: Statement
) -> Transfer:
    group = statement_transfer_group(statement.id)
    metadata = {**statement_metadata(statement), "generation": str(attempt.generation)}
    found = [
        t
        for t in await gateway.find_transfers(transfer_group=group, metadata=metadata)
        if t.amount_reversed == 0  # a reversed one was recorded, and is paid again
    ]
    if found:
        return found[0]  # an earlier try of this attempt did it: adopt, never pay twice
    return await gateway.create_transfer(
        TransferRequest(
            amount=attempt.amount,
            currency=attempt.currency,
            destination=attempt.destination,
            transfer_group=group,
            idempotency_key=attempt.idempotency_key,
            metadata=metadata,
            description=f"Statement {statement.first_day} - {statement.last_day}",
        )
    )


async def _adopt_or_collect(
    gateway: SettlementGateway,
    attempt: PayoutAttempt,
    statement: Statement,
    payment_method_id: str | None,
) -> Collection:
    metadata = statement_metadata(statement)
    if attempt.stripe_id is not None:
        return await gateway.get_collection(attempt.stripe_id)
    found = await gateway.find_collections(customer_id=attempt.destination, metadata=metadata)
    live = [c for c in found if c.status != "failed"]
    if live:
        return live[0]
    return await gateway.collect(
        CollectionRequest(
            customer_id=attempt.destination,
            amount=attempt.amount,
            currency=attempt.currency,
            idempotency_key=attempt.idempotency_key,
            payment_method_id=payment_method_id,
            metadata={**metadata, "generation": str(attempt.generation)},
            transfer_group=statement_transfer_group(statement.id),
        )
    )


async def _finish(
    session: AsyncSession, attempt: PayoutAttempt, stripe_id: str, now: datetime
) -> None:
    carrier = await carrier_id(session)
    s = _signed(attempt)
    attempt.settle_entry_id = await _post(
        session,
        attempt,
        carrier,
        settle_key(attempt.statement_id, attempt.generation),
        [
            Line(attempt.org_id, "payout_clearing", s),
            Line(attempt.org_id, "cash", -s),
            Line(carrier, "payout_clearing", -s),
            Line(carrier, "cash", s),
        ],
        now,
    )
    attempt.status, attempt.stripe_id, attempt.updated_at = "succeeded", stripe_id, now
    if attempt.direction == "transfer":
        paid = await statements.mark_paid(
            session, attempt.statement_id, reference=stripe_id, at=now
        )
        if await _outstanding(session, paid) > 0:  # another reversal came in the meantime
            await statements.mark_reversed(session, paid.id)
    else:
        await statements.mark_collected(session, attempt.statement_id, reference=stripe_id, at=now)


async def _fail(
    session: AsyncSession,
    attempt: PayoutAttempt,
    error: GatewayError | None,
    now: datetime,
    code: str | None = None,
    message: str | None = None,
) -> None:
    carrier = await carrier_id(session)
    s = _signed(attempt)
    attempt.settle_entry_id = await _post(
        session,
        attempt,
        carrier,
        release_key(attempt.statement_id, attempt.generation),
        [
            Line(attempt.org_id, "payout_clearing", s),
            Line(carrier, "payout_clearing", -s),
        ],
        now,
    )
    attempt.status, attempt.updated_at = "failed", now
    attempt.failure_code = (code or (error.code if error else None) or "rejected")[:64]
    attempt.failure_message = (message or (error.message if error else "") or "")[:500]


async def pay_statement(
    session: AsyncSession,
    gateway: SettlementGateway,
    statement_id: uuid.UUID,
    now: datetime | None = None,
) -> PayoutAttempt | None:
    """Settle one approved statement (idempotent; safe to run concurrently). Returns its
    attempt as it stands (None when nothing was sent through Stripe)."""
    now = now or utcnow()
    attempt = await _open_attempt(session, statement_id, now)
    if attempt is None or attempt.status in ("succeeded", "failed"):
        return attempt
    locked = await session.get(
        PayoutAttempt, attempt.id, with_for_update=True, populate_existing=True
    )
    if locked is None:  # pragma: no cover - attempts are never deleted
        raise PayoutNotFound()
    attempt = locked
    if attempt.status in ("succeeded", "failed"):  # a concurrent job finished it meanwhile
        await session.commit()
        return attempt
    statement = await session.get_one(Statement, attempt.statement_id)
    attempt.tries += 1
    try:
        if attempt.direction == "transfer":
            transfer = await _adopt_or_transfer(gateway, attempt, statement)
            await _finish(session, attempt, transfer.id, now)
        else:
            account = await session.get_one(StripeAccount, attempt.org_id)
            collection = await _adopt_or_collect(
                gateway, attempt, statement, account.payment_method_id
            )
            attempt.stripe_id = collection.id
            if collection.status == "succeeded":
                await _finish(session, attempt, collection.id, now)
            elif collection.status in ("failed", "requires_action"):
                await _fail(
                    session,
                    attempt,
                    None,
                    now,
                    code=collection.failure_code or collection.status,
                    message=collection.failure_message,
                )
            else:
                attempt.status = "processing"  # the webhook or the next run finishes it
    except GatewayUnavailable as exc:  # outcome unknown: retry later with the same key
        attempt.failure_code = (exc.code or "unavailable")[:64]
        attempt.failure_message = exc.message[:500]
        attempt.updated_at = now
    except GatewayRejected as exc:  # definite: release the hold, the next run tries anew
        await _fail(session, attempt, exc, now)
    await session.commit()
    return attempt


async def payable_statement_ids(session: AsyncSession) -> list[uuid.UUID]:
    rows = await session.execute(
        sa_select(col(Statement.id))
        .where(col(Statement.status) == "approved")
        .order_by(col(Statement.approved_at))
    )
    return list(rows.scalars())


async def pay_approved(
    session: AsyncSession, gateway: SettlementGateway, now: datetime | None = None
) -> int:
    """Try every approved statement once; the number now settled by this run."""
    settled = 0
    for statement_id in await payable_statement_ids(session):
        await session.rollback()
        try:
            attempt = await pay_statement(session, gateway, statement_id, now)
        except ConnectedAccountMissing:
            await session.rollback()
            continue
        if attempt is None or attempt.status == "succeeded":
            settled += 1
    return settled


# --- the finance API ----------------------------------------------------------------------------


class PayoutNotRetryable(Conflict):
    code, title = "payout_not_retryable", "This payout cannot be retried now"


def payout_read(attempt: PayoutAttempt) -> PayoutRead:
    return PayoutRead(
        id=attempt.id,
        statement_id=attempt.statement_id,
        org_id=attempt.org_id,
        generation=attempt.generation,
        direction=attempt.direction,
        idempotency_key=attempt.idempotency_key,
        amount=attempt.amount,
        currency=attempt.currency,
        destination=attempt.destination,
        status=attempt.status,
        stripe_id=attempt.stripe_id,
        hold_entry_id=attempt.hold_entry_id,
        settle_entry_id=attempt.settle_entry_id,
        tries=attempt.tries,
        failure_code=attempt.failure_code,
        failure_message=attempt.failure_message,
        created_at=attempt.created_at,
        updated_at=attempt.updated_at,
    )


async def list_payouts(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None,
    status: str | None,
    statement_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[PayoutRead], int]:
    """Attempts the principal may see (its own organization's; the carrier's finance: all)."""
    conditions: list[ColumnElement[bool]] = []
    if not principal.sees_all_tenants:
        conditions.append(col(PayoutAttempt.org_id) == principal.org_id)
    if org_id is not None:
        conditions.append(col(PayoutAttempt.org_id) == org_id)
    if status is not None:
        conditions.append(col(PayoutAttempt.status) == status)
    if statement_id is not None:
        conditions.append(col(PayoutAttempt.statement_id) == statement_id)
    total = await session.execute(
        sa_select(func.count()).select_from(PayoutAttempt).where(*conditions)
    )
    rows = await session.execute(
        select(PayoutAttempt)
        .where(*conditions)
        .order_by(col(PayoutAttempt.created_at).desc(), col(PayoutAttempt.id))
        .limit(limit)
        .offset(offset)
    )
    return [payout_read(a) for a in rows.scalars()], int(total.scalar_one())


async def _visible_attempt(
    session: AsyncSession, principal: Principal, payout_id: uuid.UUID
) -> PayoutAttempt:
    attempt = await session.get(PayoutAttempt, payout_id, populate_existing=True)
    if attempt is None or not principal.may_access(attempt.org_id):
        raise PayoutNotFound()
    return attempt


async def get_payout(
    session: AsyncSession, principal: Principal, payout_id: uuid.UUID
) -> PayoutRead:
    return payout_read(await _visible_attempt(session, principal, payout_id))


async def retry_payout(
    session: AsyncSession,
    principal: Principal,
    gateway: SettlementGateway,
    payout_id: uuid.UUID,
) -> PayoutRead:
    """Try the payout's statement again: the same attempt (same key) while its outcome is
    unknown, the next generation after a definite failure. Succeeded: returned unchanged."""
    attempt = await _visible_attempt(session, principal, payout_id)
    if attempt.status == "succeeded":
        return payout_read(attempt)
    statement_id = attempt.statement_id
    await session.rollback()
    current = await pay_statement(session, gateway, statement_id)
    if current is None:
        raise PayoutNotRetryable("The statement is no longer waiting to be settled")
    return payout_read(current)


async def connect_account(
    session: AsyncSession,
    principal: Principal,
    gateway: SettlementGateway,
    org_id: uuid.UUID,
    data: ConnectedAccountRequest,
) -> ConnectedAccountRead:
    """Create the organization's Connect account (once: a deterministic idempotency key and
    the stored id) and a fresh onboarding link. Admins of the organization only (404 for
    another organization)."""
    if org_id != principal.org_id:
        raise NotFound("Organization not found")
    org = await session.get_one(Organization, org_id)
    if org.kind == "carrier":
        raise ValidationFailed("The carrier is not paid through Stripe", field="org_id")
    account = await session.get(StripeAccount, org_id, with_for_update=True, populate_existing=True)
    if account is None:
        account = StripeAccount(org_id=org_id)
        session.add(account)
        await session.flush()
        account = await session.get_one(StripeAccount, org_id, with_for_update=True)
    if account.connected_account_id is None:
        created = await gateway.create_connected_account(
            email=data.email,
            country=data.country,
            idempotency_key=f"coalition:org:{org_id}:connected-account",
            metadata={"org_id": str(org_id)},
        )
        account.connected_account_id = created.id
        account.onboarding_status = "complete" if created.can_receive_transfers else "pending"
        account.updated_at = utcnow()
    link = await gateway.create_onboarding_link(
        account.connected_account_id, refresh_url=data.refresh_url, return_url=data.return_url
    )
    read = ConnectedAccountRead(
        org_id=org_id,
        connected_account_id=account.connected_account_id,
        onboarding_status=account.onboarding_status,
        onboarding_url=link.url,
        onboarding_expires_at=link.expires_at,
    )
    await session.commit()
    return read


async def finish_attempt(
    session: AsyncSession, attempt: PayoutAttempt, stripe_id: str, now: datetime
) -> None:
    """Stripe confirmed the attempt (a webhook): the posting after, and the statement settled.
    In the caller's transaction."""
    await _finish(session, attempt, stripe_id, now)


async def fail_attempt(
    session: AsyncSession, attempt: PayoutAttempt, now: datetime, *, code: str, message: str
) -> None:
    """Stripe refused the attempt for good (a webhook): the hold is released."""
    await _fail(session, attempt, None, now, code=code, message=message)


async def record_reversal(
    session: AsyncSession, attempt: PayoutAttempt, reversal: TransferReversal, now: datetime
) -> bool:
    """Stripe took back (part of) the attempt's transfer: record the reversal once, with the
    ledger's mirror entry, the attempt `reversed` and the statement back to approved for the
    next attempt. In the caller's transaction, the attempt locked; False when it was recorded
    before (or cannot be: another currency, which reconciliation reports)."""
    known = await session.execute(
        sa_select(col(PayoutReversal.id)).where(col(PayoutReversal.stripe_id) == reversal.id)
    )
    if known.scalar_one_or_none() is not None:
        return False
    if attempt.direction != "transfer" or reversal.currency != attempt.currency:
        log.warning("reversal_not_recorded", reversal=reversal.id, attempt=str(attempt.id))
        return False
    carrier = await carrier_id(session)
    entry = await ledger.post_entry(
        session,
        idempotency_key=reversal_key(attempt.statement_id, attempt.generation, reversal.id),
        kind="transfer",
        currency=attempt.currency,
        lines=[
            Line(attempt.org_id, "cash", reversal.amount),
            Line(carrier, "cash", -reversal.amount),
        ],
        occurred_at=reversal.created,
        memo=f"reversal {reversal.id} of {reversal.transfer_id} (statement "
        f"{attempt.statement_id} generation {attempt.generation})",
    )
    session.add(
        PayoutReversal(
            attempt_id=attempt.id,
            statement_id=attempt.statement_id,
            org_id=attempt.org_id,
            stripe_id=reversal.id,
            transfer_id=reversal.transfer_id,
            amount=reversal.amount,
            currency=reversal.currency,
            entry_id=entry.id,
            stripe_created=reversal.created,
            created_at=now,
        )
    )
    attempt.status, attempt.failure_code, attempt.updated_at = "reversed", "transfer_reversed", now
    await statements.mark_reversed(session, attempt.statement_id)
    return True
