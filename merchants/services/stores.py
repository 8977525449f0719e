"""Stores: a merchant's outlets, where coupons are redeemed. Admins of the organization manage
them; its other staff (and the carrier's cross-tenant staff) read them. Archiving keeps a store
and its history readable, and stops its terminals (identity refuses them)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization, Store
from coalition.merchants.schemas.stores import WEEKDAYS, StoreCreate, StoreRead, StoreUpdate
from coalition.merchants.services.identity import forget_verified_terminal_keys
from coalition.platform import audit
from coalition.platform.api import fields_set
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, Forbidden, ValidationFailed
from coalition.platform.jobs import commit

STORE_FIELDS = ("name", "address", "city", "latitude", "longitude", "opening_hours")


class StoreArchived(Conflict):
    code, title = "store_archived", "This store is archived"


def store_read(store: Store) -> StoreRead:
    return StoreRead(
        id=store.id,
        org_id=store.org_id,
        name=store.name,
        address=store.address,
        city=store.city,
        latitude=store.latitude,
        longitude=store.longitude,
        opening_hours={day: [list(i) for i in hours] for day, hours in store.opening_hours.items()},
        status=store.status,
        created_at=store.created_at,
        archived_at=store.archived_at,
    )


def require_admin_of(principal: Principal, org_id: uuid.UUID) -> None:
    """Only an admin of the owning organization changes its stores and terminals (carrier staff
    who may read every tenant may not change another organization's outlets)."""
    if principal.kind != "user" or principal.role != "admin" or principal.org_id != org_id:
        raise Forbidden("Only the organization's admins manage its stores and terminals")


# --- rules ----------------------------------------------------------------------------------


CLOCK_TIME = re.compile(r"^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def normalize_opening_hours(
    hours: Mapping[str, Sequence[Sequence[str]]],
) -> dict[str, list[list[str]]]:
    """Check opening hours and put them in order: weekdays (mon..sun) in calendar order, each
    day's [open, close] intervals sorted; times are "HH:MM" on a 24-hour clock ("24:00" only
    closes), every interval opens before it closes and a day's intervals do not overlap.
    Errors name the day and interval (`opening_hours.mon[1]`)."""
    unknown = sorted(set(hours) - set(WEEKDAYS))
    if unknown:
        raise ValidationFailed(
            f"Unknown weekday {unknown[0]!r} (use {', '.join(WEEKDAYS)})",
            field=f"opening_hours.{unknown[0]}",
        )
    checked: dict[str, list[tuple[int, list[str]]]] = {}
    for day in WEEKDAYS:
        if day not in hours:
            continue
        checked[day] = []
        for index, interval in enumerate(hours[day]):
            field = f"opening_hours.{day}[{index}]"
            pair = list(interval)
            if len(pair) != 2 or not all(isinstance(t, str) and CLOCK_TIME.match(t) for t in pair):
                raise ValidationFailed(
                    f'{day}: each interval is [open, close] as "HH:MM", e.g. ["09:00", "18:00"]',
                    field=field,
                )
            opens, closes = pair
            if opens == "24:00" or _minutes(opens) >= _minutes(closes):
                raise ValidationFailed(
                    f"{day}: {opens}-{closes} must open before it closes (split a night that "
                    "spans midnight over two days)",
                    field=field,
                )
            checked[day].append((index, [opens, closes]))
    normalized: dict[str, list[list[str]]] = {}
    for day, intervals in checked.items():
        intervals.sort(key=lambda item: _minutes(item[1][0]))
        for (_, earlier), (index, later) in itertools.pairwise(intervals):
            if _minutes(later[0]) < _minutes(earlier[1]):
                raise ValidationFailed(
                    f"{day}: {earlier[0]}-{earlier[1]} and {later[0]}-{later[1]} overlap",
                    field=f"opening_hours.{day}[{index}]",
                )
        normalized[day] = [interval for _, interval in intervals]
    return normalized


def _require_coordinates_pair(latitude: float | None, longitude: float | None) -> None:
    if (latitude is None) != (longitude is None):
        missing = "longitude" if longitude is None else "latitude"
        raise ValidationFailed("Give both latitude and longitude, or neither", field=missing)


# --- use cases ------------------------------------------------------------------------------


async def create_store(
    session: AsyncSession,
    principal: Principal | None,
    org: Organization,
    *,
    name: str,
    address: str,
    city: str,
    latitude: float | None = None,
    longitude: float | None = None,
    opening_hours: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> Store:
    """Add a store to `org` and audit it (`principal` None for system actions such as the demo
    seed). Flushes; the caller commits."""
    _require_coordinates_pair(latitude, longitude)
    store = Store(
        org_id=org.id,
        name=name.strip(),
        address=address.strip(),
        city=city.strip(),
        latitude=latitude,
        longitude=longitude,
        opening_hours=normalize_opening_hours(opening_hours or {}),
    )
    session.add(store)
    await session.flush()
    audit.record(
        session,
        principal,
        org_id=org.id,
        action="store.created",
        subject_type="store",
        subject_id=store.id,
        after=audit.snapshot(store, STORE_FIELDS),
    )
    return store


async def add_store(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: StoreCreate
) -> Store:
    org = await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    require_admin_of(principal, org.id)
    store = await create_store(
        session,
        principal,
        org,
        name=data.name,
        address=data.address,
        city=data.city,
        latitude=data.latitude,
        longitude=data.longitude,
        opening_hours={str(day): hours for day, hours in data.opening_hours.items()},
    )
    await commit(session)
    return store


async def list_stores(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    *,
    status: str | None,
    city: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Store], int]:
    await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    base = select(Store).where(col(Store.org_id) == org_id)
    if status:
        base = base.where(col(Store.status) == status)
    if city:
        base = base.where(col(Store.city) == city.strip())
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(Store.created_at), col(Store.id)).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_store(
    session: AsyncSession, principal: Principal, store_id: uuid.UUID, *, for_update: bool = False
) -> Store:
    return await get_in_tenant(session, Store, store_id, principal, for_update=for_update)


async def update_store(
    session: AsyncSession, principal: Principal, store_id: uuid.UUID, data: StoreUpdate
) -> Store:
    store = await get_store(session, principal, store_id, for_update=True)
    require_admin_of(principal, store.org_id)
    if store.status != "active":
        raise StoreArchived("An archived store cannot be changed")
    changes = fields_set(data)
    if "opening_hours" in changes:
        changes["opening_hours"] = normalize_opening_hours(changes["opening_hours"])
    for name in ("name", "address", "city"):
        if name in changes:
            changes[name] = changes[name].strip()
    _require_coordinates_pair(
        changes.get("latitude", store.latitude), changes.get("longitude", store.longitude)
    )
    changed = tuple(name for name, value in changes.items() if getattr(store, name) != value)
    if changed:
        before = audit.snapshot(store, changed)
        for name in changed:
            setattr(store, name, changes[name])
        audit.record(
            session,
            principal,
            org_id=store.org_id,
            action="store.updated",
            subject_type="store",
            subject_id=store.id,
            before=before,
            after=audit.snapshot(store, changed),
        )
    await commit(session)
    return store


async def archive_store(session: AsyncSession, principal: Principal, store_id: uuid.UUID) -> Store:
    """Archive a store: it stays readable with its history; its terminals stop working.
    Archiving an archived store changes nothing."""
    store = await get_store(session, principal, store_id, for_update=True)
    require_admin_of(principal, store.org_id)
    if store.status == "archived":
        return store
    store.status, store.archived_at = "archived", utcnow()
    forget_verified_terminal_keys()
    audit.record(
        session,
        principal,
        org_id=store.org_id,
        action="store.archived",
        subject_type="store",
        subject_id=store.id,
        before={"status": "active"},
        after=audit.snapshot(store, ("status", "archived_at")),
    )
    await commit(session)
    return store
