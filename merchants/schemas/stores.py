"""Request and response shapes of stores (a merchant's outlets)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from coalition.platform.api import Request, Response

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
StoreName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"\S")]
City = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
# Weekday -> [[open, close], ...] as "HH:MM" (24-hour clock; "24:00" only closes). The times are
# checked by the service (`normalize_opening_hours`) so that errors name the exact day and interval.
DayHours = Annotated[list[list[str]], msgspec.Meta(max_length=6)]
OpeningHours = Annotated[
    dict[Weekday, DayHours],
    msgspec.Meta(
        description=(
            'Weekday (mon..sun) -> list of [open, close] times as "HH:MM" (24-hour clock, '
            '"24:00" only closes); each interval opens before it closes and a day\'s intervals '
            "do not overlap; an empty list or a missing day is closed. A night spanning midnight "
            'is split: ["22:00", "24:00"] and ["00:00", "02:00"] of the next day.'
        ),
        examples=[{"mon": [["08:00", "12:00"], ["13:00", "21:30"]], "sun": []}],
    ),
]
StoreStatus = Literal["active", "archived"]


class StoreCreate(Request):
    name: StoreName
    address: Address
    city: City
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    opening_hours: OpeningHours = msgspec.field(default_factory=dict)


class StoreUpdate(Request):
    """Fields to change; omitted fields stay as they are."""

    name: StoreName | msgspec.UnsetType = msgspec.UNSET
    address: Address | msgspec.UnsetType = msgspec.UNSET
    city: City | msgspec.UnsetType = msgspec.UNSET
    latitude: Latitude | msgspec.UnsetType | None = msgspec.UNSET
    longitude: Longitude | msgspec.UnsetType | None = msgspec.UNSET
    opening_hours: OpeningHours | msgspec.UnsetType = msgspec.UNSET


class StoreRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    address: str
    city: str
    latitude: float | None
    longitude: float | None
    opening_hours: dict[str, list[list[str]]]
    status: str
    created_at: datetime
    archived_at: datetime | None
