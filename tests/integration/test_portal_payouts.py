# ruff: noqa: F811  (fixtures are imported from their modules)
"""The payouts pages of the portal through HTTP, against the Stripe simulator: the list of
payout and collection attempts (statement, organization, amount, status, Stripe id, attempts,
last error) with its filters, one attempt with its statement's other attempts, and the retry
for finance users; a partner's finance sees only its own (another's is the 404 page), admins
read without a retry button, cashiers and marketing get the 403 page; a retry the payouts
service refuses is told on the page; both languages."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest
from litestar import Litestar
from sqlmodel import col, select

from coalition.platform.db import SessionMaker
from coalition.settlement.models import PayoutAttempt, StripeAccount
from coalition.settlement.services import payouts
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import gateway, simulator, stripe_server  # noqa: F401
from tests.integration.test_payouts import (  # noqa: F401
    app_gateway,
    approved_week,
    link_accounts,
    statement,
    stripe_transfers,
)
from tests.integration.test_portal import MISSING, Open, browser  # noqa: F401
from tests.integration.test_statements import CARRIER_FINANCE, Books, Client, books  # noqa: F401

CAFE_FINANCE = "finance@cafe.test"


async def _attempts(sessionmaker: SessionMaker) -> dict[uuid.UUID, PayoutAttempt]:
    """Every payout attempt, by statement (the latest generation)."""
    async with sessionmaker() as session:
        rows = await session.execute(select(PayoutAttempt).order_by(col(PayoutAttempt.generation)))
        return {a.statement_id: a for a in rows.scalars()}


@dataclass(frozen=True)
class Attempts:
    cafe: PayoutAttempt  # the transfer Stripe refused: attempt 1, failed
    bank: PayoutAttempt  # the debt collected
    cafe_net: object


@pytest.fixture
async def attempts(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    app_gateway: StripeGateway,
) -> Attempts:
    """The café's transfer refused by Stripe (attempt 1 failed) and the bank's debt collected."""
    await link_accounts(sessionmaker, books, app_gateway, simulator)
    week = await approved_week(client, books, sessionmaker)
    await simulator.add_fault("/v1/transfers", method="POST", mode="error", status=400)
    for name in ("cafe", "bank"):
        async with sessionmaker() as session:
            await payouts.pay_statement(session, app_gateway, uuid.UUID(str(week[name]["id"])))
    found = await _attempts(sessionmaker)
    cafe = found[uuid.UUID(str(week["cafe"]["id"]))]
    bank = found[uuid.UUID(str(week["bank"]["id"]))]
    assert (cafe.status, bank.status) == ("failed", "succeeded")
    return Attempts(cafe, bank, week["cafe"]["net"])


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-testid="payout-row">(.*?)</tr>', html, re.S)


async def test_carrier_finance_lists_the_attempts_and_retries_a_failed_transfer(
    browser: Open,
    books: Books,
    sessionmaker: SessionMaker,
    app_gateway: StripeGateway,
    attempts: Attempts,
) -> None:
    cafe, bank = attempts.cafe, attempts.bank
    async with browser() as b:
        await b.sign_in(CARRIER_FINANCE)
        html = await b.get("/portal/payouts")
        assert 'href="/portal/payouts"' in html  # in the menu
        rows = _rows(html)
        assert len(rows) == 2 and "Attempts: 2" in html
        [cafe_row] = [r for r in rows if "Café 咖啡馆" in r]
        [bank_row] = [r for r in rows if "Bank Org" in r]
        assert f'href="/portal/payouts/{cafe.id}"' in cafe_row
        assert f'href="/portal/statements/{cafe.statement_id}"' in cafe_row
        assert "Transfer" in cafe_row and 'data-testid="payout-status">failed<' in cafe_row
        assert f"<code>{cafe.failure_code}</code>" in cafe_row
        assert 'data-testid="attempt">1<' in cafe_row and 'data-testid="tries">1<' in cafe_row
        assert "Collection" in bank_row and 'data-testid="payout-status">succeeded<' in bank_row
        assert f'data-testid="stripe-id">{bank.stripe_id}<' in bank_row
        assert str(bank.stripe_id).startswith("pi_")
        assert f"¥{bank.amount / 100:,.2f}" in bank_row
        assert len(_rows(await b.get("/portal/payouts?status=failed"))) == 1
        assert len(_rows(await b.get(f"/portal/payouts?org_id={books.bank}"))) == 1
        one = await b.get(f"/portal/payouts?statement_id={cafe.statement_id}")
        assert len(_rows(one)) == 1 and 'data-testid="statement-filter"' in one
        refused = await b.get("/portal/payouts?status=lost", expect=400)
        assert 'data-testid="error-status"' in refused
        assert 'data-testid="alert"' in await b.get("/portal/payouts?offset=-1", 400)
        second = await b.get("/portal/payouts?offset=1")  # pages of 50, newest first
        assert _rows(second) == rows[1:] and "?offset=0" in second and "Older" not in second

        page = await b.get(f"/portal/payouts/{cafe.id}")
        assert 'data-testid="retry-button"' in page
        assert "Stripe refused this attempt" in page
        assert cafe.idempotency_key in page and cafe.destination in page
        retried = await b.post(f"/portal/payouts/{cafe.id}/retry")
        assert retried.status_code == 303, retried.text[:600]
        location = retried.headers["location"]
        assert location != f"/portal/payouts/{cafe.id}"  # the next attempt answered
        page = await b.get(location)
        assert 'data-testid="payout-status">succeeded<' in page
        assert 'data-testid="retry-button"' not in page
        assert page.count('<span class="badge failed">failed</span>') == 1  # attempt 1, listed
        again = await b.post(f"{location}/retry")  # a succeeded attempt is answered as it is
        assert again.status_code == 303 and again.headers["location"] == location
    latest = (await _attempts(sessionmaker))[cafe.statement_id]
    assert (latest.generation, latest.status) == (2, "succeeded")
    assert location == f"/portal/payouts/{latest.id}"
    assert await stripe_transfers(app_gateway, cafe.statement_id) == [attempts.cafe_net]
    assert (await statement(sessionmaker, cafe.statement_id)).status == "paid"


async def test_a_partner_sees_only_its_own_and_only_finance_retries(
    browser: Open, books: Books, sessionmaker: SessionMaker, attempts: Attempts
) -> None:
    cafe, bank = attempts.cafe, attempts.bank
    async with browser() as b:
        await b.sign_in(CAFE_FINANCE)
        html = await b.get("/portal/payouts")
        assert len(_rows(html)) == 1 and f"/portal/payouts/{cafe.id}" in html
        assert 'name="org_id"' not in html  # no organization to choose
        await b.get(f"/portal/payouts/{bank.id}", expect=404)
        assert (await b.post(f"/portal/payouts/{bank.id}/retry")).status_code == 404
        assert len(_rows(await b.get(f"/portal/payouts?org_id={books.bank}"))) == 0
        await b.get(f"/portal/payouts/{cafe.id}")
    async with browser() as admin:
        await admin.sign_in("admin@cafe.test")
        page = await admin.get(f"/portal/payouts/{cafe.id}")
        assert 'data-testid="retry-button"' not in page
        assert (await admin.post(f"/portal/payouts/{cafe.id}/retry")).status_code == 403
    for email in ("cashier@cafe.test", "marketing@cafe.test", "marketing@carrier.test"):
        async with browser() as other:
            await other.sign_in(email)
            for path in ("/portal/payouts", f"/portal/payouts/{cafe.id}"):
                assert "Your role cannot do this." in await other.get(path, expect=403)
            assert (await other.post(f"/portal/payouts/{cafe.id}/retry")).status_code == 403
    assert (await _attempts(sessionmaker))[cafe.statement_id].generation == 1  # not retried


async def test_a_retry_the_payouts_service_refuses_is_told_on_the_page(
    browser: Open,
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
    app: Litestar,
) -> None:
    """A declined card fails the bank's collection; with its card then removed, the statement
    is carried forward instead and the attempt can no longer be retried. Without Stripe
    configured, a retry says so."""
    await link_accounts(sessionmaker, books, gateway, simulator, bank_card="pm_card_chargeDeclined")
    week = await approved_week(client, books, sessionmaker)
    bank_statement = uuid.UUID(str(week["bank"]["id"]))
    async with sessionmaker() as session:
        declined = await payouts.pay_statement(session, gateway, bank_statement)
        assert declined is not None and declined.status == "failed"
        account = await session.get_one(StripeAccount, books.bank)
        account.payment_method_id = None
        await session.commit()
    async with browser("zh-CN") as b:
        await b.sign_in(CARRIER_FINANCE)
        page = await b.get(f"/portal/payouts/{declined.id}")
        assert "card_declined" in page and 'data-testid="retry-button"' in page
        unconfigured = await b.post(f"/portal/payouts/{declined.id}/retry")
        assert unconfigured.status_code == 503
        assert "Stripe 尚未配置，无法打款。" in unconfigured.text  # noqa: RUF001
        app.state["settlement_gateway"] = gateway
        try:
            refused = await b.post(f"/portal/payouts/{declined.id}/retry")
        finally:
            app.state.pop("settlement_gateway", None)
        assert refused.status_code == 409
        assert 'data-testid="alert">这笔付款现在不能重试。<' in refused.text
        assert MISSING.findall(refused.text) == []
    assert (await statement(sessionmaker, bank_statement)).status == "carried_forward"


async def test_the_payouts_pages_render_in_both_languages(
    browser: Open, attempts: Attempts
) -> None:
    cafe, bank = attempts.cafe, attempts.bank
    for language in ("zh-CN", "en"):
        for email in (CARRIER_FINANCE, CAFE_FINANCE, "admin@carrier.test"):
            async with browser(language) as b:
                await b.sign_in(email)
                paths = ["/portal/payouts", f"/portal/payouts/{cafe.id}"]
                if email != CAFE_FINANCE:
                    paths += [f"/portal/payouts/{bank.id}", "/portal/payouts?status=failed"]
                paths.append(f"/portal/statements/{cafe.statement_id}")
                for path in paths:
                    html = await b.get(path)
                    assert MISSING.findall(html) == [], (language, email, path)
                    assert f'<html lang="{language}">' in html
                assert 'data-testid="statement-payouts"' in html  # from the statement page
