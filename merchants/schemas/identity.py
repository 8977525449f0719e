"""Request and response shapes of authentication."""

from __future__ import annotations

from typing import Annotated

import msgspec

from coalition.merchants.schemas.organizations import OrganizationRead
from coalition.merchants.schemas.staff import UserRead
from coalition.platform.api import Request, Response

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
NewPassword = Annotated[str, msgspec.Meta(min_length=10, max_length=256)]
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


class AcceptInvitationRequest(Request):
    token: Secret
    password: NewPassword
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=120)] | None = None


class MeRead(Response):
    user: UserRead
    organization: OrganizationRead
