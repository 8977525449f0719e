"""The campaign builder's form, read as the API's `CampaignCreate`: amounts typed in yuan,
percentages, local days, partner rows, the audience and the redeemable stores. Reading
collects every field it cannot read instead of stopping at the first, and the API's own
schema is then applied field by field, so one pass names every field at fault. Where each
of the API's fields appears on the form (`form_field`) and what to tell the reader about it
(`HINTS`) are here too. No I/O: the rules a draft must keep are `drafts.check_draft`."""

from __future__ import annotations

import re
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar.datastructures import FormMultiDict

from coalition.campaigns.schemas.campaigns import CampaignCreate, OfferIn
from coalition.campaigns.services.drafts import invalid, offer_rule
from coalition.platform.errors import DomainError, field_of
from coalition.platform.money import parse_major_amount

PARTNER_ROWS = 3
CURRENCY = "CNY"
# Tags are separated by commas or semicolons, in either width, or by the enumeration comma.
TAG_SEPARATORS = re.compile("[,;\uff0c\uff1b\u3001]")
# The API's fields (indices left out) where they appear on the form; participants are mapped
# by `form_field`, as their place in the request depends on the rows filled in.
FORM_FIELDS = {
    "name": "name",
    "description": "description",
    "code_prefix": "code_prefix",
    "starts_at": "starts",
    "ends_at": "ends",
    "total_quantity": "total_quantity",
    "total_budget": "total_budget",
    "per_customer_limit": "per_customer_limit",
    "offer": "offer_value",
    "offer.kind": "offer_kind",
    "offer.value": "offer_value",
    "offer.percent_bp": "offer_percent",
    "offer.cap": "offer_cap",
    "offer.threshold": "offer_threshold",
    "offer.min_spend": "offer_min_spend",
    "offer.validity": "valid_days",
    "offer.valid_days_after_claim": "valid_days",
    "participants": "shares",
    "fee": "fee_percent",
    "fee.bp": "fee_percent",
    "fee.fixed": "fee_fixed",
    "fee.payer": "fee_payer",
    "audience": "audience_kind",
    "audience.kind": "audience_kind",
    "audience.min_tier": "min_tier",
    "audience.max_tier": "max_tier",
    "audience.tags": "tags",
    "audience.on_network_only": "on_network_only",
    "store_ids": "store_ids",
}
_PARTICIPANT = re.compile(r"^participants\[(\d+)\](?:\.(\w+))?")
_INDEX = re.compile(r"\[\d+\]")
_ROW = re.compile(r"_\d+$")

# What a field at fault is told, by form field (partner rows without their number).
HINTS = {
    "name": "Enter a name of up to 200 characters.",
    "description": "At most 2000 characters.",
    "code_prefix": "2 to 8 letters A-Z, or leave it empty.",
    "offer_kind": "Choose a kind of offer.",
    "offer_value": "Enter the amount off or the gift's value: more than 0.",
    "offer_percent": "Enter a percentage above 0 and at most 100.",
    "offer_cap": "A percent-off offer needs the most it takes off: more than 0.",
    "offer_threshold": "The amount to spend must be at least the amount off.",
    "offer_min_spend": "Enter an amount such as 25 or 25.50, or leave it empty.",
    "valid_days": "Enter a number of days from 1 to 3650.",
    "starts": "Enter the first day.",
    "ends": "Enter a last day that is after the first day and has not passed.",
    "total_quantity": "Enter a whole number of coupons from 1 to 100,000,000.",
    "per_customer_limit": "Enter a whole number from 1 to 10,000.",
    "shares": "The shares must add up to exactly 100%, with each partner chosen once.",
    "owner_share": "Enter a percentage from 0 to 100.",
    "partner_share": "Enter a percentage from 0 to 100.",
    "owner_cap": "Enough for this partner's part of one coupon, or empty for no cap.",
    "partner_cap": "Enough for this partner's part of one coupon, or empty for no cap.",
    "partner": "Choose an active partner.",
    "total_budget": "Enter the total budget: at least one coupon's largest discount.",
    "fee_percent": "Enter a percentage from 0 to 100.",
    "fee_fixed": "Enter an amount such as 0.50, or leave it empty.",
    "fee_payer": "Choose who pays the fee.",
    "settlement_cycle": "Choose a settlement cycle.",
    "audience_kind": "A segment needs a tier range, tags or on-network subscribers only.",
    "min_tier": "The lowest tier cannot be above the highest.",
    "max_tier": "The lowest tier cannot be above the highest.",
    "tags": "Up to 20 tags of at most 50 characters, separated by commas.",
    "store_ids": "Choose at least one active store of the participants.",
}
# The offer's fields each kind uses (the page shows only those, with JavaScript).
OFFER_FIELDS = {
    "amount_off": ("offer_value",),
    "percent_off": ("offer_percent", "offer_cap"),
    "threshold": ("offer_threshold", "offer_value"),
    "gift": ("offer_value",),
}
# For each of those fields, the kinds that use it (space separated, for the page).
KINDS_USING = {
    name: " ".join(kind for kind, used in OFFER_FIELDS.items() if name in used)
    for used in OFFER_FIELDS.values()
    for name in used
}
TIERS = range(1, 8)
GENERAL = "Please check the fields marked below."
# Text that is not an amount, a number or a day at all.
NOT_AN_AMOUNT = "error.invalid_amount"
NOT_A_PERCENTAGE = "Enter a percentage such as 12.5."
NOT_A_WHOLE_NUMBER = "Enter a whole number."
NOT_A_DAY = "Enter a date."
# What the page's script says about the checks it makes itself, and the shares' total.
SCRIPT_MESSAGES = {
    "required": "This field is required.",
    "amount": NOT_AN_AMOUNT,
    "percent": NOT_A_PERCENTAGE,
    "whole": NOT_A_WHOLE_NUMBER,
    "ends": HINTS["ends"],
    "sharesTotal": "The shares add up to {total}.",
}
_TYPES = typing.get_type_hints(CampaignCreate, include_extras=True)


def hint(form_field: str) -> str:
    """The message id telling what `form_field` needs."""
    return HINTS.get(form_field) or HINTS.get(_ROW.sub("", form_field)) or "error.validation_error"


@dataclass(frozen=True, slots=True)
class CouponPreview:
    """What the coupon will look like, shown as soon as its offer is sound."""

    name: str
    description: str
    code_prefix: str
    offer: OfferIn
    currency: str
    ends_at: datetime | None
    timezone: str


@dataclass(slots=True)
class BuilderForm:
    """A filled-in builder form: the request body as far as it could be read, the form fields
    that could not be read (with what to tell), and where each participant's fields are."""

    body: dict[str, Any]
    unreadable: dict[str, str] = field(default_factory=dict)
    # The form's own rules, which the API has not: a list of stores asked for but left empty
    # (to the API an empty list means every store).
    choices: dict[str, str] = field(default_factory=dict)
    participant_rows: list[tuple[str, str, str]] = field(default_factory=list)
    partner_ids: list[uuid.UUID] = field(default_factory=list)
    chosen_stores: set[str] = field(default_factory=set)

    def form_field(self, api_field: str) -> str:
        """Where an API field (`participants[2].budget_cap`, `store_ids[0]`) is on the form."""
        if found := _PARTICIPANT.match(api_field):
            index, part = int(found.group(1)), found.group(2)
            if index >= len(self.participant_rows):
                return "shares"
            org, share, cap = self.participant_rows[index]
            return {"org_id": org, "budget_cap": cap}.get(part or "", share)
        name = _INDEX.sub("", api_field)
        return FORM_FIELDS.get(name, name)

    def request(self) -> CampaignCreate:
        """The API request, or a 422 naming every unreadable form field and every field the
        API's schema refuses (`messages` places them on the form)."""
        problems = [(name, "cannot be read") for name in self.unreadable]
        for key, value in self.body.items():
            try:
                msgspec.convert(value, _TYPES[key])
            except msgspec.ValidationError as error:
                inner = field_of(str(error), None)
                problems.append((f"{key}.{inner}" if inner else key, str(error)))
        if problems:
            raise invalid(problems)
        return msgspec.convert(self.body, CampaignCreate)

    def check_choices(self) -> None:
        """A 422 if the form's own rules are broken (`messages` names them in any case)."""
        if self.choices:
            raise invalid([(name, "nothing chosen") for name in self.choices])

    def messages(self, error: DomainError) -> dict[str, str]:
        """What to tell (message ids) by form field, for a refused form or draft, together
        with the form's own rules that are broken."""
        names = [error.field] if error.field else []
        names += [
            str(problem["field"])
            for problem in error.extra.get("errors") or []
            if isinstance(problem, dict) and problem.get("field")
        ]
        found = dict(self.choices)
        for name in names:
            place = self.form_field(name)
            found.setdefault(place, self.unreadable.get(place) or hint(place))
        return found

    def preview(self, timezone: str) -> CouponPreview | None:
        """The coupon as it would look, once the offer on its own is sound."""
        try:
            offer = msgspec.convert(self.body["offer"], OfferIn)
        except msgspec.ValidationError:
            return None
        if offer_rule(offer, CURRENCY).problems():
            return None
        ends = self.body.get("ends_at")
        return CouponPreview(
            name=str(self.body.get("name") or ""),
            description=str(self.body.get("description") or ""),
            code_prefix=str(self.body.get("code_prefix") or ""),
            offer=offer,
            currency=CURRENCY,
            ends_at=datetime.fromisoformat(ends) if ends else None,
            timezone=timezone,
        )


class _Reader:
    """Reads typed text, noting every field it cannot read."""

    def __init__(self, form: FormMultiDict) -> None:
        self.form = form
        self.unreadable: dict[str, str] = {}

    def text(self, name: str) -> str:
        return str(self.form.get(name, "") or "").strip()

    def money(self, name: str, *, message: str = NOT_AN_AMOUNT) -> int | None:
        """Yuan with up to two decimals in fen; a percentage with up to two decimals in basis
        points (12.5 % is 1250): the same digits."""
        text = self.text(name)
        if not text:
            return None
        amount = parse_major_amount(text, CURRENCY)
        if amount is None:
            self.unreadable[name] = message
        return amount

    def percent(self, name: str) -> int | None:
        return self.money(name, message=NOT_A_PERCENTAGE)

    def whole(self, name: str) -> int | None:
        text = self.text(name)
        if not text:
            return None
        if not text.isdigit():
            self.unreadable[name] = NOT_A_WHOLE_NUMBER
            return None
        return int(text)

    def local_day(self, name: str, zone: str, *, end: bool) -> str | None:
        """The first (or last) moment of a local day, as an ISO time with its offset."""
        try:
            day = datetime.strptime(self.text(name), "%Y-%m-%d").date()
        except ValueError:
            self.unreadable[name] = NOT_A_DAY
            return None
        moment = datetime.combine(day, time.max if end else time.min, tzinfo=ZoneInfo(zone))
        return moment.replace(microsecond=0).isoformat()

    def ids(self, names: list[str], *, field_name: str) -> list[uuid.UUID]:
        found: list[uuid.UUID] = []
        for text in names:
            try:
                found.append(uuid.UUID(text))
            except ValueError:
                self.unreadable[field_name] = hint(field_name)
        return found


def _all(form: FormMultiDict, name: str) -> list[str]:
    return [str(v).strip() for v in form.getall(name, []) if str(v).strip()]


def read_form(form: FormMultiDict, owner_org_id: uuid.UUID, zone: str) -> BuilderForm:
    """What a filled-in builder form stands for (see `BuilderForm.request`)."""
    read = _Reader(form)
    participants: list[dict[str, Any]] = [
        {
            "org_id": str(owner_org_id),
            "share_bp": read.percent("owner_share") or 0,
            "budget_cap": read.money("owner_cap"),
        }
    ]
    rows = [("shares", "owner_share", "owner_cap")]
    partner_ids: list[uuid.UUID] = []
    for row in range(PARTNER_ROWS):
        partner = read.text(f"partner_{row}")
        chosen = read.ids([partner] if partner else [], field_name=f"partner_{row}")
        if not chosen:
            continue
        partner_ids.append(chosen[0])
        rows.append((f"partner_{row}", f"partner_share_{row}", f"partner_cap_{row}"))
        participants.append(
            {
                "org_id": str(chosen[0]),
                "share_bp": read.percent(f"partner_share_{row}") or 0,
                "budget_cap": read.money(f"partner_cap_{row}"),
            }
        )
    kind = read.text("offer_kind") or "amount_off"
    used = OFFER_FIELDS.get(kind, ())  # what another kind's fields still hold is not its offer
    offer: dict[str, Any] = {
        "kind": kind,
        "value": (read.money("offer_value") if "offer_value" in used else None) or 0,
        "percent_bp": (read.percent("offer_percent") if "offer_percent" in used else None) or 0,
        "cap": read.money("offer_cap") if "offer_cap" in used else None,
        "threshold": (read.money("offer_threshold") if "offer_threshold" in used else None) or 0,
        "min_spend": read.money("offer_min_spend") or 0,
        "valid_days_after_claim": read.whole("valid_days"),
    }
    audience: dict[str, Any] = {"kind": read.text("audience_kind") or "open"}
    if audience["kind"] == "segment":  # the criteria belong to a segment only
        audience.update(
            min_tier=read.whole("min_tier"),
            max_tier=read.whole("max_tier"),
            tags=[t.strip() for t in TAG_SEPARATORS.split(read.text("tags")) if t.strip()],
            on_network_only=bool(read.text("on_network_only")),
        )
    scope = "chosen" if read.text("store_scope") == "chosen" else "all"
    chosen_stores = _all(form, "store_ids")
    store_ids = read.ids(chosen_stores, field_name="store_ids") if scope == "chosen" else []
    body: dict[str, Any] = {
        "name": read.text("name"),
        "description": read.text("description") or None,
        "code_prefix": read.text("code_prefix").upper() or None,
        "currency": CURRENCY,
        "timezone": zone,
        "starts_at": read.local_day("starts", zone, end=False),
        "ends_at": read.local_day("ends", zone, end=True),
        "offer": offer,
        "total_quantity": read.whole("total_quantity"),
        "per_customer_limit": read.whole("per_customer_limit") or 1,
        "participants": [{k: v for k, v in p.items() if v is not None} for p in participants],
        "total_budget": read.money("total_budget"),
        "fee": {
            "bp": read.percent("fee_percent") or 0,
            "fixed": read.money("fee_fixed") or 0,
            "payer": read.text("fee_payer") or "redeeming_merchant",
        },
        "audience": {k: v for k, v in audience.items() if v is not None},
        "settlement_cycle": read.text("settlement_cycle") or "weekly",
        "store_ids": [str(s) for s in store_ids],
    }
    return BuilderForm(
        body=body,
        unreadable=read.unreadable,
        choices={"store_ids": hint("store_ids")} if scope == "chosen" and not chosen_stores else {},
        participant_rows=rows,
        partner_ids=partner_ids,
        chosen_stores=set(chosen_stores),
    )
