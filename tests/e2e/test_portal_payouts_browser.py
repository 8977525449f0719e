"""Payouts in a real browser (chromium): Stripe refuses the transfer of the café's approved
statement; the carrier's finance user finds the failed attempt with its error among the
payouts, opens it and retries, and the next attempt pays; the café's finance user sees both
attempts of its own statement. The statement is booked, closed and approved through the API,
the café's Stripe account is onboarded in the simulator, and the first attempt is made the way
the worker's job makes it."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from playwright.sync_api import expect

from coalition.platform.db import make_engine, make_sessionmaker
from coalition.platform.demo import DEMO_PASSWORD
from coalition.platform.settings import Settings
from coalition.settlement.services import payouts
from coalition.settlement.simulator import DEV_API_KEY
from coalition.settlement.stripe_gateway import StripeGateway
from tests.conftest import Servers
from tests.e2e.conftest import Portal, PortalServer
from tests.e2e.test_portal_finance_browser import _book_in_an_ended_period

pytestmark = pytest.mark.e2e
Open = Callable[..., Portal]


def _headers(api: httpx.Client, email: str) -> dict[str, str]:
    response = api.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _approved_cafe_statement(server: PortalServer, database_url: str) -> str:
    """The café's statement of an ended period, closed and approved; the café onboarded at
    Stripe and the platform funded. The statement's id."""
    with ThreadPoolExecutor(1) as pool:  # the sync driver owns this thread's event loop
        cafe_id, cycle, first_day = pool.submit(
            asyncio.run, _book_in_an_ended_period(database_url)
        ).result()
    with httpx.Client(base_url=server.base, timeout=30) as api:
        finance = _headers(api, "finance@carrier.demo")
        closed = api.post(
            "/api/v1/statements/close",
            json={"org_id": cafe_id, "currency": "CNY", "cycle": cycle, "period_start": first_day},
            headers=finance,
        )
        assert closed.status_code == 200, closed.text
        approved = api.post(f"/api/v1/statements/{closed.json()['id']}/approve", headers=finance)
        assert approved.json()["status"] == "approved", approved.text
        assert approved.json()["net"] > 0  # the platform pays the café
        account = api.post(
            f"/api/v1/organizations/{cafe_id}/stripe-account",
            json={"refresh_url": "https://cafe.example/r", "return_url": "https://cafe.example/ok"},
            headers=_headers(api, "admin@cafe.demo"),
        )
        assert account.status_code == 200, account.text
        onboarding = httpx.get(account.json()["onboarding_url"], follow_redirects=False)
        assert onboarding.is_redirect  # opening the link completes the onboarding
    httpx.post(
        f"{server.stripe}/_simulator/balance/topup", json={"amount": 10**9, "currency": "cny"}
    ).raise_for_status()
    return str(approved.json()["id"])


async def _first_attempt(database_url: str, stripe: str, statement_id: str) -> str:
    """What the worker's `pay_statement` job does, with Stripe refusing the transfer once."""
    async with httpx.AsyncClient() as control:
        fault = await control.post(
            f"{stripe}/_simulator/faults",
            json={"path": "/v1/transfers", "method": "POST", "mode": "error", "status": 400},
        )
        fault.raise_for_status()
    engine = make_engine(Settings(environment="test", database_url=database_url), pool_size=1)
    gateway = StripeGateway(DEV_API_KEY, api_base=stripe, max_network_retries=0)
    try:
        async with make_sessionmaker(engine)() as session:
            attempt = await payouts.pay_statement(session, gateway, uuid.UUID(statement_id))
        assert attempt is not None and attempt.status == "failed"
        return str(attempt.id)
    finally:
        await gateway.aclose()
        await engine.dispose()


def test_finance_retries_a_refused_transfer(
    portal: Open, portal_server: PortalServer, servers: Servers
) -> None:
    statement_id = _approved_cafe_statement(portal_server, servers.database_url)
    with ThreadPoolExecutor(1) as pool:
        failed_id = pool.submit(
            asyncio.run, _first_attempt(servers.database_url, portal_server.stripe, statement_id)
        ).result()

    finance = portal()
    page = finance.sign_in("finance@carrier.demo")
    page.get_by_role("link", name="Payouts").click()
    row = page.get_by_test_id("payout-row").filter(has_text="Bean There Coffee")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("payout-status")).to_have_text("failed")
    expect(row).to_contain_text("Transfer")
    expect(row).to_contain_text("¥480.00")
    finance.shot("payouts-failed-transfer")
    row.get_by_test_id("payout-link").click()
    page.wait_for_url(f"**/portal/payouts/{failed_id}")
    expect(page.get_by_test_id("last-error")).not_to_have_text("—")
    finance.shot("payout-before-retry")
    page.get_by_test_id("retry-button").click()
    page.wait_for_url(lambda url: failed_id not in url)
    expect(page.get_by_test_id("payout-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("stripe-id")).to_have_text(re.compile(r"^tr_"))
    expect(page.get_by_test_id("retry-button")).to_have_count(0)
    expect(page.get_by_test_id("attempts").locator("tbody tr")).to_have_count(2)
    finance.shot("payout-after-retry")
    page.get_by_test_id("statement-link").click()
    expect(page.get_by_test_id("statement-status")).to_have_text("paid")

    cafe = portal("zh-CN")
    page = cafe.sign_in("finance@cafe.demo")
    page.get_by_role("link", name="打款与收款").click()
    expect(page.get_by_test_id("payout-row")).to_have_count(2)
    expect(page.get_by_test_id("payout-status")).to_have_text(["成功", "失败"])
    cafe.shot("payouts-cafe-zh")
