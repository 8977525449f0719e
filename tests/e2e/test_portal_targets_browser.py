"""A targeted campaign's customer list in a real browser (chromium, without JavaScript): a
draft saved from the builder with a list audience, its list loaded from a CSV on the page
the campaign links to, and the counts and the refused rows shown."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from coalition.platform.db import utcnow
from tests.e2e.conftest import Portal

pytestmark = pytest.mark.e2e
Open = Callable[..., Portal]
CAFE = "Bean There Coffee 豆在咖啡"
PHONE = "13700000077"


def test_the_owner_loads_a_customer_list_without_javascript(portal: Open) -> None:
    customer = portal("en-US")
    customer.customer_sign_in(PHONE)  # the subscriber is known from their first sign-in

    marketing = portal("en-US", javascript=False)
    marketing.sign_in("marketing@carrier.demo")
    page = marketing.open("/portal/campaigns/new")
    today = utcnow().date()
    page.fill("input[name=name]", "Listed friends 名单好友")
    page.fill("input[name=offer_value]", "6")
    page.fill("input[name=starts]", (today + timedelta(days=1)).isoformat())
    page.fill("input[name=ends]", (today + timedelta(days=20)).isoformat())
    page.fill("input[name=total_quantity]", "100")
    page.fill("input[name=owner_share]", "70")
    page.select_option("select[name=partner_0]", label=CAFE)
    page.fill("input[name=partner_share_0]", "30")
    page.fill("input[name=total_budget]", "600")
    page.get_by_label("Only the customers on a list").check()
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/portal/campaigns/[0-9a-f-]{36}$"))

    page.get_by_role("link", name="Open the customer list").click()
    page.wait_for_url(re.compile(r"/targets$"))
    expect(page.get_by_test_id("target-count")).to_have_text("0")
    page.set_input_files(
        "input[name=targets]",
        files=[
            {
                "name": "list.csv",
                "mimeType": "text/csv",
                "buffer": f"phone\n{PHONE}\nnot a phone\n13700000078\n".encode(),
            }
        ],
    )
    page.get_by_label("Replace the list").check()
    page.get_by_role("button", name="Upload the list").click()
    expect(page.get_by_test_id("result-added")).to_have_text("1")
    expect(page.get_by_test_id("result-rejected")).to_have_text("2")
    expect(page.get_by_test_id("target-count")).to_have_text("1")
    errors = page.get_by_test_id("target-errors")
    expect(errors).to_contain_text("not a mobile number")
    expect(errors).to_contain_text("not a known customer")
    expect(page.get_by_test_id("target-list")).to_contain_text("*******0077")
    marketing.shot("targets-loaded")

    page.get_by_role("button", name="Take off the list").click()
    expect(page.get_by_test_id("target-count")).to_have_text("0")
