"""HTTP API of identity: sign in, refresh, sign out, who am I, accept an invitation."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.schemas.identity import (
    AcceptInvitationRequest,
    LoginRequest,
    MeRead,
    RefreshRequest,
    TokenPair,
)
from coalition.merchants.services import identity, organizations, staff
from coalition.platform import ratelimit
from coalition.platform.auth import Principal, role_guard
from coalition.platform.settings import Settings


def client_ip(request: Request) -> str:  # type: ignore[type-arg]
    return request.client.host if request.client else "unknown"


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
        return await identity.login(
            session,
            redis,
            settings,
            email=data.email,
            password=data.password,
            client_ip=client_ip(request),
        )

    @post("/refresh", exclude_from_auth=True, status_code=HTTP_200_OK)
    async def refresh(
        self, data: RefreshRequest, session: AsyncSession, settings: Settings
    ) -> TokenPair:
        """Rotate a refresh token; a reused one revokes its whole session family."""
        return await identity.refresh(session, settings, refresh_token=data.refresh_token)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, guards=[role_guard()])
    async def logout(
        self, data: RefreshRequest, session: AsyncSession, principal: Principal
    ) -> None:
        """Revoke the session the given refresh token belongs to."""
        await identity.logout(session, principal, refresh_token=data.refresh_token)


class InvitationController(Controller):
    path = "/api/v1/invitations"
    tags = ["auth"]

    @post("/accept", exclude_from_auth=True, status_code=HTTP_200_OK)
    async def accept(
        self,
        request: Request,  # type: ignore[type-arg]
        data: AcceptInvitationRequest,
        session: AsyncSession,
        redis: Redis,
        settings: Settings,
    ) -> MeRead:
        """Set a password with a one-time invitation token; an invited org's first admin
        activates the organization. Then sign in as usual."""
        await ratelimit.hit(redis, f"invite:ip:{client_ip(request)}", limit=30, window_seconds=300)
        accepted = await organizations.accept_invitation(
            session, token=data.token, password=data.password, display_name=data.display_name
        )
        return MeRead(
            user=staff.user_read(accepted.user),
            organization=organizations.organization_read(accepted.organization),
        )


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["auth"]
    guards = [role_guard()]

    @get("/")
    async def me(self, session: AsyncSession, principal: Principal) -> MeRead:
        """The signed-in user and their organization."""
        assert principal.user_id is not None
        user = await staff.get_user(session, principal, principal.user_id)
        org = await organizations.get_organization(session, principal, principal.org_id)
        return MeRead(user=staff.user_read(user), organization=organizations.organization_read(org))


ROUTES = [AuthController, InvitationController, MeController]
