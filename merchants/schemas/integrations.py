"""Request and response shapes of integrations: API keys and outgoing webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from coalition.platform.api import Request, Response

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
# Checked against `API_KEY_SCOPES` / `EVENT_TYPES` by the services (422 naming the field).
ScopeName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Scopes = Annotated[list[ScopeName], msgspec.Meta(min_length=1, max_length=32)]
EventTypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
EventTypes = Annotated[list[EventTypeName], msgspec.Meta(min_length=1, max_length=64)]
WebhookUrl = Annotated[str, msgspec.Meta(min_length=8, max_length=2000, pattern=r"^\S+$")]
Description = Annotated[str, msgspec.Meta(max_length=500)]


# --- API keys ----------------------------------------------------------------------------------


class ApiKeyCreate(Request):
    name: Name
    scopes: Scopes


class ApiKeyRead(Response):
    """An API key without its secret: `key_hint` is the public part that identifies it."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    key_hint: str
    scopes: list[str]
    created_by: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyIssued(Response):
    """A new API key. `key` is shown this once; only its digest is stored."""

    api_key: ApiKeyRead
    key: str


class CurrentApiKeyRead(Response):
    """The API key making the request, and its organization."""

    id: uuid.UUID
    name: str
    key_hint: str
    scopes: list[str]
    org_id: uuid.UUID
    org_name: str
    org_kind: str


# --- webhook endpoints -------------------------------------------------------------------------


class WebhookEndpointCreate(Request):
    """`url` is https (http only for localhost); `event_types` from the catalogue, or `["*"]`."""

    url: WebhookUrl
    event_types: EventTypes
    description: Description | None = None


class WebhookEndpointUpdate(Request):
    """Fields to change; omitted fields stay as they are."""

    url: WebhookUrl | msgspec.UnsetType = msgspec.UNSET
    event_types: EventTypes | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET


class WebhookEndpointRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None


class WebhookEndpointDetail(WebhookEndpointRead):
    """One endpoint with its signing secret (readable by whoever manages the endpoint)."""

    secret: str


# --- deliveries --------------------------------------------------------------------------------


class WebhookDeliveryRead(Response):
    id: uuid.UUID
    org_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    replay_of: uuid.UUID | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookAttemptRead(Response):
    id: uuid.UUID
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDeliveryDetail(WebhookDeliveryRead):
    """One delivery with the exact event payload sent and every attempt, oldest first."""

    payload: dict[str, Any]
    attempt_log: list[WebhookAttemptRead]
