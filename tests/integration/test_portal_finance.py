# ruff: noqa: F811  (the fixtures `browser` and `books` are imported from their modules)
"""The finance pages of the portal through HTTP: the statements list and its filters, a
statement's lines by campaign and by store, approval (one and two approvers), closing an
ended period from the page, CSV downloads and the printable statement; tenancy (another
merchant's statement answers 404) and roles (cashiers and marketing get the 403 page)."""

from __future__ import annotations

import csv
import io
import re

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.db import SessionMaker, utcnow
from coalition.settlement.domain import period_containing
from coalition.settlement.models import Statement
from tests.integration.conftest import World
from tests.integration.test_portal import MISSING, Open, browser  # noqa: F401
from tests.integration.test_statements import (  # noqa: F401
    IN_WEEK1,
    WEEK1,
    Books,
    book_redemption,
    books,
)

CARRIER_FINANCE, CAFE_FINANCE = "finance@carrier.test", "finance@cafe.test"


async def _close_from_the_page(b: object, books: Books, first_day: object) -> str:
    response = await b.post(  # type: ignore[attr-defined]
        "/portal/statements/close",
        {
            "org_id": str(books.cafe),
            "currency": "CNY",
            "cycle": "weekly",
            "period_start": str(first_day),
        },
    )
    assert response.status_code == 303, response.text[:600]
    location: str = response.headers["location"]
    assert re.fullmatch(r"/portal/statements/[0-9a-f-]{36}", location)
    return location


async def test_carrier_finance_closes_approves_and_downloads_a_statement(
    browser: Open, books: Books, sessionmaker: SessionMaker, session: AsyncSession
) -> None:
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    async with browser() as b:
        await b.sign_in(CARRIER_FINANCE)
        html = await b.get("/portal/statements")
        assert "No statements match." in html
        location = await _close_from_the_page(b, books, WEEK1)
        html = await b.get(location)
        assert "Café 咖啡馆" in html and "¥118.00" in html
        assert "Coffee on us 咖啡请客" in html  # lines by campaign
        assert 'data-testid="statement-status">closed<' in html
        assert "0 of 1 approvals" in html and 'data-testid="approve"' in html
        by_store = await b.get(f"{location}?by=store")
        assert "静安寺店" in by_store and "Coffee on us 咖啡请客" not in by_store

        listed = await b.get("/portal/statements?status=closed&cycle=weekly")
        assert location in listed
        assert location not in await b.get("/portal/statements?status=approved")
        refused = await b.get("/portal/statements?period_from=2030-01-02&period_to=2030-01-01", 400)
        assert 'data-testid="error-period_to"' in refused

        approved = await b.post(f"{location}/approve")
        assert approved.status_code == 303 and approved.headers["location"] == location
        html = await b.get(location)
        assert 'data-testid="statement-status">approved<' in html
        assert re.search(r"Approved .* by carrier finance<", html)  # the approver by name
        assert 'data-testid="approve"' not in html

        lines = await b.client.get(f"{location}/lines.csv?by=campaign_store")
        assert lines.status_code == 200 and lines.headers["content-type"].startswith("text/csv")
        [line] = list(csv.DictReader(io.StringIO(lines.content.decode("utf-8-sig"))))
        assert (line["campaign"], line["store"], line["net"]) == (
            "Coffee on us 咖啡请客",
            "静安寺店",
            "11800",
        )
        listing = await b.client.get("/portal/statements/export.csv?status=approved")
        rows = list(csv.DictReader(io.StringIO(listing.content.decode("utf-8-sig"))))
        assert [r["statement_id"] for r in rows] == [location.rsplit("/", 1)[1]]
        printable = await b.client.get(f"{location}/print")
        assert printable.status_code == 200 and "@media print" in printable.text
    statement = await session.get(Statement, __import__("uuid").UUID(location.rsplit("/", 1)[1]))
    assert statement is not None and statement.status == "approved"


async def test_a_large_net_waits_for_a_second_different_approver(
    browser: Open, books: Books, sessionmaker: SessionMaker
) -> None:
    await book_redemption(sessionmaker, books, 20_000_000, IN_WEEK1)  # net above the threshold
    async with browser("zh-CN") as first:
        await first.sign_in(CARRIER_FINANCE)
        await first.get("/portal/statements")
        location = await _close_from_the_page(first, books, WEEK1)
        html = await first.get(location)
        assert 'data-testid="second-approver-note"' in html
        assert (await first.post(f"{location}/approve")).status_code == 303
        html = await first.get(location)
        assert "等待第二位审批人" in html and 'data-testid="approve"' not in html
        assert "已审批 1 / 2" in html
        again = await first.post(f"{location}/approve")
        assert again.status_code == 409  # the same user cannot give the second approval
        assert "需要另一位财务人员再次审批。" in again.text
    async with browser() as second:
        await second.sign_in(CAFE_FINANCE)
        html = await second.get(location)
        assert 'data-testid="approve"' in html and "Waiting for a second approver" in html
        assert (await second.post(f"{location}/approve")).status_code == 303
        html = await second.get(location)
        assert 'data-testid="statement-status">approved<' in html
        assert html.count('data-testid="approved-by"') == 2


async def test_closing_an_unended_period_shows_the_reason_next_to_the_form(
    browser: Open, books: Books
) -> None:
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    this_monday = today - timedelta(days=today.weekday())
    async with browser() as b:
        await b.sign_in(CARRIER_FINANCE)
        await b.get("/portal/statements")
        response = await b.post(
            "/portal/statements/close",
            {
                "org_id": str(books.cafe),
                "currency": "CNY",
                "cycle": "weekly",
                "period_start": str(this_monday + timedelta(days=1)),
            },
        )
        assert response.status_code == 422 or response.status_code == 400, response.status_code
        assert 'data-testid="error-period_start"' in response.text
        assert MISSING.findall(response.text) == []
        response = await b.post(
            "/portal/statements/close",
            {
                "org_id": str(books.cafe),
                "currency": "CNY",
                "cycle": "weekly",
                "period_start": str(this_monday),
            },
        )
        assert response.status_code == 409 and "This period has not ended yet." in response.text


async def test_merchant_finance_sees_only_its_own_statements(
    browser: Open, books: Books, sessionmaker: SessionMaker, world: World
) -> None:
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    async with browser() as carrier:
        await carrier.sign_in(CARRIER_FINANCE)
        await carrier.get("/portal/statements")
        location = await _close_from_the_page(carrier, books, WEEK1)
    async with browser() as cafe:
        await cafe.sign_in(CAFE_FINANCE)
        listed = await cafe.get("/portal/statements")
        assert location in listed
        assert 'name="org_id"' not in listed  # no organization to choose
        await cafe.get(location)
        dashboard = await cafe.get("/portal")
        assert 'data-testid="next-statement"' in dashboard
        running = period_containing(utcnow(), "weekly", "Asia/Shanghai")
        assert f"{running.first_day} \u2013 {running.last_day}" in dashboard
    async with browser() as bank:
        await bank.sign_in("finance@bank.test")
        assert location not in await bank.get("/portal/statements")
        for suffix in ("", "?by=store", "/lines.csv", "/print"):
            await bank.get(location + suffix, expect=404)
        refused = await bank.post(f"{location}/approve")
        assert refused.status_code == 404
        await bank.get(f"/portal/statements?org_id={books.cafe}", expect=404)


async def test_cashiers_and_marketing_get_the_403_page(
    browser: Open, books: Books, sessionmaker: SessionMaker
) -> None:
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    async with browser() as carrier:
        await carrier.sign_in(CARRIER_FINANCE)
        await carrier.get("/portal/statements")
        location = await _close_from_the_page(carrier, books, WEEK1)
    for email in ("cashier@cafe.test", "marketing@cafe.test", "marketing@carrier.test"):
        async with browser() as b:
            await b.sign_in(email)
            for path in (
                "/portal/statements",
                location,
                f"{location}/lines.csv",
                f"{location}/print",
                "/portal/statements/export.csv",
            ):
                html = await b.get(path, expect=403)
                assert "Your role cannot do this." in html, (email, path)
            assert (await b.post(f"{location}/approve")).status_code == 403
            menu = await b.get("/portal/pos" if email.startswith("cashier") else "/portal")
            assert 'href="/portal/statements"' not in menu
    async with browser() as admin:
        await admin.sign_in("admin@cafe.test")
        html = await admin.get(location)
        assert "Only finance users approve statements." in html
        assert (await admin.post(f"{location}/approve")).status_code == 403


async def test_finance_pages_render_in_both_languages(
    browser: Open, books: Books, sessionmaker: SessionMaker
) -> None:
    await book_redemption(sessionmaker, books, 20_000, IN_WEEK1)
    for language in ("zh-CN", "en"):
        for email in (CARRIER_FINANCE, CAFE_FINANCE):
            async with browser(language) as b:
                await b.sign_in(email)
                await b.get("/portal/statements")
                if email == CARRIER_FINANCE:
                    location = await _close_from_the_page(b, books, WEEK1)
                for path in (
                    "/portal",
                    "/portal/statements",
                    location,
                    f"{location}?by=store",
                    f"{location}?by=campaign_store",
                ):
                    html = await b.get(path)
                    assert MISSING.findall(html) == [], (language, email, path)
