"""The portal in a real browser (chromium): sign-in and role-based navigation, tenancy, the
terminal key shown once, the language switch, per-field form errors, a customer claiming a
coupon and showing a scannable QR, a cashier redeeming it at the web POS, and the whole
journey of a joint campaign from the builder to the till and on to finance: the statement
closed and approved, the transfer paid through the Stripe simulator, a clean reconciliation."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import zxingcpp
from arq import create_pool
from arq.connections import RedisSettings
from PIL import Image
from playwright.sync_api import Page, expect

from coalition.platform.demo import DEMO_PASSWORD
from coalition.settlement.simulator import DEV_API_KEY
from tests.conftest import Servers
from tests.e2e.conftest import DAYS_LATER, Portal, PortalServer

pytestmark = pytest.mark.e2e
Open = Callable[..., Portal]
COFFEE = "Coffee with Coalition"


def _menu(portal: Portal) -> list[str]:
    return [a.get_attribute("href") or "" for a in portal.page.locator("nav.menu a").all()]


def test_sign_in_and_role_based_navigation(portal: Open) -> None:
    admin = portal()
    page = admin.sign_in("admin@cafe.demo")
    assert page.url.endswith("/portal")
    assert page.get_by_test_id("who").inner_text().startswith("Cafe Admin")
    assert {"/portal/stores", "/portal/terminals", "/portal/proposals"} <= set(_menu(admin))
    admin.shot("merchant-dashboard")

    cashier = portal()
    page = cashier.sign_in("cashier@cafe.demo")
    assert page.url.endswith("/portal/pos")  # cashiers land on the till
    assert _menu(cashier) == ["/portal/pos"]
    for path in ("/portal/proposals", "/portal/campaigns", "/portal/stores", "/portal"):
        cashier.open(path)
        assert cashier.page.get_by_test_id("error-message").inner_text() == (
            "Your role cannot do this."
        )
    cashier.shot("cashier-refused-marketing")

    wrong = portal()
    page = wrong.sign_in("admin@cafe.demo", "not the password")
    assert page.get_by_test_id("alert").inner_text() == "Wrong email or password."


def test_a_merchant_cannot_see_another_merchants_pages(portal: Open) -> None:
    bank = portal()
    bank.sign_in("admin@bank.demo")
    page = bank.open("/portal/webhooks")
    page.fill("input[name=url]", "https://bank.example/hooks")
    page.check("input[name=event_types][value='*']")
    page.click("form[action='/portal/webhooks'] button[type=submit]")
    endpoint = page.url.removeprefix(bank.base)
    assert re.fullmatch(r"/portal/webhooks/[0-9a-f-]{36}", endpoint)

    cafe = portal()
    cafe.sign_in("admin@cafe.demo")
    response = cafe.page.goto(cafe.base + endpoint)
    assert response is not None and response.status == 404
    assert "Lujiazui" not in cafe.open("/portal/terminals").content()


def test_a_terminal_key_is_shown_once_then_revoked(portal: Open) -> None:
    admin = portal()
    admin.sign_in("admin@cafe.demo")
    page = admin.open("/portal/terminals")
    page.fill("form[action='/portal/terminals'] input[name=name]", "Pop-up counter")
    page.click("form[action='/portal/terminals'] button[type=submit]")
    key = page.get_by_test_id("terminal-key").inner_text()
    assert re.fullmatch(r"ctk_[0-9a-f]{16}_\S{20,}", key)
    admin.shot("terminal-key-shown-once")
    page = admin.open("/portal/terminals")
    assert key not in page.content()
    assert page.get_by_test_id("issued-key").count() == 0
    row = page.get_by_test_id("terminal-row").filter(has_text="Pop-up counter")
    row.get_by_role("button", name="Revoke").click()
    row = page.get_by_test_id("terminal-row").filter(has_text="Pop-up counter")
    assert row.locator(".badge").inner_text() == "revoked"


def test_language_switch(portal: Open) -> None:
    visitor = portal("en-US")
    page = visitor.open("/portal/login")
    assert page.locator("h1").inner_text() == "Sign in"
    page.click("form.lang button[value='zh-CN']")
    assert page.locator("h1").inner_text() == "登录"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    visitor.sign_in("admin@cafe.demo")
    assert visitor.page.locator("h1").inner_text() == "概览"  # the choice outlives sign-in
    visitor.shot("dashboard-zh")
    visitor.page.click("form.lang button[value='en']")
    assert visitor.page.locator("h1").inner_text() == "Dashboard"


def test_form_validation_errors_are_shown_per_field(portal: Open) -> None:
    admin = portal("zh-CN")
    admin.sign_in("admin@cafe.demo")
    page = admin.open("/portal/stores")
    page.fill("form[action='/portal/stores'] input[name=address]", "1 Huaihai Rd")
    page.fill("form[action='/portal/stores'] input[name=city]", "Shanghai")
    page.click("form[action='/portal/stores'] button[type=submit]")  # name left empty
    assert page.get_by_test_id("error-name").inner_text() == "请检查此项。"
    assert page.locator("form[action='/portal/stores'] input[name=address]").input_value() == (
        "1 Huaihai Rd"
    )
    admin.shot("store-form-errors-zh")


def _claim_coffee(portal: Open, phone: str) -> tuple[str, str]:
    """A customer signs in on a phone, claims the coffee offer, and the QR on the coupon page
    is decoded from the screenshot: what it encodes and the code shown below it."""
    customer = portal("zh-CN", mobile=True)
    page = customer.customer_sign_in(phone)
    offer = page.get_by_test_id("offer").filter(has_text=COFFEE)
    customer.shot("customer-offers")
    offer.get_by_role("button").click()
    assert "/portal/customer/wallet/" in page.url
    qr = page.get_by_test_id("qr")
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 250  # large enough to scan from a screen
    customer.shot("customer-coupon-qr")
    image = Image.open(io.BytesIO(qr.screenshot()))
    decoded = zxingcpp.read_barcodes(image)
    assert len(decoded) == 1
    code = page.get_by_test_id("coupon-code").inner_text()
    wallet = customer.open("/portal/customer/wallet")
    assert code in wallet.get_by_test_id("wallet-coupon").first.inner_text()
    return decoded[0].text, code


def test_a_customer_claims_and_sees_the_qr(portal: Open) -> None:
    url, code = _claim_coffee(portal, "13700000001")
    stranger = portal("en-US", mobile=True)
    assert url == f"{stranger.base}/c/{code.removeprefix('CAFE-').replace('-', '')}"
    page = stranger.open(url.removeprefix(stranger.base))
    assert page.get_by_test_id("coupon-code").inner_text() == code


def test_a_cashier_redeems_at_the_web_pos(portal: Open) -> None:
    scanned, code = _claim_coffee(portal, "13700000002")
    cashier = portal("zh-CN")
    page = cashier.sign_in("cashier@cafe.demo")
    page.get_by_role("button", name="开始").click()  # the first till is preselected
    assert page.get_by_test_id("till").is_visible()
    page.get_by_test_id("basket").fill("10")
    page.get_by_test_id("code").click()
    page.keyboard.type(scanned)  # a keyboard-wedge scanner types the QR's URL, then Enter
    page.keyboard.press("Enter")
    assert "消费金额未达到此券的最低消费。" in page.get_by_test_id("alert").inner_text()
    cashier.shot("pos-refusal-zh")
    page.get_by_test_id("basket").fill("38.50")
    page.get_by_test_id("code").press("Enter")
    quote = page.get_by_test_id("quote")
    assert "¥5.00" in quote.inner_text()
    assert page.get_by_test_id("payable").inner_text() == "¥33.50"
    cashier.shot("pos-quote")
    page.get_by_test_id("redeem").click()
    assert page.get_by_test_id("receipt-discount").inner_text() == "¥5.00"
    assert page.get_by_test_id("receipt-status").inner_text() == "已完成"
    cashier.shot("pos-receipt")
    page = cashier.open("/portal/pos")
    assert code.removeprefix("CAFE-") in page.content()  # in this till's recent redemptions
    page.get_by_test_id("basket").fill("38.50")
    page.get_by_test_id("code").fill(code)
    page.get_by_test_id("code").press("Enter")
    assert page.get_by_test_id("alert").inner_text() == "此券已被使用。"


def test_the_campaign_page_charts_are_images_of_its_figures(portal: Open) -> None:
    _claim_coffee(portal, "13700000003")
    marketing = portal("zh-CN")
    marketing.sign_in("marketing@carrier.demo")
    page = marketing.open("/portal/campaigns")
    page.get_by_role("link", name=re.compile(COFFEE)).click()
    for chart in ("chart-by-day", "chart-burn"):
        image = page.get_by_test_id(chart)
        src = image.get_attribute("src") or ""
        assert src.startswith("data:image/svg+xml;base64,")
        assert image.evaluate("img => img.complete && img.naturalWidth") >= 600
    claimed = page.locator(".tile .figure").first.inner_text()
    assert int(claimed) >= 1
    marketing.shot("campaign-charts-zh")


def _onboard_cafe(server: PortalServer) -> None:
    """The café's admin creates its Stripe Connect account and completes the onboarding (the
    simulator's link does), and the platform's Stripe balance is funded."""
    with httpx.Client(base_url=server.base, timeout=30) as api:
        login = api.post(
            "/api/v1/auth/login", json={"email": "admin@cafe.demo", "password": DEMO_PASSWORD}
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        me = api.get("/api/v1/me", headers=headers)
        me.raise_for_status()
        cafe = me.json()["organization"]["id"]
        account = api.post(
            f"/api/v1/organizations/{cafe}/stripe-account",
            json={"refresh_url": "https://cafe.example/r", "return_url": "https://cafe.example/ok"},
            headers=headers,
        )
        assert account.status_code == 200, account.text
        assert httpx.get(account.json()["onboarding_url"], follow_redirects=False).is_redirect
    httpx.post(
        f"{server.stripe}/_simulator/balance/topup", json={"amount": 10**9, "currency": "cny"}
    ).raise_for_status()


async def _run_the_payout_schedule(redis_url: str) -> None:
    """Ask the worker to run its payout schedule (`pay_approved_statements`, at minutes 7 and
    37) now rather than wait for it."""
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        assert await redis.enqueue_job("pay_approved_statements") is not None
    finally:
        await redis.aclose()


def _reload_until(page: Page, test_id: str, text: str, seconds: float = 60) -> None:
    """Reload the page until the element shows `text` (the worker runs the job meanwhile)."""
    deadline = time.monotonic() + seconds
    found = page.get_by_test_id(test_id)
    while found.count() == 0 or found.first.inner_text() != text:
        assert time.monotonic() < deadline, found.all_inner_texts()
        time.sleep(1)
        page.reload()


def _finance_settles_and_reconciles(
    finance: Portal, redeemed_on: str, redis_url: str, stripe: str
) -> None:
    """Finance, once the day of the redemption has ended: closes the café's daily statement,
    approves it, sees the transfer paid and its Stripe status, reconciles the days since the
    redemption to no discrepancy."""
    finance.sign_in("finance@carrier.demo")
    page = finance.open("/portal/statements")
    form = page.get_by_test_id("close-form")
    cafe_id = form.locator("select[name=org_id] option", has_text="Bean There Coffee").first
    form.locator("select[name=org_id]").select_option(cafe_id.get_attribute("value"))
    form.locator("select[name=cycle]").select_option("daily")
    form.locator("input[name=period_start]").fill(redeemed_on)
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/portal/statements/*")
    statement_path = page.url.removeprefix(finance.base).split("?")[0]
    expect(page.get_by_test_id("statement-status")).to_have_text("closed")
    finance.shot("journey-statement-closed")
    page.get_by_test_id("approve").click()
    expect(page.get_by_test_id("statement-status")).to_have_text("approved")
    finance.shot("journey-statement-approved")

    with ThreadPoolExecutor(1) as pool:  # the sync driver owns this thread's event loop
        pool.submit(asyncio.run, _run_the_payout_schedule(redis_url)).result()
    page = finance.open(f"/portal/payouts?statement_id={statement_path.rsplit('/', 1)[1]}")
    _reload_until(page, "payout-status", "succeeded")
    row = page.get_by_test_id("payout-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Transfer")
    transfer_id = row.get_by_test_id("stripe-id").inner_text()
    assert transfer_id.startswith("tr_")
    finance.shot("journey-payout")
    row.get_by_test_id("payout-link").click()
    amount = page.get_by_test_id("amount").inner_text()
    transfer = httpx.get(
        f"{stripe}/v1/transfers/{transfer_id}", headers={"Authorization": f"Bearer {DEV_API_KEY}"}
    ).json()
    assert amount == f"¥{transfer['amount'] / 100:,.2f}" and transfer["currency"] == "cny"
    page.get_by_test_id("statement-link").click()
    expect(page.get_by_test_id("statement-status")).to_have_text("paid")

    # From an hour before the redemption to the end of the payout (the clock is days ahead).
    zone = ZoneInfo("Asia/Shanghai")
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).astimezone(zone).strftime("%Y-%m-%dT%H:%M")
    end = (now + timedelta(days=DAYS_LATER, hours=1)).astimezone(zone).strftime("%Y-%m-%dT%H:%M")
    page.locator("nav.menu").get_by_role("link", name="Reconciliation").click()
    form = page.get_by_test_id("run-form")
    form.locator("input[name=window_start]").fill(start)
    form.locator("input[name=window_end]").fill(end)
    form.get_by_test_id("run-button").click()
    page.wait_for_url("**/portal/reconciliation/*")
    _reload_until(page, "run-status", "completed")
    expect(page.get_by_test_id("discrepancies")).to_have_text("0")
    expect(page.get_by_test_id("matched")).to_have_text("2")  # the transfer, on both sides
    expect(page.get_by_test_id("no-items")).to_be_visible()
    expect(page.get_by_test_id("ledger-sum")).to_have_text(f"-{amount}")
    expect(page.get_by_test_id("stripe-sum")).to_have_text(f"-{amount}")
    finance.shot("journey-reconciliation")


def test_a_joint_campaign_from_the_builder_to_the_till(
    portal: Open,
    portal_server: PortalServer,
    days_later: Callable[[], PortalServer],
    servers: Servers,
) -> None:
    """Marketing builds a joint campaign with the café and the bank (settled daily), both
    accept the exact terms, it is activated, a customer claims it and the café's cashier
    redeems it; when that day has ended, finance closes the café's statement, approves it,
    sees the transfer the worker paid through Stripe, and reconciles to 0 discrepancies."""
    name = "Data & Latte 流量拿铁"
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    carrier = portal("en-US")
    carrier.sign_in("marketing@carrier.demo")
    page = carrier.open("/portal/campaigns")
    page.get_by_role("link", name="New joint campaign").click()
    page.fill("input[name=name]", name)
    page.select_option("select[name=offer_kind]", "amount_off")
    page.fill("input[name=offer_value]", "8")
    page.fill("input[name=starts]", today.isoformat())
    page.fill("input[name=ends]", (today + timedelta(days=20)).isoformat())
    page.fill("input[name=total_quantity]", "300")
    page.fill("input[name=owner_share]", "50")
    page.select_option("select[name=partner_0]", label="Bean There Coffee 豆在咖啡")
    page.fill("input[name=partner_share_0]", "30")
    page.select_option("select[name=partner_1]", label="Harbor Bank 港湾银行")
    page.fill("input[name=partner_share_1]", "10")
    page.fill("input[name=total_budget]", "2400")
    page.select_option("select[name=settlement_cycle]", "daily")
    page.get_by_role("button", name="Check and preview").click()
    assert page.get_by_test_id("error-shares").is_visible()  # 50 + 30 + 10 is not 100
    carrier.shot("builder-errors")
    page.fill("input[name=partner_share_1]", "20")
    page.get_by_role("button", name="Check and preview").click()
    assert "¥8.00 off" in page.get_by_test_id("preview").inner_text()
    carrier.shot("builder-preview")
    page.get_by_role("button", name="Save draft").click()
    page.get_by_role("button", name="Propose to the partners").click()
    campaign_path = page.url.removeprefix(carrier.base)

    for email in ("admin@cafe.demo", "marketing@bank.demo"):
        partner = portal("zh-CN")
        partner.sign_in(email)
        proposal = (
            partner.open("/portal/proposals").get_by_test_id("proposal").filter(has_text=name)
        )
        assert "立减 ¥8.00" in proposal.get_by_test_id("terms").inner_text()
        partner.shot(f"proposal-{email.split('@')[0]}-{email.split('@')[1].split('.')[0]}")
        proposal.get_by_role("button", name=re.compile("接受这些条款")).click()

    page = carrier.open(campaign_path)
    page.get_by_role("button", name="Activate").click()
    assert page.locator("h1 .badge").inner_text() == "active"

    customer = portal("zh-CN", mobile=True)
    page = customer.customer_sign_in("13700000009")
    page.get_by_test_id("offer").filter(has_text=name).get_by_role("button").click()
    code = page.get_by_test_id("coupon-code").inner_text()

    cashier = portal("en-US")
    page = cashier.sign_in("cashier@cafe.demo")
    if page.get_by_role("button", name="Start").count():
        page.get_by_role("button", name="Start").click()
    page.get_by_test_id("basket").fill("20")
    page.get_by_test_id("code").fill(code)
    page.get_by_test_id("code").press("Enter")
    assert page.get_by_test_id("payable").inner_text() == "¥12.00"
    page.get_by_test_id("redeem").click()
    assert page.get_by_test_id("receipt-discount").inner_text() == "¥8.00"
    cashier.shot("journey-receipt")
    redeemed_on = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()

    _onboard_cafe(portal_server)
    later = days_later()
    finance = portal("en-US", server=later)
    _finance_settles_and_reconciles(finance, redeemed_on, servers.redis_url, later.stripe)
