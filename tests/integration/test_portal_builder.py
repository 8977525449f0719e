# ruff: noqa: F811, RUF001  (the fixture `browser` is imported; Chinese text has full-width commas)
"""The campaign builder through HTTP: the audience (segment by tiers, tags and network, or a
targeted list) and the redeemable stores (every participant's, or a list chosen from the
participants' stores, grouped by organization) saved with the draft; every field at fault
named in the page in the reader's language, with nothing written; and the check endpoint the
page's script calls answering exactly what a submit would."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Campaign, CampaignStore
from coalition.merchants.models import Store
from coalition.merchants.services import stores
from coalition.platform.db import utcnow
from tests.integration.conftest import World
from tests.integration.test_portal import MISSING, Browser, Open, browser  # noqa: F401

MARKETING = "marketing@carrier.test"
CHECK = "/portal/campaigns/new/check"


def _form(world: World, **changes: Any) -> dict[str, Any]:
    """A builder form that saves: the carrier 70 %, the café 30 % (capped), ¥5 off."""
    today = utcnow().date()
    form: dict[str, Any] = {
        "name": "Tea time 下午茶",
        "offer_kind": "amount_off",
        "offer_value": "5",
        "valid_days": "7",
        "starts": today.isoformat(),
        "ends": (today + timedelta(days=30)).isoformat(),
        "total_quantity": "500",
        "per_customer_limit": "1",
        "owner_share": "70",
        "partner_0": str(world.cafe.id),
        "partner_share_0": "30",
        "partner_cap_0": "1000",
        "total_budget": "2500",
        "fee_payer": "redeeming_merchant",
        "settlement_cycle": "weekly",
        "audience_kind": "open",
        "store_scope": "all",
    }
    form.update(changes)
    return form


async def _stores(session: AsyncSession, world: World) -> dict[str, Store]:
    """Two café stores (one archived later), one bank branch and one carrier shop."""
    made = {
        key: await stores.create_store(session, None, org, name=name, address="1 Rd", city=city)
        for key, org, name, city in (
            ("square", world.cafe, "People's Square 人民广场店", "Shanghai"),
            ("lake", world.cafe, "West Lake 西湖店", "Hangzhou"),
            ("closed", world.cafe, "Old Town 老城店", "Shanghai"),
            ("branch", world.bank, "Lujiazui branch 陆家嘴支行", "Shanghai"),
            ("shop", world.carrier, "Nanjing Road 南京路店", "Shanghai"),
        )
    }
    made["closed"].status = "archived"
    await session.commit()
    return made


async def _campaigns(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Campaign))).scalar_one())


def _groups(html: str) -> dict[str, list[tuple[str, bool]]]:
    """The store groups on a page: organization -> (store offered, whether it is ticked)."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for group in re.findall(r'<fieldset class="store-group".*?</fieldset>', html, re.S):
        legend = re.search(r"<legend>([^<]+)</legend>", group)
        assert legend is not None
        found[unescape(legend.group(1))] = [
            (unescape(name), "checked" in attributes)
            for attributes, name in re.findall(
                r'<input type="checkbox" name="store_ids"([^>]*)> ([^<]+) <', group
            )
        ]
    return found


def _errors(html: str) -> dict[str, str]:
    """The errors shown next to fields: form field -> message."""
    return {k: unescape(v) for k, v in re.findall(r'data-testid="error-(\w+)">([^<]*)<', html)}


async def test_the_audience_and_the_chosen_stores_are_saved_with_the_draft(
    browser: Open, world: World, session: AsyncSession
) -> None:
    made = await _stores(session, world)
    form = _form(
        world,
        audience_kind="segment",
        min_tier="3",
        max_tier="5",
        tags="students, 学生；commuters",
        on_network_only="1",
        store_scope="chosen",
        partner_1=str(world.bank.id),
        partner_share_1="10",
        owner_share="60",
    )
    async with browser() as b:
        await b.sign_in(MARKETING)
        await b.get("/portal/campaigns/new")
        # Two stores chosen: a browser sends the checkbox list as the same name twice.
        response = await b.post(
            "/portal/campaigns/new",
            {
                **form,
                "action": "create",
                "store_ids": [str(made["lake"].id), str(made["branch"].id)],
            },
        )
        assert response.status_code == 303, response.text[:600]
        page = await b.get(response.headers["location"])
    campaign = (await session.execute(select(Campaign))).scalar_one()
    assert (campaign.audience, campaign.audience_min_tier, campaign.audience_max_tier) == (
        "segment",
        3,
        5,
    )
    assert campaign.audience_tags == ["students", "学生", "commuters"]
    assert campaign.audience_on_network_only is True
    chosen = await session.execute(
        select(col(CampaignStore.store_id)).where(col(CampaignStore.campaign_id) == campaign.id)
    )
    assert set(chosen.scalars()) == {made["lake"].id, made["branch"].id}
    assert "West Lake 西湖店" in page and "Lujiazui branch 陆家嘴支行" in page
    assert "students, 学生, commuters" in page and "tier 3 to 5" in page


async def test_the_stores_offered_are_the_participants_grouped_by_organization(
    browser: Open, world: World, session: AsyncSession
) -> None:
    made = await _stores(session, world)
    async with browser() as b:
        await b.sign_in(MARKETING)
        page = await b.get("/portal/campaigns/new")
        assert _groups(page) == {"Carrier Org": [("Nanjing Road 南京路店", False)]}
        form = {**_form(world), "store_scope": "chosen", "store_ids": [str(made["lake"].id)]}
        shown = await b.post("/portal/campaigns/new", {**form, "action": "preview"})
        assert shown.status_code == 200, _errors(shown.text)
    # The café's open stores under its name, the one chosen still ticked; not the archived
    # store, and not the bank, which is not a participant.
    assert _groups(shown.text) == {
        "Carrier Org": [("Nanjing Road 南京路店", False)],
        "Cafe Org": [("People's Square 人民广场店", False), ("West Lake 西湖店", True)],
    }
    assert 'name="store_scope" value="chosen" checked' in shown.text


async def test_every_unreadable_field_is_named_in_the_readers_language(
    browser: Open, world: World, session: AsyncSession
) -> None:
    form = _form(
        world,
        offer_value="five",
        offer_min_spend="-3",
        valid_days="seven",
        starts="",
        total_quantity="0",
        partner_share_0="30.555",
        store_scope="chosen",
    )
    async with browser("zh-CN") as b:
        await b.sign_in(MARKETING)
        await b.get("/portal/campaigns/new")
        response = await b.post("/portal/campaigns/new", {**form, "action": "create"})
    assert response.status_code == 422
    assert _errors(response.text) == {
        "offer_value": "请输入金额，例如 25 或 25.50。",
        "offer_min_spend": "请输入金额，例如 25 或 25.50。",
        "valid_days": "请输入整数。",
        "starts": "请输入日期。",
        "total_quantity": "请输入 1 到 100,000,000 之间的整数张数。",
        "partner_share_0": "请输入百分比，例如 12.5。",
        "store_ids": "请至少选择一家参与方的营业中门店。",
    }
    assert "请检查下面标出的各项。" in response.text
    assert 'value="five"' in response.text and 'value="30.555"' in response.text  # kept
    assert MISSING.findall(response.text) == []
    assert await _campaigns(session) == 0


async def test_the_rules_of_a_draft_are_shown_at_their_fields(
    browser: Open, world: World, session: AsyncSession
) -> None:
    made = await _stores(session, world)
    today = utcnow().date()
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        (
            {
                "ends": (today - timedelta(days=1)).isoformat(),
                "owner_share": "60",
                "audience_kind": "segment",
            },
            {
                "ends": "Enter a last day that is after the first day and has not passed.",
                "shares": "The shares must add up to exactly 100%, with each partner chosen once.",
                "audience_kind": "A segment needs a tier range, tags or on-network "
                "subscribers only.",
            },
        ),
        (
            {"total_budget": "1", "partner_cap_0": "0.01"},
            {
                "total_budget": "Enter the total budget: at least one coupon's largest discount.",
                "partner_cap_0": "Enough for this partner's part of one coupon, or empty for "
                "no cap.",
            },
        ),
        (
            {"offer_kind": "percent_off", "offer_percent": "15", "offer_cap": ""},
            {"offer_cap": "A percent-off offer needs the most it takes off: more than 0."},
        ),
        (
            {"offer_kind": "threshold", "offer_threshold": "3"},
            {"offer_threshold": "The amount to spend must be at least the amount off."},
        ),
        (
            {"audience_kind": "segment", "min_tier": "5", "max_tier": "2"},
            {"max_tier": "The lowest tier cannot be above the highest."},
        ),
        (
            {"partner_1": str(world.cafe.id), "partner_share_1": "0"},
            {"shares": "The shares must add up to exactly 100%, with each partner chosen once."},
        ),
        (  # a list of stores asked for but left empty, with a rule of the draft broken
            {"store_scope": "chosen", "owner_share": "60"},
            {
                "store_ids": "Choose at least one active store of the participants.",
                "shares": "The shares must add up to exactly 100%, with each partner chosen once.",
            },
        ),
        (  # a store of an organization that is not a participant, and an archived one
            {
                "store_scope": "chosen",
                "store_ids": [str(made["branch"].id), str(made["closed"].id)],
            },
            {"store_ids": "Choose at least one active store of the participants."},
        ),
    ]
    async with browser() as b:
        await b.sign_in(MARKETING)
        await b.get("/portal/campaigns/new")
        for changes, expected in cases:
            response = await b.post(
                "/portal/campaigns/new", {**_form(world, **changes), "action": "create"}
            )
            assert response.status_code == 422, changes
            assert _errors(response.text) == expected, changes
            assert MISSING.findall(response.text) == []
    assert await _campaigns(session) == 0


async def test_a_targeted_list_and_criteria_of_another_audience(
    browser: Open, world: World, session: AsyncSession
) -> None:
    """A targeted campaign is saved as such; the tiers and tags typed on the page belong to a
    segment only, and another kind of offer's amounts are not part of this one."""
    form = _form(world, audience_kind="targeted", min_tier="3", tags="vip", offer_threshold="100")
    async with browser("zh-CN") as b:
        await b.sign_in(MARKETING)
        await b.get("/portal/campaigns/new")
        response = await b.post("/portal/campaigns/new", {**form, "action": "create"})
        assert response.status_code == 303, _errors(response.text)
        page = await b.get(response.headers["location"])
    campaign = (await session.execute(select(Campaign))).scalar_one()
    assert (campaign.audience, campaign.audience_min_tier, campaign.audience_tags) == (
        "targeted",
        None,
        [],
    )
    assert (campaign.offer["kind"], campaign.offer["value"], campaign.offer["threshold"]) == (
        "amount_off",
        500,
        0,
    )
    assert "定向名单" in page and "所有参与方的全部门店" in page


async def test_the_check_endpoint_answers_what_saving_would(
    browser: Open, world: World, session: AsyncSession
) -> None:
    made = await _stores(session, world)
    async with browser("zh-CN") as b:
        await b.sign_in(MARKETING)
        await b.get("/portal/campaigns/new")
        forged = await b.client.post(CHECK, data=_form(world), follow_redirects=False)
        assert forged.status_code == 403  # the form's CSRF token, as for every post

        bad = {**_form(world, owner_share="60", offer_value="five"), "starts": ""}
        checked = await b.post(CHECK, bad)
        assert checked.status_code == 200
        assert checked.headers["content-type"].startswith("application/json")
        answer = checked.json()
        submitted = await b.post("/portal/campaigns/new", {**bad, "action": "create"})
        assert answer["valid"] is False
        assert (
            answer["errors"]
            == _errors(submitted.text)
            == {
                "offer_value": "请输入金额，例如 25 或 25.50。",
                "starts": "请输入日期。",
            }
        )
        assert answer["general"] == "请检查下面标出的各项。"
        assert 'data-testid="no-preview"' in answer["preview"]  # no amount off yet

        shares = await b.post(CHECK, _form(world, owner_share="60"))
        assert shares.json()["errors"] == {
            "shares": "各方份额合计必须正好为 100%，且每个合作方只能选一次。"
        }
        assert "立减 ¥5.00" in shares.json()["preview"]  # the offer alone is sound

        percent = {**_form(world), "offer_kind": "percent_off", "offer_percent": "15"}
        percent.update(offer_cap="20", code_prefix="tea", store_scope="chosen")
        percent["store_ids"] = [str(made["square"].id)]
        good = (await b.post(CHECK, percent)).json()
        assert (good["valid"], good["errors"]) == (True, {})
        assert "15.0% 折扣" in good["preview"] and "TEA-XXXX" in good["preview"]
        assert _groups(good["stores"]) == {
            "Carrier Org": [("Nanjing Road 南京路店", False)],
            "Cafe Org": [("People's Square 人民广场店", True), ("West Lake 西湖店", False)],
        }
        assert MISSING.findall(json.dumps(good, ensure_ascii=False)) == []
        assert await _campaigns(session) == 0  # checking writes nothing
        saved = await b.post("/portal/campaigns/new", {**percent, "action": "create"})
        assert saved.status_code == 303
    async with browser() as finance:
        await finance.sign_in("finance@carrier.test")
        await finance.get("/portal/campaigns")
        assert (await finance.post(CHECK, _form(world))).status_code == 403
