# ruff: noqa: F811  (the fixture `browser` is imported)
"""The customer list page of a targeted campaign through HTTP: the count, an upload (CSV,
replace or add, CSRF) answered with its counts and per-row errors in the reader's language,
taking a customer off, and who may see and change it."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import CampaignTarget, Customer
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World
from tests.integration.test_portal import MISSING, Open, browser  # noqa: F401

MARKETING = "marketing@carrier.test"


async def _customers(session: AsyncSession, count: int) -> list[Customer]:
    rows = [
        Customer(external_id_hash=secrets.token_hex(32), phone_hint="*******4321")
        for _ in range(count)
    ]
    session.add_all(rows)
    await session.commit()
    return rows


async def test_marketing_uploads_the_list_and_sees_counts_and_row_errors(
    browser: Open, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    a, b = await _customers(session, 2)
    path = f"/portal/campaigns/{campaign.id}/targets"
    async with browser("zh-CN") as page:
        await page.sign_in(MARKETING)
        overview = await page.get(f"/portal/campaigns/{campaign.id}")
        assert f'href="{path}"' in overview
        empty = await page.get(path)
        assert 'data-testid="target-upload"' in empty
        assert 'data-testid="target-count">0<' in empty

        refused = await page.client.post(
            path,
            data={"mode": "replace"},
            files={"targets": ("list.csv", f"customer_id\n{a.id}\n".encode(), "text/csv")},
            follow_redirects=False,
        )
        assert refused.status_code == 403  # no CSRF token

        body = f"customer_id\n{a.id}\nnonsense\n{b.id}\n{a.id}\n{secrets.token_hex(16)}\n"
        uploaded = await page.client.post(
            path,
            data={"_csrf": page.csrf, "mode": "replace"},
            files={"targets": ("list.csv", body.encode(), "text/csv")},
            follow_redirects=False,
        )
        assert uploaded.status_code == 200, uploaded.text[:500]
        html = uploaded.text
        assert MISSING.findall(html) == []
        assert "已替换名单" in html and 'data-testid="target-count">2<' in html
        assert 'data-testid="result-added">2<' in html
        assert 'data-testid="result-duplicates">1<' in html
        assert 'data-testid="result-rejected">2<' in html
        assert "顾客编号格式错误" in html and "重复" in html and "不是已知顾客" in html
        assert "*******4321" in html  # the carrier sees who is listed

        no_file = await page.client.post(
            path,
            data={"_csrf": page.csrf, "mode": "add"},
            files={"targets": ("list.csv", b"", "text/csv")},
            follow_redirects=False,
        )
        assert no_file.status_code == 422 and 'data-testid="error-targets"' in no_file.text
        assert MISSING.findall(no_file.text) == []

        overview = await page.get(f"/portal/campaigns/{campaign.id}")
        assert 'data-testid="campaign-target-count">2<' in overview
        await page.get(path)
        removed = await page.post(f"{path}/{a.id}/remove")
        assert removed.status_code == 303 and removed.headers["location"] == path
    rows = await session.execute(
        select(CampaignTarget.customer_id).where(col(CampaignTarget.campaign_id) == campaign.id)
    )
    assert set(rows.scalars().all()) == {b.id}

    async with browser("en") as page:
        await page.sign_in(MARKETING)
        await page.get(path)  # the form's CSRF token
        added = await page.client.post(
            path,
            data={"_csrf": page.csrf, "mode": "add"},
            files={"targets": ("list.csv", f"customer_id\n{a.id}\n{b.id}\n".encode(), "text/csv")},
            follow_redirects=False,
        )
        assert added.status_code == 200 and "Added to the list" in added.text
        assert 'data-testid="result-added">1<' in added.text
        assert 'data-testid="result-duplicates">1<' in added.text
        assert "listed twice" in added.text and MISSING.findall(added.text) == []


async def test_who_sees_and_changes_the_list_page(
    browser: Open, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    (a,) = await _customers(session, 1)
    session.add(CampaignTarget(campaign_id=campaign.id, customer_id=a.id))
    await session.commit()
    path = f"/portal/campaigns/{campaign.id}/targets"
    async with browser() as finance:
        await finance.sign_in("finance@carrier.test")
        overview = await finance.get(f"/portal/campaigns/{campaign.id}")
        assert f'href="{path}"' in overview
        assert 'data-testid="campaign-target-count">1<' in overview
        html = await finance.get(path)  # reads it, cannot change it
        assert 'data-testid="target-count">1<' in html
        assert 'data-testid="target-upload"' not in html and "/remove" not in html
        assert (await finance.post(f"{path}/{a.id}/remove")).status_code == 403
    async with browser() as cafe:
        await cafe.sign_in("marketing@cafe.test")  # a participant, not the owner
        await cafe.get(path, expect=404)
        await cafe.get(f"/portal/campaigns/{campaign.id}")  # a page with a CSRF token
        assert f'href="{path}"' not in await cafe.get(f"/portal/campaigns/{campaign.id}")
        assert (await cafe.post(f"{path}/{a.id}/remove")).status_code == 404
    async with browser() as owner:
        await owner.sign_in(MARKETING)
        open_campaign = await running_campaign(session, world)
        html = await owner.get(f"/portal/campaigns/{open_campaign.id}/targets")
        assert 'data-testid="not-targeted"' in html and 'data-testid="target-upload"' not in html
