"""HTTP API of reconciliation, for finance: ask for a run (a window, by default the current UTC
day), list runs, a run's control totals, its items by category.

The carrier's finance staff and admins ask for runs and see everything. A partner's finance
staff and admins see runs without the platform's totals, and only their own organization's
items (another organization's answer 404).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, carrier_guard, role_guard
from coalition.settlement.matching import Category
from coalition.settlement.schemas.reconciliation import (
    ReconciliationItemRead,
    ReconciliationRequest,
    ReconciliationRunRead,
)
from coalition.settlement.services import reconciliation

RunStatus = Annotated[
    Literal["queued", "running", "completed", "failed"] | None, Parameter(query="status")
]
CategoryFilter = Annotated[Category | None, Parameter(query="category")]


class ReconciliationController(Controller):
    path = "/api/v1/reconciliation/runs"
    tags = ["reconciliation"]
    guards = [role_guard("finance", "admin")]

    @post("/", status_code=HTTP_202_ACCEPTED, guards=[carrier_guard("finance", "admin")])
    async def request_run(
        self,
        session: AsyncSession,
        principal: Principal,
        data: ReconciliationRequest | None = None,
    ) -> ReconciliationRunRead:
        """Reconcile a window `[window_start, window_end)` (both or neither: the current UTC
        day) in the background; the run as queued. Asking again while it waits joins it."""
        return await reconciliation.request_run(session, principal, data or ReconciliationRequest())

    @get("/")
    async def list_runs(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: RunStatus = None,
    ) -> Page[ReconciliationRunRead]:
        """Runs, the latest window first."""
        items, total = await reconciliation.list_runs(
            session, principal, status=status, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/{run_id:uuid}")
    async def get_run(
        self, session: AsyncSession, principal: Principal, run_id: uuid.UUID
    ) -> ReconciliationRunRead:
        """The run with its control totals per currency."""
        return await reconciliation.get_run(session, principal, run_id)

    @get("/{run_id:uuid}/items")
    async def list_items(
        self,
        session: AsyncSession,
        principal: Principal,
        run_id: uuid.UUID,
        limit: Limit,
        offset: Offset,
        category: CategoryFilter = None,
        org_id: Annotated[uuid.UUID | None, Parameter(query="org_id")] = None,
    ) -> Page[ReconciliationItemRead]:
        """The run's discrepancies, by category."""
        items, total = await reconciliation.list_items(
            session,
            principal,
            run_id,
            category=category,
            org_id=org_id,
            limit=limit,
            offset=offset,
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/{run_id:uuid}/items/{item_id:uuid}")
    async def get_item(
        self, session: AsyncSession, principal: Principal, run_id: uuid.UUID, item_id: uuid.UUID
    ) -> ReconciliationItemRead:
        return await reconciliation.get_item(session, principal, run_id, item_id)


ROUTES = [ReconciliationController]
