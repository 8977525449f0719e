"""Organizations: the carrier's bootstrap, partner onboarding (invite or apply, approve or
reject), suspension, and the organization profile."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization, User
from coalition.merchants.schemas.organizations import (
    ApplyRequest,
    InviteMerchantRequest,
    OrganizationRead,
    ProfileUpdate,
)
from coalition.merchants.services import identity, staff, webhooks
from coalition.platform import audit
from coalition.platform.api import fields_set
from coalition.platform.auth import Principal, get_in_tenant, scope_to_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden, NotFound
from coalition.platform.jobs import commit
from coalition.platform.settings import Settings

CARRIER_ONLY_FIELDS = frozenset({"stripe_account_id", "stripe_onboarding_status"})
STATUS_FIELDS = ("status", "status_reason")  # what a status change's audit entry shows


class InvalidTransition(Conflict):
    code, title = "invalid_status_transition", "Not possible in the organization's current status"


def organization_read(org: Organization) -> OrganizationRead:
    return OrganizationRead(
        id=org.id,
        kind=org.kind,
        name=org.name,
        industry=org.industry,
        status=org.status,
        status_reason=org.status_reason,
        legal_name=org.legal_name,
        cities=list(org.cities),
        logo_url=org.logo_url,
        description=org.description,
        contact_name=org.contact_name,
        contact_email=org.contact_email,
        contact_phone=org.contact_phone,
        timezone=org.timezone,
        settlement_currency=org.settlement_currency,
        payout_details=dict(org.payout_details),
        stripe_account_id=org.stripe_account_id,
        stripe_onboarding_status=org.stripe_onboarding_status,
        created_at=org.created_at,
        activated_at=org.activated_at,
    )


# --- reading --------------------------------------------------------------------------------


async def list_organizations(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int, status: str | None
) -> tuple[list[Organization], int]:
    base = scope_to_tenant(select(Organization), col(Organization.id), principal)
    if status:
        base = base.where(col(Organization.status) == status)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(Organization.created_at), col(Organization.id))
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), int(total)


async def organization_names(
    session: AsyncSession, principal: Principal, *, limit: int = 500
) -> dict[uuid.UUID, str]:
    """The names of the organizations the reader sees (its own only, for a partner), by id,
    oldest first: for labels and pickers on the portal's pages."""
    rows = await session.execute(
        scope_to_tenant(
            select(col(Organization.id), col(Organization.name)), col(Organization.id), principal
        )
        .order_by(col(Organization.created_at), col(Organization.id))
        .limit(limit)
    )
    return {org_id: name for org_id, name in rows}


async def get_organization(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, for_update: bool = False
) -> Organization:
    return await get_in_tenant(
        session, Organization, org_id, principal, org_attr="id", for_update=for_update
    )


# --- bootstrap ------------------------------------------------------------------------------


async def create_organization(
    session: AsyncSession,
    *,
    kind: str,
    name: str,
    industry: str,
    status: str = "active",
    **profile: Any,
) -> Organization:
    org = Organization(
        kind=kind,
        name=name,
        industry=industry,
        status=status,
        activated_at=utcnow() if status == "active" else None,
        **profile,
    )
    session.add(org)
    await session.flush()
    return org


async def bootstrap_carrier(
    session: AsyncSession, *, name: str, admin_email: str, admin_name: str, password: str
) -> tuple[Organization, User]:
    """Create the carrier organization and its first admin (once per installation)."""
    existing = (
        await session.execute(select(Organization).where(col(Organization.kind) == "carrier"))
    ).scalar_one_or_none()
    if existing is not None:
        raise Conflict(f"The carrier organization already exists: {existing.name}")
    org = await create_organization(session, kind="carrier", name=name, industry="telecom")
    admin = await staff.create_user(
        session,
        org=org,
        email=admin_email,
        display_name=admin_name,
        role="admin",
        password=password,
    )
    audit.record(
        session,
        None,
        org_id=org.id,
        action="organization.created",
        subject_type="organization",
        subject_id=org.id,
        after={"kind": "carrier", "name": name, "admin": admin.email},
    )
    await commit(session)
    return org, admin


# --- onboarding -----------------------------------------------------------------------------


async def invite_merchant(
    session: AsyncSession, settings: Settings, principal: Principal, data: InviteMerchantRequest
) -> tuple[Organization, staff.IssuedInvitation]:
    """The carrier invites a partner: the org is `invited` until its first admin accepts."""
    org = await create_organization(
        session,
        kind="merchant",
        name=data.name,
        industry=data.industry,
        status="invited",
        cities=list(data.cities),
        legal_name=data.legal_name,
        contact_name=data.contact_name,
        contact_email=data.contact_email.lower(),
        contact_phone=data.contact_phone,
    )
    admin = await staff.create_user(
        session,
        org=org,
        email=data.contact_email,
        display_name=data.contact_name,
        role="admin",
        password=None,
    )
    invitation = await staff.issue_invitation(
        session, settings, principal, org=org, user=admin, kind="org_admin"
    )
    audit.record(
        session,
        principal,
        org_id=org.id,
        action="organization.invited",
        subject_type="organization",
        subject_id=org.id,
        after={"name": org.name, "industry": org.industry, "admin": admin.email},
    )
    await commit(session)
    return org, invitation


async def accept_invitation(
    session: AsyncSession, *, token: str, password: str, display_name: str | None
) -> identity.AcceptedInvitation:
    accepted = await identity.accept_invitation(
        session, token=token, password=password, display_name=display_name
    )
    org = accepted.organization
    if accepted.kind == "org_admin" and org.status == "invited":
        await _activate(session, None, org)
    await commit(session)
    return accepted


async def apply(session: AsyncSession, data: ApplyRequest) -> Organization:
    """A merchant applies; its admin can sign in once a carrier admin approves."""
    org = await create_organization(
        session,
        kind="merchant",
        name=data.name,
        industry=data.industry,
        status="pending",
        cities=list(data.cities),
        legal_name=data.legal_name,
        description=data.description,
        contact_name=data.contact_name,
        contact_email=data.contact_email.lower(),
        contact_phone=data.contact_phone,
    )
    await staff.create_user(
        session,
        org=org,
        email=data.contact_email,
        display_name=data.contact_name,
        role="admin",
        password=data.password,
    )
    audit.record(
        session,
        None,
        org_id=org.id,
        action="organization.applied",
        subject_type="organization",
        subject_id=org.id,
        after={"name": org.name, "industry": org.industry, "status": "pending"},
    )
    await commit(session)
    return org


async def _carrier_id(session: AsyncSession) -> uuid.UUID | None:
    return (
        await session.execute(
            select(col(Organization.id)).where(col(Organization.kind) == "carrier")
        )
    ).scalar_one_or_none()


def _set_status(
    session: AsyncSession,
    principal: Principal | None,
    org: Organization,
    action: str,
    status: str,
    reason: str | None,
) -> None:
    """Change the organization's status, audited with the status before and after."""
    before = audit.snapshot(org, STATUS_FIELDS)
    org.status, org.status_reason = status, reason
    identity.forget_verified_terminal_keys()
    audit.record(
        session,
        principal,
        org_id=org.id,
        action=action,
        subject_type="organization",
        subject_id=org.id,
        before=before,
        after=audit.snapshot(org, STATUS_FIELDS),
    )


async def _emit_to_org_and_carrier(
    session: AsyncSession, org: Organization, event_type: str, data: dict[str, Any]
) -> None:
    carrier_id = await _carrier_id(session)
    await webhooks.emit_event(
        session,
        event_type=event_type,
        org_ids={org.id, *([carrier_id] if carrier_id else [])},
        data=data,
    )


async def _activate(session: AsyncSession, principal: Principal | None, org: Organization) -> None:
    org.activated_at = utcnow()
    _set_status(session, principal, org, "organization.activated", "active", None)
    await _emit_to_org_and_carrier(
        session,
        org,
        "organization.activated",
        {"organization": {"id": str(org.id), "name": org.name, "industry": org.industry}},
    )


async def _merchant_in_status(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, status: str, action: str
) -> Organization:
    """Lock a merchant organization for a carrier action allowed only from `status`."""
    org = await get_organization(session, principal, org_id, for_update=True)
    if org.kind == "carrier":
        raise Forbidden("The carrier organization cannot be changed this way")
    if org.status != status:
        raise InvalidTransition(
            f"Only {status} organizations can be {action} (this one is {org.status})"
        )
    return org


async def approve(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> Organization:
    org = await _merchant_in_status(session, principal, org_id, "pending", "approved")
    await _activate(session, principal, org)
    await commit(session)
    return org


async def reject(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, reason: str
) -> Organization:
    org = await _merchant_in_status(session, principal, org_id, "pending", "rejected")
    _set_status(session, principal, org, "organization.rejected", "rejected", reason)
    await commit(session)
    return org


async def suspend(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, reason: str
) -> Organization:
    """Stop the org's users, terminals and keys at once; every row of it stays."""
    org = await _merchant_in_status(session, principal, org_id, "active", "suspended")
    _set_status(session, principal, org, "organization.suspended", "suspended", reason)
    await _emit_to_org_and_carrier(
        session,
        org,
        "organization.suspended",
        {"organization": {"id": str(org.id), "name": org.name}, "reason": reason},
    )
    await commit(session)
    return org


async def reinstate(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> Organization:
    org = await _merchant_in_status(session, principal, org_id, "suspended", "reinstated")
    await _activate(session, principal, org)
    await commit(session)
    return org


# --- profile --------------------------------------------------------------------------------


async def update_profile(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: ProfileUpdate
) -> Organization:
    org = await get_organization(session, principal, org_id, for_update=True)
    changes = fields_set(data)
    if not principal.is_carrier and CARRIER_ONLY_FIELDS & changes.keys():
        raise Forbidden(
            "Only the carrier sets the Stripe account fields",
            field=sorted(CARRIER_ONLY_FIELDS & changes.keys())[0],
        )
    if "timezone" in changes:
        _require_timezone(changes["timezone"])
    fields = tuple(changes)
    before = audit.snapshot(org, fields)
    for name, value in changes.items():
        setattr(org, name, list(value) if name == "cities" else value)
    after = audit.snapshot(org, fields)
    if before != after:
        audit.record(
            session,
            principal,
            org_id=org.id,
            action="organization.profile_updated",
            subject_type="organization",
            subject_id=org.id,
            before=before,
            after=after,
        )
    await commit(session)
    return org


def _require_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from coalition.platform.errors import ValidationFailed

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(f"Unknown time zone {name!r}", field="timezone") from exc


async def require_org(session: AsyncSession, org_id: uuid.UUID) -> Organization:
    org = await session.get(Organization, org_id)
    if org is None:
        raise NotFound("Organization not found")
    return org
