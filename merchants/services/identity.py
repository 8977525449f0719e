"""Identity: login, refresh-token rotation, logout, invitations accepted, and turning any bearer
credential (user access token, terminal key, API key) into a `Principal`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.services.customer_tokens import (
    customer_principal_without_lookup,
    resolve_customer_token,
)
from coalition.merchants.models import (
    ApiKey,
    Invitation,
    Organization,
    RefreshToken,
    Store,
    Terminal,
    TerminalKey,
    User,
)
from coalition.merchants.schemas.identity import TokenPair
from coalition.platform import audit, ratelimit
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    TokenExpired,
)
from coalition.platform.jobs import commit
from coalition.platform.security import (
    constant_time_equals,
    decode_access_token,
    hash_password,
    issue_access_token,
    key_id_of,
    new_secret,
    password_needs_rehash,
    secret_digest,
    verify_password,
)
from coalition.platform.settings import Settings

REFRESH_TOKEN_PREFIX = "crt"  # noqa: S105 - a prefix, not a secret
TERMINAL_KEY_PREFIX = "ctk"
API_KEY_PREFIX = "cak"
# `last_seen_at` / `last_used_at` are written at most this often per credential.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


class OrganizationInactive(Forbidden):
    code, title = "organization_inactive", "This organization is not active"


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
        raise OrganizationInactive(f"This organization is {org.status}")
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
        await revoke_refresh_family(session, token.family_id, now)
        await commit(session)
        raise InvalidToken("Refresh token was already used; the session has been revoked")
    if token.expires_at <= now:
        raise TokenExpired("Refresh token has expired")
    user, org = (
        await session.execute(
            select(User, Organization)
            .join(Organization, col(Organization.id) == col(User.org_id))
            .where(col(User.id) == token.user_id)
        )
    ).one()
    if user.status != "active" or org.status != "active":
        await revoke_refresh_family(session, token.family_id, now)
        await commit(session)
        raise InvalidToken("The account is no longer active")
    token.used_at = now
    tokens = await _issue_tokens(session, settings, user, family_id=token.family_id, now=now)
    await commit(session)
    return tokens


async def revoke_refresh_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id)
        .where(col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )


async def revoke_user_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh token of a user (deactivation, password change)."""
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user_id)
        .where(col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=utcnow())
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
    await revoke_refresh_family(session, token.family_id, utcnow())
    await commit(session)


async def purge_expired_refresh_tokens(session: AsyncSession) -> int:
    cutoff = utcnow() - timedelta(days=1)
    result = await session.execute(
        delete(RefreshToken).where(col(RefreshToken.expires_at) < cutoff)
    )
    await commit(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- invitations ---------------------------------------------------------------------------


class InvitationInvalid(NotFound):
    code, title = "invitation_invalid", "This invitation link is not valid"


class InvitationExpired(Conflict):
    status_code, code, title = 410, "invitation_expired", "This invitation link has expired"


@dataclass(frozen=True, slots=True)
class AcceptedInvitation:
    user: User
    organization: Organization
    kind: str


async def accept_invitation(
    session: AsyncSession, *, token: str, password: str, display_name: str | None
) -> AcceptedInvitation:
    """Redeem a one-time invitation: the user sets a password; the first admin of an invited
    organization activates it. The organization's activation is committed by the caller."""
    invitation = (
        await session.execute(
            select(Invitation)
            .where(col(Invitation.token_hash) == secret_digest(token))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if invitation is None or invitation.used_at is not None:
        raise InvitationInvalid("This invitation link is unknown or was already used")
    now = utcnow()
    if invitation.expires_at <= now:
        raise InvitationExpired()
    user = await session.get_one(User, invitation.user_id, with_for_update=True)
    org = await session.get_one(Organization, invitation.org_id, with_for_update=True)
    if user.status == "deactivated" or org.status in ("suspended", "rejected"):
        raise InvitationInvalid("This invitation is no longer valid")
    invitation.used_at = now
    user.password_hash = hash_password(password)
    user.status = "active"
    if display_name:
        user.display_name = display_name
    audit.record(
        session,
        Principal(kind="user", org_id=org.id, org_kind=org.kind, role=user.role, user_id=user.id),
        org_id=org.id,
        action="user.activated",
        subject_type="user",
        subject_id=user.id,
        before={"status": "invited"},
        after={"status": "active"},
    )
    return AcceptedInvitation(user=user, organization=org, kind=invitation.kind)


# --- bearer credentials ----------------------------------------------------------------------

# A terminal key verified against the database is trusted by this process for at most this
# long: revoking the terminal or its key, rotating its key, suspending its organization or
# archiving its store takes effect at once in the process that did it and within this bound
# in every other server process.
TERMINAL_KEY_CACHE_SECONDS = 5.0
TERMINAL_KEY_CACHE_CAPACITY = 10_000


class VerifiedTerminalKeys:
    """Terminal keys verified recently, by the SHA-256 of the full key, with their principal.

    An entry is made only after the full lookup found the key, matched its digest and found
    the key, terminal, store and organization active; it answers until `ttl_seconds` have
    passed or the key's own expiry, whichever is first. The POS sends its key with every
    request, so this spares each redemption a transaction of its own for the credential."""

    def __init__(
        self,
        *,
        ttl_seconds: float = TERMINAL_KEY_CACHE_SECONDS,
        capacity: int = TERMINAL_KEY_CACHE_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.capacity = capacity
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, credential: str) -> Principal | None:
        digest = secret_digest(credential)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        valid_until, principal = entry
        if self.clock() >= valid_until:
            del self._entries[digest]
            return None
        return principal

    def remember(
        self, credential: str, principal: Principal, *, key_expires_at: datetime | None
    ) -> None:
        now = self.clock()
        valid_until = now + self.ttl_seconds
        if key_expires_at is not None:
            valid_until = min(valid_until, now + (key_expires_at - utcnow()).total_seconds())
        if len(self._entries) >= self.capacity:
            # The oldest entry goes first (dicts keep insertion order).
            del self._entries[next(iter(self._entries))]
        self._entries[secret_digest(credential)] = (valid_until, principal)

    def forget_all(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


verified_terminal_keys = VerifiedTerminalKeys()


def forget_verified_terminal_keys() -> None:
    """Called when a terminal, key, store or organization stops working: this process trusts no
    terminal key it verified before (other processes within `TERMINAL_KEY_CACHE_SECONDS`)."""
    verified_terminal_keys.forget_all()


def principal_without_lookup(settings: Settings, credential: str) -> Principal | None:
    """A principal without any I/O: a terminal key verified within the last few seconds, or one
    of our own customer tokens; None when the full resolver must look (and word the error)."""
    if credential.startswith(f"{TERMINAL_KEY_PREFIX}_"):
        return verified_terminal_keys.get(credential)
    return customer_principal_without_lookup(settings, credential)


async def resolve_principal(
    session: AsyncSession, settings: Settings, credential: str
) -> Principal:
    """Turn a bearer credential into a principal, checking that it and its org are active."""
    if credential.startswith(f"{TERMINAL_KEY_PREFIX}_"):
        return await _terminal_principal(session, credential)
    if credential.startswith(f"{API_KEY_PREFIX}_"):
        return await _api_key_principal(session, credential)
    # Customer tokens and the carrier identity service's tokens; None: a staff token (or junk).
    customer = await resolve_customer_token(session, settings, credential)
    if customer is not None:
        return customer
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
    _require_active(org)
    return Principal(kind="user", org_id=org.id, org_kind=org.kind, role=user.role, user_id=user.id)


def _require_active(org: Organization) -> None:
    if org.status != "active":
        raise OrganizationInactive(f"This organization is {org.status}")


async def _terminal_principal(session: AsyncSession, credential: str) -> Principal:
    key_id = key_id_of(credential, TERMINAL_KEY_PREFIX)
    if key_id is None:
        raise InvalidToken("Malformed terminal key")
    row = (
        await session.execute(
            select(TerminalKey, Terminal, Store, Organization)
            .join(Terminal, col(Terminal.id) == col(TerminalKey.terminal_id))
            .join(Store, col(Store.id) == col(Terminal.store_id))
            .join(Organization, col(Organization.id) == col(Terminal.org_id))
            .where(col(TerminalKey.key_id) == key_id)
        )
    ).one_or_none()
    now = utcnow()
    if row is None or not constant_time_equals(row[0].key_hash, secret_digest(credential)):
        raise InvalidToken("Unknown terminal key")
    key, terminal, store, org = row
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise InvalidToken("This terminal key is no longer valid")
    if terminal.status != "active":
        raise InvalidToken("This terminal has been revoked")
    _require_active(org)
    if store.status != "active":
        raise OrganizationInactive("This terminal's store is archived")
    if terminal.last_seen_at is None or terminal.last_seen_at < now - LAST_SEEN_RESOLUTION:
        await session.execute(
            update(Terminal).where(col(Terminal.id) == terminal.id).values(last_seen_at=now)
        )
        await session.commit()
    principal = Principal(
        kind="terminal",
        org_id=org.id,
        org_kind=org.kind,
        subject_id=terminal.id,
        store_id=store.id,
    )
    verified_terminal_keys.remember(credential, principal, key_expires_at=key.expires_at)
    return principal


async def _api_key_principal(session: AsyncSession, credential: str) -> Principal:
    key_id = key_id_of(credential, API_KEY_PREFIX)
    if key_id is None:
        raise InvalidToken("Malformed API key")
    row = (
        await session.execute(
            select(ApiKey, Organization)
            .join(Organization, col(Organization.id) == col(ApiKey.org_id))
            .where(col(ApiKey.key_id) == key_id)
        )
    ).one_or_none()
    if row is None or not constant_time_equals(row[0].key_hash, secret_digest(credential)):
        raise InvalidToken("Unknown API key")
    key, org = row
    if key.revoked_at is not None:
        raise InvalidToken("This API key has been revoked")
    _require_active(org)
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - LAST_SEEN_RESOLUTION:
        await session.execute(
            update(ApiKey).where(col(ApiKey.id) == key.id).values(last_used_at=now)
        )
        await session.commit()
    return Principal(
        kind="api_key",
        org_id=org.id,
        org_kind=org.kind,
        subject_id=key.id,
        scopes=frozenset(key.scopes),
    )


# --- portal sessions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortalIdentity:
    principal: Principal
    display_name: str
    email: str
    org_name: str
    org_timezone: str


async def portal_identity(session: AsyncSession, *, refresh_token: str) -> PortalIdentity:
    """Who a portal session belongs to. The session holds the refresh token of its login; it is
    valid while that token is neither revoked (logout, deactivation) nor expired and the user and
    organization are active. The portal never rotates it, so parallel page loads cannot race."""
    row = (
        await session.execute(
            select(RefreshToken, User, Organization)
            .join(User, col(User.id) == col(RefreshToken.user_id))
            .join(Organization, col(Organization.id) == col(User.org_id))
            .where(col(RefreshToken.token_hash) == secret_digest(refresh_token))
        )
    ).one_or_none()
    if row is None:
        raise InvalidToken("Unknown session")
    token, user, org = row
    if token.revoked_at is not None or token.used_at is not None:
        raise InvalidToken("This session has ended")
    if token.expires_at <= utcnow():
        raise TokenExpired("This session has expired")
    if user.status != "active":
        raise InvalidToken("The account is no longer active")
    _require_active(org)
    return PortalIdentity(
        principal=Principal(
            kind="user", org_id=org.id, org_kind=org.kind, role=user.role, user_id=user.id
        ),
        display_name=user.display_name,
        email=user.email,
        org_name=org.name,
        org_timezone=org.timezone,
    )


async def end_portal_session(session: AsyncSession, *, refresh_token: str) -> None:
    """Sign out of the portal: the login's refresh-token family is revoked."""
    token = (
        await session.execute(
            select(RefreshToken).where(col(RefreshToken.token_hash) == secret_digest(refresh_token))
        )
    ).scalar_one_or_none()
    if token is not None:
        await revoke_refresh_family(session, token.family_id, utcnow())
        await commit(session)
