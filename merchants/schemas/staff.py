"""Request and response shapes of staff management."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from coalition.platform.api import Request, Response

Role = Literal["admin", "marketing", "finance", "cashier"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
EmailAddress = Annotated[
    str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]


class UserRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    display_name: str
    role: str
    status: str
    created_at: datetime
    last_login_at: datetime | None


class InviteStaffRequest(Request):
    email: EmailAddress
    display_name: Name
    role: Role


class InvitationRead(Response):
    """The one-time invitation link: shown once, to be passed on to the invitee."""

    user: UserRead
    invite_url: str
    invite_token: str
    expires_at: datetime


class ChangeRoleRequest(Request):
    role: Role
