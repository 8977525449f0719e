"""HTTP API of a targeted campaign's customer list: load it (replace or add, CSV or JSON), read
it, take a customer off it."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.controllers.issuance import CSV_TYPES, MANAGERS
from coalition.campaigns.schemas.targets import (
    LoadMode,
    TargetListRequest,
    TargetListResult,
    TargetRead,
)
from coalition.campaigns.services import issuance, targets
from coalition.platform.api import Limit, Offset, Page, decode_json
from coalition.platform.auth import Principal, role_guard
from coalition.platform.settings import Settings


class TargetListController(Controller):
    path = "/api/v1/campaigns/{campaign_id:uuid}/targets"
    tags = ["campaigns"]
    guards = [role_guard()]

    @put(
        "/",
        guards=[MANAGERS],
        status_code=HTTP_200_OK,
        request_max_body_size=issuance.MAX_UPLOAD_BYTES,
    )
    async def replace_targets(
        self,
        campaign_id: uuid.UUID,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
    ) -> TargetListResult:
        """Replace a targeted campaign's customer list (its owner's admin or marketing).

        Send `text/csv` (up to 64 MiB, the format of bulk issuance: a header row naming a
        `customer_id` or a `phone` column) or JSON `{"customer_ids": [...]}` or
        `{"phones": [...]}`. The list becomes exactly the known customers sent; bad entries
        (malformed, unknown customer, duplicate) are reported by line and never stop the good
        ones. One transaction: on any failure the list stays as it was. Answers the counts
        (`added`, `kept`, `removed`, `duplicates`, `rejected`, `total`) and the report."""
        return await _load(request, session, settings, principal, campaign_id, "replace")

    @post(
        "/",
        guards=[MANAGERS],
        status_code=HTTP_200_OK,
        request_max_body_size=issuance.MAX_UPLOAD_BYTES,
    )
    async def add_targets(
        self,
        campaign_id: uuid.UUID,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
    ) -> TargetListResult:
        """Add customers to the list (same bodies as `PUT`); customers already on it are
        reported as duplicates."""
        return await _load(request, session, settings, principal, campaign_id, "add")

    @get("/")
    async def list_targets(
        self,
        campaign_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[TargetRead]:
        """How many customers the list holds and a page of them, in customer id order (the
        owner's staff and the carrier's; who the customers are: the carrier's only)."""
        items, total = await targets.list_targets(
            session, principal, campaign_id, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @delete("/{customer_id:uuid}", guards=[MANAGERS], status_code=HTTP_204_NO_CONTENT)
    async def remove_target(
        self,
        campaign_id: uuid.UUID,
        customer_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
    ) -> None:
        """Take a customer off the list (coupons they already hold stay theirs)."""
        await targets.remove_target(session, principal, campaign_id, customer_id)


async def _load(
    request: Request[Any, Any, Any],
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    mode: LoadMode,
) -> TargetListResult:
    media_type = request.content_type[0].lower()
    body = await request.body()
    if media_type in CSV_TYPES:
        return await targets.load_csv(session, settings, principal, campaign_id, body, mode=mode)
    if media_type == "application/json":
        data = decode_json(body, TargetListRequest)
        return await targets.load_json(session, settings, principal, campaign_id, data, mode=mode)
    raise HTTPException(status_code=415, detail="Send text/csv (a customer list) or JSON")


ROUTES = [TargetListController]
