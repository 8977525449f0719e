"""HTTP API of redemption flags: what the fraud rules flagged for review."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.redemptions import FlagRead, FlagReview
from coalition.campaigns.services import flags
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard

StatusFilter = Annotated[flags.FlagStatus | None, Parameter(query="status", required=False)]


class RedemptionFlagController(Controller):
    path = "/api/v1/redemption-flags"
    tags = ["fraud"]
    guards = [role_guard("admin", "marketing", "finance")]

    @get("")
    async def list_flags(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: StatusFilter = None,
    ) -> Page[FlagRead]:
        """Flagged redemptions, newest first (`?status=open|reviewed`). Carrier staff see all;
        a merchant sees the flags naming it, with only its own redemptions."""
        items, total = await flags.list_flags(
            session, principal, status=status, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/{flag_id:uuid}")
    async def get_flag(
        self, flag_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> FlagRead:
        return await flags.get_flag(session, principal, flag_id)

    @post("/{flag_id:uuid}/review", status_code=HTTP_200_OK)
    async def review(
        self,
        flag_id: uuid.UUID,
        data: FlagReview,
        session: AsyncSession,
        principal: Principal,
    ) -> FlagRead:
        """Mark a flag reviewed (carrier admin, marketing or finance), with an optional note."""
        return await flags.review_flag(session, principal, flag_id, note=data.note)


ROUTES = [RedemptionFlagController]
