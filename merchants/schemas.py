"""Request and response shapes of the merchants API (identity, organizations, users)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from coalition.platform.api import Request, Response

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Secret = Annotated[str, msgspec.Meta(min_length=10, max_length=200)]


class LoginRequest(Request):
    email: Email
    password: Password


class RefreshRequest(Request):
    refresh_token: Secret


class TokenPair(Response):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class OrganizationRead(Response):
    id: uuid.UUID
    kind: str
    name: str
    industry: str
    status: str
    timezone: str
    created_at: datetime


class UserRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    display_name: str
    role: str
    status: str
    created_at: datetime
    last_login_at: datetime | None


class MeRead(Response):
    user: UserRead
    organization: OrganizationRead
