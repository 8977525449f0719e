"""HTTP API of the ledger, for finance: balances per organization and account, entries by
period, one entry, and a redemption's entries (the drill-down). Read-only: entries are written
by the money paths in their own transactions.

Finance staff and admins only. Merchant users see their own organization (another
organization answers 404, entries they are not party to do not exist for them); the carrier's
finance staff and admins see every organization.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard
from coalition.platform.errors import ValidationFailed
from coalition.settlement.schemas.ledger import BalancesRead, EntryRead, RedemptionLedgerRead
from coalition.settlement.services import ledger

OrgFilter = Annotated[
    uuid.UUID | None,
    Parameter(query="org_id", description="The organization (default: your own)"),
]
CurrencyFilter = Annotated[
    str | None, Parameter(query="currency", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
]
AsOf = Annotated[
    datetime | None,
    Parameter(
        query="as_of",
        description="Only entries that occurred before this time (ISO 8601 with an offset)",
    ),
]
From = Annotated[
    datetime | None,
    Parameter(query="from", description="Entries that occurred at or after (ISO 8601, offset)"),
]
To = Annotated[
    datetime | None,
    Parameter(query="to", description="... and before this time: the period is [from, to)"),
]


def _aware(moment: datetime | None, field: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ValidationFailed(
            "Give the time with its offset, e.g. 2026-01-01T00:00:00+08:00", field=field
        )
    return moment


class LedgerController(Controller):
    path = "/api/v1/ledger"
    tags = ["ledger"]
    guards = [role_guard("finance", "admin")]

    @get("/balances")
    async def balances(
        self,
        session: AsyncSession,
        principal: Principal,
        org_id: OrgFilter = None,
        currency: CurrencyFilter = None,
        as_of: AsOf = None,
    ) -> BalancesRead:
        """An organization's accounts with their balances (debit positive, credit negative)
        and its net position per currency (positive: it is owed), derived from postings."""
        return await ledger.read_balances(
            session,
            principal,
            org_id or principal.org_id,
            currency=currency,
            as_of=_aware(as_of, "as_of"),
        )

    @get("/entries")
    async def list_entries(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        org_id: OrgFilter = None,
        start: From = None,
        end: To = None,
    ) -> Page[EntryRead]:
        """Entries that occurred in `[from, to)` posting to the organization, oldest first,
        with their postings. Without `org_id`, carrier finance staff and admins get every
        entry, everybody else their own organization's."""
        start, end = _aware(start, "from"), _aware(end, "to")
        if start is not None and end is not None and start >= end:
            raise ValidationFailed("`from` must be before `to`", field="to")
        items, total = await ledger.list_entries(
            session, principal, org_id=org_id, start=start, end=end, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/entries/{entry_id:uuid}")
    async def get_entry(
        self, entry_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> EntryRead:
        """One entry with its postings."""
        return await ledger.get_entry(session, principal, entry_id)

    @get("/redemptions/{redemption_id:uuid}")
    async def redemption_entries(
        self, redemption_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> RedemptionLedgerRead:
        """The entries of one redemption: the redemption and its reversals."""
        return RedemptionLedgerRead(
            redemption_id=redemption_id,
            entries=await ledger.redemption_entries(session, principal, redemption_id),
        )


ROUTES = [LedgerController]
