# ruff: noqa: F811  (fixtures are imported from their modules)
"""The reconciliation pages of the portal through HTTP, against real PostgreSQL and the Stripe
simulator: the carrier's finance asks for a window's run from the page (the run is queued,
the worker's job reconciles it), reads the runs with their control totals and a run with
its discrepancy items by category; a transfer altered in Stripe shows as one amount mismatch;
a partner's finance sees only its own items (another's is the 404 page) and no platform
figures, and cannot ask for runs; the form's window errors are told next to their field in
both languages; every page renders in both languages."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func
from sqlmodel import select

from coalition.merchants.models import Organization
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.i18n import Translator
from coalition.settlement import jobs
from coalition.settlement.models import PayoutAttempt, ReconciliationRun
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import gateway, simulator, stripe_server  # noqa: F401
from tests.integration.test_portal import MISSING, Browser, Open, browser  # noqa: F401
from tests.integration.test_reconciliation import job_context, settled_week
from tests.integration.test_statements import CARRIER_FINANCE, Books, Client, books  # noqa: F401

CAFE_FINANCE, BANK_FINANCE = "finance@cafe.test", "finance@bank.test"
ENGLISH = Translator("en", mark_missing=True, timezone="Asia/Shanghai")  # the carrier's zone


async def _local_window(sessionmaker: SessionMaker, books: Books) -> dict[str, str]:
    """The hour around now as a `datetime-local` field types it, in the carrier's time zone."""
    async with sessionmaker() as session:
        zone = ZoneInfo((await session.get_one(Organization, books.carrier)).timezone)
    assert zone.key == ENGLISH.timezone
    now = utcnow().astimezone(zone).replace(microsecond=0, tzinfo=None)
    return {
        "window_start": (now - timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(hours=1)).isoformat(),
    }


async def _ask_and_run(
    b: Browser, window: dict[str, str], sessionmaker: SessionMaker, gateway: StripeGateway
) -> str:
    """Ask for the window's run on the page, then run the job the worker runs; the run's page."""
    await b.get("/portal/reconciliation")
    asked = await b.post("/portal/reconciliation/runs", window)
    assert asked.status_code == 303, asked.text[:600]
    location: str = asked.headers["location"]
    assert 'data-testid="run-waiting"' in await b.get(location)  # queued for the worker
    await jobs.reconcile(job_context(sessionmaker, gateway), location.rsplit("/", 1)[1])
    return location


def _items(html: str) -> list[str]:
    return re.findall(r'<tr data-testid="item-row">(.*?)</tr>', html, re.S)


async def _altered_week(
    books: Books,
    client: Client,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> PayoutAttempt:
    """A week settled through Stripe; the café's transfer then altered in Stripe by one fen."""
    _, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount + 1)
    return paid


async def test_carrier_finance_reconciles_a_window_from_the_page_and_reads_its_items(
    browser: Open,
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    week, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    window = await _local_window(sessionmaker, books)
    async with browser() as b:
        await b.sign_in(CARRIER_FINANCE)
        menu = await b.get("/portal")
        assert 'href="/portal/reconciliation"' in menu
        clean = await b.get(await _ask_and_run(b, window, sessionmaker, gateway))
        assert 'data-testid="run-status">completed<' in clean
        assert 'data-testid="discrepancies">0<' in clean and 'data-testid="matched">4<' in clean
        assert 'data-testid="no-items"' in clean
        # Seen from the platform's balance: the café's net went out, the bank's debt came in.
        platform_sum = -int(week["cafe"]["net"]) - int(week["bank"]["net"])
        sums = re.findall(r'data-testid="(?:ledger|stripe)-sum">([^<]+)<', clean)
        assert sums == [ENGLISH.money(platform_sum, "CNY")] * 2 and "¥" in sums[0]
        # The window as asked, shown in the carrier's time zone.
        zone = ZoneInfo(ENGLISH.timezone)
        start = datetime.fromisoformat(window["window_start"]).replace(tzinfo=zone)
        assert ENGLISH.datetime(start) in clean

        # Stripe's record of the café's transfer changes: the same window again, one item.
        await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount + 1)
        location = await _ask_and_run(b, window, sessionmaker, gateway)
        html = await b.get(location)
        [row] = _items(html)
        assert 'data-testid="item-category">Amount mismatch<' in row
        assert f'data-testid="ledger-id">{paid.id}<' in row
        assert f'data-testid="stripe-id">{paid.stripe_id}<' in row
        assert f'data-testid="ledger-amount">¥{paid.amount / 100:,.2f}<' in row
        assert f'data-testid="stripe-amount">¥{(paid.amount + 1) / 100:,.2f}<' in row
        assert 'data-testid="item-action">Investigate<' in row and "Café 咖啡馆" in row
        assert 'data-testid="discrepancies">1<' in html
        assert len(_items(await b.get(f"{location}?category=amount_mismatch"))) == 1
        assert _items(await b.get(f"{location}?category=duplicate")) == []
        assert 'data-testid="error-category"' in await b.get(f"{location}?category=lost", 400)

        runs = await b.get("/portal/reconciliation")
        [run_row] = re.findall(r'<tr data-testid="run-row">(.*?)</tr>', runs, re.S)
        assert 'data-testid="discrepancies">1<' in run_row and "CNY" in run_row
        assert (
            len(
                re.findall(
                    'data-testid="run-row"',
                    await b.get(runs_url := "/portal/reconciliation?status=completed"),
                )
            )
            == 1
        ), runs_url
        assert 'data-testid="run-row"' not in await b.get("/portal/reconciliation?status=failed")

        link = re.search(r'href="(/portal/reconciliation/[^"]+/items/[^"]+)"', html)
        assert link is not None
        item = await b.get(link.group(1))
        assert f'href="/portal/payouts/{paid.id}"' in item
        assert f'href="/portal/statements/{paid.statement_id}"' in item
    async with sessionmaker() as session:
        count = await session.execute(select(func.count()).select_from(ReconciliationRun))
        assert count.scalar_one() == 1  # one window, one run


async def test_a_partner_sees_its_own_items_only_and_cannot_ask_for_runs(
    browser: Open,
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    paid = await _altered_week(books, client, sessionmaker, gateway, simulator)
    window = await _local_window(sessionmaker, books)
    async with browser() as carrier:
        await carrier.sign_in(CARRIER_FINANCE)
        location = await _ask_and_run(carrier, window, sessionmaker, gateway)
        html = await carrier.get(location)
        item = re.search(r'href="(/portal/reconciliation/[^"]+/items/[^"]+)"', html)
        assert item is not None
    async with browser() as cafe:
        await cafe.sign_in(CAFE_FINANCE)
        runs = await cafe.get("/portal/reconciliation")
        assert 'href="/portal/reconciliation"' in runs  # in the menu
        assert 'data-testid="own-items-only"' in runs and 'data-testid="run-form"' not in runs
        assert 'data-testid="totals"' not in runs and 'data-testid="matched"' not in runs
        page = await cafe.get(location)
        assert len(_items(page)) == 1 and f"{paid.stripe_id}" in page
        assert 'data-testid="control-totals"' not in page
        await cafe.get(item.group(1))
        refused = await cafe.post("/portal/reconciliation/runs", window)
        assert refused.status_code == 403
    async with browser() as bank:
        await bank.sign_in(BANK_FINANCE)
        page = await bank.get(location)
        assert _items(page) == [] and 'data-testid="discrepancies">0<' in page
        assert "Your role cannot do this." not in await bank.get(item.group(1), expect=404)
        await bank.get(f"/portal/reconciliation/{uuid.uuid4()}", expect=404)
    async with browser() as admin:
        await admin.sign_in("admin@cafe.test")
        assert len(_items(await admin.get(location))) == 1  # a partner's admin reads too
    for email in ("cashier@cafe.test", "marketing@cafe.test", "marketing@carrier.test"):
        async with browser() as other:
            await other.sign_in(email)
            for path in ("/portal/reconciliation", location, item.group(1)):
                assert "Your role cannot do this." in await other.get(path, expect=403)
            assert (await other.post("/portal/reconciliation/runs", window)).status_code == 403


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "This window cannot be reconciled."), ("zh-CN", "无法对这个时间段对账。")],
)
async def test_window_errors_are_told_next_to_their_field(
    browser: Open,
    books: Books,
    sessionmaker: SessionMaker,
    language: str,
    expected: str,
) -> None:
    window = await _local_window(sessionmaker, books)
    start, end = window["window_start"], window["window_end"]
    later = datetime.fromisoformat(end) + timedelta(days=2)
    future, after = later.isoformat(), (later + timedelta(hours=1)).isoformat()
    too_long = (datetime.fromisoformat(start) + timedelta(days=40)).isoformat()
    cases = [
        ({"window_start": end, "window_end": start}, "window_end"),  # ends before it starts
        ({"window_start": "yesterday", "window_end": end}, "window_start"),  # not a time
        ({"window_start": start}, "window_end"),  # one end only
        ({"window_start": future, "window_end": after}, "window_start"),  # in the future
        ({"window_start": start, "window_end": too_long}, "window_end"),  # over 31 days
    ]
    async with browser(language) as b:
        await b.sign_in(CARRIER_FINANCE)
        await b.get("/portal/reconciliation")
        for form, field in cases:
            answer = await b.post("/portal/reconciliation/runs", form)
            assert answer.status_code == 422, (form, answer.status_code, answer.text[:300])
            assert f'data-testid="error-{field}">{expected}<' in answer.text, form
            assert f'value="{form.get(field, "")}"' in answer.text  # what was typed stays
            assert MISSING.findall(answer.text) == []
        refused = await b.post("/portal/reconciliation/runs", window, csrf=False)
        assert refused.status_code == 403
    async with sessionmaker() as session:
        count = await session.execute(select(func.count()).select_from(ReconciliationRun))
        assert count.scalar_one() == 0  # nothing was asked for


async def test_the_reconciliation_pages_render_in_both_languages(
    browser: Open,
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    await _altered_week(books, client, sessionmaker, gateway, simulator)
    window = await _local_window(sessionmaker, books)
    async with browser() as carrier:
        await carrier.sign_in(CARRIER_FINANCE)
        location = await _ask_and_run(carrier, window, sessionmaker, gateway)
        item = re.search(
            r'href="(/portal/reconciliation/[^"]+/items/[^"]+)"', await carrier.get(location)
        )
        assert item is not None
    for language in ("zh-CN", "en"):
        for email in (CARRIER_FINANCE, CAFE_FINANCE, "admin@carrier.test"):
            async with browser(language) as b:
                await b.sign_in(email)
                for path in (
                    "/portal/reconciliation",
                    location,
                    f"{location}?category=amount_mismatch",
                    item.group(1),
                ):
                    html = await b.get(path)
                    assert MISSING.findall(html) == [], (language, email, path)
                    assert f'<html lang="{language}">' in html
