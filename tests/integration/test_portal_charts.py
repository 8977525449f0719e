# ruff: noqa: F811  (the fixtures `browser` and `books` are imported from their modules)
"""The campaign page's charts of redemptions by partner and by store and of the redemption
rate: SVG images drawn on the server from the campaign's redemptions, in the reader's
language."""

from __future__ import annotations

import base64
import re

from coalition.platform.db import SessionMaker
from tests.integration.test_portal import MISSING, Open, browser  # noqa: F401
from tests.integration.test_statements import (  # noqa: F401
    IN_WEEK1,
    IN_WEEK2,
    Books,
    book_redemption,
    books,
)


def _chart(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}" src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert found is not None, testid
    return base64.b64decode(found.group(1)).decode()


async def test_redemptions_by_partner_and_store_and_the_rate_are_charted(
    browser: Open, books: Books, sessionmaker: SessionMaker
) -> None:
    await book_redemption(sessionmaker, books, 2_000, IN_WEEK1)
    await book_redemption(sessionmaker, books, 3_000, IN_WEEK2)
    for language, partner_text, rate_title in (
        ("en", "2 redemptions, ¥50.00 discount", "Redemption rate"),
        ("zh-CN", "2 笔核销\uff0c优惠 ¥50.00", "核销率"),
    ):
        async with browser(language) as b:
            await b.sign_in("marketing@carrier.test")
            html = await b.get(f"/portal/campaigns/{books.campaign}")
            by_partner = _chart(html, "chart-by-partner")
            assert "Café 咖啡馆" in by_partner and partner_text in by_partner
            by_store = _chart(html, "chart-by-store")
            assert "静安寺店" in by_store and partner_text in by_store
            rate = _chart(html, "chart-rate")
            assert f"<title>{rate_title}</title>" in rate
            for svg in (by_partner, by_store, rate):
                assert svg.startswith("<svg") and MISSING.findall(svg) == []
