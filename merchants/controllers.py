"""HTTP API of the merchants domain: authentication, organizations and their users."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants import services
from coalition.merchants.schemas import (
    LoginRequest,
    MeRead,
    OrganizationRead,
    RefreshRequest,
    TokenPair,
    UserRead,
)
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard
from coalition.platform.settings import Settings


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", exclude_from_auth=True, status_code=HTTP_200_OK)
    async def login(
        self,
        request: Request,  # type: ignore[type-arg]
        data: LoginRequest,
        session: AsyncSession,
        redis: Redis,
        settings: Settings,
    ) -> TokenPair:
        """Exchange email and password for an access token and a refresh token."""
        client_ip = request.client.host if request.client else "unknown"
        return await services.login(
            session, redis, settings, email=data.email, password=data.password, client_ip=client_ip
        )

    @post("/refresh", exclude_from_auth=True, status_code=HTTP_200_OK)
    async def refresh(
        self, data: RefreshRequest, session: AsyncSession, settings: Settings
    ) -> TokenPair:
        """Rotate a refresh token; a reused one revokes its whole session family."""
        return await services.refresh(session, settings, refresh_token=data.refresh_token)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, guards=[role_guard()])
    async def logout(
        self, data: RefreshRequest, session: AsyncSession, principal: Principal
    ) -> None:
        """Revoke the session the given refresh token belongs to."""
        await services.logout(session, principal, refresh_token=data.refresh_token)


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["auth"]
    guards = [role_guard()]

    @get("/")
    async def me(self, session: AsyncSession, principal: Principal) -> MeRead:
        """The signed-in user and their organization."""
        found = await services.me(session, principal)
        return MeRead(
            user=services.user_read(found.user),
            organization=services.organization_read(found.organization),
        )


class OrganizationController(Controller):
    path = "/api/v1/organizations"
    tags = ["organizations"]
    guards = [role_guard()]

    @get("/")
    async def list_organizations(
        self, session: AsyncSession, principal: Principal, limit: Limit, offset: Offset
    ) -> Page[OrganizationRead]:
        """Organizations visible to the caller (all of them for carrier staff)."""
        rows, total = await services.list_organizations(
            session, principal, limit=limit, offset=offset
        )
        return Page(
            items=[services.organization_read(o) for o in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/{org_id:uuid}")
    async def get_organization(
        self, org_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        return services.organization_read(
            await services.get_organization(session, principal, org_id)
        )

    @get("/{org_id:uuid}/users", guards=[role_guard("admin")])
    async def list_users(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[UserRead]:
        """Staff of an organization (its admins, or carrier admins)."""
        rows, total = await services.list_users(
            session, principal, org_id, limit=limit, offset=offset
        )
        return Page(
            items=[services.user_read(u) for u in rows], limit=limit, offset=offset, total=total
        )


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["organizations"]
    guards = [role_guard("admin")]

    @get("/{user_id:uuid}")
    async def get_user(
        self, user_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> UserRead:
        return services.user_read(await services.get_user(session, principal, user_id))


ROUTES = [AuthController, MeController, OrganizationController, UserController]
