"""Finance in a real browser (chromium): a carrier finance user opens the statements, closes
an ended week of the café's demo redemptions from the page, approves the statement and
downloads its lines as CSV. A redemption is written into that ended week the way the
redemption path writes it (its row, frozen funding and ledger entry in one transaction)."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import col, select

from coalition.campaigns import codes
from coalition.campaigns.models import Campaign, CampaignParticipant, Coupon, Redemption
from coalition.campaigns.services.redemptions import funding_to_json
from coalition.merchants.models import Organization, Store
from coalition.platform.db import make_engine, make_sessionmaker, utcnow
from coalition.settlement.domain import FundingShare, RedemptionFunding, period_of_day
from coalition.settlement.services import ledger
from tests.conftest import Servers
from tests.e2e.conftest import SCREENSHOTS, Portal
from tests.e2e.test_portal_browser import COFFEE

pytestmark = pytest.mark.e2e
Open = Callable[..., Portal]


async def _book_in_an_ended_period(database_url: str) -> tuple[str, str, str]:
    """One 1,000.00 redemption at a café store in the period that began two periods ago; the
    café's organization id and the period's cycle and first day."""
    from coalition.platform.settings import Settings

    engine = make_engine(Settings(environment="test", database_url=database_url), pool_size=1)
    async with make_sessionmaker(engine)() as session:
        campaign = (
            await session.execute(select(Campaign).where(col(Campaign.name).startswith(COFFEE)))
        ).scalar_one()
        participants = list(
            (
                await session.execute(
                    select(CampaignParticipant)
                    .where(col(CampaignParticipant.campaign_id) == campaign.id)
                    .order_by(col(CampaignParticipant.position))
                )
            ).scalars()
        )
        carrier = (
            await session.execute(select(Organization).where(col(Organization.kind) == "carrier"))
        ).scalar_one()
        cafe = (
            await session.execute(select(Organization).where(col(Organization.industry) == "cafe"))
        ).scalar_one()
        store = (
            await session.execute(select(Store).where(col(Store.org_id) == cafe.id).limit(1))
        ).scalar_one()
        cycle = campaign.settlement_cycle
        today = utcnow().date()
        step = {"daily": 2, "weekly": 14, "monthly": 62}[cycle]
        period = period_of_day(today - timedelta(days=step), cycle, cafe.timezone)  # type: ignore[arg-type]
        at = period.start + timedelta(hours=11)
        split = RedemptionFunding(
            discount=100_000,
            currency=campaign.currency,
            redeeming_org_id=cafe.id,
            owner_org_id=campaign.owner_org_id,
            carrier_org_id=carrier.id,
            funders=tuple(FundingShare(p.org_id, p.share_bp) for p in participants),
            fee_bp=campaign.fee_bp,
            fee_payer=campaign.fee_payer,
        )
        coupon = Coupon(
            campaign_id=campaign.id,
            code=codes.new_code(),
            status="redeemed",
            valid_from=at - timedelta(days=1),
            valid_until=at + timedelta(days=7),
            redeemed_at=at,
        )
        session.add(coupon)
        await session.flush()
        redemption = Redemption(
            campaign_id=campaign.id,
            coupon_id=coupon.id,
            org_id=cafe.id,
            store_id=store.id,
            currency=campaign.currency,
            basket_amount=500_000,
            discount=100_000,
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
            campaign_id=campaign.id,
        )
        await session.commit()
        result = (str(cafe.id), cycle, period.first_day.isoformat())
    await engine.dispose()
    return result


def test_finance_closes_approves_and_downloads_a_statement(portal: Open, servers: Servers) -> None:
    with ThreadPoolExecutor(1) as pool:  # the sync driver owns this thread's event loop
        cafe_id, cycle, first_day = pool.submit(
            asyncio.run, _book_in_an_ended_period(servers.database_url)
        ).result()

    finance = portal()
    finance.sign_in("finance@carrier.demo")
    assert "/portal/statements" in [
        a.get_attribute("href") for a in finance.page.locator("nav.menu a").all()
    ]
    page = finance.open("/portal/statements")
    form = page.get_by_test_id("close-form")
    form.locator("select[name=org_id]").select_option(cafe_id)
    form.locator("select[name=cycle]").select_option(cycle)
    form.locator("input[name=period_start]").fill(first_day)
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/portal/statements/*")
    assert page.get_by_test_id("statement-status").inner_text() == "closed"

    page = finance.open("/portal/statements?status=closed")
    finance.shot("finance-statements")
    page.get_by_test_id("statement-link").first.click()
    page.wait_for_selector("[data-testid=approve]")
    finance.shot("finance-statement-before-approval")
    statement_id = page.url.rsplit("/", 1)[1].split("?")[0]
    assert uuid.UUID(statement_id)
    page.get_by_test_id("approve").click()
    page.wait_for_selector("[data-testid=approved-by]")
    assert page.get_by_test_id("statement-status").inner_text() == "approved"
    assert "Chen Finance" in page.get_by_test_id("approved-by").inner_text()
    finance.shot("finance-statement-approved")

    with page.expect_download() as downloading:
        page.get_by_test_id("export-lines").click()
    download = downloading.value
    saved = SCREENSHOTS / download.suggested_filename
    download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_bytes().decode("utf-8-sig"))))
    assert rows and all(r["statement_id"] == statement_id for r in rows)
    assert sum(int(r["discount"]) for r in rows) == 100_000
