"""HTTP API of joint campaigns: drafts, the proposal and acceptance of versioned terms, and
the workflow (activate, pause, resume, end, cancel)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.campaigns import (
    AcceptRequest,
    CampaignCreate,
    CampaignRead,
    CampaignStatusName,
    CampaignSummary,
    CampaignUpdate,
    DeclineRequest,
    TermsVersionRead,
    TransitionRequest,
)
from coalition.campaigns.services import campaigns, drafts, workflow
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard

# Owners draft and run campaigns; participants answer proposals: their admins or marketing.
MANAGERS = role_guard("admin", "marketing")
StatusFilter = Annotated[CampaignStatusName | None, Parameter(query="status")]


class CampaignController(Controller):
    path = "/api/v1/campaigns"
    tags = ["campaigns"]
    guards = [role_guard()]

    @get("/")
    async def list_campaigns(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: StatusFilter = None,
    ) -> Page[CampaignSummary]:
        """Campaigns the caller's organization owns or takes part in, newest first (every
        campaign for the carrier's admin, marketing and finance staff)."""
        rows, total = await campaigns.list_campaigns(
            session, principal, status=status, limit=limit, offset=offset
        )
        return Page(
            items=[campaigns.campaign_summary(c) for c in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @post("/", guards=[MANAGERS], status_code=HTTP_201_CREATED)
    async def create_campaign(
        self, data: CampaignCreate, session: AsyncSession, principal: Principal
    ) -> CampaignRead:
        """Draft a joint campaign owned by the caller's organization (a participant itself)."""
        return campaigns.campaign_read(await drafts.create_campaign(session, principal, data))

    @get("/{campaign_id:uuid}")
    async def get_campaign(
        self, campaign_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CampaignRead:
        """A campaign with its participants, their shares, caps and answers."""
        return campaigns.campaign_read(await campaigns.get_loaded(session, principal, campaign_id))

    @patch("/{campaign_id:uuid}", guards=[MANAGERS])
    async def update_campaign(
        self,
        campaign_id: uuid.UUID,
        data: CampaignUpdate,
        session: AsyncSession,
        principal: Principal,
    ) -> CampaignRead:
        """Change a campaign before it runs (the owner). Changing the terms of a proposed or
        approved campaign returns it to draft: a changed proposal needs new acceptances."""
        return campaigns.campaign_read(
            await drafts.update_campaign(session, principal, campaign_id, data)
        )

    @get("/{campaign_id:uuid}/terms/{version:int}")
    async def get_terms_version(
        self, campaign_id: uuid.UUID, version: int, session: AsyncSession, principal: Principal
    ) -> TermsVersionRead:
        """The terms exactly as proposed in `version` (frozen)."""
        campaign, row = await campaigns.get_terms_version(session, principal, campaign_id, version)
        return campaigns.terms_version_read(campaign, row)

    @post("/{campaign_id:uuid}/propose", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def propose(
        self, campaign_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CampaignRead:
        """Freeze the terms as the next version and ask every participant to accept it."""
        return campaigns.campaign_read(await workflow.propose(session, principal, campaign_id))

    @post("/{campaign_id:uuid}/accept", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def accept(
        self,
        campaign_id: uuid.UUID,
        data: AcceptRequest,
        session: AsyncSession,
        principal: Principal,
    ) -> CampaignRead:
        """Accept exactly the current terms version for the caller's organization."""
        return campaigns.campaign_read(
            await workflow.accept(session, principal, campaign_id, terms_version=data.terms_version)
        )

    @post("/{campaign_id:uuid}/decline", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def decline(
        self,
        campaign_id: uuid.UUID,
        data: DeclineRequest,
        session: AsyncSession,
        principal: Principal,
    ) -> CampaignRead:
        """Decline the proposal, with a reason: the campaign goes back to draft."""
        return campaigns.campaign_read(
            await workflow.decline(session, principal, campaign_id, reason=data.reason)
        )

    @post("/{campaign_id:uuid}/activate", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def activate(
        self, campaign_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CampaignRead:
        """Start an approved campaign now (from its start time on; the scheduler starts it at
        the start time otherwise)."""
        return campaigns.campaign_read(await workflow.activate(session, principal, campaign_id))

    @post("/{campaign_id:uuid}/pause", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def pause(
        self,
        campaign_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        data: TransitionRequest | None = None,
    ) -> CampaignRead:
        """Stop claims and redemptions at once."""
        return campaigns.campaign_read(
            await workflow.pause(
                session, principal, campaign_id, reason=data.reason if data else None
            )
        )

    @post("/{campaign_id:uuid}/resume", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def resume(
        self, campaign_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CampaignRead:
        return campaigns.campaign_read(await workflow.resume(session, principal, campaign_id))

    @post("/{campaign_id:uuid}/end", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def end(
        self,
        campaign_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        data: TransitionRequest | None = None,
    ) -> CampaignRead:
        """End an active or paused campaign now (the scheduler ends it at its end time)."""
        return campaigns.campaign_read(
            await workflow.end(
                session, principal, campaign_id, reason=data.reason if data else None
            )
        )

    @post("/{campaign_id:uuid}/cancel", guards=[MANAGERS], status_code=HTTP_200_OK)
    async def cancel(
        self,
        campaign_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        data: TransitionRequest | None = None,
    ) -> CampaignRead:
        """Call off a campaign that never ran (draft, proposed or approved)."""
        return campaigns.campaign_read(
            await workflow.cancel(
                session, principal, campaign_id, reason=data.reason if data else None
            )
        )


ROUTES = [CampaignController]
