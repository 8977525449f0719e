"""Staff of an organization: invitations, roles, deactivation — and the last admin stays."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import ROLE_RANK, Invitation, Organization, User
from coalition.merchants.schemas.staff import InviteStaffRequest, UserRead
from coalition.platform import audit
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden
from coalition.platform.jobs import commit
from coalition.platform.security import hash_password, new_secret, secret_digest
from coalition.platform.settings import Settings

INVITE_TOKEN_PREFIX = "cin"  # noqa: S105 - a prefix, not a secret


class LastAdmin(Conflict):
    code, title = "last_admin", "An organization must keep at least one active admin"


def user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        org_id=user.org_id,
        email=user.email,
        display_name=user.display_name,
        role=user.role,
        status=user.status,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


async def create_user(
    session: AsyncSession,
    *,
    org: Organization,
    email: str,
    display_name: str,
    role: str,
    password: str | None,
) -> User:
    """A user with a password is active; without one, invited (until they accept)."""
    email = email.strip().lower()
    exists = (await session.execute(select(col(User.id)).where(col(User.email) == email))).first()
    if exists:
        raise Conflict(f"A user with email {email} already exists", field="email")
    user = User(
        org_id=org.id,
        email=email,
        display_name=display_name,
        role=role,
        status="active" if password else "invited",
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    await session.flush()
    return user


async def list_users(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[User], int]:
    await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    base = select(User).where(col(User.org_id) == org_id)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(User.created_at), col(User.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_user(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, *, for_update: bool = False
) -> User:
    return await get_in_tenant(session, User, user_id, principal, for_update=for_update)


async def _lock_active_admins(session: AsyncSession, org_id: uuid.UUID) -> list[uuid.UUID]:
    """Lock the org's active admins, so two concurrent demotions cannot both pass the check."""
    rows = await session.execute(
        select(col(User.id))
        .where(col(User.org_id) == org_id, col(User.role) == "admin", col(User.status) == "active")
        .order_by(col(User.id))
        .with_for_update()
    )
    return list(rows.scalars())


async def _keep_an_admin(session: AsyncSession, user: User) -> None:
    if user.role != "admin" or user.status != "active":
        return
    admins = await _lock_active_admins(session, user.org_id)
    if admins == [user.id]:
        raise LastAdmin()


async def change_role(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: str
) -> User:
    user = await get_user(session, principal, user_id)
    if user.id == principal.user_id and ROLE_RANK[role] > ROLE_RANK[user.role]:
        raise Forbidden("You cannot raise your own role", field="role")
    if role == user.role:
        return user
    if role != "admin":
        await _keep_an_admin(session, user)
    await session.refresh(user, with_for_update=True)
    before = {"role": user.role}
    user.role = role
    audit.record(
        session,
        principal,
        org_id=user.org_id,
        action="user.role_changed",
        subject_type="user",
        subject_id=user.id,
        before=before,
        after={"role": role},
    )
    await commit(session)
    return user


async def deactivate(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    from coalition.merchants.services.identity import revoke_user_sessions

    user = await get_user(session, principal, user_id)
    if user.status == "deactivated":
        return user
    await _keep_an_admin(session, user)
    await session.refresh(user, with_for_update=True)
    before = {"status": user.status}
    user.status = "deactivated"
    await revoke_user_sessions(session, user.id)
    audit.record(
        session,
        principal,
        org_id=user.org_id,
        action="user.deactivated",
        subject_type="user",
        subject_id=user.id,
        before=before,
        after={"status": "deactivated"},
    )
    await commit(session)
    return user


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    user: User
    token: str
    url: str
    expires_at: datetime


async def issue_invitation(
    session: AsyncSession,
    settings: Settings,
    principal: Principal | None,
    *,
    org: Organization,
    user: User,
    kind: str,
) -> IssuedInvitation:
    token = new_secret(INVITE_TOKEN_PREFIX)
    expires_at = utcnow() + timedelta(seconds=settings.invitation_ttl_seconds)
    session.add(
        Invitation(
            org_id=org.id,
            user_id=user.id,
            kind=kind,
            token_hash=secret_digest(token),
            created_by=principal.user_id if principal else None,
            expires_at=expires_at,
        )
    )
    url = f"{settings.public_url}/portal/invitations/{token}"
    return IssuedInvitation(user=user, token=token, url=url, expires_at=expires_at)


async def invite_staff(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    org_id: uuid.UUID,
    data: InviteStaffRequest,
) -> IssuedInvitation:
    org = await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    if org.kind == "carrier" and not principal.is_carrier:
        raise Forbidden("Only the carrier invites its own staff")
    user = await create_user(
        session,
        org=org,
        email=data.email,
        display_name=data.display_name,
        role=data.role,
        password=None,
    )
    invitation = await issue_invitation(
        session, settings, principal, org=org, user=user, kind="staff"
    )
    audit.record(
        session,
        principal,
        org_id=org.id,
        action="user.invited",
        subject_type="user",
        subject_id=user.id,
        after={"email": user.email, "role": user.role},
    )
    await commit(session)
    return invitation
