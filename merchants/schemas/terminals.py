"""Request and response shapes of POS terminals and their keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from coalition.platform.api import Request, Response

MAX_GRACE_SECONDS = 7 * 24 * 3600
TerminalName = Annotated[str, msgspec.Meta(min_length=1, max_length=120, pattern=r"\S")]
TerminalStatus = Literal["active", "revoked"]


class RegisterTerminalRequest(Request):
    name: TerminalName


class RotateKeyRequest(Request):
    grace_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=MAX_GRACE_SECONDS,
            description="How long the terminal's current key(s) keep working (0: stop at once)",
        ),
    ] = 0


class TerminalRead(Response):
    """A terminal as its organization sees it. Keys are never shown here."""

    id: uuid.UUID
    org_id: uuid.UUID
    store_id: uuid.UUID
    name: str
    status: str
    created_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None
    active_keys: int
    key_created_at: datetime | None  # the newest working key
    grace_until: datetime | None  # when the last key still in its rotation grace stops working


class TerminalKeyIssued(Response):
    """A terminal with a new key. The key is shown this once; only its digest is stored."""

    terminal: TerminalRead
    key: str
    previous_keys_expire_at: datetime | None = None


class PosTerminalInfo(Response):
    id: uuid.UUID
    name: str
    status: str


class PosStoreInfo(Response):
    id: uuid.UUID
    name: str
    address: str
    city: str


class PosOrganizationInfo(Response):
    id: uuid.UUID
    name: str


class PosIdentityRead(Response):
    """What a terminal key is configured as: the terminal, its store and its organization."""

    terminal: PosTerminalInfo
    store: PosStoreInfo
    organization: PosOrganizationInfo
