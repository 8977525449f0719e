"""Request and response shapes of a targeted campaign's customer list: the JSON form of an
upload, the result of loading a list (counts and the per-row report) and the list's entries."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from coalition.platform.api import Request, Response

MAX_JSON_TARGETS = 1_000_000
# One value per entry, on one line: the entries are read exactly like the lines of a CSV.
ONE_LINE = r"\A[^\r\n]*\S[^\r\n]*\Z"
TargetValue = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=ONE_LINE)]
TargetValues = Annotated[list[TargetValue], msgspec.Meta(max_length=MAX_JSON_TARGETS)]
LoadMode = Literal["replace", "add"]


class TargetListRequest(Request):
    """Customers for the list, as JSON: customer ids, or phone numbers (matched by their keyed
    hash, never stored). Exactly one of the two."""

    customer_ids: TargetValues | None = None
    phones: TargetValues | None = None


class TargetRowError(Response):
    """Why one entry was not put on the list."""

    line: int  # the line in the CSV (header = line 1); for JSON, the entry's position from 1
    value: str | None  # the offending value (phone numbers masked)
    reason: str  # stable: missing_value, malformed_customer_id, malformed_phone, duplicate,
    # unknown_customer
    detail: str


class TargetListResult(Response):
    """What loading a list did. `rows` = `added` + `kept` + `duplicates` + `rejected`."""

    campaign_id: uuid.UUID
    mode: LoadMode
    rows: int  # entries sent (blank CSV lines are not entries)
    added: int  # customers newly on the list
    kept: int  # (replace) customers already on the list and still on it
    removed: int  # (replace) customers taken off the list because the new one leaves them out
    duplicates: int  # entries naming a customer named before (or, when adding, already listed)
    rejected: int  # malformed or missing values and unknown customers
    total: int  # customers on the list now
    errors: list[TargetRowError]  # the first 1000 by line
    errors_truncated: bool  # more entries were refused than `errors` shows


class TargetRead(Response):
    """A customer on the list. Who they are (the masked number, tier, tags, network) is shown
    to the carrier's staff only; a merchant owner sees the customer id."""

    customer_id: uuid.UUID
    phone_hint: str | None = None
    tier: int | None = None
    tags: list[str] | None = None
    on_network: bool | None = None
