"""A targeted campaign's customer list (`campaign_target`): loading it from a CSV or JSON
upload, reading it, taking a customer off it. Claims of a targeted campaign are open only to
the customers on its list.

Loading reads the upload with bulk issuance's parser (`issuance.parse_upload`: a `customer_id`
or a `phone` column, each line checked, duplicates in the file reported), then works on sets,
never a statement per line: the accepted lines are COPYed into a temporary table, unknown
customers are found and dropped with one statement, and the list is written with one
`INSERT ... SELECT` (and, to replace it, one `DELETE`) — all in one transaction with the
campaign row locked, so a failure leaves the list as it was and two uploads never interleave.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import domain
from coalition.campaigns.models import Campaign, CampaignTarget, Customer
from coalition.campaigns.schemas.targets import (
    LoadMode,
    TargetListRequest,
    TargetListResult,
    TargetRead,
    TargetRowError,
)
from coalition.campaigns.services.campaigns import NotCampaignOwner
from coalition.campaigns.services.issuance import (
    MAX_STORED_ERRORS,
    MAX_UPLOAD_BYTES,
    ParsedUpload,
    RowError,
    UnusableUpload,
    parse_upload,
    phone_hasher,
)
from coalition.platform import audit
from coalition.platform.auth import Principal
from coalition.platform.db import driver_connection
from coalition.platform.errors import Conflict, NotFound, ValidationFailed
from coalition.platform.jobs import commit
from coalition.platform.settings import Settings

ALREADY_LISTED = "Already on the campaign's list"


class CampaignNotTargeted(ValidationFailed):
    code, title = "campaign_not_targeted", "This campaign's audience is not a targeted list"


class TargetListClosed(Conflict):
    code, title = "target_list_closed", "The list of an ended or cancelled campaign is final"


class TargetNotFound(NotFound):
    code, title = "target_not_found", "This customer is not on the campaign's list"


# --- loading -----------------------------------------------------------------------------------


async def load_csv(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    data: bytes,
    *,
    mode: LoadMode,
) -> TargetListResult:
    """Replace (or add to) the list with the customers of an uploaded CSV. Commits."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UnusableUpload(f"At most {MAX_UPLOAD_BYTES} bytes per upload", field="file")
    campaign = await _campaign_to_change(session, principal, campaign_id)
    parsed = await asyncio.to_thread(parse_upload, data, hash_phone=phone_hasher(settings))
    return await _load(session, principal, campaign, parsed, mode=mode, line_offset=0)


async def load_json(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    request: TargetListRequest,
    *,
    mode: LoadMode,
) -> TargetListResult:
    """The same from a JSON list: each entry is read like a CSV line and reported by its
    position in the list (from 1). Commits."""
    column, values = _json_values(request)
    campaign = await _campaign_to_change(session, principal, campaign_id)
    data = _as_csv(column, values)
    parsed = await asyncio.to_thread(parse_upload, data, hash_phone=phone_hasher(settings))
    return await _load(session, principal, campaign, parsed, mode=mode, line_offset=1)


def _json_values(request: TargetListRequest) -> tuple[str, Sequence[str]]:
    columns = {"customer_id": request.customer_ids, "phone": request.phones}
    given = [(column, values) for column, values in columns.items() if values is not None]
    if len(given) != 1:
        raise ValidationFailed(
            "Send exactly one of `customer_ids` and `phones`", field="customer_ids"
        )
    column, values = given[0]
    if not values:
        raise ValidationFailed("The list is empty", field=f"{column}s")
    return column, values


def _as_csv(column: str, values: Sequence[str]) -> bytes:
    """The entries as the CSV the parser reads: a header, then one entry per line (the schema
    keeps line breaks out of entries, so entry k is on line k + 1)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column])
    writer.writerows([value] for value in values)
    return out.getvalue().encode()


async def _load(
    session: AsyncSession,
    principal: Principal,
    campaign: Campaign,
    parsed: ParsedUpload,
    *,
    mode: LoadMode,
    line_offset: int,
) -> TargetListResult:
    """Write the parsed upload, audit and commit; lines are reported less `line_offset`."""
    written = await _write_list(session, campaign.id, parsed, replace=mode == "replace")
    duplicates = parsed.rejected_by_reason.get(RowError.DUPLICATE, 0) + len(written.listed)
    rejected = parsed.rejected - parsed.rejected_by_reason.get(RowError.DUPLICATE, 0)
    rejected += len(written.unknown)
    hint = _value_of_line(parsed)
    errors = [
        *parsed.errors,
        *(
            _error(line, hint(line), RowError.UNKNOWN_CUSTOMER, "No such customer")
            for line in written.unknown[:MAX_STORED_ERRORS]
        ),
        *(
            _error(line, hint(line), RowError.DUPLICATE, ALREADY_LISTED)
            for line in written.listed[:MAX_STORED_ERRORS]
        ),
    ]
    errors.sort(key=lambda e: int(e["line"]))
    shown = errors[:MAX_STORED_ERRORS]
    result = TargetListResult(
        campaign_id=campaign.id,
        mode=mode,
        rows=parsed.total,
        added=written.added,
        kept=written.kept,
        removed=written.removed,
        duplicates=duplicates,
        rejected=rejected,
        total=written.total,
        errors=[
            TargetRowError(
                line=int(e["line"]) - line_offset,
                value=e["value"],
                reason=str(e["reason"]),
                detail=str(e["detail"]),
            )
            for e in shown
        ],
        errors_truncated=duplicates + rejected > len(shown),
    )
    audit.record(
        session,
        principal,
        org_id=campaign.owner_org_id,
        action=f"campaign.targets_{'replaced' if mode == 'replace' else 'added'}",
        subject_type="campaign",
        subject_id=campaign.id,
        after={
            "rows": result.rows,
            "added": result.added,
            "kept": result.kept,
            "removed": result.removed,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "total": result.total,
        },
    )
    await commit(session)
    return result


def _error(line: int, value: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {"line": line, "value": value, "reason": reason, "detail": detail}


def _value_of_line(parsed: ParsedUpload) -> Callable[[int], str | None]:
    """How a refused line's value is shown: the customer id, or the masked phone number."""
    shown = parsed.hints if parsed.kind == "phone" else parsed.values
    index = dict(zip(parsed.lines, range(len(parsed.lines)), strict=True))

    def value(line: int) -> str | None:
        at = index.get(line)
        return shown[at] if at is not None else None

    return value


@dataclass(frozen=True, slots=True)
class _Written:
    added: int
    kept: int
    removed: int
    total: int
    unknown: list[int]  # lines naming no customer, ascending
    listed: list[int]  # (adding) lines naming a customer already on the list, ascending


# $1 the campaign. The upload's accepted lines are in `target_upload`.
_FIND_PHONES = (
    "UPDATE target_upload u SET customer_id = c.id FROM customer c "
    "WHERE c.external_id_hash = u.external_id_hash"
)
_DROP_UNKNOWN = (
    "DELETE FROM target_upload u WHERE NOT EXISTS "
    "(SELECT 1 FROM customer c WHERE c.id = u.customer_id) RETURNING u.row_number"
)
_DROP_LISTED = (
    "DELETE FROM target_upload u USING campaign_target t "
    "WHERE t.campaign_id = $1 AND t.customer_id = u.customer_id RETURNING u.row_number"
)
_REMOVE_LEFT_OUT = (
    "DELETE FROM campaign_target t WHERE t.campaign_id = $1 AND NOT EXISTS "
    "(SELECT 1 FROM target_upload u WHERE u.customer_id = t.customer_id)"
)
_INSERT_NEW = (
    "INSERT INTO campaign_target (campaign_id, customer_id) "
    "SELECT $1, u.customer_id FROM target_upload u ON CONFLICT DO NOTHING"
)
_COUNT = "SELECT count(*) FROM campaign_target WHERE campaign_id = $1"


async def _write_list(
    session: AsyncSession, campaign_id: uuid.UUID, parsed: ParsedUpload, *, replace: bool
) -> _Written:
    driver = await driver_connection(session)
    await driver.execute(
        "CREATE TEMPORARY TABLE target_upload (row_number integer NOT NULL, customer_id uuid, "
        "external_id_hash text) ON COMMIT DROP"
    )
    if parsed.kind == "customer_id":
        await driver.copy_records_to_table(
            "target_upload",
            records=zip(parsed.lines, parsed.values, strict=True),
            columns=["row_number", "customer_id"],
        )
    else:
        await driver.copy_records_to_table(
            "target_upload",
            records=zip(parsed.lines, parsed.values, strict=True),
            columns=["row_number", "external_id_hash"],
        )
    await driver.execute("ANALYZE target_upload")  # a temporary table has no statistics
    if parsed.kind == "phone":
        await driver.execute(_FIND_PHONES)
    unknown = sorted(r[0] for r in await driver.fetch(_DROP_UNKNOWN))
    before = int(await driver.fetchval(_COUNT, campaign_id))
    removed, listed = 0, []
    if replace:
        removed = _row_count(await driver.execute(_REMOVE_LEFT_OUT, campaign_id))
    else:
        listed = sorted(r[0] for r in await driver.fetch(_DROP_LISTED, campaign_id))
    added = _row_count(await driver.execute(_INSERT_NEW, campaign_id))
    total = before - removed + added
    kept = len(parsed.values) - len(unknown) - len(listed) - added
    return _Written(added, kept, removed, total, unknown, listed)


def _row_count(status: str) -> int:
    """The row count of a command tag such as `INSERT 0 12` or `DELETE 3`."""
    return int(status.rsplit(" ", 1)[1])


# --- reading and removing ----------------------------------------------------------------------


async def _campaign_to_change(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> Campaign:
    """The campaign, locked against status changes and other list writes, if the caller's
    organization owns it, its audience is a targeted list and the list may still change.

    FOR NO KEY UPDATE: workflow transitions (FOR UPDATE) wait, claims and issuance do not
    (their rows only reference the campaign)."""
    campaign = await session.get(
        Campaign, campaign_id, with_for_update={"key_share": True}, populate_existing=True
    )
    if campaign is None or not principal.may_access(campaign.owner_org_id):
        raise NotFound("Campaign not found")
    if campaign.owner_org_id != principal.org_id:
        raise NotCampaignOwner("Only the campaign owner's staff change its target list")
    if campaign.audience != "targeted":
        raise CampaignNotTargeted(
            f"The campaign's audience is {campaign.audience}: only a targeted campaign has a "
            "list of customers",
            field="audience",
        )
    if not domain.target_list_open(domain.CampaignStatus(campaign.status)):
        raise TargetListClosed(f"The campaign is {campaign.status}")
    return campaign


async def _campaign_to_read(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> Campaign:
    """The campaign, for its owner's staff and the carrier's (others: 404)."""
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or not (
        campaign.owner_org_id == principal.org_id or principal.sees_all_tenants
    ):
        raise NotFound("Campaign not found")
    return campaign


async def target_count(session: AsyncSession, principal: Principal, campaign_id: uuid.UUID) -> int:
    await _campaign_to_read(session, principal, campaign_id)
    query = select(func.count()).where(col(CampaignTarget.campaign_id) == campaign_id)
    return int((await session.execute(query)).scalar_one())


async def list_targets(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
) -> tuple[list[TargetRead], int]:
    """A page of the list in customer id order, and how many customers it holds."""
    total = await target_count(session, principal, campaign_id)
    rows = (
        await session.execute(
            select(Customer)
            .join(CampaignTarget, col(CampaignTarget.customer_id) == col(Customer.id))
            .where(col(CampaignTarget.campaign_id) == campaign_id)
            .order_by(col(CampaignTarget.customer_id))
            .limit(limit)
            .offset(offset)
        )
    ).scalars()
    return [target_read(c, principal) for c in rows], total


def target_read(customer: Customer, principal: Principal) -> TargetRead:
    if not principal.is_carrier:
        return TargetRead(customer_id=customer.id)
    return TargetRead(
        customer_id=customer.id,
        phone_hint=customer.phone_hint,
        tier=customer.tier,
        tags=list(customer.tags),
        on_network=customer.on_network,
    )


async def remove_target(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, customer_id: uuid.UUID
) -> None:
    """Take a customer off the list (coupons they already hold stay theirs). Commits."""
    campaign = await _campaign_to_change(session, principal, campaign_id)
    row = await session.get(CampaignTarget, (campaign_id, customer_id))
    if row is None:
        raise TargetNotFound()
    await session.delete(row)
    audit.record(
        session,
        principal,
        org_id=campaign.owner_org_id,
        action="campaign.target_removed",
        subject_type="campaign",
        subject_id=campaign.id,
        before={"customer_id": str(customer_id)},
    )
    await commit(session)
