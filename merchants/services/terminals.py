"""POS terminals: registered on a store with a key shown once (only its SHA-256 is stored),
listed without keys, keys rotated with a grace period, and revoked (every key at once, with a
`terminal.revoked` webhook to the terminal's organization and the carrier)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization, Store, Terminal, TerminalKey
from coalition.merchants.schemas.terminals import (
    PosIdentityRead,
    PosOrganizationInfo,
    PosStoreInfo,
    PosTerminalInfo,
    TerminalRead,
)
from coalition.merchants.services import webhooks
from coalition.merchants.services.identity import (
    TERMINAL_KEY_PREFIX,
    forget_verified_terminal_keys,
)
from coalition.merchants.services.stores import StoreArchived, get_store, require_admin_of
from coalition.platform import audit
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden, NotFound
from coalition.platform.jobs import commit
from coalition.platform.security import IssuedKey, issue_key


class TerminalRevoked(Conflict):
    code, title = "terminal_revoked", "This terminal has been revoked"


@dataclass(frozen=True, slots=True)
class TerminalSummary:
    """A terminal with what its keys look like (never the keys themselves)."""

    terminal: Terminal
    active_keys: int
    key_created_at: datetime | None
    grace_until: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedTerminalKey:
    summary: TerminalSummary
    key: IssuedKey
    previous_keys_expire_at: datetime | None = None


def terminal_read(summary: TerminalSummary) -> TerminalRead:
    terminal = summary.terminal
    return TerminalRead(
        id=terminal.id,
        org_id=terminal.org_id,
        store_id=terminal.store_id,
        name=terminal.name,
        status=terminal.status,
        created_at=terminal.created_at,
        revoked_at=terminal.revoked_at,
        last_seen_at=terminal.last_seen_at,
        active_keys=summary.active_keys,
        key_created_at=summary.key_created_at,
        grace_until=summary.grace_until,
    )


def _key_works(now: datetime) -> ColumnElement[bool]:
    return and_(
        col(TerminalKey.revoked_at).is_(None),
        or_(col(TerminalKey.expires_at).is_(None), col(TerminalKey.expires_at) > now),
    )


async def _summaries(
    session: AsyncSession, terminals: list[Terminal], now: datetime
) -> list[TerminalSummary]:
    if not terminals:
        return []
    rows = await session.execute(
        select(
            col(TerminalKey.terminal_id),
            func.count(),
            func.max(col(TerminalKey.created_at)),
            func.max(col(TerminalKey.expires_at)),
        )
        .where(col(TerminalKey.terminal_id).in_([t.id for t in terminals]), _key_works(now))
        .group_by(col(TerminalKey.terminal_id))
    )
    stats: dict[uuid.UUID, tuple[int, datetime | None, datetime | None]] = {
        terminal_id: (int(count), created, expires)
        for terminal_id, count, created, expires in rows.tuples()
    }
    summaries = []
    for terminal in terminals:
        active_keys, key_created_at, grace_until = stats.get(terminal.id, (0, None, None))
        summaries.append(TerminalSummary(terminal, active_keys, key_created_at, grace_until))
    return summaries


async def _summary(session: AsyncSession, terminal: Terminal) -> TerminalSummary:
    return (await _summaries(session, [terminal], utcnow()))[0]


def _add_key(session: AsyncSession, terminal: Terminal, now: datetime) -> IssuedKey:
    issued = issue_key(TERMINAL_KEY_PREFIX)
    session.add(
        TerminalKey(
            terminal_id=terminal.id, key_id=issued.key_id, key_hash=issued.digest, created_at=now
        )
    )
    return issued


# --- core actions (also used without a request, e.g. by the demo seed) ------------------------


async def register_terminal(
    session: AsyncSession, principal: Principal | None, store: Store, name: str
) -> tuple[Terminal, IssuedKey]:
    """Register a terminal on an active store with its first key (the full key is returned
    once). Audits `terminal.registered`; `principal` None for system actions. Flushes; the
    caller commits."""
    if store.status != "active":
        raise StoreArchived("Terminals cannot be registered on an archived store")
    now = utcnow()
    terminal = Terminal(org_id=store.org_id, store_id=store.id, name=name.strip(), created_at=now)
    session.add(terminal)
    await session.flush()
    issued = _add_key(session, terminal, now)
    audit.record(
        session,
        principal,
        org_id=terminal.org_id,
        action="terminal.registered",
        subject_type="terminal",
        subject_id=terminal.id,
        after={"name": terminal.name, "store_id": str(store.id), "status": terminal.status},
    )
    await session.flush()
    return terminal, issued


async def rotate_key(
    session: AsyncSession, principal: Principal | None, terminal: Terminal, *, grace_seconds: int
) -> tuple[IssuedKey, datetime]:
    """Give the terminal a new key; its working keys stop at now + grace (at once for 0; a key
    already due to stop sooner keeps its earlier expiry). Returns the new key and when the old
    ones stop. Lock the terminal first; the caller commits."""
    if terminal.status != "active":
        raise TerminalRevoked("A revoked terminal cannot get a new key")
    now = utcnow()
    expires_at = now + timedelta(seconds=grace_seconds)
    forget_verified_terminal_keys()
    result = await session.execute(
        update(TerminalKey)
        .where(col(TerminalKey.terminal_id) == terminal.id, _key_works(now))
        .values(
            expires_at=func.least(
                func.coalesce(col(TerminalKey.expires_at), expires_at), expires_at
            )
        )
    )
    issued = _add_key(session, terminal, now)
    audit.record(
        session,
        principal,
        org_id=terminal.org_id,
        action="terminal.key_rotated",
        subject_type="terminal",
        subject_id=terminal.id,
        after={
            "grace_seconds": grace_seconds,
            "previous_keys": int(result.rowcount or 0),  # type: ignore[attr-defined]
            "previous_keys_expire_at": expires_at.isoformat(),
        },
    )
    await session.flush()
    return issued, expires_at


async def _carrier_id(session: AsyncSession) -> uuid.UUID | None:
    return (
        await session.execute(
            select(col(Organization.id)).where(col(Organization.kind) == "carrier")
        )
    ).scalar_one_or_none()


async def revoke_terminal(
    session: AsyncSession, principal: Principal | None, terminal: Terminal
) -> bool:
    """Revoke the terminal and every key of it at once, audit it and emit `terminal.revoked`
    to its organization and the carrier. False if it was already revoked (nothing changes).
    Lock the terminal first; the caller commits."""
    if terminal.status == "revoked":
        return False
    now = utcnow()
    terminal.status, terminal.revoked_at = "revoked", now
    forget_verified_terminal_keys()
    result = await session.execute(
        update(TerminalKey)
        .where(col(TerminalKey.terminal_id) == terminal.id, col(TerminalKey.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    audit.record(
        session,
        principal,
        org_id=terminal.org_id,
        action="terminal.revoked",
        subject_type="terminal",
        subject_id=terminal.id,
        before={"status": "active"},
        after={
            "status": "revoked",
            "revoked_at": now.isoformat(),
            "keys_revoked": int(result.rowcount or 0),  # type: ignore[attr-defined]
        },
    )
    store = await session.get_one(Store, terminal.store_id)
    carrier_id = await _carrier_id(session)
    await webhooks.emit_event(
        session,
        event_type="terminal.revoked",
        org_ids={terminal.org_id, *([carrier_id] if carrier_id else [])},
        data={
            "terminal": {"id": str(terminal.id), "name": terminal.name},
            "store": {"id": str(store.id), "name": store.name},
            "organization_id": str(terminal.org_id),
            "revoked_at": now.isoformat(),
        },
    )
    await session.flush()
    return True


# --- API use cases ----------------------------------------------------------------------------


async def register(
    session: AsyncSession, principal: Principal, store_id: uuid.UUID, *, name: str
) -> IssuedTerminalKey:
    store = await get_store(session, principal, store_id, for_update=True)
    require_admin_of(principal, store.org_id)
    terminal, issued = await register_terminal(session, principal, store, name=name)
    await commit(session)
    return IssuedTerminalKey(
        summary=TerminalSummary(terminal, 1, terminal.created_at, None), key=issued
    )


async def _page(
    session: AsyncSession, query: Any, *, limit: int, offset: int
) -> tuple[list[TerminalSummary], int]:
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(col(Terminal.created_at), col(Terminal.id)).limit(limit).offset(offset)
    )
    return await _summaries(session, list(rows.scalars()), utcnow()), int(total)


async def list_store_terminals(
    session: AsyncSession,
    principal: Principal,
    store_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[TerminalSummary], int]:
    store = await get_store(session, principal, store_id)
    query = select(Terminal).where(col(Terminal.store_id) == store.id)
    if status:
        query = query.where(col(Terminal.status) == status)
    return await _page(session, query, limit=limit, offset=offset)


async def list_org_terminals(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    *,
    status: str | None,
    store_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[TerminalSummary], int]:
    org = await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    query = select(Terminal).where(col(Terminal.org_id) == org.id)
    if status:
        query = query.where(col(Terminal.status) == status)
    if store_id:
        query = query.where(col(Terminal.store_id) == store_id)
    return await _page(session, query, limit=limit, offset=offset)


async def get_terminal(
    session: AsyncSession, principal: Principal, terminal_id: uuid.UUID
) -> TerminalSummary:
    terminal = await get_in_tenant(session, Terminal, terminal_id, principal)
    return await _summary(session, terminal)


async def _terminal_to_change(
    session: AsyncSession, principal: Principal, terminal_id: uuid.UUID
) -> Terminal:
    terminal = await get_in_tenant(session, Terminal, terminal_id, principal, for_update=True)
    require_admin_of(principal, terminal.org_id)
    return terminal


async def rotate(
    session: AsyncSession, principal: Principal, terminal_id: uuid.UUID, *, grace_seconds: int
) -> IssuedTerminalKey:
    terminal = await _terminal_to_change(session, principal, terminal_id)
    store = await session.get_one(Store, terminal.store_id)
    if store.status != "active":
        raise StoreArchived("This terminal's store is archived; its terminals cannot get keys")
    issued, previous_expire_at = await rotate_key(
        session, principal, terminal, grace_seconds=grace_seconds
    )
    await commit(session)
    return IssuedTerminalKey(
        summary=await _summary(session, terminal),
        key=issued,
        previous_keys_expire_at=previous_expire_at,
    )


async def revoke(
    session: AsyncSession, principal: Principal, terminal_id: uuid.UUID
) -> TerminalSummary:
    """Revoke a terminal (revoking a revoked terminal changes nothing)."""
    terminal = await _terminal_to_change(session, principal, terminal_id)
    await revoke_terminal(session, principal, terminal)
    await commit(session)
    return await _summary(session, terminal)


# --- the POS side -----------------------------------------------------------------------------


async def pos_identity(session: AsyncSession, principal: Principal) -> PosIdentityRead:
    """The terminal a key belongs to, with its store and organization (the principal was
    already checked: key valid, terminal active, store active, organization active)."""
    if principal.kind != "terminal" or principal.subject_id is None:
        raise Forbidden("This endpoint is for terminal keys")
    row = (
        await session.execute(
            select(Terminal, Store, Organization)
            .join(Store, col(Store.id) == col(Terminal.store_id))
            .join(Organization, col(Organization.id) == col(Terminal.org_id))
            .where(col(Terminal.id) == principal.subject_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("Terminal not found")
    terminal, store, org = row
    return PosIdentityRead(
        terminal=PosTerminalInfo(id=terminal.id, name=terminal.name, status=terminal.status),
        store=PosStoreInfo(id=store.id, name=store.name, address=store.address, city=store.city),
        organization=PosOrganizationInfo(id=org.id, name=org.name),
    )


async def operate_terminal(
    session: AsyncSession, principal: Principal, terminal_id: uuid.UUID
) -> Principal:
    """The web POS: a cashier (or admin) of the organization works a terminal of one of its
    active stores; redemptions are then recorded exactly as if that terminal had called."""
    if principal.kind != "user" or principal.role not in ("cashier", "admin"):
        raise Forbidden("Only cashiers and admins work the web POS")
    terminal = await session.get(Terminal, terminal_id)
    if terminal is None or terminal.org_id != principal.org_id:
        raise NotFound("Terminal not found")
    store = await session.get_one(Store, terminal.store_id)
    if terminal.status != "active" or store.status != "active":
        raise TerminalRevoked("This terminal or its store is no longer active")
    return Principal(
        kind="terminal",
        org_id=principal.org_id,
        org_kind=principal.org_kind,
        subject_id=terminal.id,
        store_id=store.id,
        user_id=principal.user_id,
    )
