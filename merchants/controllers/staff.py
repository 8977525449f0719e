"""HTTP API of staff: list, invite, change role, deactivate."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.schemas.staff import (
    ChangeRoleRequest,
    InvitationRead,
    InviteStaffRequest,
    UserRead,
)
from coalition.merchants.services import staff
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard
from coalition.platform.settings import Settings


class StaffController(Controller):
    path = "/api/v1"
    tags = ["staff"]
    guards = [role_guard("admin")]

    @get("/organizations/{org_id:uuid}/users")
    async def list_users(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[UserRead]:
        """Staff of an organization (its admins, or carrier admins)."""
        rows, total = await staff.list_users(session, principal, org_id, limit=limit, offset=offset)
        return Page(
            items=[staff.user_read(u) for u in rows], limit=limit, offset=offset, total=total
        )

    @post("/organizations/{org_id:uuid}/users", status_code=HTTP_201_CREATED)
    async def invite(
        self,
        org_id: uuid.UUID,
        data: InviteStaffRequest,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> InvitationRead:
        """Invite a staff member with a role; the one-time link is returned once."""
        invitation = await staff.invite_staff(session, settings, principal, org_id, data)
        return InvitationRead(
            user=staff.user_read(invitation.user),
            invite_url=invitation.url,
            invite_token=invitation.token,
            expires_at=invitation.expires_at,
        )

    @get("/users/{user_id:uuid}")
    async def get_user(
        self, user_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> UserRead:
        return staff.user_read(await staff.get_user(session, principal, user_id))

    @post("/users/{user_id:uuid}/role", status_code=HTTP_200_OK)
    async def change_role(
        self,
        user_id: uuid.UUID,
        data: ChangeRoleRequest,
        session: AsyncSession,
        principal: Principal,
    ) -> UserRead:
        """Change a user's role. Nobody raises their own; the last admin stays an admin."""
        return staff.user_read(await staff.change_role(session, principal, user_id, data.role))

    @post("/users/{user_id:uuid}/deactivate", status_code=HTTP_200_OK)
    async def deactivate(
        self, user_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> UserRead:
        """Deactivate a user at once (their sessions end); the last admin cannot be."""
        return staff.user_read(await staff.deactivate(session, principal, user_id))


ROUTES = [StaffController]
