"""Joint campaigns: the draft and its checks, the proposal of frozen, versioned terms that
every participant accepts (or declines), activation at the start time, pause and resume, the
end, cancellation before it ever ran; and reading what the caller owns or takes part in.

Every transition locks the campaign row (`FOR UPDATE`), is audited with the status before and
after, and commits with its webhooks (`campaign.proposed/approved/activated/ended`). Claim and
redemption paths read the campaign `FOR SHARE`, so a pause or an end stops them at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import delete, func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.domain import (
    CampaignStatus,
    Funder,
    Offer,
    Terms,
    TimeWindow,
    can_transition,
    max_discount,
    offer_from_json,
    offer_to_json,
    sorted_windows,
)
from coalition.campaigns.models import (
    Campaign,
    CampaignParticipant,
    CampaignStore,
    CampaignTermsVersion,
)
from coalition.campaigns.schemas.campaigns import (
    Acceptance,
    AudienceIn,
    AudienceKind,
    AudienceRead,
    CampaignCreate,
    CampaignRead,
    CampaignSummary,
    CampaignUpdate,
    FeeIn,
    FeePayer,
    FeeRead,
    OfferIn,
    OfferRead,
    ParticipantIn,
    ParticipantRead,
    SettlementCycle,
    TermsVersionRead,
    TimeWindowIn,
    TimeWindowRead,
)
from coalition.campaigns.services.slots import funder_reservations, open_slots
from coalition.merchants.models import Organization, Store
from coalition.merchants.services import webhooks
from coalition.platform import audit
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden, NotFound, ValidationFailed
from coalition.platform.jobs import commit

DRAFT, PROPOSED, APPROVED = CampaignStatus.DRAFT, CampaignStatus.PROPOSED, CampaignStatus.APPROVED
ACTIVE, PAUSED = CampaignStatus.ACTIVE, CampaignStatus.PAUSED
ENDED, CANCELLED = CampaignStatus.ENDED, CampaignStatus.CANCELLED
EDITABLE = frozenset({DRAFT, PROPOSED, APPROVED})
# Terms fields (campaigns/domain.py `Terms.problems`) -> request fields.
TERMS_FIELDS = {
    "funders": "participants",
    "total_budget": "total_budget",
    "fee_bp": "fee.bp",
    "fee_fixed": "fee.fixed",
}
DUE_BATCH = 500  # campaigns started or ended per scheduler run, each in its own transaction


class InvalidCampaignTransition(Conflict):
    code, title = "invalid_campaign_transition", "Not possible in the campaign's current status"


class CampaignNotEditable(Conflict):
    code, title = "campaign_not_editable", "The campaign can no longer be changed"


class CampaignNotStarted(Conflict):
    code, title = "campaign_not_started", "The campaign's start time has not come yet"


class CampaignOver(Conflict):
    code, title = "campaign_over", "The campaign's end time has passed"


class StaleTermsVersion(Conflict):
    code, title = "stale_terms_version", "These are not the campaign's current terms"


class NotAParticipant(Forbidden):
    code, title = "not_a_participant", "Only the campaign's participants may do this"


class NotCampaignOwner(Forbidden):
    code, title = "not_campaign_owner", "Only the campaign's owner may do this"


@dataclass(frozen=True, slots=True)
class LoadedCampaign:
    """A campaign with its participants (in funding `position` order) and redeemable stores
    (empty: every participant's store)."""

    campaign: Campaign
    participants: list[CampaignParticipant]
    store_ids: list[uuid.UUID]
    org_names: dict[uuid.UUID, str]


# --- pure helpers ---------------------------------------------------------------------------


def campaign_offer(campaign: Campaign) -> Offer:
    """The campaign's offer rule (in its currency, with its store list if it names one)."""
    return offer_from_json(campaign.offer)


def campaign_terms(campaign: Campaign, participants: Sequence[CampaignParticipant]) -> Terms:
    """The money terms; `participants` in position order (see `participants_in_order`)."""
    return Terms(
        funders=tuple(Funder(p.org_id, p.share_bp, p.budget_cap) for p in participants),
        total_budget=campaign.total_budget,
        currency=campaign.currency,
        fee_bp=campaign.fee_bp,
        fee_fixed=campaign.fee_fixed,
        fee_payer=cast(FeePayer, campaign.fee_payer),
        settlement_cycle=cast(SettlementCycle, campaign.settlement_cycle),
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def terms_json(
    campaign: Campaign,
    participants: Sequence[CampaignParticipant],
    store_ids: Iterable[uuid.UUID],
) -> dict[str, Any]:
    """Everything money- or rule-relevant, as frozen in a terms version."""
    return {
        "currency": campaign.currency,
        "timezone": campaign.timezone,
        "starts_at": _iso(campaign.starts_at),
        "ends_at": _iso(campaign.ends_at),
        "offer": dict(campaign.offer),
        "audience": {
            "kind": campaign.audience,
            "min_tier": campaign.audience_min_tier,
            "max_tier": campaign.audience_max_tier,
            "tags": list(campaign.audience_tags),
            "on_network_only": campaign.audience_on_network_only,
        },
        "total_quantity": campaign.total_quantity,
        "per_customer_limit": campaign.per_customer_limit,
        "per_customer_daily_limit": campaign.per_customer_daily_limit,
        "reversal_window_days": campaign.reversal_window_days,
        "total_budget": campaign.total_budget,
        "fee": {"bp": campaign.fee_bp, "fixed": campaign.fee_fixed, "payer": campaign.fee_payer},
        "settlement_cycle": campaign.settlement_cycle,
        "participants": [
            {
                "org_id": str(p.org_id),
                "position": p.position,
                "share_bp": p.share_bp,
                "budget_cap": p.budget_cap,
            }
            for p in participants
        ],
        "store_ids": sorted(str(s) for s in store_ids),
    }


def acceptance_of(campaign: Campaign, participant: CampaignParticipant) -> Acceptance:
    """A participant's answer to the campaign's current terms version."""
    if participant.declined_at is not None:
        return "declined"
    if campaign.terms_version and participant.accepted_version == campaign.terms_version:
        return "accepted"
    return "pending"


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M")


def _offer_read(offer: Offer) -> OfferRead:
    return OfferRead(
        kind=offer.kind,
        currency=offer.currency,
        value=offer.value,
        percent_bp=offer.percent_bp,
        cap=offer.cap,
        threshold=offer.threshold,
        min_spend=offer.min_spend,
        valid_from=offer.valid_from,
        valid_until=offer.valid_until,
        valid_days_after_claim=offer.valid_days_after_claim,
        weekdays=sorted(offer.weekdays),
        time_windows=[
            TimeWindowRead(start=_clock(w.start), end=_clock(w.end)) for w in offer.time_windows
        ],
        channels=sorted(offer.channels),
        store_ids=sorted(offer.store_ids, key=str) if offer.store_ids is not None else None,
    )


def campaign_summary(campaign: Campaign) -> CampaignSummary:
    return CampaignSummary(
        id=campaign.id,
        owner_org_id=campaign.owner_org_id,
        name=campaign.name,
        status=campaign.status,
        status_reason=campaign.status_reason,
        currency=campaign.currency,
        timezone=campaign.timezone,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        terms_version=campaign.terms_version,
        total_quantity=campaign.total_quantity,
        total_budget=campaign.total_budget,
        created_at=campaign.created_at,
    )


def campaign_read(loaded: LoadedCampaign) -> CampaignRead:
    campaign = loaded.campaign
    return CampaignRead(
        id=campaign.id,
        owner_org_id=campaign.owner_org_id,
        name=campaign.name,
        description=campaign.description,
        status=campaign.status,
        status_reason=campaign.status_reason,
        terms_version=campaign.terms_version,
        currency=campaign.currency,
        timezone=campaign.timezone,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        code_prefix=campaign.code_prefix,
        offer=_offer_read(campaign_offer(campaign)),
        audience=AudienceRead(
            kind=campaign.audience,
            min_tier=campaign.audience_min_tier,
            max_tier=campaign.audience_max_tier,
            tags=list(campaign.audience_tags),
            on_network_only=campaign.audience_on_network_only,
        ),
        total_quantity=campaign.total_quantity,
        per_customer_limit=campaign.per_customer_limit,
        per_customer_daily_limit=campaign.per_customer_daily_limit,
        reversal_window_days=campaign.reversal_window_days,
        total_budget=campaign.total_budget,
        fee=FeeRead(bp=campaign.fee_bp, fixed=campaign.fee_fixed, payer=campaign.fee_payer),
        settlement_cycle=campaign.settlement_cycle,
        participants=[
            ParticipantRead(
                org_id=p.org_id,
                org_name=loaded.org_names.get(p.org_id, ""),
                position=p.position,
                is_owner=p.org_id == campaign.owner_org_id,
                share_bp=p.share_bp,
                budget_cap=p.budget_cap,
                acceptance=acceptance_of(campaign, p),
                accepted_version=p.accepted_version,
                accepted_at=p.accepted_at,
                declined_at=p.declined_at,
                decline_reason=p.decline_reason,
            )
            for p in loaded.participants
        ],
        store_ids=list(loaded.store_ids),
        created_by=campaign.created_by,
        created_at=campaign.created_at,
        proposed_at=campaign.proposed_at,
        approved_at=campaign.approved_at,
        activated_at=campaign.activated_at,
        ended_at=campaign.ended_at,
    )


def terms_version_read(campaign: Campaign, row: CampaignTermsVersion) -> TermsVersionRead:
    return TermsVersionRead(
        campaign_id=row.campaign_id,
        version=row.version,
        current=row.version == campaign.terms_version,
        terms=dict(row.terms),
        proposed_by=row.proposed_by,
        proposed_at=row.proposed_at,
    )


# --- loading --------------------------------------------------------------------------------


async def participants_in_order(
    session: AsyncSession, campaign_id: uuid.UUID
) -> list[CampaignParticipant]:
    """The campaign's funders in `position` order (the order of `ClaimSlot.funder_remaining`
    and of the split's tie-breaks)."""
    rows = await session.execute(
        select(CampaignParticipant)
        .where(col(CampaignParticipant.campaign_id) == campaign_id)
        .order_by(col(CampaignParticipant.position))
    )
    return list(rows.scalars())


async def campaign_store_ids(session: AsyncSession, campaign_id: uuid.UUID) -> list[uuid.UUID]:
    """The stores the campaign names (empty: every participant's store is redeemable)."""
    rows = await session.execute(
        select(col(CampaignStore.store_id))
        .where(col(CampaignStore.campaign_id) == campaign_id)
        .order_by(col(CampaignStore.store_id))
    )
    return list(rows.scalars())


async def _org_names(session: AsyncSession, org_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await session.execute(
        select(col(Organization.id), col(Organization.name)).where(
            col(Organization.id).in_(set(org_ids))
        )
    )
    return {row[0]: row[1] for row in rows}


async def load(session: AsyncSession, campaign: Campaign) -> LoadedCampaign:
    """A campaign with its participants and stores (no tenancy check: see `get_loaded`)."""
    participants = await participants_in_order(session, campaign.id)
    return LoadedCampaign(
        campaign=campaign,
        participants=participants,
        store_ids=await campaign_store_ids(session, campaign.id),
        org_names=await _org_names(session, [p.org_id for p in participants]),
    )


async def _may_see(session: AsyncSession, principal: Principal, campaign: Campaign) -> bool:
    if principal.sees_all_tenants or principal.org_id == campaign.owner_org_id:
        return True
    found = await session.execute(
        select(col(CampaignParticipant.org_id)).where(
            col(CampaignParticipant.campaign_id) == campaign.id,
            col(CampaignParticipant.org_id) == principal.org_id,
        )
    )
    return found.first() is not None


async def get_campaign(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Campaign:
    """A campaign the caller's organization owns or takes part in (carrier staff who see every
    tenant: any campaign). Any other campaign answers 404, like one that does not exist."""
    campaign = await session.get(Campaign, campaign_id, with_for_update=for_update)
    if campaign is None or not await _may_see(session, principal, campaign):
        raise NotFound("Campaign not found")
    return campaign


async def get_loaded(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> LoadedCampaign:
    return await load(session, await get_campaign(session, principal, campaign_id))


async def list_campaigns(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Campaign], int]:
    """Campaigns the caller's organization owns or takes part in, newest first."""
    base = select(Campaign)
    if not principal.sees_all_tenants:
        base = base.where(
            or_(
                col(Campaign.owner_org_id) == principal.org_id,
                col(Campaign.id).in_(
                    select(col(CampaignParticipant.campaign_id)).where(
                        col(CampaignParticipant.org_id) == principal.org_id
                    )
                ),
            )
        )
    if status:
        base = base.where(col(Campaign.status) == status)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(Campaign.created_at).desc(), col(Campaign.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_terms_version(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, version: int
) -> tuple[Campaign, CampaignTermsVersion]:
    campaign = await get_campaign(session, principal, campaign_id)
    row = (
        await session.execute(
            select(CampaignTermsVersion).where(
                col(CampaignTermsVersion.campaign_id) == campaign.id,
                col(CampaignTermsVersion.version) == version,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"The campaign has no terms version {version}")
    return campaign, row


# --- the draft: checks and writing ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checked:
    offer: Offer
    org_names: dict[uuid.UUID, str]


def _offer_of(spec: CampaignCreate) -> Offer:
    wanted = spec.offer
    return Offer(
        kind=wanted.kind,
        currency=spec.currency,
        value=wanted.value,
        percent_bp=wanted.percent_bp,
        cap=wanted.cap,
        threshold=wanted.threshold,
        min_spend=wanted.min_spend,
        valid_from=wanted.valid_from.astimezone(UTC) if wanted.valid_from else None,
        valid_until=wanted.valid_until.astimezone(UTC) if wanted.valid_until else None,
        valid_days_after_claim=wanted.valid_days_after_claim,
        weekdays=frozenset(wanted.weekdays),
        time_windows=sorted_windows(
            [
                TimeWindow(time.fromisoformat(w.start), time.fromisoformat(w.end))
                for w in wanted.time_windows
            ]
        ),
        channels=frozenset(wanted.channels),
        store_ids=frozenset(spec.store_ids) if spec.store_ids else None,
    )


def _terms_of(spec: CampaignCreate) -> Terms:
    return Terms(
        funders=tuple(Funder(p.org_id, p.share_bp, p.budget_cap) for p in spec.participants),
        total_budget=spec.total_budget,
        currency=spec.currency,
        fee_bp=spec.fee.bp,
        fee_fixed=spec.fee.fixed,
        fee_payer=spec.fee.payer,
        settlement_cycle=spec.settlement_cycle,
    )


def _spec_of(loaded: LoadedCampaign) -> CampaignCreate:
    """The stored campaign as the request that would create it (the base a PATCH changes)."""
    campaign = loaded.campaign
    offer = campaign_offer(campaign)
    return CampaignCreate(
        name=campaign.name,
        currency=campaign.currency,
        timezone=campaign.timezone,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        offer=OfferIn(
            kind=offer.kind,
            value=offer.value,
            percent_bp=offer.percent_bp,
            cap=offer.cap,
            threshold=offer.threshold,
            min_spend=offer.min_spend,
            valid_from=offer.valid_from,
            valid_until=offer.valid_until,
            valid_days_after_claim=offer.valid_days_after_claim,
            weekdays=sorted(offer.weekdays),
            time_windows=[
                TimeWindowIn(start=_clock(w.start), end=_clock(w.end)) for w in offer.time_windows
            ],
            channels=sorted(offer.channels),
        ),
        total_quantity=campaign.total_quantity,
        participants=[
            ParticipantIn(org_id=p.org_id, share_bp=p.share_bp, budget_cap=p.budget_cap)
            for p in loaded.participants
        ],
        total_budget=campaign.total_budget,
        description=campaign.description,
        code_prefix=campaign.code_prefix,
        audience=AudienceIn(
            kind=cast(AudienceKind, campaign.audience),
            min_tier=campaign.audience_min_tier,
            max_tier=campaign.audience_max_tier,
            tags=list(campaign.audience_tags),
            on_network_only=campaign.audience_on_network_only,
        ),
        per_customer_limit=campaign.per_customer_limit,
        per_customer_daily_limit=campaign.per_customer_daily_limit,
        reversal_window_days=campaign.reversal_window_days,
        fee=FeeIn(
            bp=campaign.fee_bp, fixed=campaign.fee_fixed, payer=cast(FeePayer, campaign.fee_payer)
        ),
        settlement_cycle=cast(SettlementCycle, campaign.settlement_cycle),
        store_ids=list(loaded.store_ids),
    )


def _normalized(spec: CampaignCreate) -> CampaignCreate:
    """Times in UTC and tags without repeats, so that equal campaigns compare equal (store
    lists keep the request's order: problems name their index)."""
    return msgspec.structs.replace(
        spec,
        starts_at=spec.starts_at.astimezone(UTC),
        ends_at=spec.ends_at.astimezone(UTC),
        offer=msgspec.structs.replace(
            spec.offer,
            valid_from=spec.offer.valid_from.astimezone(UTC) if spec.offer.valid_from else None,
            valid_until=spec.offer.valid_until.astimezone(UTC) if spec.offer.valid_until else None,
        ),
        audience=msgspec.structs.replace(
            spec.audience, tags=list(dict.fromkeys(spec.audience.tags))
        ),
    )


def _audience_problems(audience: AudienceIn) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    criteria = {
        "audience.min_tier": audience.min_tier is not None,
        "audience.max_tier": audience.max_tier is not None,
        "audience.tags": bool(audience.tags),
        "audience.on_network_only": audience.on_network_only,
    }
    if audience.kind != "segment":
        found += [
            (name, "only a segment audience has tiers, tags or on_network_only")
            for name, given in criteria.items()
            if given
        ]
    elif not any(criteria.values()):
        found.append(("audience", "a segment needs a tier range, tags or on_network_only"))
    if (
        audience.min_tier is not None
        and audience.max_tier is not None
        and audience.min_tier > audience.max_tier
    ):
        found.append(("audience.max_tier", "must be at least min_tier"))
    return found


async def _store_problems(
    session: AsyncSession, store_ids: Sequence[uuid.UUID], org_ids: set[uuid.UUID]
) -> list[tuple[str, str]]:
    if not store_ids:
        return []
    rows = await session.execute(
        select(col(Store.id), col(Store.org_id), col(Store.status)).where(
            col(Store.id).in_(set(store_ids))
        )
    )
    found = {row[0]: (row[1], row[2]) for row in rows}
    return [
        (f"store_ids[{index}]", "not an active store of a participant")
        for index, store_id in enumerate(store_ids)
        if store_id not in found
        or found[store_id][0] not in org_ids
        or found[store_id][1] != "active"
    ]


def invalid(problems: Sequence[tuple[str, str]]) -> ValidationFailed:
    """A 422 naming every (field, message) problem, the first one as `field`."""
    field, message = problems[0]
    return ValidationFailed(
        f"{field}: {message}",
        field=field,
        errors=[{"field": f, "message": m, "source": "body"} for f, m in problems],
    )


async def _check(
    session: AsyncSession, owner_org_id: uuid.UUID, spec: CampaignCreate, now: datetime
) -> _Checked:
    """Every rule a campaign's draft must keep; a 422 naming each problem's field."""
    problems: list[tuple[str, str]] = []
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(("timezone", f"unknown time zone {spec.timezone!r}"))
    if spec.ends_at <= spec.starts_at:
        problems.append(("ends_at", "must be after starts_at"))
    elif spec.ends_at <= now:
        problems.append(("ends_at", "has already passed"))

    offer = _offer_of(spec)
    offer_problems = [(f"offer.{field}", message) for field, message in offer.problems()]
    if offer.valid_from is not None and offer.valid_from < spec.starts_at:
        offer_problems.append(("offer.valid_from", "must not be before the campaign starts"))
    if offer.valid_until is not None and offer.valid_until > spec.ends_at:
        offer_problems.append(("offer.valid_until", "must not be after the campaign ends"))
    problems += offer_problems
    problems += _audience_problems(spec.audience)
    if (
        spec.per_customer_daily_limit is not None
        and spec.per_customer_daily_limit > spec.per_customer_limit
    ):
        problems.append(("per_customer_daily_limit", "cannot exceed per_customer_limit"))

    terms = _terms_of(spec)
    terms_problems = [(TERMS_FIELDS.get(f, f), m) for f, m in terms.problems()]
    problems += terms_problems
    org_ids = [p.org_id for p in spec.participants]
    if owner_org_id not in org_ids:
        problems.append(
            ("participants", "the owner organization must be a participant (its share may be 0)")
        )
    orgs = {
        row[0]: (row[1], row[2])
        for row in await session.execute(
            select(col(Organization.id), col(Organization.name), col(Organization.status)).where(
                col(Organization.id).in_(set(org_ids))
            )
        )
    }
    problems += [
        (f"participants[{index}].org_id", "not an active organization")
        for index, org_id in enumerate(org_ids)
        if org_id not in orgs or orgs[org_id][1] != "active"
    ]
    if not offer_problems and not terms_problems:
        # A campaign whose budget (or a funder's cap) cannot hold one coupon never issues any.
        most = max_discount(offer)
        if most > spec.total_budget:
            problems.append(("total_budget", f"must cover one coupon's largest discount ({most})"))
        parts = funder_reservations(most, [p.share_bp for p in spec.participants])
        problems += [
            (
                f"participants[{index}].budget_cap",
                f"must cover this funder's part of one coupon ({part})",
            )
            for index, (p, part) in enumerate(zip(spec.participants, parts, strict=True))
            if p.budget_cap is not None and p.budget_cap < part
        ]
    problems += await _store_problems(session, spec.store_ids, set(org_ids))
    if problems:
        raise invalid(problems)
    return _Checked(offer=offer, org_names={k: v[0] for k, v in orgs.items()})


def _write(campaign: Campaign, spec: CampaignCreate, offer: Offer) -> None:
    campaign.name = spec.name
    campaign.description = spec.description
    campaign.currency = spec.currency
    campaign.timezone = spec.timezone
    campaign.starts_at = spec.starts_at
    campaign.ends_at = spec.ends_at
    campaign.code_prefix = spec.code_prefix
    campaign.offer = offer_to_json(offer)
    campaign.audience = spec.audience.kind
    campaign.audience_min_tier = spec.audience.min_tier
    campaign.audience_max_tier = spec.audience.max_tier
    campaign.audience_tags = list(spec.audience.tags)
    campaign.audience_on_network_only = spec.audience.on_network_only
    campaign.total_quantity = spec.total_quantity
    campaign.per_customer_limit = spec.per_customer_limit
    campaign.per_customer_daily_limit = spec.per_customer_daily_limit
    campaign.reversal_window_days = spec.reversal_window_days
    campaign.total_budget = spec.total_budget
    campaign.fee_bp = spec.fee.bp
    campaign.fee_fixed = spec.fee.fixed
    campaign.fee_payer = spec.fee.payer
    campaign.settlement_cycle = spec.settlement_cycle


async def _sync_participants(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    current: Sequence[CampaignParticipant],
    wanted: Sequence[ParticipantIn],
) -> list[CampaignParticipant]:
    """Make the participant rows match `wanted` (its order is the funding position); rows of
    organizations that stay keep their answers."""
    existing = {p.org_id: p for p in current}
    result: list[CampaignParticipant] = []
    for position, item in enumerate(wanted):
        row = existing.pop(item.org_id, None)
        if row is None:
            row = CampaignParticipant(
                campaign_id=campaign_id,
                org_id=item.org_id,
                position=position,
                share_bp=item.share_bp,
                budget_cap=item.budget_cap,
            )
            session.add(row)
        else:
            row.position, row.share_bp, row.budget_cap = position, item.share_bp, item.budget_cap
        result.append(row)
    for row in existing.values():
        await session.delete(row)
    return result


async def _sync_stores(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    current: Sequence[uuid.UUID],
    wanted: Sequence[uuid.UUID],
) -> list[uuid.UUID]:
    removed = set(current) - set(wanted)
    if removed:
        await session.execute(
            delete(CampaignStore).where(
                col(CampaignStore.campaign_id) == campaign_id,
                col(CampaignStore.store_id).in_(removed),
            )
        )
    for store_id in set(wanted) - set(current):
        session.add(CampaignStore(campaign_id=campaign_id, store_id=store_id))
    return sorted(set(wanted), key=str)


def _clear_acceptances(participants: Iterable[CampaignParticipant]) -> None:
    for p in participants:
        p.accepted_version, p.accepted_at, p.accepted_by = None, None, None


def _changed(
    before: CampaignCreate, after: CampaignCreate
) -> tuple[dict[str, Any], dict[str, Any]]:
    old: dict[str, Any] = msgspec.to_builtins(before)
    new: dict[str, Any] = msgspec.to_builtins(after)
    for snapshot in (old, new):  # a set of stores, in whatever order it was given
        snapshot["store_ids"] = sorted(set(snapshot["store_ids"]))
    fields = [name for name in new if old.get(name) != new[name]]
    return {f: old.get(f) for f in fields}, {f: new[f] for f in fields}


# --- drafting -------------------------------------------------------------------------------


async def create_campaign(
    session: AsyncSession, principal: Principal, data: CampaignCreate
) -> LoadedCampaign:
    """A draft owned by the caller's organization."""
    spec = _normalized(data)
    checked = await _check(session, principal.org_id, spec, utcnow())
    campaign = Campaign(
        owner_org_id=principal.org_id,
        name=spec.name,
        currency=spec.currency,
        timezone=spec.timezone,
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        total_quantity=spec.total_quantity,
        status=DRAFT,
        created_by=principal.user_id,
    )
    _write(campaign, spec, checked.offer)
    session.add(campaign)
    await session.flush()
    participants = await _sync_participants(session, campaign.id, [], spec.participants)
    store_ids = await _sync_stores(session, campaign.id, [], spec.store_ids)
    audit.record(
        session,
        principal,
        org_id=campaign.owner_org_id,
        action="campaign.created",
        subject_type="campaign",
        subject_id=campaign.id,
        after={"status": campaign.status, **msgspec.to_builtins(spec)},
    )
    await commit(session)
    return LoadedCampaign(campaign, participants, store_ids, checked.org_names)


async def _owned(session: AsyncSession, principal: Principal, campaign_id: uuid.UUID) -> Campaign:
    """The campaign, locked, when the caller's organization owns it."""
    campaign = await get_campaign(session, principal, campaign_id, for_update=True)
    if campaign.owner_org_id != principal.org_id:
        raise NotCampaignOwner()
    return campaign


async def update_campaign(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, data: CampaignUpdate
) -> LoadedCampaign:
    """Change a draft. Changing the terms of a proposed or approved campaign returns it to
    draft and clears every acceptance: a changed proposal needs new acceptances."""
    campaign = await _owned(session, principal, campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignNotEditable(f"A campaign that is {campaign.status} can no longer change")
    loaded = await load(session, campaign)
    changes = {
        name: value
        for name in data.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }
    current = _normalized(_spec_of(loaded))
    spec = _normalized(msgspec.structs.replace(current, **changes))
    before, after = _changed(current, spec)
    if not after:
        return loaded
    checked = await _check(session, campaign.owner_org_id, spec, utcnow())
    old_terms = terms_json(campaign, loaded.participants, loaded.store_ids)
    _write(campaign, spec, checked.offer)
    participants = await _sync_participants(
        session, campaign.id, loaded.participants, spec.participants
    )
    store_ids = await _sync_stores(session, campaign.id, loaded.store_ids, spec.store_ids)
    if terms_json(campaign, participants, store_ids) != old_terms:
        _clear_acceptances(participants)
        if campaign.status != DRAFT:
            before["status"], after["status"] = campaign.status, DRAFT
            campaign.status, campaign.approved_at = DRAFT, None
            campaign.status_reason = "The terms changed: propose them again"
    audit.record(
        session,
        principal,
        org_id=campaign.owner_org_id,
        action="campaign.updated",
        subject_type="campaign",
        subject_id=campaign.id,
        before=before,
        after=after,
    )
    await commit(session)
    return LoadedCampaign(campaign, participants, store_ids, checked.org_names)


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
            "starts_at": _iso(campaign.starts_at),
            "ends_at": _iso(campaign.ends_at),
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
    campaign = await _owned(session, principal, campaign_id)
    _require_transition(campaign, PROPOSED)
    loaded = await load(session, campaign)
    # Organizations may have been suspended, stores archived or the end passed since drafting.
    await _check(session, campaign.owner_org_id, _spec_of(loaded), now)
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
    _clear_acceptances(loaded.participants)
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
    campaign = await _owned(session, principal, campaign_id)
    _require_transition(campaign, ACTIVE)
    if campaign.status == PAUSED:
        raise InvalidCampaignTransition("A paused campaign is resumed, not activated")
    if now < campaign.starts_at:
        raise CampaignNotStarted(
            f"The campaign starts at {_iso(campaign.starts_at)}; it is activated then",
            starts_at=_iso(campaign.starts_at),
        )
    if now >= campaign.ends_at:
        raise CampaignOver(f"The campaign ended at {_iso(campaign.ends_at)}")
    await _activate(session, principal, campaign, now)
    await commit(session)
    return await load(session, campaign)


async def pause(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """Stop claims and redemptions at once (until resumed)."""
    campaign = await _owned(session, principal, campaign_id)
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
    campaign = await _owned(session, principal, campaign_id)
    if campaign.status != PAUSED:
        raise InvalidCampaignTransition(
            f"Only a paused campaign can be resumed (this one is {campaign.status})",
            campaign_status=campaign.status,
        )
    if utcnow() >= campaign.ends_at:
        raise CampaignOver(f"The campaign ended at {_iso(campaign.ends_at)}")
    campaign.status, campaign.status_reason = ACTIVE, None
    _record_transition(session, principal, campaign, "campaign.resumed", PAUSED)
    await commit(session)
    return await load(session, campaign)


async def end(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """The owner ends an active or paused campaign before its end time."""
    campaign = await _owned(session, principal, campaign_id)
    _require_transition(campaign, ENDED)
    await _end(session, principal, campaign, utcnow(), reason)
    await commit(session)
    return await load(session, campaign)


async def cancel(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, reason: str | None
) -> LoadedCampaign:
    """Call off a campaign that never ran (draft, proposed or approved)."""
    campaign = await _owned(session, principal, campaign_id)
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
