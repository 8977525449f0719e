"""API keys: server-to-server credentials of an organization, limited to scopes.

A key reads `cak_<key_id>_<secret>`. It is shown once when issued; only its SHA-256 digest is
stored, and `key_id` (public) finds the row. Revoking a key stops it on the next request.

`scope_guard(...)` is the guard every endpoint open to API keys uses: an API key must hold all
the scopes the endpoint names.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import ApiKey, Organization
from coalition.merchants.schemas.integrations import (
    ApiKeyCreate,
    ApiKeyRead,
    CurrentApiKeyRead,
)
from coalition.merchants.services.identity import API_KEY_PREFIX
from coalition.platform import audit
from coalition.platform.auth import Guard, Principal, get_in_tenant, principal_of
from coalition.platform.db import utcnow
from coalition.platform.errors import Forbidden, NotFound, ValidationFailed
from coalition.platform.jobs import commit
from coalition.platform.security import issue_key

# The whole scope vocabulary. An endpoint open to API keys names the scopes it needs.
API_KEY_SCOPES = (
    "redemptions:write",  # quote, redeem and reverse (online checkout, POS integrations)
    "redemptions:read",  # read redemptions
    "campaigns:read",  # read campaigns and offers
    "coupons:issue",  # issue coupons to customers (bulk or one by one)
    "statements:read",  # read statements and finance reports
    "webhooks:manage",  # manage webhook endpoints and read / replay their deliveries
)


class InsufficientScope(Forbidden):
    code, title = "insufficient_scope", "This API key lacks a required scope"


# --- the guard ---------------------------------------------------------------------------------


def missing_scopes(principal: Principal, scopes: tuple[str, ...]) -> list[str]:
    """The scopes of `scopes` an API-key principal does not hold (none for other principals)."""
    if principal.kind != "api_key":
        return []
    return [scope for scope in scopes if scope not in principal.scopes]


def scope_guard(*scopes: str, roles: tuple[str, ...] = ()) -> Guard:
    """Open an endpoint to API keys holding *all* of `scopes`, and to users.

    - API keys: 403 `insufficient_scope` unless the key holds every scope named.
    - Users: scopes do not apply to them. With `roles` empty they pass through untouched (the
      endpoint's own role checks decide); with `roles` given, the user's role must be one of them
      (403 otherwise), exactly as `role_guard(*roles)` would check. Because `role_guard` refuses
      every non-user principal, an endpoint open to API keys states its user roles here rather
      than stacking a `role_guard`.
    - Terminals and customers: 403.

    Tenancy still applies inside the handler: an API key acts for its own organization only
    (`Principal.may_access`), so other organizations' rows answer 404.
    """
    unknown = sorted(set(scopes) - set(API_KEY_SCOPES))
    if unknown:
        raise ValueError(f"unknown API key scopes: {', '.join(unknown)}")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if principal.kind == "api_key":
            missing = missing_scopes(principal, scopes)
            if missing:
                raise InsufficientScope(
                    f"This API key needs the scope(s): {', '.join(missing)}",
                    missing_scopes=missing,
                )
            return
        if principal.kind != "user":
            raise Forbidden(f"This endpoint is not for {principal.kind} credentials")
        if roles and principal.role not in roles:
            raise Forbidden(f"Requires one of the roles: {', '.join(roles)}")

    return guard


# --- reading -----------------------------------------------------------------------------------


def key_hint(key: ApiKey) -> str:
    return f"{API_KEY_PREFIX}_{key.key_id}_..."


def api_key_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        org_id=key.org_id,
        name=key.name,
        key_hint=key_hint(key),
        scopes=list(key.scopes),
        created_by=key.created_by,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


async def list_api_keys(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[ApiKey], int]:
    """The organization's keys, newest first, revoked ones included."""
    await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    base = select(ApiKey).where(col(ApiKey.org_id) == org_id)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(ApiKey.created_at).desc(), col(ApiKey.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_api_key(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID, *, for_update: bool = False
) -> ApiKey:
    return await get_in_tenant(session, ApiKey, key_id, principal, for_update=for_update)


async def current_api_key(session: AsyncSession, principal: Principal) -> CurrentApiKeyRead:
    """The key a request authenticated with (for integrators to check their setup)."""
    if principal.kind != "api_key" or principal.subject_id is None:
        raise Forbidden("Only API keys can ask which API key they are")
    row = (
        await session.execute(
            select(ApiKey, Organization)
            .join(Organization, col(Organization.id) == col(ApiKey.org_id))
            .where(col(ApiKey.id) == principal.subject_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("ApiKey not found")
    key, org = row
    return CurrentApiKeyRead(
        id=key.id,
        name=key.name,
        key_hint=key_hint(key),
        scopes=list(key.scopes),
        org_id=org.id,
        org_name=org.name,
        org_kind=org.kind,
    )


# --- changing ----------------------------------------------------------------------------------


def _valid_scopes(scopes: list[str]) -> list[str]:
    for index, scope in enumerate(scopes):
        if scope not in API_KEY_SCOPES:
            raise ValidationFailed(
                f"Unknown scope {scope!r}; known scopes: {', '.join(API_KEY_SCOPES)}",
                field="scopes",
                errors=[
                    {"field": f"scopes[{index}]", "message": "unknown scope", "source": "body"}
                ],
            )
    return sorted(set(scopes))


async def issue_api_key(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: ApiKeyCreate
) -> tuple[ApiKey, str]:
    """Create a key for the organization; returns the row and the full key (shown once)."""
    scopes = _valid_scopes(data.scopes)
    org = await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    issued = issue_key(API_KEY_PREFIX)
    key = ApiKey(
        org_id=org.id,
        name=data.name,
        key_id=issued.key_id,
        key_hash=issued.digest,
        scopes=scopes,
        created_by=principal.user_id,
    )
    session.add(key)
    await session.flush()
    audit.record(
        session,
        principal,
        org_id=org.id,
        action="api_key.issued",
        subject_type="api_key",
        subject_id=key.id,
        after={"name": key.name, "key_hint": key_hint(key), "scopes": scopes},
    )
    await commit(session)
    return key, issued.full


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key: the next request made with it is refused. Revoking twice changes nothing."""
    key = await get_api_key(session, principal, key_id, for_update=True)
    if key.revoked_at is not None:
        return key
    key.revoked_at = utcnow()
    audit.record(
        session,
        principal,
        org_id=key.org_id,
        action="api_key.revoked",
        subject_type="api_key",
        subject_id=key.id,
        before={"revoked_at": None},
        after={"name": key.name, "key_hint": key_hint(key), "revoked_at": str(key.revoked_at)},
    )
    await commit(session)
    return key
