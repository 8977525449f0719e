"""The ledger: writing balanced entries exactly once, and reading balances and entries.

Writing (for the money paths; none of these commit: they write inside the caller's
transaction, so an entry exists if and only if the event it records committed):

- `post_entry`: the general writer. Upserts the accounts, inserts the entry under its unique
  idempotency key and its postings. A second call with the same key and the same content
  returns the first entry (exactly once, also under concurrency: the unique key is the
  arbiter); the same key with other content is `409 ledger_conflict`.
- `post_redemption` / `post_reversal`: a redemption's entry and its reversals' entries, built
  from the pure rules in `settlement/domain.py` (what each funder owes the redeeming merchant,
  the platform fee, and their mirror images, capped at the original).

The database checks again at commit that every entry balances per currency and has at least
two postings, and refuses any UPDATE or DELETE of entries and postings (migration 0004).

Reading (the finance API): balances per organization and account (optionally as of a time),
entries touching an organization by period, one entry, and a redemption's entries. Merchant
users see their own organization only; an entry is visible to the organizations it posts to
(the parties of one redemption are participants of one campaign and accepted the same terms,
so they learn nothing from each other's lines that the terms did not already say).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, case, func, text
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import new_id, utcnow
from coalition.platform.errors import Conflict, NotFound
from coalition.settlement.domain import (
    EntryKind,
    Line,
    Purpose,
    RedemptionFunding,
    check_balanced,
    net_by_account,
    redemption_lines,
    reversal_lines,
    standing_lines,
)
from coalition.settlement.models import (
    ACCOUNT_PURPOSES,
    ENTRY_KINDS,
    JournalEntry,
    LedgerAccount,
    LedgerPosting,
)
from coalition.settlement.schemas.ledger import (
    AccountBalance,
    BalancesRead,
    EntryRead,
    NetPosition,
    PostingRead,
)


class LedgerConflict(Conflict):
    code, title = "ledger_conflict", "The ledger already holds a different entry for this event"


class ReversalExceedsRedemption(Conflict):
    code, title = "reversal_exceeds_redemption", "Reversals cannot exceed the redemption"


# --- writing --------------------------------------------------------------------------------


def _check_entry(
    *,
    idempotency_key: str,
    kind: str,
    currency: str,
    lines: Sequence[Line],
    occurred_at: datetime,
    redemption_id: uuid.UUID | None,
) -> None:
    """Programming errors, not user input: they raise ValueError (a 500 if they ever escape)."""
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValueError("an idempotency key of 1 to 200 characters")
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown entry kind {kind!r}")
    if kind in ("redemption", "reversal") and redemption_id is None:
        raise ValueError(f"a {kind} entry names its redemption")
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    if any(line.purpose not in ACCOUNT_PURPOSES for line in lines):
        raise ValueError("unknown account purpose")
    check_balanced(lines)


def _content(
    kind: str,
    currencies: Iterable[str],
    campaign_id: uuid.UUID | None,
    redemption_id: uuid.UUID | None,
    lines: Iterable[Line],
) -> tuple[object, ...]:
    """What makes two writes under one key the same entry (occurred_at and memo do not)."""
    return (
        kind,
        sorted(set(currencies)),
        campaign_id,
        redemption_id,
        sorted((str(line.org_id), line.purpose, line.amount) for line in lines),
    )


async def _ensure_accounts(
    session: AsyncSession, keys: set[tuple[uuid.UUID, str]], currency: str
) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    """The ids of the (org, purpose) accounts in `currency`, creating missing ones. Inserted in
    one fixed order so that concurrent entries never wait on each other's new accounts in a
    cycle.

    One statement: the insert's RETURNING gives the accounts it created, the select beside it
    those that existed. An account created and committed by a concurrent transaction meanwhile
    is in neither (the insert skipped it, the select's snapshot predates it): looked up again.
    """
    ordered = sorted(keys)
    now = utcnow()
    created = (
        insert(LedgerAccount)
        .values(
            [
                {
                    "id": new_id(),
                    "org_id": org_id,
                    "purpose": purpose,
                    "currency": currency,
                    "created_at": now,
                }
                for org_id, purpose in ordered
            ]
        )
        .on_conflict_do_nothing(index_elements=["org_id", "purpose", "currency"])
        .returning(col(LedgerAccount.id), col(LedgerAccount.org_id), col(LedgerAccount.purpose))
        .cte("created")
    )
    existing = sa_select(
        col(LedgerAccount.id), col(LedgerAccount.org_id), col(LedgerAccount.purpose)
    ).where(
        col(LedgerAccount.org_id).in_({org_id for org_id, _ in ordered}),
        col(LedgerAccount.purpose).in_({purpose for _, purpose in ordered}),
        col(LedgerAccount.currency) == currency,
    )
    rows = await session.execute(
        sa_select(created.c.id, created.c.org_id, created.c.purpose).union_all(existing)
    )
    found = {(org_id, purpose): account_id for account_id, org_id, purpose in rows.tuples()}
    if any(key not in found for key in ordered):
        rows = await session.execute(existing)
        found = {(org_id, purpose): account_id for account_id, org_id, purpose in rows.tuples()}
    return {key: found[key] for key in ordered}


async def _entry_by_key(session: AsyncSession, idempotency_key: str) -> JournalEntry | None:
    row = await session.execute(
        select(JournalEntry)
        .where(col(JournalEntry.idempotency_key) == idempotency_key)
        .execution_options(populate_existing=True)
    )
    return row.scalar_one_or_none()


async def _entry_lines(session: AsyncSession, entry_ids: Sequence[uuid.UUID]) -> list[Line]:
    rows = await session.execute(
        select(col(LedgerPosting.org_id), col(LedgerAccount.purpose), col(LedgerPosting.amount))
        .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
        .where(col(LedgerPosting.entry_id).in_(entry_ids))
    )
    return [
        Line(org_id, cast(Purpose, purpose), amount) for org_id, purpose, amount in rows.tuples()
    ]


async def _entry_currencies(session: AsyncSession, entry_ids: Sequence[uuid.UUID]) -> set[str]:
    rows = await session.execute(
        select(col(LedgerPosting.currency))
        .where(col(LedgerPosting.entry_id).in_(entry_ids))
        .distinct()
    )
    return set(rows.scalars())


async def post_entry(
    session: AsyncSession,
    *,
    idempotency_key: str,
    kind: EntryKind,
    currency: str,
    lines: Sequence[Line],
    occurred_at: datetime,
    campaign_id: uuid.UUID | None = None,
    redemption_id: uuid.UUID | None = None,
    memo: str | None = None,
) -> JournalEntry:
    """Write one balanced entry of `lines` (all in `currency`) exactly once. Does not commit.

    If an entry with `idempotency_key` exists already (committed, or committed by a concurrent
    transaction this one waited for), it is returned when its kind, currency, campaign,
    redemption and lines are the same, else `LedgerConflict` (409). Lines must be non-zero,
    at least two and sum to zero (else `UnbalancedEntry`, a ValueError: a bug in the caller).
    """
    lines = list(lines)
    _check_entry(
        idempotency_key=idempotency_key,
        kind=kind,
        currency=currency,
        lines=lines,
        occurred_at=occurred_at,
        redemption_id=redemption_id,
    )
    values: dict[str, Any] = {
        "id": new_id(),
        "idempotency_key": idempotency_key,
        "kind": kind,
        "occurred_at": occurred_at,
        "campaign_id": campaign_id,
        "redemption_id": redemption_id,
        "memo": memo,
        "created_at": utcnow(),
    }
    inserted = await session.execute(
        insert(JournalEntry)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(col(JournalEntry.id))
    )
    entry_id = inserted.scalar_one_or_none()
    if entry_id is None:
        existing = await _entry_by_key(session, idempotency_key)
        if existing is None:  # pragma: no cover - the conflicting row was just seen
            raise LedgerConflict("The entry with this key vanished; try again")
        same = _content(kind, [currency], campaign_id, redemption_id, lines) == _content(
            existing.kind,
            await _entry_currencies(session, [existing.id]),
            existing.campaign_id,
            existing.redemption_id,
            await _entry_lines(session, [existing.id]),
        )
        if not same:
            raise LedgerConflict(
                f"The ledger entry {idempotency_key!r} exists with different content",
                entry_id=str(existing.id),
            )
        return existing
    accounts = await _ensure_accounts(
        session, {(line.org_id, line.purpose) for line in lines}, currency
    )
    await session.execute(
        insert(LedgerPosting),
        [
            {
                "id": new_id(),
                "entry_id": entry_id,
                "account_id": accounts[(line.org_id, line.purpose)],
                "org_id": line.org_id,
                "amount": line.amount,
                "currency": currency,
            }
            for line in lines
        ],
    )
    return JournalEntry(**values)  # as written (not read back: one round trip less)


def redemption_key(redemption_id: uuid.UUID) -> str:
    return f"redemption:{redemption_id}"


def reversal_key(reversal_id: uuid.UUID) -> str:
    return f"reversal:{reversal_id}"


async def post_redemption(
    session: AsyncSession,
    *,
    redemption_id: uuid.UUID,
    funding: RedemptionFunding,
    occurred_at: datetime,
    campaign_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    memo: str | None = None,
    new_redemption: bool = False,
) -> JournalEntry | None:
    """Write a redemption's entry in the caller's transaction (no commit): what each funder
    other than the redeeming merchant owes it, and the platform fee the payer owes the carrier
    (`settlement.domain.redemption_lines`). The key defaults to `redemption:<redemption_id>`.

    Returns the entry (the existing one on a replay), or None when the redemption moves
    nothing between organizations (no entry is written). `LedgerConflict` (409) when the key,
    or another redemption entry of this redemption, exists with other content.
    """
    key = idempotency_key or redemption_key(redemption_id)
    lines = redemption_lines(funding)
    # `new_redemption`: the redemption row was inserted in this very transaction, so no other
    # entry of it can exist and the look for one is skipped (the unique key still guards).
    if not new_redemption:
        other = await session.execute(
            select(col(JournalEntry.id)).where(
                col(JournalEntry.redemption_id) == redemption_id,
                col(JournalEntry.kind) == "redemption",
                col(JournalEntry.idempotency_key) != key,
            )
        )
        if other.first() is not None:
            raise LedgerConflict("This redemption already has a ledger entry under another key")
    if not lines:
        if await _entry_by_key(session, key) is not None:
            raise LedgerConflict(f"The ledger entry {key!r} exists with different content")
        return None
    return await post_entry(
        session,
        idempotency_key=key,
        kind="redemption",
        currency=funding.currency,
        lines=lines,
        occurred_at=occurred_at,
        campaign_id=campaign_id,
        redemption_id=redemption_id,
        memo=memo,
    )


async def _lock_redemption(session: AsyncSession, redemption_id: uuid.UUID) -> None:
    """Serialize ledger writes of one redemption's reversals (for this transaction)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"ledger:redemption:{redemption_id}"},
    )


async def _check_standing(
    session: AsyncSession,
    redemption_id: uuid.UUID,
    funding: RedemptionFunding,
    reversed_before: int,
) -> None:
    """The redemption's entries so far must net to what stands after `reversed_before`."""
    rows = await session.execute(
        select(col(JournalEntry.id)).where(
            col(JournalEntry.redemption_id) == redemption_id,
            col(JournalEntry.kind).in_(("redemption", "reversal")),
        )
    )
    entry_ids = list(rows.scalars())
    currencies = await _entry_currencies(session, entry_ids) if entry_ids else set()
    booked = net_by_account(await _entry_lines(session, entry_ids)) if entry_ids else {}
    expected = net_by_account(standing_lines(funding, reversed_before))
    if booked != expected or not currencies <= {funding.currency}:
        raise LedgerConflict(
            f"The ledger of redemption {redemption_id} does not match a redemption with "
            f"{reversed_before} of its discount reversed so far"
        )


async def post_reversal(
    session: AsyncSession,
    *,
    redemption_id: uuid.UUID,
    reversal_id: uuid.UUID,
    funding: RedemptionFunding,
    reversed_before: int,
    reversing_now: int,
    occurred_at: datetime,
    campaign_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    memo: str | None = None,
) -> JournalEntry | None:
    """Write a reversal's entry in the caller's transaction (no commit): the mirror image of
    the redemption's lines for `reversing_now` more of the discount, `reversed_before` having
    been reversed by earlier reversals (`settlement.domain.reversal_lines`). `funding` is the
    same as the redemption's. The key defaults to `reversal:<reversal_id>`.

    Takes a transaction-scoped lock per redemption and checks that the redemption's entries
    so far net to what stands after `reversed_before` (else `LedgerConflict`), so reversals
    can never exceed the original. `ReversalExceedsRedemption` (409) when
    `reversed_before + reversing_now` exceeds the discount. Returns the entry (the existing
    one on a replay), or None when this slice moves nothing between organizations.
    """
    if reversing_now <= 0 or reversed_before < 0:
        raise ValueError("a reversal reverses a positive amount after a non-negative one")
    if reversed_before + reversing_now > funding.discount:
        raise ReversalExceedsRedemption(
            f"Reversing {reversing_now} after {reversed_before} would exceed the discount "
            f"of {funding.discount}"
        )
    key = idempotency_key or reversal_key(reversal_id)
    lines = reversal_lines(funding, reversed_before=reversed_before, reversing_now=reversing_now)
    await _lock_redemption(session, redemption_id)
    existing = await _entry_by_key(session, key)
    if existing is None:
        await _check_standing(session, redemption_id, funding, reversed_before)
    if not lines:
        if existing is not None:
            raise LedgerConflict(f"The ledger entry {key!r} exists with different content")
        return None
    return await post_entry(
        session,
        idempotency_key=key,
        kind="reversal",
        currency=funding.currency,
        lines=lines,
        occurred_at=occurred_at,
        campaign_id=campaign_id,
        redemption_id=redemption_id,
        memo=memo,
    )


# --- reading --------------------------------------------------------------------------------


async def account_balances(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    currency: str | None = None,
    as_of: datetime | None = None,
) -> list[AccountBalance]:
    """Every account of `org_id` (optionally one currency) with the sums of its postings,
    counting entries that occurred before `as_of` when given. Derived from postings only."""
    postings = select(col(LedgerPosting.account_id), col(LedgerPosting.amount)).where(
        col(LedgerPosting.org_id) == org_id
    )
    if as_of is not None:
        postings = postings.join(
            JournalEntry, col(JournalEntry.id) == col(LedgerPosting.entry_id)
        ).where(col(JournalEntry.occurred_at) < as_of)
    lines = postings.subquery()
    amount = lines.c.amount
    statement = (
        sa_select(  # sqlmodel's select types at most four columns
            col(LedgerAccount.id),
            col(LedgerAccount.purpose),
            col(LedgerAccount.currency),
            func.coalesce(func.sum(amount), 0),
            func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0),
            func.coalesce(func.sum(case((amount < 0, -amount), else_=0)), 0),
            func.count(amount),
        )
        .outerjoin(lines, lines.c.account_id == col(LedgerAccount.id))
        .where(col(LedgerAccount.org_id) == org_id)
        .group_by(col(LedgerAccount.id))
        .order_by(col(LedgerAccount.currency), col(LedgerAccount.purpose))
    )
    if currency is not None:
        statement = statement.where(col(LedgerAccount.currency) == currency)
    rows = await session.execute(statement)
    return [
        AccountBalance(
            account_id=account_id,
            org_id=org_id,
            purpose=purpose,
            currency=account_currency,
            balance=int(balance),
            debits=int(debits),
            credits=int(credits),
            postings=int(count),
        )
        for account_id, purpose, account_currency, balance, debits, credits, count in rows.tuples()
    ]


def _net(accounts: Iterable[AccountBalance]) -> list[NetPosition]:
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        sums[account.currency] += account.balance
    return [NetPosition(currency=c, amount=sums[c]) for c in sorted(sums)]


async def _visible_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> None:
    """404 for organizations that do not exist or that the principal may not see."""
    await get_in_tenant(session, Organization, org_id, principal, org_attr="id")


async def read_balances(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    *,
    currency: str | None = None,
    as_of: datetime | None = None,
) -> BalancesRead:
    await _visible_org(session, principal, org_id)
    accounts = await account_balances(session, org_id, currency=currency, as_of=as_of)
    return BalancesRead(org_id=org_id, as_of=as_of, accounts=accounts, net=_net(accounts))


async def entries_read(session: AsyncSession, entries: Sequence[JournalEntry]) -> list[EntryRead]:
    """Entries with their postings (debits first), in the order given."""
    if not entries:
        return []
    rows = await session.execute(
        select(LedgerPosting, col(LedgerAccount.purpose))
        .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
        .where(col(LedgerPosting.entry_id).in_([e.id for e in entries]))
        .order_by(
            col(LedgerPosting.amount).desc(),
            col(LedgerPosting.org_id),
            col(LedgerAccount.purpose),
            col(LedgerPosting.id),
        )
    )
    postings: dict[uuid.UUID, list[PostingRead]] = defaultdict(list)
    for posting, purpose in rows.tuples():
        postings[posting.entry_id].append(
            PostingRead(
                id=posting.id,
                org_id=posting.org_id,
                account_id=posting.account_id,
                purpose=purpose,
                amount=posting.amount,
                currency=posting.currency,
            )
        )
    return [
        EntryRead(
            id=entry.id,
            idempotency_key=entry.idempotency_key,
            kind=entry.kind,
            occurred_at=entry.occurred_at,
            campaign_id=entry.campaign_id,
            redemption_id=entry.redemption_id,
            memo=entry.memo,
            created_at=entry.created_at,
            postings=postings[entry.id],
        )
        for entry in entries
    ]


def _touching(org_id: uuid.UUID) -> ColumnElement[bool]:
    return col(JournalEntry.id).in_(
        select(col(LedgerPosting.entry_id)).where(col(LedgerPosting.org_id) == org_id)
    )


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[EntryRead], int]:
    """Entries that occurred in `[start, end)` (either bound optional), oldest first. With
    `org_id`: those posting to that organization. Without: the principal's organization's,
    or every entry for carrier staff who see every tenant."""
    if org_id is not None:
        await _visible_org(session, principal, org_id)
    elif not principal.sees_all_tenants:
        org_id = principal.org_id
    base = select(JournalEntry)
    if org_id is not None:
        base = base.where(_touching(org_id))
    if start is not None:
        base = base.where(col(JournalEntry.occurred_at) >= start)
    if end is not None:
        base = base.where(col(JournalEntry.occurred_at) < end)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(JournalEntry.occurred_at), col(JournalEntry.id))
        .limit(limit)
        .offset(offset)
    )
    return await entries_read(session, list(rows.scalars())), int(total)


async def get_entry(session: AsyncSession, principal: Principal, entry_id: uuid.UUID) -> EntryRead:
    statement = select(JournalEntry).where(col(JournalEntry.id) == entry_id)
    if not principal.sees_all_tenants:
        statement = statement.where(_touching(principal.org_id))
    entry = (await session.execute(statement)).scalar_one_or_none()
    if entry is None:
        raise NotFound("Journal entry not found")
    return (await entries_read(session, [entry]))[0]


async def redemption_entries(
    session: AsyncSession, principal: Principal, redemption_id: uuid.UUID
) -> list[EntryRead]:
    """The entries of one redemption (the redemption and its reversals), oldest first; 404
    when there are none the principal may see."""
    statement = select(JournalEntry).where(col(JournalEntry.redemption_id) == redemption_id)
    if not principal.sees_all_tenants:
        statement = statement.where(_touching(principal.org_id))
    rows = await session.execute(
        statement.order_by(
            col(JournalEntry.occurred_at), col(JournalEntry.created_at), col(JournalEntry.id)
        )
    )
    entries = list(rows.scalars())
    if not entries:
        raise NotFound("No ledger entries for this redemption")
    return await entries_read(session, entries)


# --- the redemption hot path (plain SQL on the session's driver connection) -------------------

_ENSURE_ACCOUNTS = """
INSERT INTO ledger_account (id, org_id, purpose, currency, created_at)
SELECT gen_random_uuid(), w.org_id, w.purpose, $3, $4
FROM unnest($1::uuid[], $2::text[]) AS w(org_id, purpose)
ORDER BY w.org_id, w.purpose
ON CONFLICT (org_id, purpose, currency) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A redemption's entry, checked and ready to be written in the statement that records
    the redemption (`campaigns/services/redemption_sql.py`): its postings as parallel arrays,
    their accounts found by (organization, purpose, currency) in that statement."""

    id: uuid.UUID
    idempotency_key: str
    currency: str
    posting_ids: list[uuid.UUID]
    org_ids: list[uuid.UUID]
    purposes: list[str]
    amounts: list[int]


def new_redemption_entry(
    *, redemption_id: uuid.UUID, funding: RedemptionFunding, occurred_at: datetime
) -> NewEntry | None:
    """The entry of a redemption inserted in this very transaction (the lines of
    `post_redemption`, the same checks in code; the deferred balance trigger checks again at
    commit), or None when the redemption moves nothing between organizations."""
    key = redemption_key(redemption_id)
    lines = redemption_lines(funding)
    if not lines:
        return None
    _check_entry(
        idempotency_key=key,
        kind="redemption",
        currency=funding.currency,
        lines=lines,
        occurred_at=occurred_at,
        redemption_id=redemption_id,
    )
    return NewEntry(
        id=new_id(),
        idempotency_key=key,
        currency=funding.currency,
        posting_ids=[new_id() for _ in lines],
        org_ids=[line.org_id for line in lines],
        purposes=[line.purpose for line in lines],
        amounts=[line.amount for line in lines],
    )


def entry_sql(
    *, entry_id: str, key: str, occurred_at: str, campaign_id: str, redemption_id: str, now: str
) -> str:
    """INSERT of a redemption's journal entry, its values the given SQL expressions."""
    return (
        "INSERT INTO journal_entry (id, idempotency_key, kind, occurred_at, campaign_id, "  # noqa: S608 - placeholders
        f"redemption_id, memo, created_at) VALUES ({entry_id}, {key}, 'redemption', "
        f"{occurred_at}, {campaign_id}, {redemption_id}, NULL, {now})"
    )


def postings_sql(
    *, entry_id: str, ids: str, org_ids: str, purposes: str, amounts: str, currency: str
) -> str:
    """INSERT of an entry's postings given as parallel arrays (the given SQL expressions), each
    on the existing account of its organization and purpose in `currency`; a posting whose
    account does not exist yet is left out (see `post_missing_postings`)."""
    return (
        "INSERT INTO ledger_posting (id, entry_id, account_id, org_id, amount, currency) "  # noqa: S608 - placeholders
        f"SELECT w.id, {entry_id}, a.id, w.org_id, w.amount, {currency} "
        f"FROM unnest({ids}::uuid[], {org_ids}::uuid[], {purposes}::text[], {amounts}::bigint[])"
        " AS w(id, org_id, purpose, amount) "
        "JOIN ledger_account a ON a.org_id = w.org_id AND a.purpose = w.purpose "
        f"AND a.currency = {currency}"
    )


_POST_MISSING = (
    postings_sql(  # noqa: S608 - placeholders
        entry_id="$1", ids="$2", org_ids="$3", purposes="$4", amounts="$5", currency="$6::text"
    )
    + " WHERE NOT EXISTS (SELECT 1 FROM ledger_posting p WHERE p.id = w.id)"
)


async def post_missing_postings(connection: Any, entry: NewEntry, written: int) -> None:
    """After the statement that wrote `entry` wrote only `written` of its postings (an account
    did not exist yet): create the missing accounts (in one fixed order, so that concurrent
    entries never wait on each other's new accounts in a cycle) and write the rest. A later
    statement sees accounts a concurrent transaction created and committed meanwhile."""
    wanted = sorted(set(zip(entry.org_ids, entry.purposes, strict=True)))
    await connection.execute(
        _ENSURE_ACCOUNTS, [o for o, _ in wanted], [p for _, p in wanted], entry.currency, utcnow()
    )
    status = await connection.execute(
        _POST_MISSING,
        entry.id,
        entry.posting_ids,
        entry.org_ids,
        entry.purposes,
        entry.amounts,
        entry.currency,
    )
    if written + int(status.split()[-1]) != len(entry.posting_ids):  # pragma: no cover
        raise RuntimeError(f"journal entry {entry.id}: postings without their accounts")
