# ruff: noqa: RUF001  (Chinese text has full-width punctuation)
"""The campaign builder in a real browser (chromium): fields checked as they are typed (the
shares' total live, amounts, dates, required fields, and the server's rules through the check
endpoint, without submitting), the coupon preview following the offer, the stores chosen by
participant and the audience by tiers and tags; and the same form without JavaScript."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from coalition.platform.db import utcnow
from tests.e2e.conftest import Portal

pytestmark = pytest.mark.e2e
Open = Callable[..., Portal]
CAFE = "Bean There Coffee 豆在咖啡"
BANK = "Harbor Bank 港湾银行"


def _days(offset: int) -> str:
    return (utcnow().date() + timedelta(days=offset)).isoformat()


def _error(page: Page, name: str) -> str:
    note = page.get_by_test_id(f"error-{name}")
    return note.inner_text() if note.count() else ""


def _fill_the_basics(page: Page, name: str) -> None:
    page.fill("input[name=name]", name)
    page.fill("input[name=offer_value]", "8")
    page.fill("input[name=starts]", _days(0))
    page.fill("input[name=ends]", _days(20))
    page.fill("input[name=total_quantity]", "300")
    page.fill("input[name=owner_share]", "70")
    page.select_option("select[name=partner_0]", label=CAFE)
    page.fill("input[name=partner_share_0]", "30")
    page.fill("input[name=total_budget]", "2400")


def test_fields_are_checked_as_they_are_typed(portal: Open) -> None:
    marketing = portal("en-US")
    marketing.sign_in("marketing@carrier.demo")
    page = marketing.open("/portal/campaigns/new")
    total = page.get_by_test_id("shares-total")
    expect(total).to_have_text("The shares add up to 100%.")
    expect(page.get_by_test_id("no-preview")).to_be_visible()

    page.fill("input[name=name]", "Morning brew")
    page.fill("input[name=name]", "")
    expect(page.get_by_test_id("error-name")).to_have_text("This field is required.")
    page.fill("input[name=name]", "Morning brew 早安咖啡")
    expect(page.get_by_test_id("error-name")).to_have_count(0)

    page.select_option("select[name=offer_kind]", "percent_off")
    expect(page.locator("input[name=offer_value]")).to_be_hidden()
    page.fill("input[name=offer_percent]", "15")
    page.fill("input[name=offer_cap]", "twenty")
    expect(page.get_by_test_id("error-offer_cap")).to_have_text(
        "Enter an amount such as 25 or 25.50."
    )
    page.fill("input[name=offer_cap]", "20")
    expect(page.get_by_test_id("error-offer_cap")).to_have_count(0)
    # The preview follows the offer as soon as the offer alone is sound.
    expect(page.get_by_test_id("preview")).to_contain_text("15.0% off (at most ¥20.00)")
    page.fill("input[name=code_prefix]", "brew")
    expect(page.get_by_test_id("preview")).to_contain_text("BREW-XXXX")

    page.fill("input[name=owner_share]", "50")
    page.select_option("select[name=partner_0]", label=CAFE)
    page.fill("input[name=partner_share_0]", "30")
    expect(total).to_have_text("The shares add up to 80%.")
    expect(total).to_have_attribute("data-state", "off")
    page.select_option("select[name=partner_1]", label=BANK)
    page.fill("input[name=partner_share_1]", "20.5")
    expect(total).to_have_text("The shares add up to 100.5%.")
    page.fill("input[name=partner_share_1]", "20")
    expect(total).to_have_text("The shares add up to 100%.")
    expect(total).to_have_attribute("data-state", "ok")

    page.fill("input[name=starts]", _days(5))
    page.fill("input[name=ends]", _days(2))
    expect(page.get_by_test_id("error-ends")).to_have_text(
        "Enter a last day that is after the first day and has not passed."
    )
    page.fill("input[name=ends]", _days(30))
    expect(page.get_by_test_id("error-ends")).to_have_count(0)
    page.fill("input[name=total_quantity]", "1000")

    # A rule only the server knows: the budget must hold one coupon's largest discount (¥20).
    page.fill("input[name=total_budget]", "10")
    expect(page.get_by_test_id("error-total_budget")).to_have_text(
        "Enter the total budget: at least one coupon's largest discount."
    )
    marketing.shot("builder-checked-as-typed")
    page.fill("input[name=total_budget]", "5000")
    expect(page.get_by_test_id("error-total_budget")).to_have_count(0)
    # And a cap too small for the bank's 20 % of a ¥20 discount.
    page.fill("input[name=partner_cap_1]", "1")
    expect(page.get_by_test_id("error-partner_cap_1")).to_have_text(
        "Enough for this partner's part of one coupon, or empty for no cap."
    )
    page.fill("input[name=partner_cap_1]", "100")
    expect(page.get_by_test_id("error-partner_cap_1")).to_have_count(0)
    assert page.url.endswith("/portal/campaigns/new")  # nothing was submitted
    expect(page.locator(".field.invalid")).to_have_count(0)
    marketing.shot("builder-valid")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/portal/campaigns/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("terms")).to_contain_text("15.0% off (at most ¥20.00)")


def test_choosing_the_stores_and_the_audience(portal: Open) -> None:
    marketing = portal("zh-CN")
    marketing.sign_in("marketing@carrier.demo")
    page = marketing.open("/portal/campaigns/new")
    _fill_the_basics(page, "Latte for stars 星级拿铁")

    groups = page.locator("#store-groups")
    expect(groups).to_be_hidden()  # every participant's store, until a list is asked for
    page.get_by_label("仅限下面选中的门店").check()
    expect(groups).to_be_visible()
    # The café was chosen as a partner above: its stores are listed under its name.
    cafe = page.get_by_test_id("store-group").filter(has_text=CAFE)
    expect(cafe.locator("input[type=checkbox]")).to_have_count(2)
    expect(page.get_by_test_id("store-group")).to_have_count(2)  # the carrier's and the café's
    expect(page.get_by_test_id("error-store_ids")).to_have_text(
        "请至少选择一家参与方的营业中门店。"
    )
    cafe.get_by_label(re.compile("西湖店")).check()
    expect(page.get_by_test_id("error-store_ids")).to_have_count(0)
    page.select_option("select[name=partner_1]", label=BANK)
    page.fill("input[name=partner_share_1]", "0")
    expect(page.get_by_test_id("store-group")).to_have_count(3)
    expect(cafe.get_by_label(re.compile("西湖店"))).to_be_checked()  # the choice survives

    segment = page.get_by_test_id("segment")
    expect(segment).to_be_hidden()
    page.get_by_label("按星级、标签或网络筛选的用户").check()
    expect(segment).to_be_visible()
    expect(page.get_by_test_id("error-audience_kind")).to_have_text(
        "用户群需要设置星级范围、标签或“仅限本网用户”中的至少一项。"
    )
    page.select_option("select[name=min_tier]", "5")
    page.select_option("select[name=max_tier]", "3")
    expect(page.get_by_test_id("error-max_tier")).to_have_text("最低星级不能高于最高星级。")
    expect(page.get_by_test_id("error-audience_kind")).to_have_count(0)
    page.select_option("select[name=max_tier]", "7")
    expect(page.get_by_test_id("error-max_tier")).to_have_count(0)
    page.fill("input[name=tags]", "学生, commuter")
    page.get_by_label("仅限名单内的顾客").check()
    expect(page.get_by_test_id("targeted-note")).to_be_visible()
    expect(segment).to_be_hidden()
    page.get_by_label("按星级、标签或网络筛选的用户").check()
    expect(page.locator(".field.invalid")).to_have_count(0)
    marketing.shot("builder-stores-and-audience-zh")

    page.get_by_role("button", name="保存草稿").click()
    page.wait_for_url(re.compile(r"/portal/campaigns/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("terms-stores")).to_have_text("West Lake 西湖店")
    expect(page.get_by_test_id("terms-audience")).to_have_text(
        "指定用户群 · 5 至 7 星 · 标签：学生, commuter"
    )
    marketing.shot("builder-saved-campaign-zh")


def test_the_builder_works_without_javascript(portal: Open) -> None:
    marketing = portal("en-US", javascript=False)
    marketing.sign_in("marketing@carrier.demo")
    page = marketing.open("/portal/campaigns/new")
    _fill_the_basics(page, "Plain form 纯表单")
    page.fill("input[name=partner_share_0]", "20")
    page.get_by_label("Only the stores chosen below").check()
    expect(page.get_by_test_id("store-group")).to_have_count(1)  # the café's come on checking
    page.get_by_role("button", name="Check and preview").click()
    expect(page.get_by_test_id("error-shares")).to_have_text(
        "The shares must add up to exactly 100%, with each partner chosen once."
    )
    expect(page.get_by_test_id("error-store_ids")).to_have_text(
        "Choose at least one active store of the participants."
    )
    expect(page.get_by_test_id("preview")).to_contain_text("¥8.00 off")
    marketing.shot("builder-without-javascript-errors")
    page.fill("input[name=partner_share_0]", "30")
    cafe = page.get_by_test_id("store-group").filter(has_text=CAFE)
    cafe.get_by_label(re.compile("People's Square")).check()
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/portal/campaigns/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("terms-stores")).to_have_text("People's Square 人民广场店")
