"""The campaign status workflow: the proposal of frozen, versioned terms that every
participant accepts (or declines), activation at the start time, pause and resume, the end,
cancellation before it ever ran; and the scheduler that starts and ends campaigns on time.

Every transition locks the campaign row (`FOR UPDATE`), is audited with the status before and
after, and commits with its webhooks (`campaign.proposed/approved/activated/ended`). Claim and
redemption paths read the campaign `FOR SHARE`, so a pause or an end stops them at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.domain import CampaignStatus, can_transition
from coalition.campaigns.models import Campaign, CampaignParticipant, CampaignTermsVersion
from coalition.campaigns.services.campaigns import (
    ACTIVE,
    APPROVED,
    CANCELLED,
    DRAFT,
    ENDED,
    PAUSED,
    PROPOSED,
    LoadedCampaign,
    get_campaign,
    get_owned,
    iso_utc,
    load,
    participants_in_order,
)
from coalition.campaigns.services.drafts import check_draft, clear_acceptances, spec_of, terms_json
from coalition.campaigns.services.slots import open_slots
from coalition.merchants.services import webhooks
from coalition.platform import audit
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden
from coalition.platform.jobs import commit

DUE_BATCH = 500  # campaigns started or ended per scheduler run, each in its own transaction


class InvalidCampaignTransition(Conflict):
    code, title = "invalid_campaign_transition", "Not possible in the campaign's current status"


class CampaignNotStarted(Conflict):
    code, title = "campaign_not_started", "The campaign's start time has not come yet"


class CampaignOver(Conflict):
    code, title = "campaign_over", "The campaign's end time has passed"


class StaleTermsVersion(Conflict):
    code, title = "stale_terms_version", "These are not the campaign's current terms"


class NotAParticipant(Forbidden):
    code, title = "not_a_participant", "Only the campaign's participants may do this"


# --- proposal and answers -------------------------------------------------------------------


def _require_transition(campaign: Campaign, target: CampaignStatus) -> None:
    if not can_transition(CampaignStatus(campaign.status), target):
        raise InvalidCampaignTransition(
            f"A campaign that is {campaign.status} cannot become {target}",
            campaign_status=campaign.status,
        )


def _event_data(campaign: Campaign) -> dict[str, Any]:
    return {
        "campaign": {
            "id": str(campaign.id),
            "name": campaign.name,
            "owner_org_id": str(campaign.owner_org_id),
            "status": campaign.status,
            "terms_version": campaign.terms_version,
            "currency": campaign.currency,
            "starts_at": iso_utc(campaign.starts_at),
            "ends_at": iso_utc(campaign.ends_at),
        }
    }


def _record_transition(
    session: AsyncSession,
    actor: Principal | None,
    campaign: Campaign,
    action: str,
    before: str,
    *,
    org_id: uuid.UUID | None = None,
    **after: Any,
) -> None:
    audit.record(
        session,
        actor,
        org_id=org_id or campaign.owner_org_id,
        action=action,
        subject_type="campaign",
        subject_id=campaign.id,
        before={"status": before},
        after={"status": campaign.status, **after},
    )


async def _emit(
    session: AsyncSession,
    event_type: str,
    campaign: Campaign,
    participants: Iterable[CampaignParticipant],
) -> None:
    await webhooks.emit_event(
        session,
        event_type=event_type,
        org_ids={p.org_id for p in participants},
        data=_event_data(campaign),
    )


async def _approve_if_everyone_accepted(
    session: AsyncSession,
    actor: Principal | None,
    campaign: Campaign,
    participants: Sequence[CampaignParticipant],
    now: datetime,
) -> None:
    if campaign.status != PROPOSED or any(
        p.accepted_version != campaign.terms_version for p in participants
    ):
        return
    campaign.status, campaign.approved_at = APPROVED, now
    _record_transition(
        session,
        actor,
        campaign,
        "campaign.approved",
        PROPOSED,
        terms_version=campaign.terms_version,
    )
    await _emit(session, "campaign.approved", campaign, participants)


async def propose(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> LoadedCampaign:
    """Freeze the draft's terms as the next version; the owner accepts it at once, every other
    participant must accept exactly that version."""
    now = utcnow()
    campaign = await get_owned(session, principal, campaign_id)
    _require_transition(campaign, PROPOSED)
    loaded = await load(session, campaign)
    # Organizations may have been suspended, stores archived or the end passed since drafting.
    await check_draft(session, campaign.owner_org_id, spec_of(loaded), now)
    version = campaign.terms_version + 1
    session.add(
        CampaignTermsVersion(
            campaign_id=campaign.id,
            version=version,
            terms=terms_json(campaign, loaded.participants, loaded.store_ids),
            proposed_by=principal.user_id,
            proposed_at=now,
        )
    )
    before = campaign.status
    campaign.status, campaign.terms_version = PROPOSED, version
    campaign.proposed_at, campaign.approved_at, campaign.status_reason = now, None, None
    for p in loaded.participants:
        p.declined_at, p.decline_reason = None, None
        if p.org_id == campaign.owner_org_id:
            p.accepted_version, p.accepted_at, p.accepted_by = version, now, principal.user_id
        else:
            p.accepted_version, p.accepted_at, p.accepted_by = None, None, None
    _record_transition(
        session, principal, campaign, "campaign.proposed", before, terms_version=version
    )
    await _emit(session, "campaign.proposed", campaign, loaded.participants)
    await _approve_if_everyone_accepted(session, principal, campaign, loaded.participants, now)
    await commit(session)
    return loaded


async def _answering(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> tuple[LoadedCampaign, CampaignParticipant]:
    campaign = await get_campaign(session, principal, campaign_id, for_update=True)
    loaded = await load(session, campaign)
    for participant in loaded.participants:
        if participant.org_id == principal.org_id:
            return loaded, participant
    raise NotAParticipant()


async def accept(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, terms_version: int
) -> LoadedCampaign:
    """The caller's organization accepts exactly `terms_version`; the last acceptance of the
    current version approves the campaign. Accepting again changes nothing."""
    now = utcnow()
    loaded, participant = await _answering(session, principal, campaign_id)
    campaign = loaded.campaign
    if (
        campaign.status in (PROPOSED, APPROVED)
        and terms_version == campaign.terms_version == participant.accepted_version
    ):
        return loaded
    if campaign.status != PROPOSED:
        raise InvalidCampaignTransition(
            f"The campaign is {campaign.status}: it is not waiting for acceptances",
            campaign_status=campaign.status,
        )
    if terms_version != campaign.terms_version:
        raise StaleTermsVersion(
            f"Version {terms_version} is not the current terms version "
            f"({campaign.terms_version}): read it and accept that one",
            field="terms_version",
            current_version=campaign.terms_version,
        )
    participant.accepted_version, participant.accepted_at = terms_version, now
    participant.accepted_by = principal.user_id
    _record_transition(
        session,
        principal,
        campaign,
        "campaign.accepted",
        campaign.status,
        org_id=participant.org_id,
        terms_version=terms_version,
        participant_org_id=str(participant.org_id),
    )
    await _approve_if_everyone_accepted(session, principal, campaign, loaded.participants, now)
    await commit(session)
    return loaded


async def decline(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str
) -> LoadedCampaign:
    """The caller's organization declines the proposal: the campaign goes back to draft."""
    now = utcnow()
    loaded, participant = await _answering(session, principal, campaign_id)
    campaign = loaded.campaign
    if campaign.status not in (PROPOSED, APPROVED):
        raise InvalidCampaignTransition(
            f"The campaign is {campaign.status}: there is no proposal to decline",
            campaign_status=campaign.status,
        )
    before = campaign.status
    participant.declined_at, participant.decline_reason = now, reason
    clear_acceptances(loaded.participants)
    campaign.status, campaign.status_reason, campaign.approved_at = DRAFT, reason, None
    _record_transition(
        session,
        principal,
        campaign,
        "campaign.declined",
        before,
        org_id=participant.org_id,
        terms_version=campaign.terms_version,
        participant_org_id=str(participant.org_id),
        reason=reason,
    )
    await commit(session)
    return loaded


# --- running --------------------------------------------------------------------------------


async def _activate(
    session: AsyncSession, actor: Principal | None, campaign: Campaign, now: datetime
) -> None:
    participants = await participants_in_order(session, campaign.id)
    before = campaign.status
    campaign.status, campaign.activated_at, campaign.status_reason = ACTIVE, now, None
    await open_slots(
        session,
        campaign.id,
        quantity=campaign.total_quantity,
        budget=campaign.total_budget,
        funder_caps=[p.budget_cap for p in participants],
    )
    _record_transition(session, actor, campaign, "campaign.activated", before)
    await _emit(session, "campaign.activated", campaign, participants)


async def _end(
    session: AsyncSession,
    actor: Principal | None,
    campaign: Campaign,
    now: datetime,
    reason: str | None,
) -> None:
    before = campaign.status
    campaign.status, campaign.ended_at, campaign.status_reason = ENDED, now, reason
    _record_transition(session, actor, campaign, "campaign.ended", before, reason=reason)
    await _emit(
        session, "campaign.ended", campaign, await participants_in_order(session, campaign.id)
    )


def _cancel(
    session: AsyncSession, actor: Principal | None, campaign: Campaign, reason: str | None
) -> None:
    before = campaign.status
    campaign.status, campaign.status_reason = CANCELLED, reason
    _record_transition(session, actor, campaign, "campaign.cancelled", before, reason=reason)


async def activate(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> LoadedCampaign:
    """The owner starts an approved campaign, from its start time on (before that the
    scheduler starts it at the start time): claim capacity opens."""
    now = utcnow()
    campaign = await get_owned(session, principal, campaign_id)
    _require_transition(campaign, ACTIVE)
    if campaign.status == PAUSED:
        raise InvalidCampaignTransition("A paused campaign is resumed, not activated")
    if now < campaign.starts_at:
        raise CampaignNotStarted(
            f"The campaign starts at {iso_utc(campaign.starts_at)}; it is activated then",
            starts_at=iso_utc(campaign.starts_at),
        )
    if now >= campaign.ends_at:
        raise CampaignOver(f"The campaign ended at {iso_utc(campaign.ends_at)}")
    await _activate(session, principal, campaign, now)
    await commit(session)
    return await load(session, campaign)


async def pause(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """Stop claims and redemptions at once (until resumed)."""
    campaign = await get_owned(session, principal, campaign_id)
    if campaign.status != ACTIVE:
        raise InvalidCampaignTransition(
            f"Only an active campaign can be paused (this one is {campaign.status})",
            campaign_status=campaign.status,
        )
    campaign.status, campaign.status_reason = PAUSED, reason
    _record_transition(session, principal, campaign, "campaign.paused", ACTIVE, reason=reason)
    await commit(session)
    return await load(session, campaign)


async def resume(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> LoadedCampaign:
    campaign = await get_owned(session, principal, campaign_id)
    if campaign.status != PAUSED:
        raise InvalidCampaignTransition(
            f"Only a paused campaign can be resumed (this one is {campaign.status})",
            campaign_status=campaign.status,
        )
    if utcnow() >= campaign.ends_at:
        raise CampaignOver(f"The campaign ended at {iso_utc(campaign.ends_at)}")
    campaign.status, campaign.status_reason = ACTIVE, None
    _record_transition(session, principal, campaign, "campaign.resumed", PAUSED)
    await commit(session)
    return await load(session, campaign)


async def end(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """The owner ends an active or paused campaign before its end time."""
    campaign = await get_owned(session, principal, campaign_id)
    _require_transition(campaign, ENDED)
    await _end(session, principal, campaign, utcnow(), reason)
    await commit(session)
    return await load(session, campaign)


async def cancel(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """Call off a campaign that never ran (draft, proposed or approved)."""
    campaign = await get_owned(session, principal, campaign_id)
    _require_transition(campaign, CANCELLED)
    _cancel(session, principal, campaign, reason)
    await commit(session)
    return await load(session, campaign)


# --- the scheduler --------------------------------------------------------------------------


async def _next_due(session: AsyncSession, *conditions: Any) -> Campaign | None:
    """One due campaign, locked; campaigns another transaction holds are skipped (their turn
    comes on the next run). The lock's transaction is the one that changes the campaign."""
    return (
        await session.execute(
            select(Campaign)
            .where(*conditions)
            .order_by(col(Campaign.starts_at), col(Campaign.id))
            .limit(1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def activate_due(session: AsyncSession, now: datetime, *, limit: int = DUE_BATCH) -> int:
    """Activate approved campaigns whose start time has come (and whose end has not), one
    transaction each. Idempotent; returns how many were activated."""
    done = 0
    while done < limit:
        campaign = await _next_due(
            session,
            col(Campaign.status) == APPROVED,
            col(Campaign.starts_at) <= now,
            col(Campaign.ends_at) > now,
        )
        if campaign is None:
            break
        await _activate(session, None, campaign, now)
        await commit(session)
        done += 1
    await commit(session)  # ends the last (read-only) transaction; keeps loaded rows usable
    return done


async def end_due(session: AsyncSession, now: datetime, *, limit: int = DUE_BATCH) -> int:
    """End active and paused campaigns whose end time has passed; cancel approved ones that
    were never activated before their end. One transaction each, idempotent; returns how many
    changed."""
    done = 0
    while done < limit:
        campaign = await _next_due(
            session,
            col(Campaign.status).in_((ACTIVE, PAUSED, APPROVED)),
            col(Campaign.ends_at) <= now,
        )
        if campaign is None:
            break
        if campaign.status == APPROVED:
            _cancel(session, None, campaign, "The end time passed before the campaign started")
        else:
            await _end(session, None, campaign, now, "The end time passed")
        await commit(session)
        done += 1
    await commit(session)  # ends the last (read-only) transaction; keeps loaded rows usable
    return done
