"""The ledger against real PostgreSQL: redemptions and reversals through `post_redemption` /
`post_reversal`, exactly-once under retries and concurrency, the database's own guards (the
deferred balance trigger, append-only entries and postings), balances derived from postings,
and the finance API (roles, tenancy, periods, drill-down)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.platform.db import make_engine, make_sessionmaker
from coalition.platform.settings import Settings
from coalition.settlement.domain import (
    FEE_PAYABLE,
    FEE_REVENUE,
    PARTNER_PAYABLE,
    PARTNER_RECEIVABLE,
    FundingShare,
    Line,
    RedemptionFunding,
    UnbalancedEntry,
)
from coalition.settlement.models import JournalEntry, LedgerPosting
from coalition.settlement.services import ledger
from tests.integration.campaign_helpers import Staff, campaign_body, create_campaign
from tests.integration.conftest import World

Client = AsyncTestClient[Litestar]
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Orgs:
    """The world's organization ids as plain values (ORM rows expire on rollback)."""

    carrier: uuid.UUID
    cafe: uuid.UUID
    bank: uuid.UUID


@pytest.fixture
def orgs(world: World) -> Orgs:
    return Orgs(carrier=world.carrier.id, cafe=world.cafe.id, bank=world.bank.id)


def cafe_funding(orgs: Orgs, discount: int = 2000, **overrides: Any) -> RedemptionFunding:
    """Redeemed at the café; the carrier funds 50 %, the café 30 %, the bank 20 %; a 1 % fee
    paid by the redeeming merchant."""
    values: dict[str, Any] = {
        "discount": discount,
        "currency": "CNY",
        "redeeming_org_id": orgs.cafe,
        "owner_org_id": orgs.carrier,
        "carrier_org_id": orgs.carrier,
        "funders": (
            FundingShare(orgs.carrier, 5000),
            FundingShare(orgs.cafe, 3000),
            FundingShare(orgs.bank, 2000),
        ),
        "fee_bp": 100,
        "fee_fixed": 0,
        "fee_payer": "redeeming_merchant",
    }
    return RedemptionFunding(**{**values, **overrides})


def bank_funding(orgs: Orgs, discount: int = 1000) -> RedemptionFunding:
    """Redeemed at the bank, funded by the bank and the carrier: the café is no party."""
    return RedemptionFunding(
        discount=discount,
        currency="CNY",
        redeeming_org_id=orgs.bank,
        owner_org_id=orgs.carrier,
        carrier_org_id=orgs.carrier,
        funders=(FundingShare(orgs.bank, 4000), FundingShare(orgs.carrier, 6000)),
    )


async def balances(session: AsyncSession, org_id: uuid.UUID) -> dict[str, int]:
    rows = await ledger.account_balances(session, org_id)
    return {row.purpose: row.balance for row in rows}


async def count(session: AsyncSession, model: type[Any]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def ledger_total(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(col(LedgerPosting.currency), func.sum(col(LedgerPosting.amount))).group_by(
            col(LedgerPosting.currency)
        )
    )
    return {currency: int(total) for currency, total in rows.tuples()}


# --- writing --------------------------------------------------------------------------------


async def test_a_redemption_posts_what_each_funder_and_the_fee_payer_owe(
    session: AsyncSession, orgs: Orgs
) -> None:
    redemption_id = uuid.uuid4()
    entry = await ledger.post_redemption(
        session, redemption_id=redemption_id, funding=cafe_funding(orgs), occurred_at=T0
    )
    await session.commit()
    assert entry is not None
    assert entry.idempotency_key == f"redemption:{redemption_id}"
    assert entry.kind == "redemption" and entry.redemption_id == redemption_id
    # The café gave 20.00 at the till: the carrier owes it 10.00, the bank 4.00; its own 6.00
    # is its cost. It owes the carrier the 1 % fee (0.20).
    assert await balances(session, orgs.cafe) == {PARTNER_RECEIVABLE: 1400, FEE_PAYABLE: -20}
    assert await balances(session, orgs.bank) == {PARTNER_PAYABLE: -400}
    assert await balances(session, orgs.carrier) == {PARTNER_PAYABLE: -1000, FEE_REVENUE: 20}
    assert await ledger_total(session) == {"CNY": 0}
    cafe = await ledger.account_balances(session, orgs.cafe, currency="CNY")
    assert sum(account.balance for account in cafe) == 1380  # the café's net position


async def test_the_same_redemption_twice_is_one_entry_and_other_content_is_a_conflict(
    session: AsyncSession, orgs: Orgs
) -> None:
    redemption_id = uuid.uuid4()
    first = await ledger.post_redemption(
        session, redemption_id=redemption_id, funding=cafe_funding(orgs), occurred_at=T0
    )
    await session.commit()
    again = await ledger.post_redemption(
        session,
        redemption_id=redemption_id,
        funding=cafe_funding(orgs),
        occurred_at=T0 + timedelta(seconds=3),  # a retry reads the clock again: still the same
    )
    await session.commit()
    assert first is not None and again is not None and again.id == first.id
    assert await count(session, JournalEntry) == 1
    assert await count(session, LedgerPosting) == 6

    with pytest.raises(ledger.LedgerConflict) as conflict:
        await ledger.post_redemption(
            session,
            redemption_id=redemption_id,
            funding=cafe_funding(orgs, discount=2001),
            occurred_at=T0,
        )
    assert conflict.value.status_code == 409 and conflict.value.code == "ledger_conflict"
    await session.rollback()
    with pytest.raises(ledger.LedgerConflict):  # another key for the same redemption
        await ledger.post_redemption(
            session,
            redemption_id=redemption_id,
            funding=cafe_funding(orgs),
            occurred_at=T0,
            idempotency_key="redemption-again",
        )
    await session.rollback()
    assert await balances(session, orgs.cafe) == {PARTNER_RECEIVABLE: 1400, FEE_PAYABLE: -20}


async def test_post_entry_checks_balance_in_code(session: AsyncSession, orgs: Orgs) -> None:
    with pytest.raises(UnbalancedEntry):
        await ledger.post_entry(
            session,
            idempotency_key="adjustment-1",
            kind="adjustment",
            currency="CNY",
            lines=[
                Line(orgs.cafe, PARTNER_RECEIVABLE, 100),
                Line(orgs.bank, PARTNER_PAYABLE, -99),
            ],
            occurred_at=T0,
        )
    await session.rollback()
    assert await count(session, JournalEntry) == 0


async def test_a_redemption_with_nothing_owed_writes_no_entry(
    session: AsyncSession, orgs: Orgs
) -> None:
    alone = RedemptionFunding(
        discount=500,
        currency="CNY",
        redeeming_org_id=orgs.cafe,
        owner_org_id=orgs.cafe,
        carrier_org_id=orgs.carrier,
        funders=(FundingShare(orgs.cafe, 10_000),),
    )
    assert (
        await ledger.post_redemption(
            session, redemption_id=uuid.uuid4(), funding=alone, occurred_at=T0
        )
        is None
    )
    await session.commit()
    assert await count(session, JournalEntry) == 0


async def test_partial_then_full_reversal_returns_exactly_the_original(
    session: AsyncSession, orgs: Orgs
) -> None:
    redemption_id = uuid.uuid4()
    funding = cafe_funding(orgs, discount=1999)
    await ledger.post_redemption(
        session, redemption_id=redemption_id, funding=funding, occurred_at=T0
    )
    await session.commit()
    reversals = [(uuid.uuid4(), 0, 333), (uuid.uuid4(), 333, 1000), (uuid.uuid4(), 1333, 666)]
    for reversal_id, before, now in reversals:
        entry = await ledger.post_reversal(
            session,
            redemption_id=redemption_id,
            reversal_id=reversal_id,
            funding=funding,
            reversed_before=before,
            reversing_now=now,
            occurred_at=T0 + timedelta(hours=1),
        )
        await session.commit()
        assert entry is not None and entry.kind == "reversal"
        cafe = await balances(session, orgs.cafe)
        assert 0 <= cafe[PARTNER_RECEIVABLE] <= 1400 and -20 <= cafe[FEE_PAYABLE] <= 0
    # A replay of the first reversal is the same entry; nothing moves.
    replay = await ledger.post_reversal(
        session,
        redemption_id=redemption_id,
        reversal_id=reversals[0][0],
        funding=funding,
        reversed_before=0,
        reversing_now=333,
        occurred_at=T0 + timedelta(hours=2),
    )
    await session.commit()
    assert replay is not None
    for org_id in (orgs.cafe, orgs.bank, orgs.carrier):
        assert set((await balances(session, org_id)).values()) == {0}
    assert await count(session, JournalEntry) == 4
    assert await ledger_total(session) == {"CNY": 0}

    with pytest.raises(ledger.ReversalExceedsRedemption) as exceeded:
        await ledger.post_reversal(
            session,
            redemption_id=redemption_id,
            reversal_id=uuid.uuid4(),
            funding=funding,
            reversed_before=1999,
            reversing_now=1,
            occurred_at=T0,
        )
    assert exceeded.value.code == "reversal_exceeds_redemption"
    await session.rollback()


async def test_a_reversal_that_disagrees_with_the_ledger_is_refused(
    session: AsyncSession, orgs: Orgs
) -> None:
    redemption_id = uuid.uuid4()
    funding = cafe_funding(orgs)
    await ledger.post_redemption(
        session, redemption_id=redemption_id, funding=funding, occurred_at=T0
    )
    await session.commit()
    # The caller claims 500 were reversed before, but the ledger holds no reversal yet.
    with pytest.raises(ledger.LedgerConflict):
        await ledger.post_reversal(
            session,
            redemption_id=redemption_id,
            reversal_id=uuid.uuid4(),
            funding=funding,
            reversed_before=500,
            reversing_now=500,
            occurred_at=T0,
        )
    await session.rollback()
    # A reversal of a redemption the ledger never saw is refused as well.
    with pytest.raises(ledger.LedgerConflict):
        await ledger.post_reversal(
            session,
            redemption_id=uuid.uuid4(),
            reversal_id=uuid.uuid4(),
            funding=funding,
            reversed_before=0,
            reversing_now=500,
            occurred_at=T0,
        )
    await session.rollback()


async def test_entries_can_name_their_campaign(
    client: Client, session: AsyncSession, world: World, orgs: Orgs
) -> None:
    staff = Staff(client)
    campaign = await create_campaign(
        client, await staff("marketing@carrier.test"), campaign_body(world)
    )
    entry = await ledger.post_redemption(
        session,
        redemption_id=uuid.uuid4(),
        funding=cafe_funding(orgs),
        occurred_at=T0,
        campaign_id=uuid.UUID(campaign["id"]),
        memo="coupon COFFEE-1234",
    )
    await session.commit()
    assert entry is not None and entry.campaign_id == uuid.UUID(campaign["id"])


# --- the database's own guards --------------------------------------------------------------


async def _raw_entry(session: AsyncSession, key: str) -> uuid.UUID:
    entry_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO journal_entry (id, idempotency_key, kind, occurred_at, created_at) "
            "VALUES (:id, :key, 'adjustment', now(), now())"
        ),
        {"id": entry_id, "key": key},
    )
    return entry_id


async def _raw_account(session: AsyncSession, org_id: uuid.UUID, purpose: str) -> uuid.UUID:
    account_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO ledger_account (id, org_id, purpose, currency, created_at) "
            "VALUES (:id, :org, :purpose, 'CNY', now())"
        ),
        {"id": account_id, "org": org_id, "purpose": purpose},
    )
    return account_id


async def _raw_posting(
    session: AsyncSession,
    entry_id: uuid.UUID,
    account_id: uuid.UUID,
    org_id: uuid.UUID,
    amount: int,
) -> None:
    await session.execute(
        text(
            "INSERT INTO ledger_posting (id, entry_id, account_id, org_id, amount, currency) "
            "VALUES (:id, :entry, :account, :org, :amount, 'CNY')"
        ),
        {
            "id": uuid.uuid4(),
            "entry": entry_id,
            "account": account_id,
            "org": org_id,
            "amount": amount,
        },
    )


async def test_the_database_refuses_an_unbalanced_or_short_entry_at_commit(
    session: AsyncSession, orgs: Orgs
) -> None:
    receivable = await _raw_account(session, orgs.cafe, PARTNER_RECEIVABLE)
    payable = await _raw_account(session, orgs.bank, PARTNER_PAYABLE)
    await session.commit()

    entry_id = await _raw_entry(session, "raw-unbalanced")
    await _raw_posting(session, entry_id, receivable, orgs.cafe, 100)
    await _raw_posting(session, entry_id, payable, orgs.bank, -99)  # accepted until commit
    with pytest.raises(IntegrityError, match="does not balance"):
        await session.commit()
    await session.rollback()

    entry_id = await _raw_entry(session, "raw-one-posting")
    await _raw_posting(session, entry_id, receivable, orgs.cafe, 100)
    with pytest.raises(IntegrityError, match="at least two"):
        await session.commit()
    await session.rollback()

    await _raw_entry(session, "raw-no-postings")
    with pytest.raises(IntegrityError, match="at least two"):
        await session.commit()
    await session.rollback()

    # A posting must match its account's organization (the composite key).
    entry_id = await _raw_entry(session, "raw-wrong-org")
    with pytest.raises(IntegrityError):
        await _raw_posting(session, entry_id, receivable, orgs.bank, 100)
    await session.rollback()

    entry_id = await _raw_entry(session, "raw-balanced")
    await _raw_posting(session, entry_id, receivable, orgs.cafe, 100)
    await _raw_posting(session, entry_id, payable, orgs.bank, -100)
    await session.commit()
    assert await count(session, JournalEntry) == 1


async def test_entries_and_postings_are_append_only(session: AsyncSession, orgs: Orgs) -> None:
    entry = await ledger.post_redemption(
        session, redemption_id=uuid.uuid4(), funding=cafe_funding(orgs), occurred_at=T0
    )
    await session.commit()
    assert entry is not None
    for statement in (
        "UPDATE journal_entry SET memo = 'edited'",
        "DELETE FROM journal_entry",
        "UPDATE ledger_posting SET amount = amount * 2",
        "DELETE FROM ledger_posting",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text(statement))
        await session.rollback()
    assert await count(session, LedgerPosting) == 6
    assert await balances(session, orgs.cafe) == {PARTNER_RECEIVABLE: 1400, FEE_PAYABLE: -20}


# --- concurrency ----------------------------------------------------------------------------


async def test_fifty_concurrent_posts_of_one_redemption_make_one_entry(
    settings: Settings, session: AsyncSession, orgs: Orgs
) -> None:
    engine = make_engine(settings, pool_size=50)
    sessions = make_sessionmaker(engine)
    redemption_id = uuid.uuid4()

    async def post() -> uuid.UUID:
        async with sessions() as own:
            entry = await ledger.post_redemption(
                own, redemption_id=redemption_id, funding=cafe_funding(orgs), occurred_at=T0
            )
            await own.commit()
            assert entry is not None
            return entry.id

    try:
        ids = await asyncio.gather(*(post() for _ in range(50)))
    finally:
        await engine.dispose()
    assert len(set(ids)) == 1
    assert await count(session, JournalEntry) == 1
    assert await count(session, LedgerPosting) == 6
    assert await balances(session, orgs.cafe) == {PARTNER_RECEIVABLE: 1400, FEE_PAYABLE: -20}


async def test_concurrent_redemptions_share_new_accounts_without_deadlock(
    settings: Settings, session: AsyncSession, orgs: Orgs
) -> None:
    engine = make_engine(settings, pool_size=30)
    sessions = make_sessionmaker(engine)

    async def post(n: int) -> None:
        # Alternate who redeems, so transactions need the same new accounts in other orders.
        funding = cafe_funding(orgs) if n % 2 else bank_funding(orgs)
        async with sessions() as own:
            await ledger.post_redemption(
                own, redemption_id=uuid.uuid4(), funding=funding, occurred_at=T0
            )
            await own.commit()

    try:
        await asyncio.gather(*(post(n) for n in range(30)))
    finally:
        await engine.dispose()
    assert await count(session, JournalEntry) == 30
    cafe = await balances(session, orgs.cafe)
    assert cafe == {PARTNER_RECEIVABLE: 15 * 1400, FEE_PAYABLE: -15 * 20}
    assert await ledger_total(session) == {"CNY": 0}


# --- the finance API ------------------------------------------------------------------------


async def _scenario(session: AsyncSession, orgs: Orgs) -> dict[str, uuid.UUID]:
    """A café redemption (day 1) partly reversed (day 2), and a bank redemption (day 3)."""
    cafe_redemption, bank_redemption = uuid.uuid4(), uuid.uuid4()
    await ledger.post_redemption(
        session, redemption_id=cafe_redemption, funding=cafe_funding(orgs), occurred_at=T0
    )
    await ledger.post_reversal(
        session,
        redemption_id=cafe_redemption,
        reversal_id=uuid.uuid4(),
        funding=cafe_funding(orgs),
        reversed_before=0,
        reversing_now=1000,
        occurred_at=T0 + timedelta(days=1),
    )
    bank_entry = await ledger.post_redemption(
        session,
        redemption_id=bank_redemption,
        funding=bank_funding(orgs),
        occurred_at=T0 + timedelta(days=2),
    )
    await session.commit()
    assert bank_entry is not None
    return {"cafe": cafe_redemption, "bank": bank_redemption, "bank_entry": bank_entry.id}


async def test_finance_reads_balances_of_its_own_organization_only(
    client: Client, session: AsyncSession, orgs: Orgs
) -> None:
    await _scenario(session, orgs)
    staff = Staff(client)
    cafe_finance = await staff("finance@cafe.test")

    own = await client.get("/api/v1/ledger/balances", headers=cafe_finance)
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["org_id"] == str(orgs.cafe)
    by_purpose = {a["purpose"]: a for a in body["accounts"]}
    assert by_purpose[PARTNER_RECEIVABLE]["balance"] == 700  # 1400 less half reversed
    assert by_purpose[PARTNER_RECEIVABLE]["debits"] == 1400
    assert by_purpose[PARTNER_RECEIVABLE]["credits"] == 700
    assert by_purpose[FEE_PAYABLE]["balance"] == -10
    assert body["net"] == [{"currency": "CNY", "amount": 690}]

    as_of = (T0 + timedelta(hours=1)).isoformat()
    before = await client.get(
        "/api/v1/ledger/balances", params={"as_of": as_of}, headers=cafe_finance
    )
    assert before.json()["net"] == [{"currency": "CNY", "amount": 1380}]

    other = await client.get(
        "/api/v1/ledger/balances", params={"org_id": str(orgs.bank)}, headers=cafe_finance
    )
    assert other.status_code == 404
    unknown = await client.get(
        "/api/v1/ledger/balances", params={"org_id": str(uuid.uuid4())}, headers=cafe_finance
    )
    assert unknown.status_code == 404

    carrier = await client.get(
        "/api/v1/ledger/balances",
        params={"org_id": str(orgs.bank), "currency": "CNY"},
        headers=await staff("finance@carrier.test"),
    )
    assert carrier.status_code == 200
    # The bank owes the café 200 (400 less half reversed); the carrier owes it 600.
    assert carrier.json()["net"] == [{"currency": "CNY", "amount": 400}]
    none = await client.get(
        "/api/v1/ledger/balances",
        params={"org_id": str(orgs.bank), "currency": "USD"},
        headers=await staff("admin@carrier.test"),
    )
    assert none.json()["accounts"] == [] and none.json()["net"] == []

    for email in ("cashier@cafe.test", "marketing@cafe.test", "marketing@carrier.test"):
        refused = await client.get("/api/v1/ledger/balances", headers=await staff(email))
        assert refused.status_code == 403, email
    anonymous = await client.get("/api/v1/ledger/balances")
    assert anonymous.status_code == 401


async def test_entries_by_period_for_the_parties_only(
    client: Client, session: AsyncSession, orgs: Orgs
) -> None:
    ids = await _scenario(session, orgs)
    staff = Staff(client)
    cafe_finance = await staff("finance@cafe.test")

    listed = await client.get("/api/v1/ledger/entries", headers=cafe_finance)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 2 and [e["kind"] for e in page["items"]] == ["redemption", "reversal"]
    redemption = page["items"][0]
    assert sum(p["amount"] for p in redemption["postings"]) == 0
    assert [p["amount"] for p in redemption["postings"]] == sorted(
        (p["amount"] for p in redemption["postings"]), reverse=True
    )  # debits first

    day_two = await client.get(
        "/api/v1/ledger/entries",
        params={
            "from": (T0 + timedelta(days=1)).isoformat(),
            "to": (T0 + timedelta(days=2)).isoformat(),  # half-open: the bank's day 3 is out
        },
        headers=await staff("finance@carrier.test"),
    )
    assert [e["kind"] for e in day_two.json()["items"]] == ["reversal"]

    everything = await client.get(
        "/api/v1/ledger/entries", params={"limit": 2}, headers=await staff("admin@carrier.test")
    )
    assert everything.json()["total"] == 3 and len(everything.json()["items"]) == 2

    bank_only = await client.get(
        "/api/v1/ledger/entries",
        params={"org_id": str(orgs.bank)},
        headers=await staff("finance@carrier.test"),
    )
    assert bank_only.json()["total"] == 3  # the bank funds the café's redemption too

    other = await client.get(
        "/api/v1/ledger/entries", params={"org_id": str(orgs.bank)}, headers=cafe_finance
    )
    assert other.status_code == 404
    backwards = await client.get(
        "/api/v1/ledger/entries",
        params={"from": T0.isoformat(), "to": T0.isoformat()},
        headers=cafe_finance,
    )
    assert backwards.status_code == 422 and backwards.json()["field"] == "to"
    naive = await client.get(
        "/api/v1/ledger/entries", params={"from": "2026-03-01T00:00:00"}, headers=cafe_finance
    )
    assert naive.status_code == 422 and naive.json()["field"] == "from"

    # One entry: the café's own, not the bank's.
    mine = await client.get(f"/api/v1/ledger/entries/{redemption['id']}", headers=cafe_finance)
    assert mine.status_code == 200 and mine.json()["id"] == redemption["id"]
    theirs = await client.get(f"/api/v1/ledger/entries/{ids['bank_entry']}", headers=cafe_finance)
    assert theirs.status_code == 404
    carrier_view = await client.get(
        f"/api/v1/ledger/entries/{ids['bank_entry']}", headers=await staff("finance@carrier.test")
    )
    assert carrier_view.status_code == 200


async def test_drill_down_to_a_redemption(
    client: Client, session: AsyncSession, orgs: Orgs
) -> None:
    ids = await _scenario(session, orgs)
    staff = Staff(client)
    cafe_finance = await staff("finance@cafe.test")

    drill = await client.get(f"/api/v1/ledger/redemptions/{ids['cafe']}", headers=cafe_finance)
    assert drill.status_code == 200, drill.text
    body = drill.json()
    assert body["redemption_id"] == str(ids["cafe"])
    assert [e["kind"] for e in body["entries"]] == ["redemption", "reversal"]
    net: dict[tuple[str, str], int] = {}
    for entry in body["entries"]:
        for posting in entry["postings"]:
            key = (posting["org_id"], posting["purpose"])
            net[key] = net.get(key, 0) + posting["amount"]
    assert net[(str(orgs.bank), PARTNER_PAYABLE)] == -200  # 400 owed, half reversed

    bank_finance = await staff("finance@bank.test")
    assert (
        await client.get(f"/api/v1/ledger/redemptions/{ids['cafe']}", headers=bank_finance)
    ).status_code == 200  # the bank is a party (a funder)
    hidden = await client.get(f"/api/v1/ledger/redemptions/{ids['bank']}", headers=cafe_finance)
    assert hidden.status_code == 404
    missing = await client.get(f"/api/v1/ledger/redemptions/{uuid.uuid4()}", headers=cafe_finance)
    assert missing.status_code == 404
