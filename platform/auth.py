"""Who is calling (a `Principal`), how a bearer credential becomes one, role guards and tenancy.

Credentials are resolved by a resolver the app factory installs (`app.state.resolve_principal`),
so the kernel does not need to know the domain's tables. Every later endpoint uses `role_guard`
for roles and `scope_to_tenant` / `get_in_tenant` so that rows of other tenants answer 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.errors import Forbidden, NotFound, Unauthorized
from coalition.platform.settings import Settings

PrincipalKind = Literal["user", "terminal", "api_key", "customer"]
# Carrier staff in these roles may read across tenants; everybody else sees only their own org.
CROSS_TENANT_ROLES = frozenset({"admin", "marketing", "finance"})


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    org_id: uuid.UUID
    org_kind: str
    role: str | None = None
    user_id: uuid.UUID | None = None
    subject_id: uuid.UUID | None = None  # terminal / api key / customer id
    store_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_carrier(self) -> bool:
        return self.org_kind == "carrier"

    @property
    def sees_all_tenants(self) -> bool:
        return self.kind == "user" and self.is_carrier and self.role in CROSS_TENANT_ROLES

    def may_access(self, org_id: uuid.UUID) -> bool:
        return self.sees_all_tenants or org_id == self.org_id


class PrincipalResolver(Protocol):
    def __call__(
        self, session: AsyncSession, settings: Settings, credential: str
    ) -> Awaitable[Principal]: ...


def bearer_credential(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("Send `Authorization: Bearer <token>`")
    return credential.strip()


class FastPrincipalResolver(Protocol):
    """A principal for a credential that needs no database (None: ask `PrincipalResolver`)."""

    def __call__(self, settings: Settings, credential: str) -> Principal | None: ...


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        credential = bearer_credential(connection)
        state = connection.app.state
        # Customer tokens vouch for themselves: no session is opened for them (the claim storm's
        # every request).
        fast: FastPrincipalResolver | None = state.get("resolve_principal_fast")
        if fast is not None:
            principal = fast(state.settings, credential)
            if principal is not None:
                return AuthenticationResult(user=principal, auth=credential)
        resolve: PrincipalResolver = state.resolve_principal
        async with state.sessionmaker() as session:
            principal = await resolve(session, state.settings, credential)
        return AuthenticationResult(user=principal, auth=credential)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthorized()
    return principal


# Guards are coroutines: Litestar runs a plain function guard in a worker thread (a thread hop
# on every request), a coroutine function inline.
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def role_guard(*roles: str, kinds: tuple[PrincipalKind, ...] = ("user",)) -> Guard:
    """Allow principals of `kinds` whose role is one of `roles` (any role if none given)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if principal.kind not in kinds:
            raise Forbidden(f"This endpoint is not for {principal.kind} credentials")
        if roles and principal.role not in roles:
            raise Forbidden(f"Requires one of the roles: {', '.join(roles)}")

    return guard


def carrier_guard(*roles: str) -> Guard:
    """Only users of the carrier organization (optionally in `roles`)."""
    inner = role_guard(*roles)

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        await inner(connection, handler)
        if not principal_of(connection).is_carrier:
            raise Forbidden("Only the carrier's staff may do this")

    return guard


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


SelectT = TypeVar("SelectT", bound=Select[Any])


def scope_to_tenant(statement: SelectT, org_column: Any, principal: Principal) -> SelectT:
    """Restrict a query to the principal's organization unless they may see every tenant."""
    if principal.sees_all_tenants:
        return statement
    return statement.where(org_column == principal.org_id)


ModelT = TypeVar("ModelT")


async def get_in_tenant(
    session: AsyncSession,
    model: type[ModelT],
    row_id: uuid.UUID,
    principal: Principal,
    *,
    org_attr: str = "org_id",
    for_update: bool = False,
) -> ModelT:
    """Load one tenant-owned row, answering 404 (never 403) for rows of other organizations."""
    row = await session.get(model, row_id, with_for_update=for_update)
    if row is None or not principal.may_access(getattr(row, org_attr)):
        raise NotFound(f"{model.__name__} not found")
    return row
