"""The portal's languages: catalogs complete for every page string and every error code, the
language negotiation, money with its symbol, and amounts typed by cashiers."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from coalition.platform import i18n, web
from coalition.platform.errors import DomainError
from coalition.platform.money import parse_major_amount

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(
    path for folder in web.TEMPLATE_FOLDERS.values() for path in folder.glob("*.html")
)
LITERAL = re.compile(r"""_\(\s*"((?:[^"\\]|\\.)*)"|_\(\s*'((?:[^'\\]|\\.)*)'""")
# Message ids built in templates as `"status." ~ value` etc., with every value they can take.
DYNAMIC = {
    "role": ("admin", "marketing", "finance", "cashier"),
    "status": (
        *("active", "archived", "revoked", "invited", "deactivated", "suspended", "rejected"),
        *("pending", "succeeded", "failed", "accepted", "declined"),
        *("draft", "proposed", "approved", "paused", "ended", "cancelled"),
        *("completed", "reversed", "partially_reversed"),
        *("issued", "claimed", "redeemed", "expired", "void", "running"),
        *("open", "closed", "paid", "collected", "carried_forward"),
    ),
    "payer": ("redeeming_merchant", "owner"),
    "cycle": ("daily", "weekly", "monthly"),
    "audience": ("open", "segment", "targeted"),
    "issuance": (
        *("missing_value", "malformed_customer_id", "malformed_phone", "duplicate"),
        *("unknown_customer", "per_customer_limit_reached"),
        *("sold_out", "budget_exhausted", "campaign_not_active", "validity_over"),
    ),
    "industry": ("telecom", "cafe", "bank", "education", "retail", "dining", "travel", "other"),
    "payout": ("in_flight", "processing", "succeeded", "failed", "reversed"),
    "direction": ("transfer", "collection"),
    "reconciliation": ("queued", "running", "completed", "failed"),
    "category": (
        *("missing_in_stripe", "missing_in_ledger", "amount_mismatch", "currency_mismatch"),
        *("status_mismatch", "duplicate"),
    ),
    "action": (
        *("retry_payout", "ingest_stripe_events", "reverse_duplicate", "refund_duplicate"),
        *("wait_for_stripe", "investigate"),
    ),
    "kind": ("transfer", "collection", "transfer_reversal"),
    "side": ("ledger", "stripe", "both"),
    "flow": ("settled", "pending"),
}


def template_messages() -> set[str]:
    found: set[str] = set()
    for path in TEMPLATES:
        for match in LITERAL.finditer(path.read_text("utf-8")):
            found.add(match.group(1) or match.group(2))
    found |= {area.label for area in web.AREAS.values()}
    prefixes = {f"{prefix}." for prefix in DYNAMIC}
    return {m.replace("\\'", "'") for m in found} - prefixes


def all_error_codes() -> set[str]:
    for folder in ("platform", "merchants", "campaigns", "settlement"):
        package = importlib.import_module(f"coalition.{folder}")
        for module in pkgutil.walk_packages(package.__path__, f"coalition.{folder}."):
            if not module.name.endswith((".cli", ".embedded", ".worker", ".migrate", ".__main__")):
                importlib.import_module(module.name)
    codes: set[str] = set()
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def test_templates_use_translated_strings_only() -> None:
    messages = template_messages()
    assert len(messages) > 100  # the extraction really reads the templates
    zh = i18n.catalog("zh-CN")
    assert sorted(m for m in messages if m not in zh) == []


def test_the_dynamic_lists_cover_the_domain_values() -> None:
    from coalition.campaigns.services.issuance import BatchError, RowError
    from coalition.merchants.models import INDUSTRIES, ROLES
    from coalition.settlement.controllers.portal_reconciliation import RUN_STATUSES
    from coalition.settlement.matching import Action, Category, Flow, MovementKind, Side
    from coalition.settlement.models import PAYOUT_DIRECTIONS, PAYOUT_STATUSES

    assert set(DYNAMIC["issuance"]) == {e.value for e in (*RowError, *BatchError)}
    assert set(DYNAMIC["industry"]) == set(INDUSTRIES)
    assert set(DYNAMIC["role"]) == set(ROLES)
    assert set(DYNAMIC["payout"]) == set(PAYOUT_STATUSES)
    assert set(DYNAMIC["direction"]) == set(PAYOUT_DIRECTIONS)
    assert set(DYNAMIC["reconciliation"]) == set(RUN_STATUSES)
    assert set(DYNAMIC["category"]) == set(get_args(Category))
    assert set(DYNAMIC["action"]) == set(get_args(Action))
    assert set(DYNAMIC["kind"]) == set(get_args(MovementKind))
    assert set(DYNAMIC["side"]) == set(get_args(Side))
    assert set(DYNAMIC["flow"]) == set(get_args(Flow))


def test_dynamic_message_ids_exist_in_both_languages() -> None:
    for language in i18n.LANGUAGES:
        catalog = i18n.catalog(language)
        missing = [
            f"{prefix}.{value}"
            for prefix, values in DYNAMIC.items()
            for value in values
            if f"{prefix}.{value}" not in catalog
        ]
        assert missing == [], language


def test_every_error_code_has_a_human_message_in_both_languages() -> None:
    codes = all_error_codes()
    assert {"coupon_expired", "csrf_failed", "invalid_credentials", "not_found"} <= codes
    for language in i18n.LANGUAGES:
        catalog = i18n.catalog(language)
        assert sorted(c for c in codes if f"error.{c}" not in catalog) == [], language


def test_placeholders_match_between_languages() -> None:
    field = re.compile(r"\{(\w+)\}")
    zh = i18n.catalog("zh-CN")
    en = i18n.catalog("en")
    for message, text in zh.items():
        source = en.get(message, message)
        assert set(field.findall(text)) == set(field.findall(source)), message


def test_catalog_files_are_sorted_json_objects() -> None:
    for language in i18n.LANGUAGES:
        path = i18n.LOCALES_DIR / f"{language}.json"
        data = json.loads(path.read_text("utf-8"))
        assert list(data) == sorted(data)


def test_missing_messages_are_marked_outside_production() -> None:
    marked = i18n.Translator("zh-CN", mark_missing=True)
    assert marked.gettext("No such message") == "⟦No such message⟧"
    assert i18n.Translator("zh-CN", mark_missing=False).gettext("No such message") == (
        "No such message"
    )
    assert i18n.Translator("en", mark_missing=True).gettext("Sign in") == "Sign in"


def test_language_negotiation() -> None:
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.negotiate("en-US,en;q=0.9") == "en"
    assert i18n.negotiate("fr-FR,en;q=0.5,zh;q=0.4") == "en"
    assert i18n.negotiate("en;q=0.2, zh-TW;q=0.8") == "zh-CN"
    assert i18n.negotiate(None) == i18n.DEFAULT_LANGUAGE
    assert i18n.negotiate("en-US", cookie="zh-CN") == "zh-CN"
    assert i18n.negotiate("zh-CN", cookie="klingon") == "zh-CN"


def test_money_shows_the_yuan_symbol_in_both_languages() -> None:
    assert i18n.Translator("zh-CN", mark_missing=True).money(123456, "CNY") == "¥1,234.56"
    assert i18n.Translator("en", mark_missing=True).money(500, "CNY") == "¥5.00"
    assert i18n.Translator("en", mark_missing=True).money(500, "USD") == "$5.00"
    assert i18n.Translator("en", mark_missing=True).money(1500, "JPY") == "¥1,500"


def test_dates_are_shown_in_the_organization_time_zone() -> None:
    from datetime import UTC, datetime

    moment = datetime(2026, 3, 1, 20, 30, tzinfo=UTC)
    shanghai = i18n.Translator("en", mark_missing=True, timezone="Asia/Shanghai")
    assert shanghai.date(moment) == "2026-03-02"
    assert "4:30" in shanghai.datetime(moment)
    assert i18n.Translator("en", mark_missing=True, timezone="UTC").date(moment) == "2026-03-01"


def test_typed_amounts() -> None:
    assert parse_major_amount("25", "CNY") == 2500
    assert parse_major_amount("25.5", "CNY") == 2550
    assert parse_major_amount(" ¥1,05 ", "CNY") == 105
    assert parse_major_amount("0.07", "CNY") == 7
    assert parse_major_amount("1500", "JPY") == 1500
    for bad in ("", "abc", "1.234", "-5", "1e3", "12.5.1"):
        assert parse_major_amount(bad, "CNY") is None, bad
    assert parse_major_amount("15.5", "JPY") is None


@given(st.integers(min_value=0, max_value=10**13 * 100 - 1))
def test_typed_amounts_round_trip(minor: int) -> None:
    major, fraction = divmod(minor, 100)
    assert parse_major_amount(f"{major}.{fraction:02d}", "CNY") == minor


def test_charts_are_svg_images_of_the_figures() -> None:
    from xml.etree import ElementTree

    from coalition.campaigns import charts

    svg = charts.bars_by_day(
        ["2026-03-01", "2026-03-02"],
        [charts.Series("Claimed", [3, 7]), charts.Series("Redeemed", [1, 0])],
        title="By day",
    )
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own output
    bars = [
        r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("{*}title") is not None
    ]
    assert [r.find("{*}title").text for r in bars] == [  # type: ignore[union-attr]
        "2026-03-01 · Claimed: 3",
        "2026-03-01 · Redeemed: 1",
        "2026-03-02 · Claimed: 7",
        "2026-03-02 · Redeemed: 0",
    ]
    heights = [float(r.get("height", "0")) for r in bars]
    assert heights[2] > heights[0] > heights[1] > heights[3] == 0  # bars follow the values
    burn = charts.horizontal_bars(
        [("Café <&>", 250, 1000, "¥2.50 of ¥10.00"), ("Bank", 0, None, "¥0.00")], title="Burn"
    )
    assert "Café &lt;&amp;&gt;" in burn
    ElementTree.fromstring(burn)  # noqa: S314 - well-formed
