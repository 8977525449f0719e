"""Use cases of the merchants domain: identity (login, refresh, logout) and organizations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import delete, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization, RefreshToken, User
from coalition.merchants.schemas import OrganizationRead, TokenPair, UserRead
from coalition.platform import ratelimit
from coalition.platform.auth import Principal, get_in_tenant, scope_to_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    TokenExpired,
)
from coalition.platform.jobs import commit
from coalition.platform.security import (
    decode_access_token,
    hash_password,
    issue_access_token,
    new_secret,
    password_needs_rehash,
    secret_digest,
    verify_password,
)
from coalition.platform.settings import Settings

REFRESH_TOKEN_PREFIX = "crt"  # noqa: S105 - a prefix, not a secret


class OrganizationSuspended(Forbidden):
    code, title = "organization_suspended", "This organization is suspended"


def organization_read(org: Organization) -> OrganizationRead:
    return OrganizationRead(
        id=org.id,
        kind=org.kind,
        name=org.name,
        industry=org.industry,
        status=org.status,
        timezone=org.timezone,
        created_at=org.created_at,
    )


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


# --- identity -------------------------------------------------------------------------------


async def _issue_tokens(
    session: AsyncSession,
    settings: Settings,
    user: User,
    *,
    family_id: uuid.UUID,
    now: datetime,
) -> TokenPair:
    access, _ = issue_access_token(
        settings, user_id=user.id, org_id=user.org_id, role=user.role, now=now
    )
    refresh = new_secret(REFRESH_TOKEN_PREFIX)
    session.add(
        RefreshToken(
            family_id=family_id,
            user_id=user.id,
            token_hash=secret_digest(refresh),
            issued_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    return TokenPair(
        access_token=access,
        token_type="Bearer",  # noqa: S106
        expires_in=settings.access_token_ttl_seconds,
        refresh_token=refresh,
        refresh_expires_in=settings.refresh_token_ttl_seconds,
    )


async def login(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    *,
    email: str,
    password: str,
    client_ip: str,
) -> TokenPair:
    email = email.strip().lower()
    window = settings.login_window_seconds
    limit = settings.login_attempts_per_window
    await ratelimit.hit(redis, f"login:ip:{client_ip}", limit=limit * 5, window_seconds=window)
    await ratelimit.hit(redis, f"login:email:{email}", limit=limit, window_seconds=window)

    row = (
        await session.execute(
            select(User, Organization)
            .join(Organization, col(Organization.id) == col(User.org_id))
            .where(col(User.email) == email)
        )
    ).one_or_none()
    user, org = (row[0], row[1]) if row else (None, None)
    # The password is checked (against a dummy hash if need be) before anything else is told,
    # so an unknown email and a wrong password look and take the same.
    if not verify_password(user.password_hash if user else None, password):
        raise InvalidCredentials()
    if user is None or org is None or user.status != "active":
        raise InvalidCredentials()
    if org.status != "active":
        raise OrganizationSuspended()
    now = utcnow()
    if user.password_hash and password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    tokens = await _issue_tokens(session, settings, user, family_id=uuid.uuid4(), now=now)
    await commit(session)
    return tokens


async def refresh(session: AsyncSession, settings: Settings, *, refresh_token: str) -> TokenPair:
    """Rotate a refresh token. Presenting a spent token revokes its whole family."""
    now = utcnow()
    token = (
        await session.execute(
            select(RefreshToken)
            .where(col(RefreshToken.token_hash) == secret_digest(refresh_token))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if token is None:
        raise InvalidToken("Unknown refresh token")
    if token.used_at is not None or token.revoked_at is not None:
        await _revoke_family(session, token.family_id, now)
        await commit(session)
        raise InvalidToken("Refresh token was already used; the session has been revoked")
    if token.expires_at <= now:
        raise TokenExpired("Refresh token has expired")
    row = (
        await session.execute(
            select(User, Organization)
            .join(Organization, col(Organization.id) == col(User.org_id))
            .where(col(User.id) == token.user_id)
        )
    ).one()
    user, org = row[0], row[1]
    if user.status != "active" or org.status != "active":
        await _revoke_family(session, token.family_id, now)
        await commit(session)
        raise InvalidToken("The account is no longer active")
    token.used_at = now
    tokens = await _issue_tokens(session, settings, user, family_id=token.family_id, now=now)
    await commit(session)
    return tokens


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id)
        .where(col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )


async def logout(session: AsyncSession, principal: Principal, *, refresh_token: str) -> None:
    """End the session the refresh token belongs to (its whole family)."""
    token = (
        await session.execute(
            select(RefreshToken).where(col(RefreshToken.token_hash) == secret_digest(refresh_token))
        )
    ).scalar_one_or_none()
    if token is None or token.user_id != principal.user_id:
        raise InvalidToken("Unknown refresh token")
    await _revoke_family(session, token.family_id, utcnow())
    await commit(session)


async def resolve_principal(
    session: AsyncSession, settings: Settings, credential: str
) -> Principal:
    """Turn a bearer credential into a principal, checking that user and org are still active."""
    claims = decode_access_token(settings, credential)
    row = (
        await session.execute(
            select(User, Organization)
            .join(Organization, col(Organization.id) == col(User.org_id))
            .where(col(User.id) == claims.user_id)
        )
    ).one_or_none()
    if row is None:
        raise InvalidToken("Unknown user")
    user, org = row
    if user.status != "active" or user.org_id != claims.org_id:
        raise InvalidToken("The account is no longer active")
    if org.status != "active":
        raise OrganizationSuspended()
    return Principal(kind="user", org_id=org.id, org_kind=org.kind, role=user.role, user_id=user.id)


async def purge_expired_refresh_tokens(session: AsyncSession) -> int:
    cutoff = utcnow() - timedelta(days=1)
    result = await session.execute(
        delete(RefreshToken).where(col(RefreshToken.expires_at) < cutoff)
    )
    await commit(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- organizations and users ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Me:
    user: User
    organization: Organization


async def me(session: AsyncSession, principal: Principal) -> Me:
    assert principal.user_id is not None
    user = await session.get_one(User, principal.user_id)
    org = await session.get_one(Organization, user.org_id)
    return Me(user, org)


async def list_organizations(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> tuple[list[Organization], int]:
    base = scope_to_tenant(select(Organization), col(Organization.id), principal)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(Organization.created_at), col(Organization.id))
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_organization(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID
) -> Organization:
    return await get_in_tenant(session, Organization, org_id, principal, org_attr="id")


async def list_users(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[User], int]:
    await get_organization(session, principal, org_id)
    base = select(User).where(col(User.org_id) == org_id)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(User.created_at), col(User.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    return await get_in_tenant(session, User, user_id, principal)


async def create_organization(
    session: AsyncSession, *, kind: str, name: str, industry: str, status: str = "active"
) -> Organization:
    org = Organization(kind=kind, name=name, industry=industry, status=status)
    session.add(org)
    await session.flush()
    return org


async def create_user(
    session: AsyncSession,
    *,
    org: Organization,
    email: str,
    display_name: str,
    role: str,
    password: str | None,
) -> User:
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
    admin = await create_user(
        session,
        org=org,
        email=admin_email,
        display_name=admin_name,
        role="admin",
        password=password,
    )
    await commit(session)
    return org, admin
