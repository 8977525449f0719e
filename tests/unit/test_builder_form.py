"""The campaign builder's form read as the API's request: every unreadable field named at
once, the API's fields placed on the form whatever partner rows were left empty, and each
message the builder can show present in both languages."""

from __future__ import annotations

import uuid

import pytest
from litestar.datastructures import FormMultiDict

from coalition.campaigns.controllers import builder_form
from coalition.platform import i18n
from coalition.platform.errors import ValidationFailed

OWNER, CAFE, BANK = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def _read(**fields: str | list[str]) -> builder_form.BuilderForm:
    form = {
        "name": "Tea",
        "offer_kind": "amount_off",
        "offer_value": "5",
        "valid_days": "7",
        "starts": "2030-01-01",
        "ends": "2030-01-31",
        "total_quantity": "10",
        "owner_share": "100",
        "total_budget": "50",
        **fields,
    }
    pairs = [
        (k, v)
        for k, values in form.items()
        for v in ([values] if isinstance(values, str) else values)
    ]
    return builder_form.read_form(FormMultiDict(pairs), OWNER, "Asia/Shanghai")


def test_a_filled_in_form_is_the_api_request() -> None:
    store = uuid.uuid4()
    read = _read(
        partner_1=str(CAFE),
        partner_share_1="12.5",
        owner_share="87.5",
        audience_kind="segment",
        tags="a, b\uff1bc\u3001d",  # also the full-width semicolon and the enumeration comma
        store_scope="chosen",
        store_ids=[str(store)],
    )
    request = read.request()
    assert [(p.org_id, p.share_bp) for p in request.participants] == [(OWNER, 8750), (CAFE, 1250)]
    assert request.total_budget == 5000 and request.offer.value == 500
    assert request.audience.tags == ["a", "b", "c", "d"]
    assert request.store_ids == [store]
    assert request.starts_at.isoformat() == "2030-01-01T00:00:00+08:00"
    assert request.ends_at.isoformat() == "2030-01-31T23:59:59+08:00"


def test_participants_are_placed_on_the_rows_they_came_from() -> None:
    read = _read(partner_0="", partner_2=str(CAFE), partner_1=str(BANK))
    assert read.form_field("participants[0].budget_cap") == "owner_cap"
    assert read.form_field("participants[1].org_id") == "partner_1"
    assert read.form_field("participants[2].budget_cap") == "partner_cap_2"
    assert read.form_field("participants[2].share_bp") == "partner_share_2"
    assert read.form_field("participants") == "shares"
    assert read.form_field("participants[7]") == "shares"
    assert read.form_field("store_ids[3]") == "store_ids"
    assert read.form_field("audience.tags[0]") == "tags"
    assert read.form_field("offer.valid_days_after_claim") == "valid_days"


def test_every_unreadable_field_is_named_at_once() -> None:
    read = _read(
        offer_value="5 yuan", total_quantity="ten", ends="31/01/2030", partner_0="not-an-id"
    )
    with pytest.raises(ValidationFailed) as refused:
        read.request()
    assert read.messages(refused.value) == {
        "offer_value": builder_form.NOT_AN_AMOUNT,
        "total_quantity": builder_form.NOT_A_WHOLE_NUMBER,
        "ends": builder_form.NOT_A_DAY,
        "partner_0": "Choose an active partner.",
    }


def test_the_schema_is_applied_field_by_field() -> None:
    read = _read(name=" ", total_quantity="0", code_prefix="x1", audience_kind="everyone")
    with pytest.raises(ValidationFailed) as refused:
        read.request()
    assert set(read.messages(refused.value)) == {
        "name",
        "total_quantity",
        "code_prefix",
        "audience_kind",
    }


def test_only_the_chosen_kind_of_offer_is_read() -> None:
    offer = _read(offer_kind="percent_off", offer_percent="15", offer_cap="8").request().offer
    assert (offer.kind, offer.percent_bp, offer.cap, offer.value) == ("percent_off", 1500, 800, 0)
    assert builder_form.KINDS_USING["offer_value"] == "amount_off threshold gift"


def test_the_preview_waits_for_a_sound_offer() -> None:
    assert _read(offer_value="").preview("Asia/Shanghai") is None
    preview = _read(code_prefix="tea", total_budget="").preview("Asia/Shanghai")
    assert preview is not None and (preview.offer.value, preview.code_prefix) == (500, "TEA")


def test_every_message_of_the_builder_is_in_both_languages() -> None:
    ids = {
        *builder_form.HINTS.values(),
        *builder_form.SCRIPT_MESSAGES.values(),
        builder_form.GENERAL,
        builder_form.NOT_A_DAY,
    }
    for language in i18n.LANGUAGES:
        catalog = i18n.catalog(language)
        missing = [
            m for m in ids if m not in catalog and (language != "en" or m.startswith("error."))
        ]
        assert missing == [], language
