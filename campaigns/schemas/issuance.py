"""Request and response shapes of bulk issuance: the audience request, a batch's progress and
its per-row error report."""

from __future__ import annotations

import uuid
from datetime import datetime

from coalition.platform.api import Request, Response


class AudienceIssuanceRequest(Request):
    """Issue to every customer in the campaign's audience (the JSON form of the upload)."""

    audience: bool
    notify: bool = False


class IssuanceRowError(Response):
    """Why one input line (or, with `line` null, the whole batch) got no coupon."""

    line: int | None  # the line in the uploaded file (header = line 1); position for audiences
    value: str | None  # the offending value (phone numbers masked)
    reason: str  # a stable code, e.g. malformed_customer_id, unknown_customer, duplicate
    detail: str


class IssuanceSummary(Response):
    id: uuid.UUID
    campaign_id: uuid.UUID
    source: str  # csv | audience
    status: str  # pending | running | completed | failed
    notify: bool
    total: int  # input rows (blank lines excluded)
    issued: int
    rejected: int  # rows refused (bad input, unknown customer, limit reached ...)
    remaining: int  # rows still waiting for a coupon
    percent: float  # (issued + rejected) / total, in percent
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class IssuanceRead(IssuanceSummary, kw_only=True):
    errors: list[IssuanceRowError]  # one page of the stored report, in line order
    errors_offset: int
    errors_limit: int
    errors_stored: int  # entries kept (the first MAX_STORED_ERRORS by line)
    errors_truncated: bool  # more rows were rejected than entries are kept
