"""HTTP API of stores: a merchant's outlets (create, list, read, change, archive)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.schemas.stores import StoreCreate, StoreRead, StoreStatus, StoreUpdate
from coalition.merchants.services import stores
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard

StoreStatusFilter = Annotated[StoreStatus | None, Parameter(query="status")]
CityFilter = Annotated[str | None, Parameter(query="city", min_length=1, max_length=100)]


class StoreController(Controller):
    path = "/api/v1"
    tags = ["stores"]
    guards = [role_guard()]

    @get("/organizations/{org_id:uuid}/stores")
    async def list_stores(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: StoreStatusFilter = None,
        city: CityFilter = None,
    ) -> Page[StoreRead]:
        """Stores of an organization, oldest first, optionally by status and city."""
        rows, total = await stores.list_stores(
            session, principal, org_id, status=status, city=city, limit=limit, offset=offset
        )
        return Page(
            items=[stores.store_read(s) for s in rows], limit=limit, offset=offset, total=total
        )

    @post(
        "/organizations/{org_id:uuid}/stores",
        guards=[role_guard("admin")],
        status_code=HTTP_201_CREATED,
    )
    async def create_store(
        self, org_id: uuid.UUID, data: StoreCreate, session: AsyncSession, principal: Principal
    ) -> StoreRead:
        """Add a store (the organization's admins)."""
        return stores.store_read(await stores.add_store(session, principal, org_id, data))

    @get("/stores/{store_id:uuid}")
    async def get_store(
        self, store_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> StoreRead:
        return stores.store_read(await stores.get_store(session, principal, store_id))

    @patch("/stores/{store_id:uuid}", guards=[role_guard("admin")])
    async def update_store(
        self, store_id: uuid.UUID, data: StoreUpdate, session: AsyncSession, principal: Principal
    ) -> StoreRead:
        """Change a store; omitted fields stay as they are. Archived stores cannot change."""
        return stores.store_read(await stores.update_store(session, principal, store_id, data))

    @post("/stores/{store_id:uuid}/archive", guards=[role_guard("admin")], status_code=HTTP_200_OK)
    async def archive_store(
        self, store_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> StoreRead:
        """Archive a store: it stays readable with its history; its terminals stop working."""
        return stores.store_read(await stores.archive_store(session, principal, store_id))


ROUTES = [StoreController]
