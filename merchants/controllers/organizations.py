"""HTTP API of organizations: onboarding, suspension, profile, partner directory, audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.controllers.identity import client_ip
from coalition.merchants.schemas.audit_log import AuditEntryRead
from coalition.merchants.schemas.organizations import (
    ApplyRequest,
    Industry,
    InviteMerchantRequest,
    MerchantInvitationRead,
    OrganizationRead,
    PartnerRead,
    ProfileUpdate,
    ReasonRequest,
    RunningCampaign,
)
from coalition.merchants.services import audit_log, directory, organizations
from coalition.platform import ratelimit
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, carrier_guard, role_guard
from coalition.platform.settings import Settings

OrgStatus = Annotated[
    str | None,
    Parameter(query="status", pattern="^(invited|pending|active|suspended|rejected)$"),
]


class OrganizationController(Controller):
    path = "/api/v1/organizations"
    tags = ["organizations"]
    guards = [role_guard()]

    @get("/")
    async def list_organizations(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: OrgStatus = None,
    ) -> Page[OrganizationRead]:
        """Organizations visible to the caller (all of them for carrier staff)."""
        rows, total = await organizations.list_organizations(
            session, principal, limit=limit, offset=offset, status=status
        )
        return Page(
            items=[organizations.organization_read(o) for o in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/{org_id:uuid}")
    async def get_organization(
        self, org_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        org = await organizations.get_organization(session, principal, org_id)
        return organizations.organization_read(org)

    @patch("/{org_id:uuid}", guards=[role_guard("admin")])
    async def update_profile(
        self, org_id: uuid.UUID, data: ProfileUpdate, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        """Change the organization profile (its admins, or carrier admins)."""
        org = await organizations.update_profile(session, principal, org_id, data)
        return organizations.organization_read(org)

    @post(
        "/invitations", guards=[carrier_guard("admin", "marketing")], status_code=HTTP_201_CREATED
    )
    async def invite(
        self,
        data: InviteMerchantRequest,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> MerchantInvitationRead:
        """Invite a partner merchant. The one-time link is returned once, to pass on."""
        org, invitation = await organizations.invite_merchant(session, settings, principal, data)
        return MerchantInvitationRead(
            organization=organizations.organization_read(org),
            invite_url=invitation.url,
            invite_token=invitation.token,
            expires_at=invitation.expires_at,
        )

    @post("/{org_id:uuid}/approve", guards=[carrier_guard("admin")], status_code=HTTP_200_OK)
    async def approve(
        self, org_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        return organizations.organization_read(
            await organizations.approve(session, principal, org_id)
        )

    @post("/{org_id:uuid}/reject", guards=[carrier_guard("admin")], status_code=HTTP_200_OK)
    async def reject(
        self, org_id: uuid.UUID, data: ReasonRequest, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        org = await organizations.reject(session, principal, org_id, reason=data.reason)
        return organizations.organization_read(org)

    @post("/{org_id:uuid}/suspend", guards=[carrier_guard("admin")], status_code=HTTP_200_OK)
    async def suspend(
        self, org_id: uuid.UUID, data: ReasonRequest, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        """Stop the organization's users, terminals and keys at once; its data stays."""
        org = await organizations.suspend(session, principal, org_id, reason=data.reason)
        return organizations.organization_read(org)

    @post("/{org_id:uuid}/reinstate", guards=[carrier_guard("admin")], status_code=HTTP_200_OK)
    async def reinstate(
        self, org_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> OrganizationRead:
        return organizations.organization_read(
            await organizations.reinstate(session, principal, org_id)
        )


class ApplicationController(Controller):
    """The one public onboarding door: anyone may apply, nothing is granted until approval."""

    path = "/api/v1/organizations"
    tags = ["organizations"]

    @post("/applications", exclude_from_auth=True, status_code=HTTP_201_CREATED)
    async def apply(
        self,
        request: Request,  # type: ignore[type-arg]
        data: ApplyRequest,
        session: AsyncSession,
        redis: Redis,
    ) -> OrganizationRead:
        """A merchant applies to join; it can sign in once a carrier admin approves."""
        await ratelimit.hit(redis, f"apply:ip:{client_ip(request)}", limit=10, window_seconds=3600)
        return organizations.organization_read(await organizations.apply(session, data))


class PartnerDirectoryController(Controller):
    path = "/api/v1/partners"
    tags = ["partner directory"]
    guards = [role_guard()]

    @get("/")
    async def search(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        industry: Annotated[Industry | None, Parameter(query="industry")] = None,
        city: Annotated[str | None, Parameter(query="city", max_length=100)] = None,
        name: Annotated[str | None, Parameter(query="q", max_length=100)] = None,
        status: OrgStatus = None,
    ) -> Page[PartnerRead]:
        """Search partners by industry, city and name (`q`). Merchants see active partners."""
        rows, total = await directory.search_partners(
            session,
            principal,
            industry=industry,
            city=city,
            name=name,
            status=status,
            limit=limit,
            offset=offset,
        )
        return Page(
            items=[
                PartnerRead(
                    id=p.organization.id,
                    name=p.organization.name,
                    industry=p.organization.industry,
                    status=p.organization.status,
                    cities=list(p.organization.cities),
                    logo_url=p.organization.logo_url,
                    description=p.organization.description,
                    contact_name=p.organization.contact_name,
                    contact_email=p.organization.contact_email,
                    store_count=p.store_count,
                    running_campaigns=[
                        RunningCampaign(
                            id=c.id, name=c.name, owner_org_id=c.owner_org_id, ends_at=c.ends_at
                        )
                        for c in p.running_campaigns
                    ],
                )
                for p in rows
            ],
            limit=limit,
            offset=offset,
            total=total,
        )


class AuditLogController(Controller):
    path = "/api/v1/audit-log"
    tags = ["audit"]
    guards = [role_guard("admin")]

    @get("/")
    async def list_entries(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        org_id: Annotated[uuid.UUID | None, Parameter(query="org_id")] = None,
        action: Annotated[str | None, Parameter(query="action", max_length=64)] = None,
        subject_id: Annotated[uuid.UUID | None, Parameter(query="subject_id")] = None,
        since: Annotated[datetime | None, Parameter(query="since")] = None,
    ) -> Page[AuditEntryRead]:
        """Administrative changes, newest first: own org for its admins, all for carrier admins."""
        rows, total = await audit_log.list_entries(
            session,
            principal,
            org_id=org_id,
            action=action,
            subject_id=subject_id,
            since=since,
            limit=limit,
            offset=offset,
        )
        return Page(
            items=[
                AuditEntryRead(
                    id=e.id,
                    at=e.at,
                    org_id=e.org_id,
                    actor_kind=e.actor_kind,
                    actor_id=e.actor_id,
                    actor_org_id=e.actor_org_id,
                    action=e.action,
                    subject_type=e.subject_type,
                    subject_id=e.subject_id,
                    before=e.before,
                    after=e.after,
                    request_id=e.request_id,
                )
                for e in rows
            ],
            limit=limit,
            offset=offset,
            total=total,
        )


ROUTES = [
    OrganizationController,
    ApplicationController,
    PartnerDirectoryController,
    AuditLogController,
]
