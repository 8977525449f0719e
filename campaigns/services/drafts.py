"""Campaign drafts: the checks every draft must pass (a 422 naming each problem's field),
creating a draft and changing it, and the terms a proposal freezes (`terms_json`).

Changing the terms of a proposed or approved campaign returns it to draft and clears every
acceptance. The proposal itself and everything after it is `workflow`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.domain import (
    Funder,
    Offer,
    Terms,
    TimeWindow,
    max_discount,
    offer_to_json,
    sorted_windows,
)
from coalition.campaigns.models import Campaign, CampaignParticipant, CampaignStore
from coalition.campaigns.schemas.campaigns import (
    AudienceIn,
    AudienceKind,
    CampaignCreate,
    CampaignUpdate,
    FeeIn,
    FeePayer,
    OfferIn,
    ParticipantIn,
    SettlementCycle,
    TimeWindowIn,
)
from coalition.campaigns.services.campaigns import (
    APPROVED,
    DRAFT,
    PROPOSED,
    LoadedCampaign,
    campaign_offer,
    clock_text,
    get_owned,
    iso_utc,
    load,
)
from coalition.campaigns.services.slots import funder_reservations
from coalition.merchants.models import Organization, Store
from coalition.platform import audit
from coalition.platform.api import fields_set
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, ValidationFailed
from coalition.platform.jobs import commit

EDITABLE = frozenset({DRAFT, PROPOSED, APPROVED})
# Terms fields (campaigns/domain.py `Terms.problems`) -> request fields.
TERMS_FIELDS = {
    "funders": "participants",
    "total_budget": "total_budget",
    "fee_bp": "fee.bp",
    "fee_fixed": "fee.fixed",
}


class CampaignNotEditable(Conflict):
    code, title = "campaign_not_editable", "The campaign can no longer be changed"


def terms_json(
    campaign: Campaign,
    participants: Sequence[CampaignParticipant],
    store_ids: Iterable[uuid.UUID],
) -> dict[str, Any]:
    """Everything money- or rule-relevant, as frozen in a terms version."""
    return {
        "currency": campaign.currency,
        "timezone": campaign.timezone,
        "starts_at": iso_utc(campaign.starts_at),
        "ends_at": iso_utc(campaign.ends_at),
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


# --- the draft: checks and writing ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckedDraft:
    """What `check_draft` read on the way: the draft's offer and the participants' names."""

    offer: Offer
    org_names: dict[uuid.UUID, str]


def offer_rule(wanted: OfferIn, currency: str, store_ids: Sequence[uuid.UUID] = ()) -> Offer:
    """The domain's offer rule for a requested offer (its `problems()` say whether it is sound)."""
    return Offer(
        kind=wanted.kind,
        currency=currency,
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
        store_ids=frozenset(store_ids) if store_ids else None,
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


def spec_of(loaded: LoadedCampaign) -> CampaignCreate:
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
                TimeWindowIn(start=clock_text(w.start), end=clock_text(w.end))
                for w in offer.time_windows
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


async def check_draft(
    session: AsyncSession, owner_org_id: uuid.UUID, spec: CampaignCreate, now: datetime
) -> CheckedDraft:
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

    offer = offer_rule(spec.offer, spec.currency, spec.store_ids)
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
    return CheckedDraft(offer=offer, org_names={k: v[0] for k, v in orgs.items()})


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


def clear_acceptances(participants: Iterable[CampaignParticipant]) -> None:
    """Forget every answer to the terms (changed terms need new acceptances)."""
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
    checked = await check_draft(session, principal.org_id, spec, utcnow())
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


async def update_campaign(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, data: CampaignUpdate
) -> LoadedCampaign:
    """Change a draft. Changing the terms of a proposed or approved campaign returns it to
    draft and clears every acceptance: a changed proposal needs new acceptances."""
    campaign = await get_owned(session, principal, campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignNotEditable(f"A campaign that is {campaign.status} can no longer change")
    loaded = await load(session, campaign)
    changes = fields_set(data)
    current = _normalized(spec_of(loaded))
    spec = _normalized(msgspec.structs.replace(current, **changes))
    before, after = _changed(current, spec)
    if not after:
        return loaded
    checked = await check_draft(session, campaign.owner_org_id, spec, utcnow())
    old_terms = terms_json(campaign, loaded.participants, loaded.store_ids)
    _write(campaign, spec, checked.offer)
    participants = await _sync_participants(
        session, campaign.id, loaded.participants, spec.participants
    )
    store_ids = await _sync_stores(session, campaign.id, loaded.store_ids, spec.store_ids)
    if terms_json(campaign, participants, store_ids) != old_terms:
        clear_acceptances(participants)
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
