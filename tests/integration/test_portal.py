"""The portal through HTTP: session sign-in, CSRF on every form, role-based pages, tenancy,
the key shown once, per-field form errors, the web POS and the customers' pages, and a walk of
every page in both languages that fails on any untranslated string."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import CampaignTarget, Customer, Redemption
from coalition.merchants.models import Store, Terminal
from coalition.merchants.services import stores, terminals
from coalition.platform.sms import OUTBOX
from coalition.platform.web import SESSION_COOKIE
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import PASSWORD, World

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
MISSING = re.compile(r"⟦[^⟧]*⟧")
PHONE = "13912345678"


class Browser:
    """A cookie-keeping client that fills forms the way a browser does."""

    def __init__(self, client: AsyncTestClient[Litestar], language: str = "en") -> None:
        self.client = client
        self.client.headers["accept-language"] = language
        self.csrf = ""

    async def get(self, path: str, expect: int = 200) -> str:
        response = await self.client.get(path, follow_redirects=False)
        assert response.status_code == expect, (path, response.status_code, response.text[:500])
        if found := CSRF.search(response.text):
            self.csrf = found.group(1)
        return response.text

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True
    ) -> Any:
        form = dict(data or {})
        if csrf:
            form["_csrf"] = self.csrf
        response = await self.client.post(path, data=form, follow_redirects=False)
        if found := CSRF.search(response.text):
            self.csrf = found.group(1)
        return response

    async def sign_in(self, email: str, password: str = PASSWORD) -> None:
        await self.get("/portal/login")
        response = await self.post("/portal/login", {"email": email, "password": password})
        assert response.status_code == 303, response.text[:500]


Open = Callable[..., AbstractAsyncContextManager[Browser]]


@pytest.fixture
def browser(app: Litestar) -> Open:
    """`async with browser("zh-CN") as b:` — each one its own cookie jar."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_browser(language: str = "en") -> AsyncIterator[Browser]:
        async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
            yield Browser(client, language)

    return open_browser


async def _store_with_terminal(session: AsyncSession, world: World) -> tuple[Store, Terminal, str]:
    store = await stores.create_store(
        session, None, world.cafe, name="People's Square", address="1 Road", city="Shanghai"
    )
    terminal, key = await terminals.register_terminal(session, None, store, "Counter 1")
    await session.commit()
    return store, terminal, key.full


async def test_a_post_without_the_csrf_token_is_refused(
    browser: Open, world: World, session: AsyncSession
) -> None:
    _, terminal, _ = await _store_with_terminal(session, world)
    async with browser() as b:
        await b.get("/portal/login")
        refused = await b.post(
            "/portal/login", {"email": "admin@cafe.test", "password": PASSWORD}, csrf=False
        )
        assert refused.status_code == 403
        assert 'data-code="csrf_failed"' in refused.text
        forged = await b.client.post(
            "/portal/login",
            data={"email": "admin@cafe.test", "password": PASSWORD, "_csrf": "forged-token"},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        await b.sign_in("admin@cafe.test")
        await b.get("/portal/terminals")
        revoke = f"/portal/terminals/{terminal.id}/revoke"
        assert (await b.post(revoke, csrf=False)).status_code == 403
        await session.refresh(terminal)
        assert terminal.status == "active"
        assert (await b.post(revoke)).status_code == 303
        await session.refresh(terminal)
        assert terminal.status == "revoked"


async def test_session_cookie_is_http_only_and_same_site(browser: Open, world: World) -> None:
    async with browser() as b:
        response = await b.client.get("/portal/login")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # only in production


async def test_wrong_password_is_told_in_the_readers_language(browser: Open, world: World) -> None:
    for language, message in (("zh-CN", "邮箱或密码错误。"), ("en", "Wrong email or password.")):
        async with browser(language) as b:
            await b.get("/portal/login")
            response = await b.post(
                "/portal/login", {"email": "admin@cafe.test", "password": "wrong password"}
            )
            assert response.status_code == 401
            assert message in response.text
            assert f'<html lang="{language}">' in response.text


async def test_signed_out_visitors_are_sent_to_sign_in(browser: Open, world: World) -> None:
    async with browser() as b:
        response = await b.client.get("/portal/stores", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/portal/login?next=/portal/stores"
        wallet = await b.client.get("/portal/customer/wallet", follow_redirects=False)
        assert wallet.headers["location"].startswith("/portal/customer/login")


async def test_sign_out_ends_the_session(browser: Open, world: World) -> None:
    async with browser() as b:
        await b.sign_in("admin@cafe.test")
        stolen = b.client.cookies.get(SESSION_COOKIE)
        await b.get("/portal/stores")
        assert (await b.post("/portal/logout")).status_code == 303
    async with browser() as replay:
        replay.client.cookies.set(SESSION_COOKIE, stolen or "", domain="testserver.local")
        response = await replay.client.get("/portal/stores", follow_redirects=False)
        assert response.status_code == 303  # the old cookie no longer signs anyone in


async def test_every_page_renders_in_both_languages_without_untranslated_strings(
    browser: Open, world: World, session: AsyncSession
) -> None:
    await _store_with_terminal(session, world)
    campaign = await running_campaign(session, world)
    targeted = await running_campaign(session, world, audience="targeted")
    listed = Customer(external_id_hash="walk" * 16, phone_hint="*******1234", tags=["coffee"])
    session.add(listed)
    await session.flush()
    session.add(CampaignTarget(campaign_id=targeted.id, customer_id=listed.id))
    await session.commit()
    pages = {
        "admin@cafe.test": [
            "/portal",
            "/portal/proposals",
            "/portal/campaigns",
            f"/portal/campaigns/{campaign.id}",
            "/portal/stores",
            "/portal/terminals",
            "/portal/staff",
            "/portal/api-keys",
            "/portal/webhooks",
            "/portal/audit-log",
            "/portal/pos",
            "/portal/reconciliation",
        ],
        "finance@carrier.test": ["/portal", "/portal/reconciliation"],
        "cashier@cafe.test": ["/portal/pos"],
        "marketing@carrier.test": [
            "/portal",
            "/portal/campaigns",
            "/portal/proposals",
            "/portal/partners",
            "/portal/partners?q=cafe",
            "/portal/campaigns/new",
            f"/portal/campaigns/{targeted.id}",
            f"/portal/campaigns/{targeted.id}/targets",
            f"/portal/campaigns/{campaign.id}/targets",  # not targeted: says so
        ],
    }
    for language in ("zh-CN", "en"):
        for email, paths in pages.items():
            async with browser(language) as b:
                await b.sign_in(email)
                for path in paths:
                    html = await b.get(path)
                    assert MISSING.findall(html) == [], (language, email, path)
                    assert f'<html lang="{language}">' in html
        async with browser(language) as b:
            for path in (
                "/portal/login",
                "/portal/customer/login",
                "/portal/invitations/unknown-token",
            ):
                assert MISSING.findall(await b.get(path)) == [], (language, path)
            html = await b.get("/portal/no-such-page", expect=404)
            assert MISSING.findall(html) == []


async def test_language_switch_sets_a_cookie_that_wins_over_the_header(
    browser: Open, world: World
) -> None:
    async with browser("en") as b:
        assert "Sign in" in await b.get("/portal/login")
        response = await b.post("/portal/language", {"lang": "zh-CN", "next": "/portal/login"})
        assert response.status_code == 303
        assert response.headers["location"] == "/portal/login"
        html = await b.get("/portal/login")
        assert '<html lang="zh-CN">' in html and "登录" in html


async def test_a_cashier_sees_only_the_web_pos(browser: Open, world: World) -> None:
    async with browser() as b:
        await b.sign_in("cashier@cafe.test")
        html = await b.get("/portal/pos")
        menu = re.search(r'<nav class="menu".*?</nav>', html, re.S)
        assert menu is not None
        assert re.findall(r'href="([^"]+)"', menu.group(0)) == ["/portal/pos"]
        for path in ("/portal", "/portal/proposals", "/portal/campaigns", "/portal/stores"):
            page = await b.get(path, expect=403)
            assert "Your role cannot do this." in page


async def test_a_merchant_cannot_see_another_merchants_pages(
    browser: Open, world: World, session: AsyncSession
) -> None:
    bank_store = await stores.create_store(
        session, None, world.bank, name="Lujiazui", address="88 Century Ave", city="Shanghai"
    )
    bank_terminal, _ = await terminals.register_terminal(session, None, bank_store, "Teller 1")
    await session.commit()
    async with browser() as bank:
        await bank.sign_in("admin@bank.test")
        await bank.get("/portal/webhooks")
        created = await bank.post(
            "/portal/webhooks", {"url": "https://bank.example/hooks", "event_types": "*"}
        )
        assert created.status_code == 303, created.text[:400]
        endpoint_page = created.headers["location"]
    async with browser() as cafe:
        await cafe.sign_in("admin@cafe.test")
        assert "Lujiazui" not in await cafe.get("/portal/terminals")
        await cafe.get(endpoint_page, expect=404)
        refused = await cafe.post(f"/portal/terminals/{bank_terminal.id}/revoke")
        assert refused.status_code == 404
    await session.refresh(bank_terminal)
    assert bank_terminal.status == "active"


async def test_a_terminal_key_is_shown_once(
    browser: Open, world: World, session: AsyncSession
) -> None:
    store, _, _ = await _store_with_terminal(session, world)
    async with browser() as b:
        await b.sign_in("admin@cafe.test")
        await b.get("/portal/terminals")
        response = await b.post("/portal/terminals", {"store_id": str(store.id), "name": "Bar"})
        assert response.status_code == 200
        key = re.search(r'data-testid="terminal-key">(ctk_[^<]+)<', response.text)
        assert key is not None
        pos = await b.client.get(
            "/api/v1/pos/terminal", headers={"authorization": f"Bearer {key.group(1)}"}
        )
        assert pos.status_code == 200 and pos.json()["terminal"]["name"] == "Bar"
        again = await b.get("/portal/terminals")
        assert key.group(1) not in again and "Bar" in again


async def test_form_errors_are_shown_next_to_their_field(
    browser: Open, world: World, session: AsyncSession
) -> None:
    async with browser("zh-CN") as b:
        await b.sign_in("admin@cafe.test")
        await b.get("/portal/stores")
        response = await b.post("/portal/stores", {"name": "", "address": "1 Road", "city": "SH"})
        assert response.status_code == 422
        assert 'data-testid="error-name"' in response.text
        assert "请检查此项。" in response.text
        assert 'value="1 Road"' in response.text  # what was typed is kept
        await b.get("/portal/api-keys")
        no_scope = await b.post("/portal/api-keys", {"name": "ERP"})
        assert no_scope.status_code == 422 and 'data-testid="error-scopes"' in no_scope.text
    rows = (await session.execute(select(Store).where(col(Store.org_id) == world.cafe.id))).all()
    assert rows == []


async def test_a_cashier_redeems_and_reverses_at_the_web_pos(
    browser: Open, world: World, session: AsyncSession, settings: Any
) -> None:
    _, terminal, _ = await _store_with_terminal(session, world)
    campaign = await running_campaign(session, world)
    code = await _claimed_code(browser, campaign.id)
    async with browser("zh-CN") as b:
        await b.sign_in("cashier@cafe.test")
        await b.get("/portal/pos")
        chosen = await b.post("/portal/pos/terminal", {"terminal_id": str(terminal.id)})
        assert chosen.status_code == 303
        await b.get("/portal/pos")
        mistyped = code[:-1] + ("0" if code[-1] != "0" else "1")  # the check symbol catches it
        typo = await b.post("/portal/pos/quote", {"code": mistyped, "basket": "30"})
        assert typo.status_code == 422 and "券码无效" in typo.text
        scanned = f"{settings.public_url}/c/{code}"
        quote = await b.post("/portal/pos/quote", {"code": scanned, "basket": "30"})
        assert quote.status_code == 200, quote.text[:600]
        assert "¥25.00" in quote.text  # 30.00 less 5.00 off
        key = re.search(r'name="idempotency_key" value="([^"]+)"', quote.text)
        assert key is not None
        form = {"code": scanned, "basket": "30", "idempotency_key": key.group(1)}
        first = await b.post("/portal/pos/redeem", form)
        second = await b.post("/portal/pos/redeem", form)  # a double click
        assert first.status_code == second.status_code == 303
        assert first.headers["location"] == second.headers["location"]
        receipt = await b.get(first.headers["location"])
        assert "¥5.00" in receipt and "已完成" in receipt
        again = await b.post("/portal/pos/quote", {"code": code, "basket": "30"})
        assert again.status_code == 409 and "此券已被使用。" in again.text
        await b.get(first.headers["location"])
        too_much = await b.post(
            first.headers["location"] + "/reverse", {"refund": "31", "reason": "refund"}
        )
        assert too_much.status_code == 422 and "退款金额不能超过消费金额。" in too_much.text
        reversed_ = await b.post(first.headers["location"] + "/reverse", {"reason": "refund"})
        assert reversed_.status_code == 303
        assert "已撤销" in await b.get(first.headers["location"])
    redemptions = (await session.execute(select(Redemption))).scalars().all()
    assert [(r.discount, r.status, r.terminal_id) for r in redemptions] == [
        (500, "reversed", terminal.id)
    ]


async def _claimed_code(browser: Open, campaign_id: Any) -> str:
    async with browser() as customer:
        await _customer_sign_in(customer)
        offers = await customer.get("/portal/customer")
        key = re.search(r'name="idempotency_key" value="([^"]+)"', offers)
        assert key is not None
        claimed = await customer.post(
            f"/portal/customer/offers/{campaign_id}/claim", {"idempotency_key": key.group(1)}
        )
        assert claimed.status_code == 303, claimed.text[:500]
        coupon = await customer.get(claimed.headers["location"])
        found = re.search(r'data-testid="coupon-code">([^<]+)<', coupon)
        assert found is not None
        return found.group(1)


async def _customer_sign_in(customer: Browser) -> None:
    OUTBOX.clear()
    await customer.get("/portal/customer/login")
    sent = await customer.post("/portal/customer/login", {"phone": PHONE})
    assert sent.status_code == 200 and 'name="code"' in sent.text
    code = re.search(r"\b(\d{6})\b", OUTBOX.messages_to(f"+86{PHONE}")[-1].message)
    assert code is not None
    wrong = await customer.post("/portal/customer/verify", {"phone": PHONE, "code": "000000"})
    assert wrong.status_code in (401, 422) and 'data-testid="alert"' in wrong.text
    signed_in = await customer.post("/portal/customer/verify", {"phone": PHONE, "code": code[1]})
    assert signed_in.status_code == 303, signed_in.text[:500]


async def test_a_customer_claims_and_sees_the_qr(
    browser: Open, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world)
    code = await _claimed_code(browser, campaign.id)
    async with browser("zh-CN") as customer:
        await _customer_sign_in(customer)
        wallet = await customer.get("/portal/customer/wallet")
        assert code in wallet and "可使用" in wallet
        page = await customer.get(f"/c/{code}")
        assert 'data-testid="qr"' in page and "data:image/png;base64," in page
        assert MISSING.findall(page) == []
    async with browser() as stranger:
        public = await stranger.get(f"/c/{code}")
        assert code in public and "Sign in to see your coupons" in public
        await stranger.get("/c/NOT-A-CODE", expect=404)


async def test_carrier_marketing_invites_a_partner(browser: Open, world: World) -> None:
    async with browser() as merchant:
        await merchant.sign_in("admin@cafe.test")
        await merchant.get("/portal/partners", expect=403)  # the directory is the carrier's
    async with browser() as b:
        await b.sign_in("marketing@carrier.test")
        assert "Cafe Org" in await b.get("/portal/partners")
        bad = await b.post(
            "/portal/partners/invitations",
            {
                "name": "Tea House",
                "industry": "dining",
                "cities": "Shanghai",
                "contact_name": "Wang",
                "contact_email": "not an email",
            },
        )
        assert bad.status_code == 422 and 'data-testid="error-contact_email"' in bad.text
        good = await b.post(
            "/portal/partners/invitations",
            {
                "name": "Tea House",
                "industry": "dining",
                "cities": "Shanghai, Hangzhou",
                "contact_name": "Wang",
                "contact_email": "wang@tea.example",
            },
        )
        assert good.status_code == 200
        assert 'data-testid="partner-invitation"' in good.text and "/invitations/" in good.text
        link = re.search(r'class="secret">[^<]*(/portal/invitations/[^<]+)<', good.text)
        assert link is not None
    async with browser() as invited:
        await invited.get(link.group(1))
        short = await invited.post(link.group(1), {"password": "short"})
        assert short.status_code == 422 and 'data-testid="error-password"' in short.text
        accepted = await invited.post(link.group(1), {"password": "a long new password 1"})
        assert accepted.status_code == 303
        await invited.sign_in("wang@tea.example", "a long new password 1")
        assert "Tea House" in await invited.get("/portal")


async def test_bulk_issuance_upload_shows_progress_and_row_errors(
    browser: Open, world: World, session: AsyncSession
) -> None:
    import uuid

    from coalition.campaigns.services import issuance

    campaign = await running_campaign(session, world)
    async with browser("zh-CN") as b:
        await b.sign_in("marketing@carrier.test")
        page = await b.get(f"/portal/campaigns/{campaign.id}")
        assert 'data-testid="bulk-issuance"' in page
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
        assert key is not None
        empty = await b.client.post(
            f"/portal/campaigns/{campaign.id}/issuances",
            data={"_csrf": b.csrf, "idempotency_key": key.group(1)},
            files={"targets": ("targets.csv", b"", "text/csv")},
            follow_redirects=False,
        )
        assert empty.status_code == 422 and "上传的文件无法读取。" in empty.text
        uploaded = await b.client.post(
            f"/portal/campaigns/{campaign.id}/issuances",
            data={"_csrf": b.csrf, "idempotency_key": key.group(1)},
            files={"targets": ("targets.csv", b"phone\n13800000000\nnot-a-phone\n", "text/csv")},
            follow_redirects=False,
        )
        assert uploaded.status_code == 303, uploaded.text[:500]
        progress = await b.get(uploaded.headers["location"])
        assert 'http-equiv="refresh"' in progress  # refreshes itself while it runs
        assert "手机号码格式错误" in progress and MISSING.findall(progress) == []
        batch_id = uuid.UUID(uploaded.headers["location"].rsplit("/", 1)[1])
        await issuance.issue_batch(session, batch_id)  # what the worker's job does
        done = await b.get(uploaded.headers["location"])
        assert 'http-equiv="refresh"' not in done
        assert re.search(r'data-testid="batch-status">[^<]+<', done)
    async with browser() as cafe:
        await cafe.sign_in("marketing@cafe.test")  # a participant, not the owner
        assert 'data-testid="bulk-issuance"' not in await cafe.get(
            f"/portal/campaigns/{campaign.id}"
        )


async def test_marketing_builds_a_joint_campaign_the_partner_accepts_it(
    browser: Open, world: World
) -> None:
    from datetime import timedelta

    from coalition.platform.db import utcnow

    today = utcnow().date()
    form = {
        "name": "Tea time 下午茶",
        "offer_kind": "threshold",
        "offer_value": "5",
        "offer_threshold": "30",
        "valid_days": "7",
        "starts": today.isoformat(),
        "ends": (today + timedelta(days=30)).isoformat(),
        "total_quantity": "500",
        "per_customer_limit": "1",
        "owner_share": "60",
        "partner_0": str(world.cafe.id),
        "partner_share_0": "30",
        "partner_cap_0": "1000",
        "total_budget": "2500",
        "fee_percent": "2",
        "fee_payer": "redeeming_merchant",
        "settlement_cycle": "weekly",
        "audience_kind": "open",
    }
    async with browser("zh-CN") as carrier:
        await carrier.sign_in("marketing@carrier.test")
        await carrier.get("/portal/campaigns/new")
        bad = await carrier.post("/portal/campaigns/new", {**form, "action": "create"})
        assert bad.status_code == 422  # 60 % + 30 % is not 100 %
        assert 'data-testid="error-shares"' in bad.text
        assert "各方份额合计必须正好为 100%" in bad.text
        assert 'value="Tea time 下午茶"' in bad.text
        form["owner_share"] = "70"
        preview = await carrier.post("/portal/campaigns/new", {**form, "action": "preview"})
        assert preview.status_code == 200 and 'data-testid="preview"' in preview.text
        assert "满 ¥30.00 减 ¥5.00" in preview.text
        created = await carrier.post("/portal/campaigns/new", {**form, "action": "create"})
        assert created.status_code == 303, created.text[:800]
        campaign_page = created.headers["location"]
        await carrier.get(campaign_page)
        assert (await carrier.post(campaign_page + "/propose")).status_code == 303
    async with browser("zh-CN") as cafe:
        await cafe.sign_in("marketing@cafe.test")
        proposals = await cafe.get("/portal/proposals")
        assert "Tea time 下午茶" in proposals and "满 ¥30.00 减 ¥5.00" in proposals
        assert "¥1,000.00" in proposals  # the café's cap, exactly as proposed
        campaign_id = campaign_page.rsplit("/", 1)[1]
        stale = await cafe.post(f"/portal/proposals/{campaign_id}/accept", {"terms_version": "9"})
        assert stale.status_code == 409 and "条款已更新" in stale.text
        accepted = await cafe.post(
            f"/portal/proposals/{campaign_id}/accept", {"terms_version": "1"}
        )
        assert accepted.status_code == 303
    async with browser() as bank:
        await bank.sign_in("marketing@bank.test")
        await bank.get(campaign_page, expect=404)  # not a participant
    async with browser() as carrier:
        await carrier.sign_in("marketing@carrier.test")
        assert "approved" in await carrier.get(campaign_page)
        assert (await carrier.post(campaign_page + "/activate")).status_code == 303
        assert 'class="badge active"' in await carrier.get(campaign_page)


async def test_finance_reads_campaigns_but_cannot_run_them(
    browser: Open, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world)
    async with browser() as finance:
        await finance.sign_in("finance@carrier.test")
        page = await finance.get(f"/portal/campaigns/{campaign.id}")
        assert 'data-testid="chart-by-day"' in page and 'data-testid="workflow"' not in page
        await finance.get("/portal/campaigns/new", expect=403)
        paused = await finance.post(f"/portal/campaigns/{campaign.id}/pause")
        assert paused.status_code == 403, paused.headers.get("location")
        assert (await finance.post("/portal/campaigns/new", {"name": "x"})).status_code == 403
    await session.refresh(campaign)
    assert campaign.status == "active"
