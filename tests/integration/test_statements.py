"""Statements against real PostgreSQL, through the HTTP API: close -> approve, figures that
match the ledger, late entries after a close, the database's freeze, carry-forward, the second
approver, tenancy (404) and roles (403), CSV bytes, the printable page, concurrent closes and
the schedule. Redemptions are written the way the redemption path writes them (a redemption
row with its frozen funding and its ledger entry in one transaction), at chosen past times."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes
from coalition.campaigns.models import Coupon, Redemption
from coalition.campaigns.services.redemptions import funding_to_json
from coalition.merchants.models import Organization
from coalition.platform.db import SessionMaker
from coalition.platform.worker import registries
from coalition.settlement import jobs
from coalition.settlement.domain import FundingShare, RedemptionFunding, figures_of_postings
from coalition.settlement.models import (
    JournalEntry,
    LedgerAccount,
    LedgerPosting,
    Statement,
    StatementEntry,
)
from coalition.settlement.services import ledger, statements
from tests.integration.campaign_helpers import Staff, add_store, running_campaign
from tests.integration.conftest import World

Client = AsyncTestClient[Litestar]
SHANGHAI = "Asia/Shanghai"
_TODAY = datetime.now(UTC).date()
THIS_MONDAY = _TODAY - timedelta(days=_TODAY.weekday())
WEEK1 = THIS_MONDAY - timedelta(days=14)  # Mondays of two weeks (in Shanghai) that have ended
WEEK2 = THIS_MONDAY - timedelta(days=7)
IN_WEEK1 = datetime.combine(WEEK1 + timedelta(days=2), time(10), UTC)  # Wednesday 18:00 local
IN_WEEK2 = datetime.combine(WEEK2 + timedelta(days=2), time(10), UTC)
AFTER = datetime.combine(THIS_MONDAY, time(12), UTC)
CARRIER_FINANCE, CAFE_FINANCE = "finance@carrier.test", "finance@cafe.test"


@dataclass
class Books:
    carrier: uuid.UUID
    cafe: uuid.UUID
    bank: uuid.UUID
    campaign: uuid.UUID
    store: uuid.UUID
    fee_bp: int


@pytest.fixture
async def books(session: AsyncSession, world: World) -> Books:
    """A weekly carrier + café campaign (60/40, 1 % fee paid by the redeeming merchant) and a
    café store, with Chinese names."""
    cafe = await session.get_one(Organization, world.cafe.id)
    cafe.name = "Café 咖啡馆"
    await session.commit()
    campaign = await running_campaign(session, world, fee_bp=100, settlement_cycle="weekly")
    campaign.name = "Coffee on us 咖啡请客"
    await session.commit()
    store = await add_store(session, world.cafe.id, "静安寺店")
    return Books(
        carrier=world.carrier.id,
        cafe=world.cafe.id,
        bank=world.bank.id,
        campaign=campaign.id,
        store=store.id,
        fee_bp=100,
    )


def funding(books: Books, discount: int) -> RedemptionFunding:
    return RedemptionFunding(
        discount=discount,
        currency="CNY",
        redeeming_org_id=books.cafe,
        owner_org_id=books.carrier,
        carrier_org_id=books.carrier,
        funders=(FundingShare(books.carrier, 6000), FundingShare(books.cafe, 4000)),
        fee_bp=books.fee_bp,
    )


async def book_redemption(
    sessionmaker: SessionMaker,
    books: Books,
    discount: int,
    at: datetime,
    *,
    campaign: uuid.UUID | None = None,
) -> uuid.UUID:
    """A redemption at the café store at `at`: its row and its ledger entry, one transaction."""
    campaign_id = campaign or books.campaign
    split = funding(books, discount)
    async with sessionmaker() as session:
        coupon = Coupon(
            campaign_id=campaign_id,
            code=codes.new_code(),
            status="redeemed",
            valid_from=at - timedelta(days=1),
            valid_until=at + timedelta(days=7),
            redeemed_at=at,
        )
        session.add(coupon)
        await session.flush()
        redemption = Redemption(
            campaign_id=campaign_id,
            coupon_id=coupon.id,
            org_id=books.cafe,
            store_id=books.store,
            currency="CNY",
            basket_amount=discount * 5,
            discount=discount,
            funding=funding_to_json(split),
            redeemed_at=at,
        )
        session.add(redemption)
        await session.flush()
        await ledger.post_redemption(
            session,
            redemption_id=redemption.id,
            funding=split,
            occurred_at=at,
            campaign_id=campaign_id,
        )
        await session.commit()
        return redemption.id


async def book_reversal(
    sessionmaker: SessionMaker,
    books: Books,
    redemption_id: uuid.UUID,
    discount: int,
    *,
    before: int,
    now: int,
    at: datetime,
) -> None:
    async with sessionmaker() as session:
        await ledger.post_reversal(
            session,
            redemption_id=redemption_id,
            reversal_id=uuid.uuid4(),
            funding=funding(books, discount),
            reversed_before=before,
            reversing_now=now,
            occurred_at=at,
            campaign_id=books.campaign,
        )
        await session.commit()


async def close(
    client: Client, headers: dict[str, str], org_id: uuid.UUID, first_day: date, **body: Any
) -> Any:
    return await client.post(
        "/api/v1/statements/close",
        json={
            "org_id": str(org_id),
            "currency": "CNY",
            "cycle": "weekly",
            "period_start": first_day.isoformat(),
            **body,
        },
        headers=headers,
    )


async def postings_of(sessionmaker: SessionMaker, statement_id: str) -> list[tuple[Any, Any, int]]:
    """The statement organization's postings of the entries linked to the statement."""
    async with sessionmaker() as fresh:
        rows = await fresh.execute(
            select(col(JournalEntry.kind), col(LedgerAccount.purpose), col(LedgerPosting.amount))
            .join(StatementEntry, col(StatementEntry.entry_id) == col(LedgerPosting.entry_id))
            .join(JournalEntry, col(JournalEntry.id) == col(LedgerPosting.entry_id))
            .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
            .where(
                col(StatementEntry.statement_id) == uuid.UUID(statement_id),
                col(LedgerPosting.org_id) == col(StatementEntry.org_id),
                col(LedgerPosting.currency) == col(StatementEntry.currency),
            )
        )
        return [(k, p, int(a)) for k, p, a in rows.tuples()]


async def count(sessionmaker: SessionMaker, model: type[Any]) -> int:
    async with sessionmaker() as fresh:
        return int((await fresh.execute(select(func.count()).select_from(model))).scalar_one())


# --- close -> approve -----------------------------------------------------------------------


async def test_close_then_approve_a_week_with_figures_that_match_the_ledger(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    for discount in (20_000, 15_000):
        await book_redemption(sessionmaker, books, discount, IN_WEEK1)
    await book_redemption(sessionmaker, books, 9_999, IN_WEEK2)  # next week: not in this one

    response = await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK1)
    assert response.status_code == 200, response.text
    cafe = response.json()
    # The carrier owes the café 60 % of 350.00; the café owes the 1 % fee (3.50).
    assert cafe["status"] == "closed" and cafe["timezone"] == SHANGHAI
    assert cafe["first_day"] == WEEK1.isoformat()
    assert cafe["last_day"] == (WEEK1 + timedelta(days=6)).isoformat()
    local_midnight = datetime.combine(WEEK1 - timedelta(days=1), time(16), UTC)  # 00:00 +08:00
    assert datetime.fromisoformat(cafe["period_start"]) == local_midnight
    assert (cafe["redemptions"], cafe["entries"], cafe["discount"]) == (2, 2, 35_000)
    assert (cafe["shares_receivable"], cafe["fees_payable"]) == (21_000, -350)
    assert (cafe["net"], cafe["settlement"]) == (20_650, "transfer")
    assert figures_of_postings(await postings_of(sessionmaker, cafe["id"])).net == cafe["net"]

    lines = (
        await client.get(
            f"/api/v1/statements/{cafe['id']}/lines", headers=await staff(CAFE_FINANCE)
        )
    ).json()
    [line] = lines["items"]
    assert (line["campaign_name"], line["store_name"]) == ("Coffee on us 咖啡请客", "静安寺店")
    assert (line["redemptions"], line["discount"], line["net"]) == (2, 35_000, 20_650)
    assert [(s["org_id"], s["amount"]) for s in line["funder_shares"]] == [
        (str(books.carrier), 21_000),
        (str(books.cafe), 14_000),
    ]

    carrier = (await close(client, await staff(CARRIER_FINANCE), books.carrier, WEEK1)).json()
    assert (carrier["shares_payable"], carrier["fee_revenue"], carrier["net"]) == (
        -21_000,
        350,
        -20_650,
    )
    assert carrier["settlement"] == "collection"
    assert cafe["net"] + carrier["net"] == 0  # the ledger balances, so do the statements

    approved = await client.post(
        f"/api/v1/statements/{cafe['id']}/approve", headers=await staff(CAFE_FINANCE)
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["approved_at"]
    again = await client.post(
        f"/api/v1/statements/{cafe['id']}/approve", headers=await staff(CAFE_FINANCE)
    )
    assert again.status_code == 200 and again.json()["status"] == "approved"

    listed = await client.get(
        "/api/v1/statements",
        params={"org_id": str(books.cafe), "status": "approved", "period_from": str(WEEK1)},
        headers=await staff(CARRIER_FINANCE),
    )
    assert [s["id"] for s in listed.json()["items"]] == [cafe["id"]]
    assert listed.json()["total"] == 1


async def test_close_refuses_unended_periods_and_days_that_do_not_start_one(
    client: Client, books: Books
) -> None:
    headers = await Staff(client)(CARRIER_FINANCE)
    this_week = datetime.now(UTC).date()
    monday = this_week - timedelta(days=this_week.weekday())
    response = await close(client, headers, books.cafe, monday + timedelta(days=7))
    assert response.status_code == 409 and response.json()["code"] == "period_not_ended"
    response = await close(client, headers, books.cafe, WEEK1 + timedelta(days=2))
    assert response.status_code == 422 and response.json()["code"] == "not_a_period_start"
    assert response.json()["field"] == "period_start"
    response = await close(client, headers, books.cafe, WEEK1, cycle="yearly")
    assert response.status_code == 422 and response.json()["field"] == "cycle"
    response = await close(client, headers, uuid.uuid4(), WEEK1)
    assert response.status_code == 404


# --- late entries and the freeze ------------------------------------------------------------


async def test_a_late_reversal_after_close_lands_in_the_next_period_and_the_closed_one_stays(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    headers = await staff(CARRIER_FINANCE)
    redemption = await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    week1 = (await close(client, headers, books.cafe, WEEK1)).json()
    lines1 = (await client.get(f"/api/v1/statements/{week1['id']}/lines", headers=headers)).json()

    # A reversal of half the discount whose entry is stamped inside week 1 but commits after
    # week 1 closed (what a slow transaction racing the close does), then one in week 2.
    await book_reversal(
        sessionmaker,
        books,
        redemption,
        20_000,
        before=0,
        now=10_000,
        at=IN_WEEK1 + timedelta(hours=1),
    )
    await book_reversal(
        sessionmaker, books, redemption, 20_000, before=10_000, now=5_000, at=IN_WEEK2
    )

    again = await close(client, headers, books.cafe, WEEK1)
    assert again.json() == week1  # closing a closed period returns it, unchanged
    week2 = (await close(client, headers, books.cafe, WEEK2)).json()
    assert (week2["reversals"], week2["redemptions"]) == (2, 0)
    # 3/4 of the carrier's 120.00 and of the 2.00 fee come back.
    assert (week2["reversals_amount"], week2["net"]) == (-9_000 + 150, -8_850)
    assert week1["net"] + week2["net"] == 11_800 - 8_850
    assert (await client.get(f"/api/v1/statements/{week1['id']}", headers=headers)).json() == week1
    assert (
        await client.get(f"/api/v1/statements/{week1['id']}/lines", headers=headers)
    ).json() == lines1

    # The database itself refuses to edit the closed statement or add to it.
    async with sessionmaker() as raw:
        with pytest.raises(DBAPIError, match="closed"):
            await raw.execute(
                text("UPDATE statement SET net = net + 1 WHERE id = :id"), {"id": week1["id"]}
            )
        await raw.rollback()
        with pytest.raises(DBAPIError, match="takes no more rows"):
            await raw.execute(
                text(
                    "INSERT INTO statement_line SELECT gen_random_uuid(), CAST(:target AS uuid), "
                    "kind, campaign_id, store_id, source_statement_id, redemptions, reversals, "
                    "discount, shares_receivable, shares_payable, fees_payable, fee_revenue, "
                    "reversals_amount, adjustments, carried, net, funder_shares "
                    "FROM statement_line WHERE statement_id = :source"
                ),
                {"target": week1["id"], "source": week2["id"]},
            )
        await raw.rollback()
        # Linking the same entry to a second statement is refused by the key.
        with pytest.raises(DBAPIError, match="pk_statement_entry"):
            await raw.execute(
                text(
                    "INSERT INTO statement_entry (entry_id, org_id, currency, statement_id) "
                    "SELECT entry_id, org_id, currency, :target FROM statement_entry "
                    "WHERE statement_id = :source"
                ),
                {"target": week1["id"], "source": week2["id"]},
            )
        await raw.rollback()
        # Without foreign keys, the statement-level check refuses links to a closed
        # statement, to another organization's statement and to an entry that does not exist.
        link = text(
            "INSERT INTO statement_entry (entry_id, org_id, currency, statement_id) "
            "SELECT gen_random_uuid(), CAST(:org AS uuid), 'CNY', CAST(:target AS uuid)"
        )
        with pytest.raises(DBAPIError, match="not an open statement"):
            await raw.execute(link, {"org": week1["org_id"], "target": week1["id"]})
        await raw.rollback()
        later = uuid.uuid4()
        open_copy = text(
            "INSERT INTO statement SELECT (jsonb_populate_record(s, jsonb_build_object("
            "'id', CAST(:later AS uuid), 'status', 'open', 'closed_at', NULL, "
            "'closed_by', NULL, 'first_approved_by', NULL, 'first_approved_at', NULL, "
            "'second_approved_by', NULL, 'second_approved_at', NULL, 'approved_at', NULL, "
            "'settled_at', NULL, 'settlement_reference', NULL, "
            "'period_start', s.period_start + interval '700 days', "
            "'period_end', s.period_end + interval '700 days'))).* "
            "FROM statement s WHERE s.id = :source"
        )
        await raw.execute(open_copy, {"later": later, "source": week1["id"]})
        with pytest.raises(DBAPIError, match="not an open statement of the linked org"):
            await raw.execute(link, {"org": uuid.uuid4(), "target": later})
        await raw.rollback()
        await raw.execute(open_copy, {"later": later, "source": week1["id"]})
        with pytest.raises(DBAPIError, match="does not exist"):
            await raw.execute(link, {"org": week1["org_id"], "target": later})
        await raw.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            await raw.execute(
                text("DELETE FROM statement_entry WHERE statement_id = :id"), {"id": week1["id"]}
            )
        await raw.rollback()
        with pytest.raises(DBAPIError, match="transition"):
            await raw.execute(
                text("UPDATE statement SET status = 'paid' WHERE id = :id"), {"id": week1["id"]}
            )
        await raw.rollback()


async def test_closing_a_later_week_first_closes_earlier_ended_weeks_in_order(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    headers = await Staff(client)(CARRIER_FINANCE)
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    await book_redemption(sessionmaker, books, 10_000, IN_WEEK2)
    week2 = (await close(client, headers, books.cafe, WEEK2)).json()
    assert (week2["redemptions"], week2["net"]) == (1, 5_900)
    listed = (
        await client.get("/api/v1/statements", params={"org_id": str(books.cafe)}, headers=headers)
    ).json()
    assert [(s["first_day"], s["net"], s["status"]) for s in listed["items"]] == [
        (WEEK2.isoformat(), 5_900, "closed"),
        (WEEK1.isoformat(), 11_800, "closed"),
    ]
    response = await close(client, headers, books.cafe, WEEK1 - timedelta(days=7))
    assert response.status_code == 409 and response.json()["code"] == "period_superseded"


# --- approval rules -------------------------------------------------------------------------


async def test_small_nets_carry_forward_into_the_next_statement_as_a_line(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    await book_redemption(sessionmaker, books, 500, IN_WEEK1)  # café net 3.00 - 0.05 = 2.95
    week1 = (await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK1)).json()
    assert week1["net"] == 295
    approved = await client.post(
        f"/api/v1/statements/{week1['id']}/approve", headers=await staff(CARRIER_FINANCE)
    )
    assert approved.json()["status"] == "carried_forward", approved.text

    await book_redemption(sessionmaker, books, 20_000, IN_WEEK2)
    week2 = (await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK2)).json()
    assert (week2["carried_in"], week2["net"]) == (295, 295 + 11_800)
    lines = (
        await client.get(
            f"/api/v1/statements/{week2['id']}/lines", headers=await staff(CAFE_FINANCE)
        )
    ).json()["items"]
    assert [(line["kind"], line["net"]) for line in lines] == [
        ("activity", 11_800),
        ("carried_forward", 295),
    ]
    assert lines[1]["source_statement_id"] == week1["id"]
    assert (await statement_row(sessionmaker, week1["id"])).status == "carried_forward"


async def statement_row(sessionmaker: SessionMaker, statement_id: str) -> Statement:
    async with sessionmaker() as fresh:
        return await fresh.get_one(Statement, uuid.UUID(statement_id))


async def test_a_large_net_needs_a_second_different_finance_user(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    await book_redemption(sessionmaker, books, 20_000_000, IN_WEEK1)  # net 118,000.00 > 100,000
    week1 = (await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK1)).json()
    assert week1["approvals_needed"] == 2
    url = f"/api/v1/statements/{week1['id']}/approve"
    first = await client.post(url, headers=await staff(CARRIER_FINANCE))
    assert first.status_code == 200 and first.json()["status"] == "closed"
    assert first.json()["first_approved_by"] is not None
    same = await client.post(url, headers=await staff(CARRIER_FINANCE))
    assert same.status_code == 409 and same.json()["code"] == "second_approver_required"
    second = await client.post(url, headers=await staff(CAFE_FINANCE))
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert second.json()["second_approved_by"] not in (None, first.json()["first_approved_by"])


# --- tenancy and roles ----------------------------------------------------------------------


async def test_merchant_finance_sees_only_its_own_statements_and_only_finance_approves(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    cafe = (await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK1)).json()
    bank = await staff("finance@bank.test")
    for path in ("", "/lines", "/lines.csv", "/print"):
        response = await client.get(f"/api/v1/statements/{cafe['id']}{path}", headers=bank)
        assert response.status_code == 404, path
    assert (
        await client.post(f"/api/v1/statements/{cafe['id']}/approve", headers=bank)
    ).status_code == 404
    assert (await close(client, bank, books.cafe, WEEK1)).status_code == 404
    filtered = await client.get(
        "/api/v1/statements", params={"org_id": str(books.cafe)}, headers=bank
    )
    assert filtered.status_code == 404
    assert (await client.get("/api/v1/statements", headers=bank)).json()["total"] == 0
    mine = await client.get("/api/v1/statements", headers=await staff(CAFE_FINANCE))
    assert [s["id"] for s in mine.json()["items"]] == [cafe["id"]]

    cafe_admin = await staff("admin@cafe.test")
    assert (
        await client.get(f"/api/v1/statements/{cafe['id']}", headers=cafe_admin)
    ).status_code == 200
    refused = await client.post(f"/api/v1/statements/{cafe['id']}/approve", headers=cafe_admin)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    marketing = await staff("marketing@cafe.test")
    assert (await client.get("/api/v1/statements", headers=marketing)).status_code == 403
    assert (await statement_row(sessionmaker, cafe["id"])).status == "closed"


# --- exports --------------------------------------------------------------------------------


async def test_csv_exports_are_utf8_with_bom_chinese_names_and_minor_units(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    headers = await Staff(client)(CARRIER_FINANCE)
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    cafe = (await close(client, headers, books.cafe, WEEK1)).json()

    response = await client.get(
        "/api/v1/statements/export.csv", params={"org_id": str(books.cafe)}, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf")
    assert "Café 咖啡馆".encode() in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 1
    assert (rows[0]["organization"], rows[0]["currency"], rows[0]["net"]) == (
        "Café 咖啡馆",
        "CNY",
        "11800",
    )
    assert (rows[0]["statement_id"], rows[0]["fees_payable"]) == (cafe["id"], "-200")

    lines = await client.get(f"/api/v1/statements/{cafe['id']}/lines.csv", headers=headers)
    assert lines.content.startswith(b"\xef\xbb\xbf")
    [line] = list(csv.DictReader(io.StringIO(lines.content.decode("utf-8-sig"))))
    assert (line["campaign"], line["store"], line["discount"], line["net"]) == (
        "Coffee on us 咖啡请客",
        "静安寺店",
        "20000",
        "11800",
    )
    assert line["funder_shares"] == "Carrier Org: 12000; Café 咖啡馆: 8000"

    page = await client.get(f"/api/v1/statements/{cafe['id']}/print", headers=headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "@media print" in page.text and "Café 咖啡馆" in page.text
    assert "¥118.00" in page.text and "静安寺店" in page.text


# --- concurrency and the schedule -----------------------------------------------------------


async def test_concurrent_closes_of_one_period_make_one_statement(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    headers = await Staff(client)(CARRIER_FINANCE)
    for n in range(20):
        await book_redemption(sessionmaker, books, 1_000 + n, IN_WEEK1)
    responses = await asyncio.gather(
        *(close(client, headers, books.cafe, WEEK1) for _ in range(12))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.json()["redemptions"] for r in responses} == {20}
    assert await count(sessionmaker, Statement) == 1
    assert await count(sessionmaker, StatementEntry) == 20


async def test_the_schedule_closes_every_ended_period_once_even_run_concurrently(
    books: Books, session: AsyncSession, world: World, sessionmaker: SessionMaker
) -> None:
    daily = await running_campaign(session, world, settlement_cycle="daily")
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    await book_redemption(sessionmaker, books, 10_000, IN_WEEK1, campaign=daily.id)
    await book_redemption(
        sessionmaker, books, 10_000, IN_WEEK1 + timedelta(days=1), campaign=daily.id
    )
    await book_redemption(sessionmaker, books, 5_000, IN_WEEK2)
    at = IN_WEEK2 - timedelta(days=1)  # week 2 has not ended (nor begun its last entry)

    async def run() -> int:
        async with sessionmaker() as own:
            return await statements.close_due(own, at)

    results = await asyncio.gather(run(), run(), run())
    # café and carrier: one weekly statement each, and two daily ones each.
    assert sum(results) == 6
    assert await run() == 0
    async with sessionmaker() as fresh:
        rows = (
            await fresh.execute(
                select(
                    col(Statement.org_id), col(Statement.cycle), col(Statement.first_day)
                ).order_by(col(Statement.org_id), col(Statement.cycle), col(Statement.first_day))
            )
        ).tuples()
        got = {(org, cycle, day) for org, cycle, day in rows}
    expected = {
        (org, cycle, day)
        for org in (books.cafe, books.carrier)
        for cycle, day in (
            ("weekly", WEEK1),
            ("daily", WEEK1 + timedelta(days=2)),
            ("daily", WEEK1 + timedelta(days=3)),
        )
    }
    assert got == expected
    # Each entry's postings for an organization are in exactly one statement.
    assert await count(sessionmaker, StatementEntry) == 3 * 2

    # The worker runs it as a cron job.
    crons = {c.name for r in registries() for c in r.cron_jobs}
    assert "cron:close_due_statements" in crons
    ctx: dict[str, Any] = {"sessionmaker": sessionmaker, "dispatcher": None}
    assert await jobs.close_due_statements(ctx) == 2  # now: week 2 of the café and the carrier
    assert await jobs.close_due_statements(ctx) == 0


async def test_redemptions_written_while_the_schedule_closes_land_in_this_statement_or_the_next(
    books: Books, sessionmaker: SessionMaker
) -> None:
    """Entries of week 1 committing while week 1 closes are in week 1's statement or, when
    they commit after its close took the queue, in the next one closed; none is lost and
    none is in two."""
    for n in range(10):
        await book_redemption(sessionmaker, books, 1_000 + n, IN_WEEK1)

    async def close_due(now: datetime = AFTER) -> int:
        async with sessionmaker() as own:
            return await statements.close_due(own, now)

    async def book_more() -> None:
        for n in range(30):
            await book_redemption(sessionmaker, books, 2_000 + n, IN_WEEK1 + timedelta(minutes=n))

    await asyncio.gather(close_due(), book_more(), close_due())
    # What committed after the closes took the queue is in the next period closed (week 2,
    # or this week once it has ended if week 2 closed meanwhile).
    await close_due(AFTER + timedelta(days=8))
    async with sessionmaker() as fresh:
        pending = (await fresh.execute(text("SELECT count(*) FROM statement_pending"))).scalar()
        rows = (
            await fresh.execute(
                select(
                    col(Statement.org_id),
                    col(Statement.first_day),
                    col(Statement.redemptions),
                    col(Statement.entries),
                    col(Statement.discount),
                ).where(col(Statement.status) == "closed")
            )
        ).tuples()
        by_org: dict[uuid.UUID, list[tuple[date, int, int, int]]] = {}
        for org, day, redemptions, entries, discount in rows:
            by_org.setdefault(org, []).append((day, redemptions, entries, discount))
    assert pending == 0
    booked = sum(1_000 + n for n in range(10)) + sum(2_000 + n for n in range(30))
    for org in (books.cafe, books.carrier):
        weeks = sorted(by_org[org])
        assert {day for day, *_ in weeks} <= {WEEK1, WEEK2, THIS_MONDAY}
        assert weeks[0][0] == WEEK1 and weeks[0][1] >= 10
        assert sum(r for _, r, _, _ in weeks) == 40
        assert sum(e for _, _, e, _ in weeks) == 40
    cafe_discounts = sum(d for _, _, _, d in by_org[books.cafe])
    assert cafe_discounts == booked
    assert await count(sessionmaker, StatementEntry) == 2 * 40


async def test_the_queue_keeps_what_the_close_needs_of_each_entry(
    books: Books, session: AsyncSession, world: World, sessionmaker: SessionMaker
) -> None:
    daily = await running_campaign(session, world, settlement_cycle="daily")
    weekly = await book_redemption(sessionmaker, books, 1_000, IN_WEEK1)
    other = await book_redemption(sessionmaker, books, 2_000, IN_WEEK2, campaign=daily.id)
    async with sessionmaker() as fresh:
        rows = (
            await fresh.execute(
                text(
                    "SELECT org_id, cycle, occurred_at, kind, campaign_id, redemption_id "
                    "FROM statement_pending ORDER BY occurred_at, org_id"
                )
            )
        ).all()
    expected = sorted(
        [
            (org, "weekly", IN_WEEK1, "redemption", books.campaign, weekly)
            for org in (books.cafe, books.carrier)
        ],
        key=lambda row: str(row[0]),
    ) + sorted(
        [
            (org, "daily", IN_WEEK2, "redemption", daily.id, other)
            for org in (books.cafe, books.carrier)
        ],
        key=lambda row: str(row[0]),
    )
    assert [tuple(row) for row in rows] == expected


# --- settling (for the payouts step) --------------------------------------------------------


async def test_approved_statements_are_paid_or_collected_once(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    cafe = (await close(client, await staff(CARRIER_FINANCE), books.cafe, WEEK1)).json()
    carrier = (await close(client, await staff(CARRIER_FINANCE), books.carrier, WEEK1)).json()
    cafe_id, carrier_id = uuid.UUID(cafe["id"]), uuid.UUID(carrier["id"])

    async with sessionmaker() as session:
        with pytest.raises(statements.StatementNotSettleable):  # not approved yet
            await statements.mark_paid(session, cafe_id, reference="tr_1", at=AFTER)
        await session.rollback()
    for statement_id in (cafe["id"], carrier["id"]):
        response = await client.post(
            f"/api/v1/statements/{statement_id}/approve", headers=await staff(CARRIER_FINANCE)
        )
        assert response.json()["status"] == "approved"

    async with sessionmaker() as session:
        with pytest.raises(statements.StatementNotSettleable):  # a positive net is not collected
            await statements.mark_collected(session, cafe_id, reference="ch_1", at=AFTER)
        await session.rollback()
        paid = await statements.mark_paid(session, cafe_id, reference="tr_1", at=AFTER)
        await session.commit()
        assert (paid.status, paid.settlement_reference) == ("paid", "tr_1")
        again = await statements.mark_paid(session, cafe_id, reference="tr_1", at=AFTER)
        assert again.settled_at == AFTER
        with pytest.raises(statements.StatementNotSettleable):
            await statements.mark_paid(session, cafe_id, reference="tr_2", at=AFTER)
        await session.rollback()
        collected = await statements.mark_collected(session, carrier_id, reference="ch_1", at=AFTER)
        await session.commit()
        assert collected.status == "collected"
    async with sessionmaker() as raw:
        with pytest.raises(DBAPIError, match="set once"):
            await raw.execute(
                text("UPDATE statement SET settlement_reference = 'x' WHERE id = :id"),
                {"id": cafe["id"]},
            )
        await raw.rollback()
    assert (await statement_row(sessionmaker, cafe["id"])).status == "paid"
