"""HTTP API of POS terminals: register (key shown once), list, read, rotate the key, revoke —
and the POS side's own view of its key."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.schemas.terminals import (
    PosIdentityRead,
    RegisterTerminalRequest,
    RotateKeyRequest,
    TerminalKeyIssued,
    TerminalRead,
    TerminalStatus,
)
from coalition.merchants.services import terminals
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard

TerminalStatusFilter = Annotated[TerminalStatus | None, Parameter(query="status")]


def _issued(issued: terminals.IssuedTerminalKey) -> TerminalKeyIssued:
    return TerminalKeyIssued(
        terminal=terminals.terminal_read(issued.summary),
        key=issued.key.full,
        previous_keys_expire_at=issued.previous_keys_expire_at,
    )


class TerminalController(Controller):
    path = "/api/v1"
    tags = ["terminals"]
    guards = [role_guard()]

    @post(
        "/stores/{store_id:uuid}/terminals",
        guards=[role_guard("admin")],
        status_code=HTTP_201_CREATED,
    )
    async def register(
        self,
        store_id: uuid.UUID,
        data: RegisterTerminalRequest,
        session: AsyncSession,
        principal: Principal,
    ) -> TerminalKeyIssued:
        """Register a POS terminal on an active store. Its key is in this answer only."""
        return _issued(await terminals.register(session, principal, store_id, name=data.name))

    @get("/stores/{store_id:uuid}/terminals")
    async def list_store_terminals(
        self,
        store_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: TerminalStatusFilter = None,
    ) -> Page[TerminalRead]:
        """Terminals of a store (never their keys)."""
        rows, total = await terminals.list_store_terminals(
            session, principal, store_id, status=status, limit=limit, offset=offset
        )
        return Page(
            items=[terminals.terminal_read(t) for t in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/organizations/{org_id:uuid}/terminals")
    async def list_org_terminals(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: TerminalStatusFilter = None,
        store_id: Annotated[uuid.UUID | None, Parameter(query="store_id")] = None,
    ) -> Page[TerminalRead]:
        """Terminals of an organization (never their keys), optionally of one store."""
        rows, total = await terminals.list_org_terminals(
            session,
            principal,
            org_id,
            status=status,
            store_id=store_id,
            limit=limit,
            offset=offset,
        )
        return Page(
            items=[terminals.terminal_read(t) for t in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/terminals/{terminal_id:uuid}")
    async def get_terminal(
        self, terminal_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> TerminalRead:
        return terminals.terminal_read(
            await terminals.get_terminal(session, principal, terminal_id)
        )

    @post(
        "/terminals/{terminal_id:uuid}/rotate",
        guards=[role_guard("admin")],
        status_code=HTTP_200_OK,
    )
    async def rotate(
        self,
        terminal_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        data: RotateKeyRequest | None = None,
    ) -> TerminalKeyIssued:
        """Give the terminal a new key (shown once); its old keys keep working for
        `grace_seconds` (default 0: they stop at once; at most 7 days). The body is optional."""
        return _issued(
            await terminals.rotate(
                session,
                principal,
                terminal_id,
                grace_seconds=data.grace_seconds if data else 0,
            )
        )

    @post(
        "/terminals/{terminal_id:uuid}/revoke",
        guards=[role_guard("admin")],
        status_code=HTTP_200_OK,
    )
    async def revoke(
        self, terminal_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> TerminalRead:
        """Revoke the terminal and all its keys at once (webhook `terminal.revoked`)."""
        return terminals.terminal_read(await terminals.revoke(session, principal, terminal_id))


class PosTerminalController(Controller):
    path = "/api/v1/pos"
    tags = ["pos"]
    guards = [role_guard(kinds=("terminal",))]

    @get("/terminal")
    async def whoami(self, session: AsyncSession, principal: Principal) -> PosIdentityRead:
        """The terminal this key belongs to, its store and its organization: what a POS
        vendor calls to check its configuration."""
        return await terminals.pos_identity(session, principal)


ROUTES = [TerminalController, PosTerminalController]
